"""Configuration from the environment (see docs/configuration.md).

Every variable is declared once, below, on :class:`Settings`: its environment name (the alias), type,
default, range and description. ``docs/configuration.md``'s tables are generated from these
declarations: ``python -m entrypoints.config --markdown`` rewrites them, ``--check`` fails when the
committed document is stale.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from adapters.private_paths import PRIVATE_FILE_MODE, make_private_dir
from application.services import ServiceSettings, parse_platform_lines
from domain.model import CallKind

__all__ = ["Settings", "parse_bool", "parse_platform_lines"]

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_MAX_PLAYBACK_URL_TTL_S = 3600  # dashboard playback and download URLs live at most an hour
_MAX_WEBHOOK_URL_TTL_S = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(name: str, value: str) -> bool:
    """The one boolean parser: ``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case)."""
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{name} must be one of true/false, 1/0, yes/no, on/off, not {value!r}")


# --- What a declaration may carry besides pydantic's own Field arguments ---------------------------


@dataclass(frozen=True)
class Seconds:
    """The variable is a number of seconds from ``low`` to ``high``; the field a float or a timedelta."""

    low: float
    high: float


@dataclass(frozen=True)
class MiB:
    """The variable is a number of MiB (at least ``low``, if given); the field the bytes, an int."""

    low: float | None = None


@dataclass(frozen=True)
class EmptyIsUnset:
    """An empty value counts as unset (the default applies)."""


@dataclass(frozen=True)
class GeneratedSecret:
    """Unset or empty: read from, or generated once into, ``{CALLREC_VAR_DIR}/{filename}``."""

    filename: str


def _env(
    name: str,
    default: Any,
    description: str,
    *,
    section: str,
    shown: str | None = None,
    notes: str = "",
) -> Any:
    """A field read from the environment variable ``name``. ``shown``: the default as documented,
    when it is not simply the value; ``notes``: the documentation's notes column."""
    extra: dict[str, Any] = {"section": section, "notes": notes}
    if shown is not None:
        extra["shown"] = shown
    return Field(default=default, alias=name, description=description, json_schema_extra=extra)


_EMPTY = EmptyIsUnset()


