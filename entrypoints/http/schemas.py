"""Request and response bodies (msgspec Structs). Never ORM rows or domain objects."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar.params import PathParameter, QueryParameter

from domain.model import E164_PATTERN, IDENTIFIER_PATTERN

PhoneNumber = Annotated[str, msgspec.Meta(pattern=f"^{E164_PATTERN}$", description="E.164 number")]
ID_PATTERN = f"^{IDENTIFIER_PATTERN}$"
IdPath = Annotated[
    str, PathParameter(pattern=ID_PATTERN, max_length=64, description="An id: letters, digits, _ and -")
]
NumberPath = Annotated[
    str,
    PathParameter(
        pattern=f"^{E164_PATTERN}$", max_length=16, description="E.164 number (+ URL-encoded: %2B)"
    ),
]
IdQuery = Annotated[str | None, QueryParameter(pattern=ID_PATTERN, max_length=64)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class OrganizationUpsert(Strict):
    name: Name
    phone_numbers: Annotated[list[PhoneNumber], msgspec.Meta(max_length=100)]
    greeting: Annotated[str, msgspec.Meta(max_length=2000)]


class OrganizationResponse(msgspec.Struct):
    id: str
    name: str
    phone_numbers: list[str]
    greeting: str
    recording_enabled: bool


class ScorabilityVerdict(Strict):
    scorable: bool
    reason: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class TransferUpdate(Strict):
    stage: Literal["started", "completed"]


class RecordingSettingUpdate(Strict):
    enabled: bool
    # Keep recordings of calls the scorability filter marks non-engagement; omitted: unchanged.
    keep_non_engagement: bool | None = None


class NumberRecordingUpdate(Strict):
    mode: Literal["on", "off", "inherit"]


class NumberRecordingSetting(msgspec.Struct):
    """One of the org's numbers: its own setting, whether its next call is recorded (``effective``:
    ``on``, ``off``, or the org toggle for ``inherit``) and who last set it, when (null: nobody yet)."""

    number: str
    mode: Literal["on", "off", "inherit"]
    effective: bool
    changed_by: str | None
    changed_at: str | None


class RecordingSetting(msgspec.Struct):
    enabled: bool
    disclosure: str
    changed_by: str | None  # who last turned the org toggle on or off, and when
    changed_at: str | None
    numbers: list[NumberRecordingSetting]
    keep_non_engagement: bool = True


class RecordingResponse(msgspec.Struct):
    """`purged`: the audio was deleted for good (`reason` `retention` or `erasure`, at `purged_at`);
    the call's metadata stays. A filtered call's reads `not_recorded` with reason `filtered`."""

    status: Literal["available", "processing", "not_recorded", "failed", "purged"]
    reason: Literal["recording_off", "no_audio", "filtered", "retention", "erasure"] | None
    duration_s: int | None
    size_bytes: int | None
    content_type: str | None
    playback_url: str | None
    download_url: str | None
    purged_at: str | None = None


class LegalHoldResponse(msgspec.Struct):
    """Whether the call is under legal hold (its audio is not purged nor erased), by whom, why, since."""

    held: bool
    reason: str | None
    held_by: str | None
    held_at: str | None


class ConsentResponse(msgspec.Struct):
    """What the caller was told: whether the call was recorded, the disclosure's exact wording and
    version, and when it was given (the greeting that carried it was sent)."""

    recorded: bool
    disclosure_text: str | None
    disclosure_version: str | None
    disclosed_at: str | None


class CallResponse(msgspec.Struct):
    id: str
    from_: str = msgspec.field(name="from")
    to: str = ""
    status: str = ""
    started_at: str = ""
    answered_at: str | None = None
    ended_at: str | None = None
    duration_s: int | None = None
    recording: RecordingResponse | None = None
    non_engagement: bool = False
    consent: ConsentResponse | None = None
    legal_hold: LegalHoldResponse | None = None


class AdditionalRecordingResponse(msgspec.Struct):
    """Another recording Twilio made of the call, besides `recording` (a retried start, or one started
    outside the service), and what became of it. It never replaces `recording` and is not played here.

    `archived`: kept in the recording store, verified, and deleted at Twilio. `discarded`: deleted at
    Twilio without being kept; `reason` `recording_off`, the call was not to be recorded.
    `not_recorded` (`no_audio`) and `failed`: Twilio captured nothing. `processing`: on its way.
    """

    status: Literal["processing", "archived", "discarded", "not_recorded", "failed", "purged"]
    reason: Literal["recording_off", "no_audio", "filtered", "retention", "erasure"] | None
    duration_s: int | None
    size_bytes: int | None
    content_type: str | None


class PauseResponse(msgspec.Struct):
    """A stretch of the recording that was paused (card data, say): silence in the audio. `resumed_at`
    is null while it lasts; `resume_reason`: `requested`, `max_pause` (resumed automatically after
    CALLREC_MAX_PAUSE_S) or `call_ended` (closed at the call's end)."""

    paused_at: str
    resumed_at: str | None
    paused_by: str
    resumed_by: str | None
    resume_reason: Literal["requested", "max_pause", "call_ended"] | None


class CallDetailResponse(CallResponse):
    """A call, with the fate of every additional recording Twilio made of it (oldest first), and
    the paused stretches of its recording (oldest first)."""

    additional_recordings: list[AdditionalRecordingResponse] = msgspec.field(default_factory=list)
    pauses: list[PauseResponse] = msgspec.field(default_factory=list)


class RecordingPauseState(msgspec.Struct):
    """The pause state of a call's recording: `paused` now or not, and every pause so far."""

    call_id: str
    recording_id: str
    paused: bool
    pauses: list[PauseResponse]


class RetentionSetting(msgspec.Struct):
    """How long the org's recordings are kept, in days (1 to 3650); null: indefinitely (the default)."""

    days: int | None


class RetentionSettingUpdate(Strict):
    """`days`: a whole number of days from 1 to 3650 (`90` or `90.0`), or null: indefinitely."""

    days: Annotated[float, msgspec.Meta(ge=1, le=3650, multiple_of=1)] | None


class LegalHoldUpdate(Strict):
    """Place (`held: true`, with a non-empty `reason`) or release (`held: false`) a call's legal hold."""

    held: bool
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class CallPage(msgspec.Struct):
    items: list[CallResponse]
    next_cursor: str | None  # the older page (None on the last)
    prev_cursor: str | None = None  # the newer page, as `before` (None on the first)


class AuditEntryResponse(msgspec.Struct):
    """One access to the org's recordings, or one change of its settings, in the audit log.

    `actor_role`: `member` or `admin` (the org's own users), `ops_admin` (the platform's operations
    team, always with a `reason`) or `system` (the service itself, e.g. a recording URL put into a
    webhook). `outcome`: `granted` (an access) or `succeeded` (a change).
    """

    id: str
    seq: int
    occurred_at: str
    actor: str
    actor_role: str
    action: str
    call_id: str | None
    reason: str | None
    outcome: str
    target_id: str | None
    request_id: str | None


class AuditPage(msgspec.Struct):
    items: list[AuditEntryResponse]
    next_cursor: str | None


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    error: ErrorDetail
