"""Domain events: facts, named in the past tense, recorded by aggregates.

Each event names its aggregate (``aggregate_type``, ``aggregate_id``) and the organization it belongs
to (``org_id``; None for the platform's own discovery and support lines). Events are msgspec Structs
so they serialize to the outbox and to Kafka without hand-written mapping.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar

import msgspec


def new_event_id() -> str:
    return str(uuid.uuid4())


class Event(msgspec.Struct, frozen=True, kw_only=True):
    aggregate_type: ClassVar[str] = ""
    id: str = msgspec.field(default_factory=new_event_id)
    occurred_at: datetime
    org_id: str | None

    @property
    def aggregate_id(self) -> str:
        raise NotImplementedError

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__


def log_context(event: Event) -> dict[str, str]:
    """What identifies an event on a log line: its id, and the call it is about if any."""
    context = {"event_id": event.id}
    call_id = getattr(event, "call_id", None)
    if call_id:
        context["call_id"] = call_id
    return context


# --- organizations ------------------------------------------------------------------------------


class OrganizationEvent(Event, frozen=True, kw_only=True):
    aggregate_type: ClassVar[str] = "organization"

    @property
    def aggregate_id(self) -> str:
        assert self.org_id is not None
        return self.org_id


class OrganizationCreated(OrganizationEvent, frozen=True, kw_only=True):
    name: str
    phone_numbers: list[str]


class OrganizationUpdated(OrganizationEvent, frozen=True, kw_only=True):
    name: str
    phone_numbers: list[str]


class RecordingSettingChanged(OrganizationEvent, frozen=True, kw_only=True):
    enabled: bool
    changed_by: str


class NumberRecordingChanged(OrganizationEvent, frozen=True, kw_only=True):
    """One of the org's numbers was set to ``on``, ``off`` or ``inherit``; ``effective`` is whether its
    next calls are recorded."""

    number: str
    mode: str
    effective: bool
    changed_by: str


class RetentionPolicyChanged(OrganizationEvent, frozen=True, kw_only=True):
    """How long the org's recordings are kept: ``days``, or indefinitely (None)."""

    days: int | None
    changed_by: str


class NonEngagementPolicyChanged(OrganizationEvent, frozen=True, kw_only=True):
    """Whether recordings of calls the scorability filter marks non-engagement are kept."""

    keep_non_engagement: bool
    changed_by: str


class WebhookEndpointDisabled(OrganizationEvent, frozen=True, kw_only=True):
    """One of the org's webhook endpoints stopped receiving deliveries (410 Gone, or failing for days)."""

    endpoint_id: str
    url: str
    reason: str


# --- calls --------------------------------------------------------------------------------------


class CallEvent(Event, frozen=True, kw_only=True):
    aggregate_type: ClassVar[str] = "call"
    call_id: str

    @property
    def aggregate_id(self) -> str:
        return self.call_id


class CallStarted(CallEvent, frozen=True, kw_only=True):
    call_sid: str
    kind: str
    from_number: str
    to_number: str
    recorded: bool
    disclosure_version: str | None


class CallAnswered(CallEvent, frozen=True, kw_only=True):
    call_sid: str


class CallEnded(CallEvent, frozen=True, kw_only=True):
    call_sid: str
    status: str
    duration_s: int | None


class CallScorabilityRecorded(CallEvent, frozen=True, kw_only=True):
    scorable: bool
    reason: str | None


class UnconsentedRecordingFound(CallEvent, frozen=True, kw_only=True):
    """Twilio reported audio for a call that was not to be recorded; it is discarded at Twilio."""

    call_sid: str
    recording_sid: str
    twilio_status: str


class LegalHoldPlaced(CallEvent, frozen=True, kw_only=True):
    """The call's audio is frozen: purge and erasure skip it until the hold is released."""

    held_by: str
    reason: str


class LegalHoldReleased(CallEvent, frozen=True, kw_only=True):
    released_by: str


class TransferStarted(CallEvent, frozen=True, kw_only=True):
    pass


class TransferCompleted(CallEvent, frozen=True, kw_only=True):
    call_sid: str


class CallSettled(CallEvent, frozen=True, kw_only=True):
    """The call ended and its recording settled (archived, absent, failed, or none): ``call.ended``.

    ``non_engagement`` names why the call is non-engagement (the scorability verdict, an instant
    hangup, a silent recording); such a call gets no webhook and no other post-call notification.
    ``storage_key`` is the archived audio's key, None when there is no archived recording.
    """

    call_sid: str
    kind: str
    status: str
    from_number: str
    to_number: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    duration_s: int | None
    recorded: bool
    recording_id: str | None
    storage_key: str | None
    non_engagement: str | None


# --- recordings ---------------------------------------------------------------------------------


class RecordingEvent(Event, frozen=True, kw_only=True):
    aggregate_type: ClassVar[str] = "recording"
    recording_id: str
    call_id: str

    @property
    def aggregate_id(self) -> str:
        return self.recording_id


class RecordingRequested(RecordingEvent, frozen=True, kw_only=True):
    call_sid: str


class RecordingStarted(RecordingEvent, frozen=True, kw_only=True):
    recording_sid: str


class RecordingCompletedAtTwilio(RecordingEvent, frozen=True, kw_only=True):
    recording_sid: str
    duration_s: int | None