class Settings(BaseModel):
    """The service's whole configuration, read once at start by :meth:`from_env`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # --- the service ---------------------------------------------------------------------------
    var_dir: str = _env(
        "CALLREC_VAR_DIR",
        "./var",
        "directory for the embedded database, the filesystem store and generated secrets",
        section="service",
        notes="the tests point it at a temp dir. Created on first use",
    )
    database_url: str = _env(
        "CALLREC_DATABASE_URL",
        None,
        "SQLAlchemy **async** URL: `sqlite+aiosqlite:///path` or "
        "`postgresql+asyncpg://user:pass@host:port/db`",
        section="service",
        shown="`sqlite+aiosqlite:///{CALLREC_VAR_DIR}/callrec.db`, i.e. `./var/callrec.db`",
        notes="`callrec serve` (and `worker`) migrate a SQLite database themselves. PostgreSQL needs "
        "`callrec migrate` (see operations.md). PostgreSQL connections use a pool of 10 with "
        "`pool_pre_ping`",
    )
    public_url: str = _env(
        "CALLREC_PUBLIC_URL",
        "http://127.0.0.1:8000",
        "the base URL at which Twilio and browsers reach this service",
        section="service",
        notes="see [the public URL](#the-public-url). A trailing `/` is removed",
    )
    twilio_account_sid: str = _env(
        "TWILIO_ACCOUNT_SID",
        "",
        "the Twilio account (`AC…`)",
        section="service",
        notes="used for REST calls and media downloads",
    )
    twilio_auth_token_secret: SecretStr = _env(
        "TWILIO_AUTH_TOKEN",
        SecretStr(""),
        "the Twilio auth token",
        section="service",
        notes="the REST credential **and** the key that `X-Twilio-Signature` is checked with. While it "
        "is empty, every Twilio callback is refused with 403",
    )
    twilio_api_base: str = _env(
        "CALLREC_TWILIO_API_BASE",
        "https://api.twilio.com",
        "Twilio REST base URL",
        section="service",
        notes="the tests point it at the local Twilio stand-in. When it is not Twilio's own origin, "
        "every SDK request is rewritten to it. Media is downloaded with the credentials only from "
        "this origin",
    )
    agent_stream_url: str = _env(
        "CALLREC_AGENT_STREAM_URL",
        "wss://agent.invalid/stream",
        "the voice agent's media-stream URL, put into the TwiML `<Stream url=…>`",
        section="service",
        notes="the default is deliberately unreachable",
    )
    platform_lines: dict[str, CallKind] = _env(
        "CALLREC_PLATFORM_LINES",
        {},
        "the platform's own discovery and support numbers",
        section="service",
        shown="empty (none)",
        notes="see [`CALLREC_PLATFORM_LINES`](#callrec_platform_lines)",
    )
    max_pause_s: Annotated[float, Seconds(1, 86400)] = _env(
        "CALLREC_MAX_PAUSE_S",
        300.0,
        "a paused recording nobody resumes is resumed automatically after this many seconds",
        section="service",
        notes="Checked every second by the `pause-limit` loop (`callrec serve` and `callrec worker`); "
        "each automatic resume is logged and audited",
    )
    pause_behavior: Literal["silence", "skip"] = _env(
        "CALLREC_PAUSE_BEHAVIOR",
        "silence",
        "what a paused stretch becomes in the audio: `silence` (the timeline stays true) or `skip`",
        section="service",
        notes="Twilio's `PauseBehavior`",
    )
    storage: str = _env(
        "CALLREC_STORAGE",
        "filesystem",
        "`filesystem` or `s3`",
        section="service",
        notes="`s3`: see [S3](#s3)",
    )
    storage_dir: Path = _env(
        "CALLREC_STORAGE_DIR",
        None,
        "root of the filesystem store",
        section="service",
        shown="`{CALLREC_VAR_DIR}/recordings`",
        notes="holds `objects/<key>` (the audio) and `meta/<key>.json` (content type, metadata, size, "
        "SHA-256)",
    )
    playback_url_ttl: Annotated[timedelta, Seconds(1, _MAX_PLAYBACK_URL_TTL_S)] = _env(
        "CALLREC_PLAYBACK_URL_TTL_S",
        timedelta(minutes=15),
        "lifetime in seconds of the signed URL that the recording redirects "
        "(`/api/v1/calls/{id}/recording`, `/api/v1/admin/calls/{id}/recording`, "
        "`/dashboard/calls/{id}/audio`) point to",
        section="service",
    )
    archive_recheck_source: bool = _env(
        "CALLREC_ARCHIVE_RECHECK_SOURCE",
        True,
        "before an archive counts as verified, read Twilio's copy a second time and compare size and SHA-256",
        section="service",
        notes="catches a download that arrived whole but corrupted. Costs a second download per recording",
    )
    twilio_max_attempts: int = _env(
        "CALLREC_TWILIO_MAX_ATTEMPTS",
        4,
        "attempts per Twilio REST call (and per media open) inside the adapter, before the error goes "
        "to the outbox's slower retry",
        section="service",
        notes="stop, delete, list and media open are retried on network errors, 429 and 5xx; start only "
        "on 429. No other 4xx is repeated, and a 404 on a call's recording list means Twilio holds none "
        "of them",
    )
    twilio_retry_base_s: float = _env(
        "CALLREC_TWILIO_RETRY_BASE_S",
        0.5,
        "base of that backoff: `rand(0,1) \u00d7 min(8, base \u00d7 2^(n-1))` seconds",
        section="service",
    )
    twilio_max_retry_after_s: float = _env(
        "CALLREC_TWILIO_MAX_RETRY_AFTER_S",
        30.0,
        "a Twilio `Retry-After` longer than this is not waited for in the adapter; the call fails to "
        "the outbox",
        section="service",
        shown="`30`",
    )
    max_body_bytes: int = _env(
        "CALLREC_MAX_BODY_BYTES",
        1024 * 1024,
        "largest request body accepted",
        section="service",
        shown="`1048576` (1 MiB)",
        notes="larger bodies get 413. Form routes (`/twilio/*`, `/dashboard/session`, "
        "`/dashboard/sign-out`, `/dashboard/settings`) take at most 64 KiB and 100 fields, none "
        "repeated, whatever this says",
    )
    outbox_max_attempts: int = _env(
        "CALLREC_OUTBOX_MAX_ATTEMPTS",
        10,
        "in-process bus: attempts at an event before its outbox row is dead-lettered (`callrec dlq list`)",
        section="service",
        notes="Kafka mode ignores it (consumers use `CALLREC_KAFKA_MAX_ATTEMPTS`)",
    )
    relay_retry_base_s: float = _env(
        "CALLREC_RELAY_RETRY_BASE_S",
        1.0,
        "base of the outbox relay's exponential backoff",
        section="service",
        notes='the e2e tests set `0.2`. See consistency.md, "The transactional outbox"',
    )

    log_level: str = _env(
        "CALLREC_LOG_LEVEL",
        "INFO",
        "level of the service's own log lines (`DEBUG`, `INFO`, `WARNING`, `ERROR`)",
        section="service",
        notes="lines are JSON (see operations.md). Third-party libraries log at `WARNING` unless "
        "`CALLREC_LOG_LEVELS` says otherwise",
    )
    log_levels: dict[str, str] = _env(
        "CALLREC_LOG_LEVELS",
        {},
        "per-logger levels, e.g. `twilio=INFO,aiokafka=DEBUG`",
        section="service",
        shown="empty (none)",
        notes="a logger's level also applies to the loggers below it (`twilio` covers `twilio.http_client`)",
    )
    metrics_port: int = _env(
        "CALLREC_METRICS_PORT",
        0,
        "`callrec worker`: port of its own Prometheus `/metrics` (archives, webhook tries); `0`: none",
        section="service",
        notes="0\u201365535. `callrec serve` serves `/metrics` on its HTTP port",
    )
    ready_timeout_s: Annotated[float, Seconds(0.1, 30)] = _env(
        "CALLREC_READY_TIMEOUT_S",
        2.0,
        "how long `/readyz` waits for each dependency (database, broker, store) to answer",
        section="service",
    )

    # --- webhooks --------------------------------------------------------------------------------
    webhook_allow_private_networks: bool = _env(
        "CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        False,
        "`true` allows webhook URLs with plain `http` and with loopback, private, link-local (cloud "
        "metadata) and other non-public addresses",
        section="webhooks",
        notes="for development and tests only. When it is on, `callrec serve` and `callrec worker` log "
        "a warning three times at start (`!!! CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true: …`). "
        "Addresses are still resolved once and pinned",
    )
    scorability_wait_s: float = _env(
        "CALLREC_SCORABILITY_WAIT_S",
        0.0,
        "how long after its end a call without a scorability verdict waits before it is settled and "
        "`call.ended` is sent",
        section="webhooks",
        shown="`0`",
        notes="a verdict that arrives later still cancels the tries not made yet",
    )
    instant_hangup_s: Annotated[float, Seconds(0, 60)] = _env(
        "CALLREC_INSTANT_HANGUP_S",
        3.0,
        "answered and then ended within this many seconds counts as an instant hangup: "
        "non-engagement, so no `call.ended`",
        section="webhooks",
        notes="Both our clock and Twilio's `CallDuration` must say so, and a recording must not be "
        "longer. Without a `CallDuration` from Twilio a call is never an instant hangup",
    )
    webhook_url_ttl: Annotated[timedelta, Seconds(1, _MAX_WEBHOOK_URL_TTL_S)] = _env(
        "CALLREC_WEBHOOK_URL_TTL_S",
        timedelta(hours=24),
        "lifetime of the signed `recording_url` in a `call.ended` body; minted again for every try",
        section="webhooks",
        notes="(7 days, SigV4's limit). With S3 and temporary credentials the URL dies with the "
        "credentials (see storage.md)",
    )
    webhook_timeout_s: Annotated[float, Seconds(0.1, 60)] = _env(
        "CALLREC_WEBHOOK_TIMEOUT_S",
        15.0,
        "deadline of one try, from connecting to the last byte",
        section="webhooks",
        notes="A sender's lease on a delivery is `2 \u00d7 timeout + 30` s",
    )
    webhook_poll_interval_s: Annotated[float, Seconds(0.05, 60)] = _env(
        "CALLREC_WEBHOOK_POLL_S",
        1.0,
        "how often the scheduler looks for due tries (new deliveries also wake it at once)",
        section="webhooks",
    )

    # --- secrets -----------------------------------------------------------------------------------
    jwt_secret_value: Annotated[SecretStr, GeneratedSecret("jwt_secret")] = _env(
        "CALLREC_JWT_SECRET",
        None,
        "HS256 key of dashboard tokens (`/api/v1/*` bearer, `/dashboard/*` cookie); `callrec token` "
        "signs with it",
        section="secrets",
    )
    service_token_value: Annotated[SecretStr, GeneratedSecret("service_token")] = _env(
        "CALLREC_SERVICE_TOKEN",
        None,
        "the bearer token that platform services present on `/internal/v1/*`",
        section="secrets",
    )
    media_signing_key_value: Annotated[SecretStr, GeneratedSecret("media_signing_key")] = _env(
        "CALLREC_MEDIA_SIGNING_KEY",
        None,
        "HMAC-SHA256 key of the filesystem store's signed `/media/…` URLs (unused with S3)",
        section="secrets",
    )
    webhook_secret_key_value: Annotated[SecretStr, GeneratedSecret("webhook_secret_key")] = _env(
        "CALLREC_WEBHOOK_SECRET_KEY",
        None,
        "key material that encrypts the endpoints' `whsec_…` signing secrets at rest (Fernet)",
        section="secrets",
        notes="A comma-separated list rotates: the first key encrypts, all of them decrypt. "
        "**Losing it makes every endpoint's secret unreadable**",
    )

    # --- S3 ------------------------------------------------------------------------------------------
    s3_bucket: Annotated[str | None, _EMPTY] = _env(
        "CALLREC_S3_BUCKET",
        None,
        "bucket for recordings; required with `CALLREC_STORAGE=s3`",
        section="s3",
    )
    s3_region: str = _env(
        "CALLREC_S3_REGION",
        "us-east-1",
        "region",
        section="s3",
        notes="the product supports no other today",
    )
    s3_endpoint_url: Annotated[str | None, _EMPTY] = _env(
        "CALLREC_S3_ENDPOINT_URL",
        None,
        "endpoint of an S3-compatible server (MinIO, moto); unset for AWS",
        section="s3",
    )
    s3_public_endpoint_url: Annotated[str | None, _EMPTY] = _env(
        "CALLREC_S3_PUBLIC_ENDPOINT_URL",
        None,
        "the S3 host that browsers reach, when it differs from the endpoint (presigned URLs are signed "
        "for it)",
        section="s3",
    )
    s3_platform_bucket: Annotated[str | None, _EMPTY] = _env(
        "CALLREC_S3_PLATFORM_BUCKET",
        None,
        "a separate bucket for `platform/…` keys",
        section="s3",
        shown="none (the main bucket)",
    )
    s3_sse: Annotated[str, _EMPTY] = _env(
        "CALLREC_S3_SSE",
        None,
        "server-side encryption: `AES256` or `aws:kms`",
        section="s3",
        shown="`aws:kms` when a KMS key is set, else `AES256`",
    )
    s3_kms_key_id: Annotated[str | None, _EMPTY] = _env(
        "CALLREC_S3_KMS_KEY_ID", None, "KMS key for `aws:kms`", section="s3"
    )
    s3_part_size: Annotated[int, MiB(5)] = _env(
        "CALLREC_S3_PART_SIZE_MB",
        8 * _MIB,
        "multipart part size",
        section="s3",
        notes="S3's minimum part size",
    )
    s3_multipart_threshold: Annotated[int, MiB()] = _env(
        "CALLREC_S3_MULTIPART_THRESHOLD_MB",
        8 * _MIB,
        "recordings up to this size go up in one `PutObject`",
        section="s3",
    )
    s3_upload_concurrency: int = _env(
        "CALLREC_S3_UPLOAD_CONCURRENCY", 4, "parts in flight per archive", section="s3"
    )
    s3_max_attempts: int = _env(
        "CALLREC_S3_MAX_ATTEMPTS",
        5,
        "attempts per S3 request (botocore `standard` retry mode)",
        section="s3",
    )
    s3_addressing_style: Annotated[str | None, _EMPTY] = _env(
        "CALLREC_S3_ADDRESSING_STYLE",
        None,
        "`path`, `virtual` or `auto`",
        section="s3",
        shown="`path` with an endpoint URL, else `auto`",
    )

    # --- the reconciliation sweep --------------------------------------------------------------------
    reconcile_interval_s: Annotated[float, Seconds(0, 86400)] = _env(
        "CALLREC_RECONCILE_INTERVAL_S",
        300.0,
        "how often the periodic sweep runs: in `callrec serve` on the in-process bus, and in each "
        "`callrec worker` with `CALLREC_BUS=kafka`; `0` turns it off",
        section="reconcile",
    )
    reconcile_stuck_after: Annotated[timedelta, Seconds(0.1, 30 * 86400)] = _env(
        "CALLREC_RECONCILE_STUCK_AFTER_S",
        timedelta(minutes=15),
        "a recording whose row has not changed for this long counts as stuck",
        section="reconcile",
    )

    # --- Kafka ------------------------------------------------------------------------------------------
    bus: str = _env(
        "CALLREC_BUS",
        "inprocess",
        "`inprocess`: events are handled inside `callrec serve`. `kafka`: the relay publishes to "
        "Kafka, and `callrec worker` consumes",
        section="kafka",
    )
    kafka_bootstrap: str = _env(
        "CALLREC_KAFKA_BOOTSTRAP", "localhost:9092", "bootstrap servers", section="kafka"
    )
    kafka_topic_prefix: str = _env(
        "CALLREC_KAFKA_TOPIC_PREFIX",
        "",
        "prefix for every topic name (empty in production, so that names are exactly those in events.md)",
        section="kafka",
    )
    kafka_group_prefix: str = _env(
        "CALLREC_KAFKA_GROUP_PREFIX",
        "callrec.",
        "a consumer group's name is `{prefix}{consumer}`, e.g. `callrec.archive`",
        section="kafka",
    )
    kafka_partitions: int = _env(
        "CALLREC_KAFKA_PARTITIONS", 6, "partitions of the topics the service creates", section="kafka"
    )
    kafka_replication: int = _env(
        "CALLREC_KAFKA_REPLICATION",
        1,
        "replication factor of the topics the service creates",
        section="kafka",
    )
    kafka_max_attempts: int = _env(
        "CALLREC_KAFKA_MAX_ATTEMPTS",
        5,
        "attempts per message before it goes to `callrec.dlq.v1`",
        section="kafka",
    )
    kafka_retry_backoff_s: float = _env(
        "CALLREC_KAFKA_RETRY_BACKOFF_S",
        1.0,
        "first pause between attempts (doubling, capped at 30 s)",
        section="kafka",
    )
    kafka_message_time_limit_s: float = _env(
        "CALLREC_KAFKA_MESSAGE_TIME_LIMIT_S",
        120.0,
        "time that one message may take, all attempts included; must stay below the poll interval",
        section="kafka",
        shown="`120`",
    )
    kafka_max_poll_interval_ms: int = _env(
        "CALLREC_KAFKA_MAX_POLL_INTERVAL_MS", 300_000, "consumer `max_poll_interval_ms`", section="kafka"
    )
    kafka_session_timeout_ms: int = _env(
        "CALLREC_KAFKA_SESSION_TIMEOUT_MS",
        2_000,
        "consumer session timeout (the heartbeat is `min(3000, session/3)` ms): how long a killed "
        "worker's partitions wait before they move",
        section="kafka",
        notes="Apache Kafka refuses less than its `group.min.session.timeout.ms` (6000 by default)",
    )
    relay_lease_s: float = _env(
        "CALLREC_RELAY_LEASE_S",
        30.0,
        "how long a relay leases the outbox rows it is publishing (Kafka mode only)",
        section="kafka",
        shown="`30`",
    )

    # --- reading --------------------------------------------------------------------------------------

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        try:
            return cls.model_validate(env)
        except ValidationError as error:
            raise ValueError(_explain(error)) from None

    @model_validator(mode="before")
    @classmethod
    def _from_strings(cls, data: Any) -> Any:
        """Environment strings to field values: units, ranges, booleans, empty-means-unset, secrets."""
        if not isinstance(data, dict):
            return data
        env: dict[str, Any] = dict(data)
        var_spec = str(env.get("CALLREC_VAR_DIR", "./var")).rstrip("/") or "."
        env["CALLREC_VAR_DIR"] = var_spec
        to_generate: list[tuple[str, str]] = []
        for name, info in cls.model_fields.items():
            alias = info.alias or name
            value = env.get(alias)
            if _marker(info, EmptyIsUnset) and not value:
                env.pop(alias, None)
                continue
            if isinstance(generated := _marker(info, GeneratedSecret), GeneratedSecret):
                if not value:
                    to_generate.append((alias, generated.filename))
                continue
            if not isinstance(value, str):
                continue
            if info.annotation is bool:
                if value.strip():
                    env[alias] = parse_bool(alias, value)
                else:
                    env.pop(alias)  # empty: the default, as before
            elif isinstance(seconds := _marker(info, Seconds), Seconds):
                number = _number(alias, value)
                if not seconds.low <= number <= seconds.high:
                    low, high = seconds.low, seconds.high
                    raise ValueError(f"{alias} must be between {low:g} and {high:g} seconds, not {number:g}")
                env[alias] = timedelta(seconds=number) if info.annotation is timedelta else number
            elif isinstance(mib := _marker(info, MiB), MiB):
                size = int(_number(alias, value) * _MIB)
                if mib.low is not None and size < mib.low * _MIB:
                    raise ValueError(f"{alias} must be at least {mib.low:g} (S3's minimum part size)")
                env[alias] = size
            elif info.annotation is int:
                env[alias] = _number(alias, value, int)
            elif info.annotation is float:
                env[alias] = _number(alias, value)
        env.setdefault("CALLREC_DATABASE_URL", f"sqlite+aiosqlite:///{var_spec}/callrec.db")
        env.setdefault("CALLREC_STORAGE_DIR", str(Path(var_spec) / "recordings"))
        if env.get("CALLREC_BUS", "inprocess") not in {"inprocess", "kafka"}:
            raise ValueError("CALLREC_BUS must be inprocess or kafka")
        storage = env.get("CALLREC_STORAGE", "filesystem")
        if storage not in {"filesystem", "s3"}:
            raise ValueError("CALLREC_STORAGE must be filesystem or s3")
        if storage == "s3" and env.get("CALLREC_S3_BUCKET") is None:
            raise ValueError("CALLREC_S3_BUCKET is required when CALLREC_STORAGE=s3")
        kms_key_id = env.get("CALLREC_S3_KMS_KEY_ID")
        sse = env.setdefault("CALLREC_S3_SSE", "aws:kms" if kms_key_id else "AES256")
        if sse not in {"AES256", "aws:kms"}:
            raise ValueError("CALLREC_S3_SSE must be AES256 or aws:kms")
        if kms_key_id and sse != "aws:kms":
            raise ValueError("CALLREC_S3_KMS_KEY_ID needs CALLREC_S3_SSE=aws:kms")
        for alias, filename in to_generate:  # last, so that a bad setting generates none
            env[alias] = _generated_secret(alias, Path(var_spec), filename)
        return env

    @field_validator("public_url", "twilio_api_base")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        return _level("CALLREC_LOG_LEVEL", value)

    @field_validator("log_levels", mode="before")
    @classmethod
    def _log_levels(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        levels = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, found, level = item.partition("=")
            if not found or not name.strip():
                raise ValueError(f"CALLREC_LOG_LEVELS must read logger=LEVEL,…, not {item!r}")
            levels[name.strip()] = _level("CALLREC_LOG_LEVELS", level)
        return levels

    @field_validator("metrics_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError(f"CALLREC_METRICS_PORT must be between 0 and 65535, not {value}")
        return value

    @field_validator("platform_lines", mode="before")
    @classmethod
    def _platform_lines(cls, value: Any) -> Any:
        return parse_platform_lines(value) if isinstance(value, str) else value

    # --- the secrets' plain values, where they are used ---------------------------------------------

    @property
    def twilio_auth_token(self) -> str:
        return self.twilio_auth_token_secret.get_secret_value()

    @property
    def jwt_secret(self) -> str:
        return self.jwt_secret_value.get_secret_value()

    @property
    def service_token(self) -> str:
        return self.service_token_value.get_secret_value()

    @property
    def media_signing_key(self) -> str:
        return self.media_signing_key_value.get_secret_value()

    @property
    def webhook_secret_key(self) -> str:
        return self.webhook_secret_key_value.get_secret_value()

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
            max_pause=timedelta(seconds=self.max_pause_s),
            pause_behavior=self.pause_behavior,
        )


def _number(name: str, value: str, kind: type[float] | type[int] = float) -> Any:
    """Python's own ``float()`` / ``int()``, as before, with an error that names the variable."""
    try:
        return kind(value)
    except ValueError:
        article = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {article}, not {value!r}") from None


