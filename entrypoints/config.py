"""Configuration from the environment (see docs/configuration.md and the contract)."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from adapters.private_paths import PRIVATE_FILE_MODE, make_private_dir
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
    make_private_dir(var_dir)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    log.warning("%s not set: generated one and kept it in %s", name, path)
    return value


_MIB = 1024 * 1024
_MAX_PLAYBACK_URL_TTL_S = 3600  # dashboard playback and download URLs live at most an hour
_MAX_WEBHOOK_URL_TTL_S = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days


def _seconds(env: dict[str, str], name: str, default: str, low: float, high: float) -> float:
    value = float(env.get(name, default))
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g} seconds, not {value:g}")
    return value


def _archive_settings(env: dict[str, str], storage: str) -> dict[str, Any]:
    """S3 storage, archive verification, retries and the reconciliation sweep.

    ``CALLREC_S3_PLATFORM_BUCKET`` (default: the main bucket, under ``platform/``),
    ``CALLREC_S3_PUBLIC_ENDPOINT_URL`` (the S3 host browsers reach, if not the endpoint),
    ``CALLREC_S3_SSE`` (``AES256`` | ``aws:kms``; ``aws:kms`` when a key id is set),
    ``CALLREC_S3_KMS_KEY_ID``, ``CALLREC_S3_PART_SIZE_MB`` (8, at least 5),
    ``CALLREC_S3_MULTIPART_THRESHOLD_MB`` (8), ``CALLREC_S3_UPLOAD_CONCURRENCY`` (4),
    ``CALLREC_S3_MAX_ATTEMPTS`` (5), ``CALLREC_S3_ADDRESSING_STYLE`` (``path`` with an endpoint URL,
    else ``auto``), ``CALLREC_WEBHOOK_URL_TTL_S`` (86400, at most 604800),
    ``CALLREC_ARCHIVE_RECHECK_SOURCE`` (true), ``CALLREC_TWILIO_MAX_ATTEMPTS`` (4),
    ``CALLREC_TWILIO_RETRY_BASE_S`` (0.5), ``CALLREC_TWILIO_MAX_RETRY_AFTER_S`` (30),
    ``CALLREC_RECONCILE_INTERVAL_S`` (300; 0 turns the periodic sweep off),
    ``CALLREC_RECONCILE_STUCK_AFTER_S`` (900).
    """
    bucket = env.get("CALLREC_S3_BUCKET") or None
    if storage == "s3" and bucket is None:
        raise ValueError("CALLREC_S3_BUCKET is required when CALLREC_STORAGE=s3")
    kms_key_id = env.get("CALLREC_S3_KMS_KEY_ID") or None
    sse = env.get("CALLREC_S3_SSE") or ("aws:kms" if kms_key_id else "AES256")
    if sse not in {"AES256", "aws:kms"}:
        raise ValueError("CALLREC_S3_SSE must be AES256 or aws:kms")
    if kms_key_id and sse != "aws:kms":
        raise ValueError("CALLREC_S3_KMS_KEY_ID needs CALLREC_S3_SSE=aws:kms")
    part_size = int(float(env.get("CALLREC_S3_PART_SIZE_MB", "8")) * _MIB)
    if part_size < 5 * _MIB:
        raise ValueError("CALLREC_S3_PART_SIZE_MB must be at least 5 (S3's minimum part size)")
    _seconds(env, "CALLREC_PLAYBACK_URL_TTL_S", "900", 1, _MAX_PLAYBACK_URL_TTL_S)
    return {
        "s3_platform_bucket": env.get("CALLREC_S3_PLATFORM_BUCKET") or None,
        "s3_public_endpoint_url": env.get("CALLREC_S3_PUBLIC_ENDPOINT_URL") or None,
        "s3_sse": sse,
        "s3_kms_key_id": kms_key_id,
        "s3_part_size": part_size,
        "s3_multipart_threshold": int(float(env.get("CALLREC_S3_MULTIPART_THRESHOLD_MB", "8")) * _MIB),
        "s3_upload_concurrency": int(env.get("CALLREC_S3_UPLOAD_CONCURRENCY", "4")),
        "s3_max_attempts": int(env.get("CALLREC_S3_MAX_ATTEMPTS", "5")),
        "s3_addressing_style": env.get("CALLREC_S3_ADDRESSING_STYLE") or None,
        "webhook_url_ttl": timedelta(
            seconds=_seconds(env, "CALLREC_WEBHOOK_URL_TTL_S", "86400", 1, _MAX_WEBHOOK_URL_TTL_S)
        ),
        "archive_recheck_source": env.get("CALLREC_ARCHIVE_RECHECK_SOURCE", "true").strip().lower()
        not in {"0", "false", "no", "off"},
        "twilio_max_attempts": int(env.get("CALLREC_TWILIO_MAX_ATTEMPTS", "4")),
        "twilio_retry_base_s": float(env.get("CALLREC_TWILIO_RETRY_BASE_S", "0.5")),
        "twilio_max_retry_after_s": float(env.get("CALLREC_TWILIO_MAX_RETRY_AFTER_S", "30")),
        "reconcile_interval_s": _seconds(env, "CALLREC_RECONCILE_INTERVAL_S", "300", 0, 86400),
        "reconcile_stuck_after": timedelta(
            seconds=_seconds(env, "CALLREC_RECONCILE_STUCK_AFTER_S", "900", 0.1, 30 * 86400)
        ),
    }


def _webhook_settings(env: dict[str, str], var_dir: Path) -> dict[str, Any]:
    """Webhook delivery: ``CALLREC_WEBHOOK_SECRET_KEY`` (encrypts the endpoints' signing secrets at
    rest; generated under ``var``; comma-separated keys rotate, the first encrypts),
    ``CALLREC_WEBHOOK_TIMEOUT_S`` (15: one try, connect to last byte), ``CALLREC_WEBHOOK_POLL_S`` (1:
    how often due retries are looked for), ``CALLREC_INSTANT_HANGUP_S`` (3: answered then ended within
    this long is non-engagement). ``CALLREC_WEBHOOK_URL_TTL_S`` is read with the archive settings.
    """
    return {
        "webhook_secret_key": _secret(env, "CALLREC_WEBHOOK_SECRET_KEY", var_dir, "webhook_secret_key"),
        "webhook_timeout_s": _seconds(env, "CALLREC_WEBHOOK_TIMEOUT_S", "15", 0.1, 60),
        "webhook_poll_interval_s": _seconds(env, "CALLREC_WEBHOOK_POLL_S", "1", 0.05, 60),
        "instant_hangup_s": _seconds(env, "CALLREC_INSTANT_HANGUP_S", "3", 0, 60),
    }


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
    outbox_max_attempts: int = 10
    # Kafka bus (CALLREC_BUS=kafka); see docs/events.md.
    kafka_topic_prefix: str = ""
    kafka_group_prefix: str = "callrec."
    kafka_partitions: int = 6
    kafka_replication: int = 1
    kafka_max_attempts: int = 5
    kafka_retry_backoff_s: float = 1.0
    kafka_message_time_limit_s: float = 120.0
    kafka_max_poll_interval_ms: int = 300_000
    kafka_session_timeout_ms: int = 10_000
    relay_lease_s: float = 30.0
    # S3 storage, archive verification, retries and the reconciliation sweep (issue 5); see
    # _archive_settings for their variables.
    s3_platform_bucket: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_sse: str = "AES256"
    s3_kms_key_id: str | None = None
    s3_part_size: int = 8 * 1024 * 1024
    s3_multipart_threshold: int = 8 * 1024 * 1024
    s3_upload_concurrency: int = 4
    s3_max_attempts: int = 5
    s3_addressing_style: str | None = None
    webhook_url_ttl: timedelta = timedelta(hours=24)
    archive_recheck_source: bool = True
    twilio_max_attempts: int = 4
    twilio_retry_base_s: float = 0.5
    twilio_max_retry_after_s: float = 30.0
    reconcile_interval_s: float = 300.0
    reconcile_stuck_after: timedelta = timedelta(minutes=15)
    # Webhook delivery (issue 6); see _webhook_settings and docs/webhooks.md.
    webhook_secret_key: str = ""
    webhook_timeout_s: float = 15.0
    webhook_poll_interval_s: float = 1.0
    instant_hangup_s: float = 3.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        var_spec = env.get("CALLREC_VAR_DIR", "./var").rstrip("/") or "."
        var_dir = Path(var_spec)
        bus = env.get("CALLREC_BUS", "inprocess")
        if bus not in {"inprocess", "kafka"}:
            raise ValueError("CALLREC_BUS must be inprocess or kafka")
        storage = env.get("CALLREC_STORAGE", "filesystem")
        if storage not in {"filesystem", "s3"}:
            raise ValueError("CALLREC_STORAGE must be filesystem or s3")
        return cls(
            database_url=env.get("CALLREC_DATABASE_URL", f"sqlite+aiosqlite:///{var_spec}/callrec.db"),
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
            playback_url_ttl=timedelta(seconds=float(env.get("CALLREC_PLAYBACK_URL_TTL_S", "900"))),
            max_body_bytes=int(env.get("CALLREC_MAX_BODY_BYTES", str(1024 * 1024))),
            relay_retry_base_s=float(env.get("CALLREC_RELAY_RETRY_BASE_S", "1.0")),
            outbox_max_attempts=int(env.get("CALLREC_OUTBOX_MAX_ATTEMPTS", "10")),
            kafka_topic_prefix=env.get("CALLREC_KAFKA_TOPIC_PREFIX", ""),
            kafka_group_prefix=env.get("CALLREC_KAFKA_GROUP_PREFIX", "callrec."),
            kafka_partitions=int(env.get("CALLREC_KAFKA_PARTITIONS", "6")),
            kafka_replication=int(env.get("CALLREC_KAFKA_REPLICATION", "1")),
            kafka_max_attempts=int(env.get("CALLREC_KAFKA_MAX_ATTEMPTS", "5")),
            kafka_retry_backoff_s=float(env.get("CALLREC_KAFKA_RETRY_BACKOFF_S", "1.0")),
            kafka_message_time_limit_s=float(env.get("CALLREC_KAFKA_MESSAGE_TIME_LIMIT_S", "120")),
            kafka_max_poll_interval_ms=int(env.get("CALLREC_KAFKA_MAX_POLL_INTERVAL_MS", "300000")),
            kafka_session_timeout_ms=int(env.get("CALLREC_KAFKA_SESSION_TIMEOUT_MS", "10000")),
            relay_lease_s=float(env.get("CALLREC_RELAY_LEASE_S", "30")),
            **_archive_settings(env, storage),
            **_webhook_settings(env, var_dir),
        )

    @property
    def service_settings(self) -> ServiceSettings:
        return ServiceSettings(
            public_url=self.public_url,
            platform_lines=self.platform_lines,
            playback_url_ttl=self.playback_url_ttl,
            webhook_url_ttl=self.webhook_url_ttl,
            recheck_source_audio=self.archive_recheck_source,
            scorability_wait=timedelta(seconds=self.scorability_wait_s),
            instant_hangup=timedelta(seconds=self.instant_hangup_s),
        )