class RecordingArchived(RecordingEvent, frozen=True, kw_only=True):
    recording_sid: str
    storage_key: str
    size_bytes: int
    sha256: str
    content_type: str
    duration_s: int | None


class RecordingDeletedAtTwilio(RecordingEvent, frozen=True, kw_only=True):
    recording_sid: str


class RecordingDiscarded(RecordingEvent, frozen=True, kw_only=True):
    """Twilio's copy was deleted without being archived; ``reason`` says why (``recording_off``)."""

    recording_sid: str
    reason: str


class RecordingPurged(RecordingEvent, frozen=True, kw_only=True):
    """The recording's audio is to be deleted for good (``reason``: retention, erasure, filtered).

    Its consumers delete every copy: the store's object (every version) at ``storage_key`` and
    Twilio's copy at ``recording_sid`` when it may still exist. Platform services erase theirs.
    """

    recording_sid: str | None
    storage_key: str | None
    reason: str


class RecordingAbsent(RecordingEvent, frozen=True, kw_only=True):
    error_code: str | None


class RecordingFailed(RecordingEvent, frozen=True, kw_only=True):
    error: str


class RecordingPaused(RecordingEvent, frozen=True, kw_only=True):
    """Capture was paused (card data, say): the gap is silence in the audio (or skipped)."""

    call_sid: str
    recording_sid: str


class RecordingResumed(RecordingEvent, frozen=True, kw_only=True):
    """A pause ended: ``reason`` is ``requested``, ``max_pause`` (automatic) or ``call_ended``."""

    call_sid: str
    recording_sid: str
    paused_at: datetime
    reason: str


# --- erasure by caller (on the recordings topic, keyed by the erasure request's id) ---------------


class ErasureEvent(Event, frozen=True, kw_only=True):
    aggregate_type: ClassVar[str] = "recording"
    erasure_request_id: str

    @property
    def aggregate_id(self) -> str:
        return self.erasure_request_id


class ErasureRequested(ErasureEvent, frozen=True, kw_only=True):
    """An admin asked to erase one caller's data in the org (the number is not in the event)."""


class CallerDataErased(ErasureEvent, frozen=True, kw_only=True):
    """One call's caller data was erased: its audio purged, its caller number now ``redacted_as``.

    Platform services erase their copies (transcripts, analyses) of ``call_id`` and its recordings."""

    call_id: str
    recording_ids: list[str]
    redacted_as: str


class ErasureCompleted(ErasureEvent, frozen=True, kw_only=True):
    """Every call of the caller was erased, except ``held_call_ids`` (under legal hold)."""

    erased_calls: int
    held_call_ids: list[str]
    recordings_purged: int


# --- audit --------------------------------------------------------------------------------------


class PrivilegedAccessRecorded(Event, frozen=True, kw_only=True):
    """The operations team accessed an org's (or the platform lines') calls; written before access."""

    aggregate_type: ClassVar[str] = "audit"
    audit_id: str
    actor: str
    actor_role: str
    action: str
    reason: str
    call_id: str | None
    call_kind: str | None

    @property
    def aggregate_id(self) -> str:
        return self.audit_id


class AuditEntryAppended(Event, frozen=True, kw_only=True):
    """An access or change was appended to the audit log: the new head of its hash chain.

    ``hash`` is the SHA-256 of the entry's canonical encoding, which covers ``prev_hash``; a log that
    ends before the highest ``seq`` published here lost its tail.
    """

    aggregate_type: ClassVar[str] = "audit"
    audit_id: str
    seq: int
    hash: str
    prev_hash: str
    actor: str
    actor_role: str
    action: str
    reason: str | None
    call_id: str | None
    call_kind: str | None
    target_id: str | None
    request_id: str | None
    source_address: str | None
    outcome: str

    @property
    def aggregate_id(self) -> str:
        return self.audit_id


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        PrivilegedAccessRecorded,
        AuditEntryAppended,
        OrganizationCreated,
        OrganizationUpdated,
        RecordingSettingChanged,
        NumberRecordingChanged,
        RetentionPolicyChanged,
        WebhookEndpointDisabled,
        NonEngagementPolicyChanged,
        ErasureRequested,
        CallerDataErased,
        ErasureCompleted,
        CallStarted,
        CallAnswered,
        CallEnded,
        CallScorabilityRecorded,
        TransferStarted,
        TransferCompleted,
        CallSettled,
        LegalHoldPlaced,
        LegalHoldReleased,
        UnconsentedRecordingFound,
        RecordingRequested,
        RecordingStarted,
        RecordingCompletedAtTwilio,
        RecordingArchived,
        RecordingDeletedAtTwilio,
        RecordingDiscarded,
        RecordingPurged,
        RecordingAbsent,
        RecordingFailed,
        RecordingPaused,
        RecordingResumed,
    )
}


def event_data(event: Event) -> dict[str, object]:
    """The event's own fields as JSON-ready data (without the envelope's id/occurred_at/org_id)."""
    data = msgspec.to_builtins(event)
    assert isinstance(data, dict)
    for envelope_field in ("id", "occurred_at", "org_id"):
        data.pop(envelope_field, None)
    return data


def encode_event(event: Event) -> bytes:
    return msgspec.json.encode(event)


def decode_event(type_name: str, payload: bytes | str) -> Event:
    return msgspec.json.decode(payload, type=EVENT_TYPES[type_name])