def _level(name: str, value: str) -> str:
    level = value.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError(f"{name}: {value!r} is not a level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")
    return level


def _marker(info: FieldInfo, kind: type) -> Any:
    return next((m for m in info.metadata if isinstance(m, kind)), None)


def _generated_secret(name: str, var_dir: Path, filename: str) -> str:
    """The secret kept under ``var_dir``, generated there once."""
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


def _explain(error: ValidationError) -> str:
    """One line per bad variable, naming it; never a secret's value."""
    lines = []
    for item in error.errors(include_url=False):
        name = ".".join(str(part) for part in item["loc"])
        if item["type"] == "value_error":  # our own messages name the variable
            lines.append(str(item["ctx"]["error"]))
        elif "Secret" in item["type"] or name.endswith(("SECRET", "TOKEN", "KEY")):
            lines.append(f"{name}: {item['msg']}")
        else:
            lines.append(f"{name}: {item['msg']}, not {item['input']!r}")
    return "; ".join(lines)


# --- docs/configuration.md ------------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
SECTIONS = ("service", "webhooks", "secrets", "s3", "reconcile", "kafka")


def variables() -> dict[str, FieldInfo]:
    """Every environment variable the service reads, by name."""
    return {info.alias or name: info for name, info in Settings.model_fields.items()}


