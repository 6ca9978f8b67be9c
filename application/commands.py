"""Commands: imperative requests, each with exactly one handler that raises on failure."""

from __future__ import annotations

from dataclasses import dataclass

from domain.audit import AuditActor
from domain.model import CallStatus, NumberRecordingMode, ProviderRecordingStatus, StreamEvent


class Command:
    """Marker base class."""


@dataclass(frozen=True)
class UpsertOrganization(Command):
    org_id: str
    name: str
    phone_numbers: list[str]
    greeting: str


@dataclass(frozen=True)
class SetCallRecording(Command):
    org_id: str
    enabled: bool
    changed_by: str
    actor: AuditActor | None = None  # for the audit log; None: ``changed_by``, as the service itself
    keep_non_engagement: bool | None = None  # None: unchanged


@dataclass(frozen=True)
class SetNumberRecording(Command):
    org_id: str
    number: str
    mode: NumberRecordingMode
    changed_by: str
    actor: AuditActor | None = None  # for the audit log; None: ``changed_by``, as the service itself


@dataclass(frozen=True)
class StartCall(Command):
    call_sid: str
    account_sid: str
    from_number: str
    to_number: str


@dataclass(frozen=True)
class RecordStreamEvent(Command):
    call_sid: str
    stream_sid: str
    event: StreamEvent


@dataclass(frozen=True)
class RecordRecordingStatus(Command):
    call_sid: str
    recording_sid: str
    status: ProviderRecordingStatus
    media_url: str | None = None
    duration_s: int | None = None
    error_code: str | None = None


@dataclass(frozen=True)
class EndCall(Command):
    call_sid: str
    status: CallStatus
    duration_s: int | None = None


@dataclass(frozen=True)
class RecordScorability(Command):
    call_id: str
    scorable: bool
    reason: str | None


@dataclass(frozen=True)
class TransferCall(Command):
    call_id: str
    stage: str  # started | completed


@dataclass(frozen=True)
class RegisterWebhookEndpoint(Command):
    org_id: str
    url: str
    event_types: list[str]
    actor: AuditActor | None = None  # for the audit log


@dataclass(frozen=True)
class DeleteWebhookEndpoint(Command):
    org_id: str
    endpoint_id: str
    actor: AuditActor | None = None  # for the audit log


@dataclass(frozen=True)
class RotateWebhookSecret(Command):
    org_id: str
    endpoint_id: str
    actor: AuditActor | None = None  # for the audit log


@dataclass(frozen=True)
class RetryWebhookDelivery(Command):
    org_id: str
    endpoint_id: str
    delivery_id: str


@dataclass(frozen=True)
class PauseRecording(Command):
    """Pause the call's recording for a sensitive moment (card data); ``ResumeRecording`` ends it."""

    call_id: str
    actor: AuditActor | None = None  # for the audit log; None: the platform service


@dataclass(frozen=True)
class ResumeRecording(Command):
    call_id: str
    actor: AuditActor | None = None  # for the audit log; None: the platform service


@dataclass(frozen=True)
class SetRetention(Command):
    """Keep the org's recordings ``days`` days (1 to 3650), or indefinitely (None)."""

    org_id: str
    days: int | None
    changed_by: str
    actor: AuditActor | None = None


@dataclass(frozen=True)
class SetLegalHold(Command):
    """Place (``held``, with a reason) or release the legal hold of one of the org's calls."""

    org_id: str
    call_id: str
    held: bool
    reason: str
    by: str
    actor: AuditActor | None = None


@dataclass(frozen=True)
class RequestErasure(Command):
    """Erase one caller's data in the org: ``application.erasure``."""

    org_id: str
    caller_number: str
    reason: str
    actor: AuditActor


@dataclass(frozen=True)
class SetNonEngagementPolicy(Command):
    """Keep (or delete once settled) recordings of calls the scorability filter marks non-engagement."""

    org_id: str
    keep_non_engagement: bool
    changed_by: str
    actor: AuditActor | None = None
