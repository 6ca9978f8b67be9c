"""The relational schema, shared by SQLite and PostgreSQL. Alembic migrations create it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python; ``timestamptz`` on PostgreSQL, naive UTC text on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(36)

organizations = Table(
    "organizations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("greeting", Text, nullable=False),
    Column("recording_enabled", Boolean, nullable=False),
    Column("recording_changed_by", String(200)),
    Column("recording_changed_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    # {number: {"mode", "changed_by", "changed_at"}}: the numbers someone set on, off or inherit
    Column("number_recording", Text, nullable=False, server_default="{}"),
    Column("retention_days", Integer),  # None: kept indefinitely (migration 0017)
    # Keep recordings of calls the scorability filter marks non-engagement (migration 0019).
    Column("keep_non_engagement", Boolean, nullable=False, server_default=true()),
)

organization_phone_numbers = Table(
    "organization_phone_numbers",
    metadata,
    Column("number", String(32), primary_key=True),
    Column(
        "org_id", String(64), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    ),
)

calls = Table(
    "calls",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", String(64), nullable=True),
    Column("kind", String(16), nullable=False),
    Column("call_sid", String(64), nullable=False, unique=True),
    Column("account_sid", String(64), nullable=False),
    # Caller addresses are E.164 numbers, "anonymous", or client:/sip: addresses (migration 0011).
    Column("from_number", String(255), nullable=False),
    Column("to_number", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("answered_at", UTCDateTime),
    Column("ended_at", UTCDateTime),
    Column("duration_s", Integer),
    Column("greeting", Text, nullable=False),
    Column("recorded", Boolean, nullable=False),
    Column("disclosure_text", Text),
    Column("disclosure_version", String(32)),
    Column("disclosed_at", UTCDateTime),
    Column("recording_id", ID),
    Column("scorable", Boolean),
    Column("scorability_reason", String(200)),
    Column("transfer_stage", String(16)),
    Column("version", Integer, nullable=False),
    Column("settled_at", UTCDateTime),  # ended and its recording settled: call.ended (migration 0010)
    # legal hold (migration 0017): who placed it, why and when; null when the call is not held
    Column("legal_hold_held_by", String(200)),
    Column("legal_hold_reason", Text),
    Column("legal_hold_held_at", UTCDateTime),
    Column("audio_purged_at", UTCDateTime),
    # What the list shows of its recording (available | processing | not_recorded | failed), kept in
    # step by the unit of work with the call and its own recording: no column of the Call (migration 0014).
    Column("recording_state", String(16), nullable=False),
    Column("non_engagement_reason", String(200)),  # what CallSettled said (migration 0020)
    # Keyset pagination per org and kind, newest first; and the same per recording state (the filter).
    Index("ix_calls_org_kind_started", "org_id", "kind", "started_at", "id"),
    Index("ix_calls_org_kind_recording_state", "org_id", "kind", "recording_state", "started_at", "id"),
    Index("ix_calls_org_kind_from_started", "org_id", "kind", "from_number", "started_at", "id"),  # caller
    # Calls still to be settled (their scorability wait, or a lost event).
    Index("ix_calls_settling", "settled_at", "ended_at"),
)

recordings = Table(
    "recordings",
    metadata,
    Column("id", ID, primary_key=True),
    # Not unique: a call may have more than one recording at Twilio (migration 0012). The call's own
    # is ``calls.recording_id``; the others are its additional recordings.
    Column("call_id", ID, ForeignKey("calls.id"), nullable=False, index=True),
    Column("org_id", String(64), nullable=True, index=True),
    Column("kind", String(16), nullable=False),
    Column("call_sid", String(64), nullable=False),
    Column("recording_sid", String(64), unique=True),
    Column("status", String(16), nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("call_started_at", UTCDateTime, nullable=False),
    Column("media_url", Text),
    Column("duration_s", Integer),
    Column("completed_at", UTCDateTime),
    Column("storage_key", Text),
    Column("size_bytes", BigInteger),
    Column("sha256", String(64)),
    Column("content_type", String(100)),
    Column("archived_at", UTCDateTime),
    Column("twilio_deleted_at", UTCDateTime),
    Column("error_code", String(32)),
    Column("failure_reason", Text),
    Column("discard_reason", String(32)),  # deleted at Twilio unarchived, and why (migration 0012)
    Column("version", Integer, nullable=False),
    Column("updated_at", UTCDateTime),  # set on every write: how long a recording has sat in its state
    # purged audio (migration 0017): when and why; when every copy was gone
    Column("purged_at", UTCDateTime),
    Column("purge_reason", String(16)),
    Column("audio_deleted_at", UTCDateTime),
    Index("ix_recordings_status_updated", "status", "updated_at"),
    # Its pauses, as JSON (a handful at most, always read and written with the recording), and when
    # the pause in force began (none: not paused), for the automatic resume (migration 0018).
    Column("pauses", Text, nullable=False, server_default=text("'[]'")),
    Column("paused_since", UTCDateTime, index=True),
    Index("ix_recordings_org_call_started", "org_id", "call_started_at", "id"),  # the purge pass
)

outbox = Table(
    "outbox",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", ID, nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("aggregate_type", String(32), nullable=False),
    Column("aggregate_id", String(64), nullable=False),
    Column("org_id", String(64)),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text),
    # Set when the in-process relay gave up after CALLREC_OUTBOX_MAX_ATTEMPTS (migration 0011).
    Column("dead_at", UTCDateTime),
    # A relay's lease on a message it is publishing (several relays on PostgreSQL, issue 4).
    Column("claimed_by", String(64)),
    Column("claimed_until", UTCDateTime),
    Index("ix_outbox_pending", "published_at", "next_attempt_at", "seq"),
    # The relay's "no earlier event of this aggregate still pending" check (migration 0015).
    Index(
        "ix_outbox_pending_by_aggregate",
        "aggregate_id",
        "seq",
        postgresql_where=text("published_at IS NULL AND dead_at IS NULL"),
        sqlite_where=text("published_at IS NULL AND dead_at IS NULL"),
    ),
)

processed_messages = Table(
    "processed_messages",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("event_id", ID, primary_key=True),
    Column("processed_at", UTCDateTime, nullable=False),
)

# --- webhooks (migration 0010) ------------------------------------------------------------------

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_types", Text, nullable=False),  # JSON list
    Column("secrets", Text, nullable=False),  # JSON list of sealed secrets with their expiry
    Column("status", String(16), nullable=False),
    Column("disabled_reason", Text),
    Column("disabled_at", UTCDateTime),
    Column("failing_since", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime),
    Column("version", Integer, nullable=False),
    Index("ix_webhook_endpoints_org", "org_id", "status"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", ID, primary_key=True),
    Column("endpoint_id", ID, ForeignKey("webhook_endpoints.id"), nullable=False),
    Column("org_id", String(64), nullable=False),
    Column("message_id", ID, nullable=False),  # the webhook-id header: the event's id
    Column("event_type", String(64), nullable=False),
    Column("call_id", ID),
    Column("payload", Text, nullable=False),
    Column("recording_key", Text),
    Column("status", String(16), nullable=False),
    Column("attempt_count", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime),
    Column("claimed_until", UTCDateTime),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),
    Column("version", Integer, nullable=False),
    UniqueConstraint("endpoint_id", "message_id", name="uq_webhook_deliveries_endpoint_message"),
    Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at", "id"),
    Index("ix_webhook_deliveries_call", "call_id"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("delivery_id", ID, ForeignKey("webhook_deliveries.id"), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Integer, nullable=False),
    Column("error", Text),
    Column("next_attempt_at", UTCDateTime),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", ID, primary_key=True),
    # The hash chain (domain.audit): seq from 1, each entry's hash covers the previous one's.
    Column("seq", BigInteger, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("actor_role", String(32), nullable=False),
    Column("action", String(32), nullable=False),
    Column("reason", Text),  # required of the operations team
    Column("org_id", String(64)),
    Column("call_id", ID),
    Column("call_kind", String(16)),
    Column("target_id", ID),
    Column("request_id", String(64)),
    Column("source_address", String(64)),
    Column("outcome", String(16), nullable=False),
    UniqueConstraint("seq"),
    Index("ix_audit_log_org_time", "org_id", "occurred_at"),
)

# --- erasure by caller (migration 0019) ----------------------------------------------------------

erasure_requests = Table(
    "erasure_requests",
    metadata,
    Column("id", ID, primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("caller_number", String(32)),  # cleared once the request is completed
    Column("reason", Text, nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),
    Column("erased_call_ids", Text, nullable=False),  # JSON list
    Column("held_call_ids", Text, nullable=False),  # JSON list: skipped under legal hold
    Column("recordings_purged", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Index("ix_erasure_requests_org", "org_id", "requested_at"),
)