def _shown_default(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    assert isinstance(extra, dict)
    if "shown" in extra:
        return str(extra["shown"])
    if _marker(info, GeneratedSecret) is not None:
        generated = _marker(info, GeneratedSecret)
        return f"generated, kept in `{{CALLREC_VAR_DIR}}/{generated.filename}`"
    default = info.default
    if isinstance(default, SecretStr):
        default = default.get_secret_value()
    if default is None:
        return "none"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, timedelta):
        default = default.total_seconds()
    if isinstance(_marker(info, MiB), MiB):
        default = default / _MIB
    if isinstance(default, float) and (_marker(info, Seconds) or _marker(info, MiB)):
        return f"`{_plain(default)}`"
    if default == "":
        return "empty"
    return f"`{default}`"


def _plain(number: float) -> str:
    """``3``, ``0.5``, ``2592000``: no exponent, no needless ``.0``."""
    return str(int(number)) if float(number).is_integer() else str(number)


def _notes(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    assert isinstance(extra, dict)
    parts = []
    if isinstance(seconds := _marker(info, Seconds), Seconds):
        parts.append(f"{_plain(seconds.low)}\u2013{_plain(seconds.high)}")
    if isinstance(mib := _marker(info, MiB), MiB) and mib.low is not None:
        parts.append(f"at least {mib.low:g}")
    notes = str(extra.get("notes", ""))
    if notes:
        parts.append(notes)
    return ". ".join(parts) if not notes.startswith("(") else " ".join(parts)


def markdown_table(section: str) -> str:
    rows = ["| variable | meaning | default | notes |", "|---|---|---|---|"]
    for name, info in variables().items():
        extra = info.json_schema_extra
        assert isinstance(extra, dict)
        if extra["section"] == section:
            notes = _notes(info)
            rows.append(
                f"| `{name}` | {info.description} | {_shown_default(info)} | {notes} |".replace("|  |", "| |")
            )
    return "\n".join(rows)


def render(document: str) -> str:
    """``document`` with the text between each ``<!-- settings:NAME -->`` and
    ``<!-- /settings:NAME -->`` pair replaced by the table generated for that section."""
    for section in SECTIONS:
        start, end = f"<!-- settings:{section} -->", f"<!-- /settings:{section} -->"
        head, found, rest = document.partition(start)
        if not found or end not in rest:
            raise ValueError(f"docs/configuration.md lacks the markers {start} … {end}")
        _, _, tail = rest.partition(end)
        document = f"{head}{start}\n{markdown_table(section)}\n{end}{tail}"
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="docs/configuration.md's tables, from Settings")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="rewrite the tables in docs/configuration.md")
    group.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is stale")
    args = parser.parse_args(argv)
    current = DOC.read_text()
    rendered = render(current)
    if args.check:
        if rendered != current:
            print(
                "docs/configuration.md is stale: run python -m entrypoints.config --markdown", file=sys.stderr
            )
            return 1
        return 0
    DOC.write_text(rendered)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
