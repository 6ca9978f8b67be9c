"""Configuration from the environment (see docs/configuration.md and the contract)."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from application.services import ServiceSettings, parse_platform_lines
from domain.model import CallKind

log = logging.getLogger(__name__)


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _secret(env: dict[str, str], name: str, var_dir: Path, filename: str) -> str:
    """The secret from the environment, or one generated once and kept under ``var_dir``."""
    value = env.get(name)
    if value:
        return value
    path = var_dir / filename
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    log.warning("%s not set: generated one and kept it in %s", name, path)
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str
    bus: str
    kafka_bootstrap: str
    storage: str
    storage_dir: Path
    s3_bucket: str | None
    s3_region: str
    s3_endpoint_url: str | None
    public_url: str
    twilio_account_sid: str
    twilio_auth_token: str
    twilio_api_base: str
    agent_stream_url: str
    jwt_secret: str
    service_token: str
    media_signing_key: str
    webhook_allow_private_networks: bool
    scorability_wait_s: float
    platform_lines: dict[str, CallKind] = field(default_factory=dict)
    playback_url_ttl: timedelta = timedelta(minutes=15)
    max_body_bytes: int = 1024 * 1024
    relay_retry_base_s: float = 1.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        var_dir = Path(env.get("CALLREC_VAR_DIR", "./var"))
        bus = env.get("CALLREC_BUS", "inprocess")
        if bus not in {"inprocess", "kafka"}:
            raise ValueError("CALLREC_BUS must be inprocess or kafka")
        storage = env.get("CALLREC_STORAGE", "filesystem")
        if storage not in {"filesystem", "s3"}:
            raise ValueError("CALLREC_STORAGE must be filesystem or s3")
        return cls(
            database_url=env.get("CALLREC_DATABASE_URL", f"sqlite+aiosqlite:///{var_dir}/callrec.db"),
            bus=bus,
            kafka_bootstrap=env.get("CALLREC_KAFKA_BOOTSTRAP", "localhost:9092"),
            storage=storage,
            storage_dir=Path(env.get("CALLREC_STORAGE_DIR", str(var_dir / "recordings"))),
            s3_bucket=env.get("CALLREC_S3_BUCKET") or None,
            s3_region=env.get("CALLREC_S3_REGION", "us-east-1"),
            s3_endpoint_url=env.get("CALLREC_S3_ENDPOINT_URL") or None,
            public_url=env.get("CALLREC_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID", ""),
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN", ""),
            twilio_api_base=env.get("CALLREC_TWILIO_API_BASE", "https://api.twilio.com").rstrip("/"),
            agent_stream_url=env.get("CALLREC_AGENT_STREAM_URL", "wss://agent.invalid/stream"),
            jwt_secret=_secret(env, "CALLREC_JWT_SECRET", var_dir, "jwt_secret"),
            service_token=_secret(env, "CALLREC_SERVICE_TOKEN", var_dir, "service_token"),
            media_signing_key=_secret(env, "CALLREC_MEDIA_SIGNING_KEY", var_dir, "media_signing_key"),
            webhook_allow_private_networks=_bool(env.get("CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS")),
            scorability_wait_s=float(env.get("CALLREC_SCORABILITY_WAIT_S", "0")),
            platform_lines=parse_platform_lines(env.get("CALLREC_PLATFORM_LINES", "")),
            playback_url_ttl=timedelta(seconds=int(env.get("CALLREC_PLAYBACK_URL_TTL_S", "900"))),
            max_body_bytes=int(env.get("CALLREC_MAX_BODY_BYTES", str(1024 * 1024))),
            relay_retry_base_s=float(env.get("CALLREC_RELAY_RETRY_BASE_S", "1.0")),
        )

    @property
    def service_settings(self) -> ServiceSettings:
        return ServiceSettings(
            public_url=self.public_url,
            platform_lines=self.platform_lines,
            playback_url_ttl=self.playback_url_ttl,
        )
