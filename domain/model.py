"""Aggregates: Organization, Call and Recording. Plain classes, invariants, events. No I/O.

Each aggregate carries ``version`` for optimistic concurrency (the repository bumps it on save) and
``events``, the list of what happened to it since it was loaded; the unit of work drains it into the
outbox in the same transaction as the change.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from domain import events
from domain.errors import InvalidTransition, InvalidValue
from domain.events import Event, RecordingEvent

# The platform's caller disclosure. One wording for every org; changing it means a new version, so
# each call's consent record says exactly which wording the caller heard.
DISCLOSURE_VERSION = "2026-11-01"
DISCLOSURE_TEXT = "This call may be recorded for quality, training and dispute resolution."

PLATFORM_GREETING = "Thanks for calling Allison Voice. How can I help you today?"


# One grammar for every identifier a client names or is given (org ids; the UUIDs of calls,
# recordings and webhook endpoints fit it too): a URL path segment and a storage-key segment as it is,
# on every store. The edge refuses anything else; the domain checks again with ``fullmatch``.
IDENTIFIER_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
# A phone number in E.164: "+", a digit 1-9, then 6 to 14 digits. No spaces, no trailing newline.
E164_PATTERN = r"\+[1-9][0-9]{6,14}"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_E164 = re.compile(E164_PATTERN)


def new_id() -> str:
    """An unguessable identifier (122 random bits)."""
    return str(uuid.uuid4())


def is_identifier(value: str) -> bool:
    return _IDENTIFIER.fullmatch(value) is not None


def identifier(value: str, what: str = "id") -> str:
    """``value`` if it is in the identifier grammar; ``InvalidValue`` otherwise."""
    if not is_identifier(value):
        raise InvalidValue(f"{what} must match {IDENTIFIER_PATTERN}")
    return value


def is_phone_number(value: str) -> bool:
    return _E164.fullmatch(value) is not None


def phone_number(value: str) -> str:
    """``value`` if it is an E.164 number; ``InvalidValue`` otherwise (nothing is stripped or guessed)."""
    if _E164.fullmatch(value) is None:
        raise InvalidValue(f"{value[:32]!r} is not an E.164 phone number (+ and 7 to 15 digits)")
    return value


def unique_numbers(numbers: list[str]) -> list[str]:
    """The numbers, each checked to be E.164, in their given order, each once."""
    return list(dict.fromkeys(phone_number(n) for n in numbers))


def duration(value: int | None, what: str = "duration") -> int | None:
    """A duration in whole seconds, which cannot be negative."""
    if value is not None and value < 0:
        raise InvalidValue(f"{what} cannot be negative")
    return value


def greeting_with_disclosure(greeting: str, recorded: bool) -> str:
    """The greeting prompt the agent speaks: the disclosure goes first when the call is recorded."""
    greeting = greeting.strip()
    if not recorded:
        return greeting
    return f"{DISCLOSURE_TEXT} {greeting}".strip()


MIN_RETENTION_DAYS, MAX_RETENTION_DAYS = 1, 3650


class CallKind(enum.StrEnum):
    CUSTOMER = "customer"
    DISCOVERY = "discovery"
    SUPPORT = "support"


# --- Organization -------------------------------------------------------------------------------


class NumberRecordingMode(enum.StrEnum):
    """A number's own recording setting: always, never, or whatever the org toggle says."""

    ON = "on"
    OFF = "off"
    INHERIT = "inherit"


@dataclass(frozen=True)
class NumberRecording:
    """A number's recording setting and who set it, when."""

    mode: NumberRecordingMode
    changed_by: str
    changed_at: datetime


class Organization:
    def __init__(
        self,
        *,
        id: str,
        name: str,
        phone_numbers: list[str],
        greeting: str,
        recording_enabled: bool = False,
        recording_changed_by: str | None = None,
        recording_changed_at: datetime | None = None,
        created_at: datetime,
        number_recording: dict[str, NumberRecording] | None = None,
        version: int = 0,
        retention_days: int | None = None,
        keep_non_engagement: bool = True,
    ) -> None:
        self.id = id
        self.name = name
        self.phone_numbers = unique_numbers(phone_numbers)
        self.greeting = greeting
        self.recording_enabled = recording_enabled
        self.recording_changed_by = recording_changed_by
        self.recording_changed_at = recording_changed_at
        self.created_at = created_at
        # Each number's own setting, once someone set it; a number without one inherits the toggle.
        self.number_recording = dict(number_recording or {})
        self.version = version
        self.retention_days = retention_days  # None: recordings are kept indefinitely
        self.keep_non_engagement = keep_non_engagement
        self.events: list[events.Event] = []

    @classmethod
    def create(
        cls, *, id: str, name: str, phone_numbers: list[str], greeting: str, now: datetime
    ) -> Organization:
        """A new organization records nothing: its recording toggle starts off."""
        identifier(id, "organization id")
        phone_numbers = unique_numbers(phone_numbers)
        org = cls(id=id, name=name, phone_numbers=phone_numbers, greeting=greeting, created_at=now)
        org.events.append(
            events.OrganizationCreated(
                occurred_at=now, org_id=id, name=name, phone_numbers=list(phone_numbers)
            )
        )
        return org

    def update_profile(self, *, name: str, phone_numbers: list[str], greeting: str, now: datetime) -> None:
        phone_numbers = unique_numbers(phone_numbers)
        if (name, sorted(phone_numbers), greeting) == (self.name, sorted(self.phone_numbers), self.greeting):
            return
        self.name, self.phone_numbers, self.greeting = name, list(phone_numbers), greeting
        # A number that leaves the org takes its setting with it: added back, it starts at inherit.
        self.number_recording = {n: s for n, s in self.number_recording.items() if n in phone_numbers}
        self.events.append(
            events.OrganizationUpdated(
                occurred_at=now, org_id=self.id, name=name, phone_numbers=list(phone_numbers)
            )
        )

    def set_recording(self, *, enabled: bool, by: str, now: datetime) -> None:
        """Turn the org-wide recording toggle on or off; only a real change is an event."""
        if enabled == self.recording_enabled:
            return
        self.recording_enabled = enabled
        self.recording_changed_by = by
        self.recording_changed_at = now
        self.events.append(
            events.RecordingSettingChanged(occurred_at=now, org_id=self.id, enabled=enabled, changed_by=by)
        )

    def set_retention(self, *, days: int | None, by: str, now: datetime) -> bool:
        """Keep recordings ``days`` days (1 to 3650), or indefinitely (None). Returns whether it changed."""
        if days is not None and not MIN_RETENTION_DAYS <= days <= MAX_RETENTION_DAYS:
            raise InvalidValue(
                f"retention days must be {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS}, or null (indefinite)"
            )
        if days == self.retention_days:
            return False
        self.retention_days = days
        self.events.append(
            events.RetentionPolicyChanged(occurred_at=now, org_id=self.id, days=days, changed_by=by)
        )
        return True

    def set_keep_non_engagement(self, *, keep: bool, by: str, now: datetime) -> bool:
        """Keep (or delete once settled) the recordings of calls the scorability filter marks
        non-engagement. Governs calls settled from now on; returns whether it changed."""
        if keep == self.keep_non_engagement:
            return False
        self.keep_non_engagement = keep
        self.events.append(
            events.NonEngagementPolicyChanged(
                occurred_at=now, org_id=self.id, keep_non_engagement=keep, changed_by=by
            )
        )
        return True

    def recording_mode(self, number: str) -> NumberRecordingMode:
        """The number's own setting: ``inherit`` unless someone set it."""
        setting = self.number_recording.get(number)
        return setting.mode if setting is not None else NumberRecordingMode.INHERIT

    def records_calls_to(self, number: str) -> bool:
        """Whether a call arriving on ``number`` now is recorded: its own setting, else the org toggle."""
        mode = self.recording_mode(number)
        return (
            self.recording_enabled if mode == NumberRecordingMode.INHERIT else mode == NumberRecordingMode.ON
        )

    def set_number_recording(self, *, number: str, mode: NumberRecordingMode, by: str, now: datetime) -> None:
        """Set one of the org's numbers to ``on``, ``off`` or ``inherit`` (the org toggle) for its next
        calls; only a real change is an event."""
        if number not in self.phone_numbers:
            raise InvalidValue(f"{number[:32]!r} is not a number of this organization")
        if mode == self.recording_mode(number):
            return
        self.number_recording[number] = NumberRecording(mode=mode, changed_by=by, changed_at=now)
        self.events.append(
            events.NumberRecordingChanged(
                occurred_at=now,
                org_id=self.id,
                number=number,
                mode=mode.value,
                effective=self.records_calls_to(number),
                changed_by=by,
            )
        )


# --- Call ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegalHold:
    """A call frozen for a dispute: its audio is not purged nor erased until the hold is released."""

    held_by: str
    reason: str
    held_at: datetime


@dataclass(frozen=True)
class ConsentRecord:
    """What the caller was told: the decision, the exact disclosure wording and when it was given."""

    recorded: bool
    disclosure_text: str | None
    disclosure_version: str | None
    disclosed_at: datetime | None


class CallStatus(enum.StrEnum):
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    BUSY = "busy"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"

    @classmethod
    def parse(cls, value: str) -> CallStatus:
        """The status Twilio named; ``InvalidValue`` for one this service does not know."""
        try:
            return cls(value)
        except ValueError:
            raise InvalidValue(f"CallStatus: unknown call status {value!r}") from None


ENDED_STATUSES = frozenset(
    {CallStatus.COMPLETED, CallStatus.BUSY, CallStatus.FAILED, CallStatus.NO_ANSWER, CallStatus.CANCELED}
)


class ProviderRecordingStatus(enum.StrEnum):
    """What the telephony provider says of one of a call's recordings, parsed at the edge.

    The values are the words of Twilio's recording status callback (they travel in events).
    """

    CAPTURING = "in-progress"  # being captured (or paused, or stopped and still being finished)
    COMPLETED = "completed"
    ABSENT = "absent"  # nothing was captured
    FAILED = "failed"


class StreamEvent(enum.StrEnum):
    """The agent's media stream, as Twilio reports it: ``started`` is the agent answering."""

    STARTED = "stream-started"
    STOPPED = "stream-stopped"
    ERROR = "stream-error"


# Answered, then ended within this long: an instant hangup (configurable, CALLREC_INSTANT_HANGUP_S).
INSTANT_HANGUP = timedelta(seconds=3)
# Twilio's ``absent`` recording with this ErrorCode: the recording was silent.
SILENT_RECORDING_ERROR = "16102"


class Call:
    def __init__(
        self,
        *,
        id: str,
        org_id: str | None,
        kind: CallKind,
        call_sid: str,
        account_sid: str,
        from_number: str,
        to_number: str,
        status: CallStatus,
        started_at: datetime,
        greeting: str,
        consent: ConsentRecord,
        answered_at: datetime | None = None,
        ended_at: datetime | None = None,
        duration_s: int | None = None,
        recording_id: str | None = None,
        scorable: bool | None = None,
        scorability_reason: str | None = None,
        transfer_stage: str | None = None,
        settled_at: datetime | None = None,
        version: int = 0,
        non_engagement_reason: str | None = None,
        legal_hold: LegalHold | None = None,
        audio_purged_at: datetime | None = None,
    ) -> None:
        self.id = id
        self.org_id = org_id
        self.kind = kind
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.from_number = from_number
        self.to_number = to_number
        self.status = status
        self.started_at = started_at
        self.greeting = greeting
        self.consent = consent
        self.answered_at = answered_at
        self.ended_at = ended_at
        self.duration_s = duration_s
        self.recording_id = recording_id
        self.scorable = scorable
        self.scorability_reason = scorability_reason
        self.transfer_stage = transfer_stage
        self.settled_at = settled_at  # when the call ended and its recording settled: call.ended
        self.version = version
        self.non_engagement_reason = non_engagement_reason  # the verdict CallSettled carried
        self.legal_hold = legal_hold
        self.audio_purged_at = audio_purged_at  # when its audio was last purged (retention, erasure)
        self.events: list[events.Event] = []

    @property
    def held(self) -> bool:
        """Under legal hold: purge and erasure leave its audio alone."""
        return self.legal_hold is not None

    def place_legal_hold(self, *, by: str, reason: str, now: datetime) -> bool:
        """Freeze the call's audio; a reason is required. Returns whether anything changed."""
        reason = reason.strip()
        if not reason:
            raise InvalidValue("a legal hold needs a reason")
        if self.legal_hold is not None and self.legal_hold.reason == reason:
            return False
        self.legal_hold = LegalHold(held_by=by, reason=reason, held_at=now)
        self.events.append(
            events.LegalHoldPlaced(
                occurred_at=now, org_id=self.org_id, call_id=self.id, held_by=by, reason=reason
            )
        )
        return True

    def audio_purged(self, now: datetime) -> None:
        """Its recordings' audio was purged in this transaction. Writing the call as well makes a
        purge and a legal hold placed at the same moment collide (one retries and sees the other)."""
        if self.held:
            raise InvalidTransition("a call under legal hold keeps its audio")
        self.audio_purged_at = now

    def release_legal_hold(self, *, by: str, now: datetime) -> bool:
        """Lift the hold: the call's audio is subject to retention and erasure again."""
        if self.legal_hold is None:
            return False
        self.legal_hold = None
        self.events.append(
            events.LegalHoldReleased(occurred_at=now, org_id=self.org_id, call_id=self.id, released_by=by)
        )
        return True

    @property
    def recorded(self) -> bool:
        return self.consent.recorded

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES

    @property
    def non_engagement(self) -> bool:
        """The scorability filter judged this call noise (robocall, wrong number, silent dialer)."""
        return self.scorable is False

    @classmethod
    def start(
        cls,
        *,
        call_sid: str,
        account_sid: str,
        from_number: str,
        to_number: str,
        now: datetime,
        org: Organization | None,
        platform_kind: CallKind | None = None,
    ) -> Call:
        """A call arrives. The org's setting for the called number *now* (the number's own ``on`` or
        ``off``, else the org toggle) decides whether it is recorded, for good.

        The platform's own discovery and support lines are always recorded, whatever any toggle says.
        """
        if platform_kind is not None:
            org_id, recorded, base_greeting = None, True, PLATFORM_GREETING
            kind = platform_kind
        elif org is not None:
            org_id, recorded, base_greeting = org.id, org.records_calls_to(to_number), org.greeting
            kind = CallKind.CUSTOMER
        else:
            raise InvalidValue("a call belongs to an organization or to a platform line")
        consent = ConsentRecord(
            recorded=recorded,
            disclosure_text=DISCLOSURE_TEXT if recorded else None,
            disclosure_version=DISCLOSURE_VERSION if recorded else None,
            disclosed_at=now if recorded else None,
        )
        call = cls(
            id=new_id(),
            org_id=org_id,
            kind=kind,
            call_sid=call_sid,
            account_sid=account_sid,
            from_number=from_number,
            to_number=to_number,
            status=CallStatus.RINGING,
            started_at=now,
            greeting=greeting_with_disclosure(base_greeting, recorded),
            consent=consent,
        )
        call.events.append(
            events.CallStarted(
                occurred_at=now,
                org_id=org_id,
                call_id=call.id,
                call_sid=call_sid,
                kind=kind.value,
                from_number=from_number,
                to_number=to_number,
                recorded=recorded,
                disclosure_version=consent.disclosure_version,
            )
        )
        return call

    def answer(self, now: datetime) -> Recording | None:
        """The agent answered (its media stream started). Capture starts here, never before.

        Returns the recording to request when this call is recorded; None when it is not, when this
        answer is a duplicate or comes after the call ended, or when the call already has its
        recording (Twilio's audio reached us first and was adopted).
        """
        if self.answered_at is not None or self.ended:
            return None
        self.answered_at = now
        self.status = CallStatus.IN_PROGRESS
        self.events.append(
            events.CallAnswered(occurred_at=now, org_id=self.org_id, call_id=self.id, call_sid=self.call_sid)
        )
        if not self.recorded or self.recording_id is not None:
            return None
        recording = Recording.request(call=self, now=now)
        self.recording_id = recording.id
        return recording

    def end(self, *, status: CallStatus, duration_s: int | None, now: datetime) -> None:
        if self.ended:
            return
        if status not in ENDED_STATUSES:
            raise InvalidTransition(f"{status} does not end a call")
        duration(duration_s, "call duration")
        self.status = status
        self.ended_at = now
        self.duration_s = duration_s
        self.events.append(
            events.CallEnded(
                occurred_at=now,
                org_id=self.org_id,
                call_id=self.id,
                call_sid=self.call_sid,
                status=status.value,
                duration_s=duration_s,
            )
        )

    def record_scorability(self, *, scorable: bool, reason: str | None, now: datetime) -> None:
        """The scorability filter's verdict. It never touches the recording: that is kept either way."""
        if (self.scorable, self.scorability_reason) == (scorable, reason):
            return
        self.scorable = scorable
        self.scorability_reason = reason
        self.events.append(
            events.CallScorabilityRecorded(
                occurred_at=now, org_id=self.org_id, call_id=self.id, scorable=scorable, reason=reason
            )
        )

    def found_unconsented_recording(
        self, *, recording_sid: str, twilio_status: ProviderRecordingStatus, now: datetime
    ) -> None:
        """Twilio holds audio of a call whose caller was not told it is recorded: it must not be kept.

        The event asks for the audio to be stopped (if still live) and deleted at Twilio, unarchived.
        """
        if self.recorded:
            raise InvalidTransition("a recorded call's audio is archived, not discarded")
        self.events.append(
            events.UnconsentedRecordingFound(
                occurred_at=now,
                org_id=self.org_id,
                call_id=self.id,
                call_sid=self.call_sid,
                recording_sid=recording_sid,
                twilio_status=twilio_status,
            )
        )

    def redact_caller(self, redacted: str) -> bool:
        """Erasure: replace the caller's number with its redacted form; returns whether it changed.

        The event of the erasure request that does it says so (``CallerDataErased``)."""
        if self.from_number == redacted:
            return False
        self.from_number = redacted
        return True

    def transfer(self, *, stage: str, now: datetime) -> None:
        """A warm transfer. Hold time stays recorded; ``completed`` means the call left the platform."""
        if stage == "started":
            if self.transfer_stage is not None:
                return
            self.transfer_stage = "started"
            self.events.append(events.TransferStarted(occurred_at=now, org_id=self.org_id, call_id=self.id))
        elif stage == "completed":
            if self.transfer_stage == "completed":
                return
            self.transfer_stage = "completed"
            self.events.append(
                events.TransferCompleted(
                    occurred_at=now, org_id=self.org_id, call_id=self.id, call_sid=self.call_sid
                )
            )
        else:
            raise InvalidTransition(f"unknown transfer stage {stage!r}")

    def settle(
        self,
        recording: Recording | None,
        *,
        now: datetime,
        scorability_wait: timedelta = timedelta(0),
        instant_hangup: timedelta = INSTANT_HANGUP,
    ) -> bool:
        """Conclude the call once it has ended and its recording has settled: ``CallSettled``.

        Settled means archived, absent or failed (or the call was not recorded, or never answered).
        Without a scorability verdict yet, the call waits ``scorability_wait`` past its end for one.
        Happens once; returns whether it happened now. The event says whether the call was
        non-engagement, which withholds ``call.ended`` and any other post-call notification.
        """
        if self.settled_at is not None or not self.ended or self.ended_at is None:
            return False
        if recording is not None and recording.status not in SETTLED_STATUSES:
            return False
        if self.scorable is None and now < self.ended_at + scorability_wait:
            return False
        self.settled_at = now
        self.non_engagement_reason = non_engagement_reason(self, recording, instant_hangup=instant_hangup)
        audio = recording.audio if recording is not None and recording.is_archived else None
        self.events.append(
            events.CallSettled(
                occurred_at=now,
                org_id=self.org_id,
                call_id=self.id,
                call_sid=self.call_sid,
                kind=self.kind.value,
                status=self.status.value,
                from_number=self.from_number,
                to_number=self.to_number,
                started_at=self.started_at,
                answered_at=self.answered_at,
                ended_at=self.ended_at,
                duration_s=self.duration_s,
                recorded=self.recorded,
                recording_id=recording.id if recording is not None else None,
                storage_key=audio.storage_key if audio is not None else None,
                non_engagement=self.non_engagement_reason,
            )
        )
        return True


# --- non-engagement -------------------------------------------------------------------------------


def non_engagement_reason(
    call: Call, recording: Recording | None, *, instant_hangup: timedelta = INSTANT_HANGUP
) -> str | None:
    """Why this call is non-engagement (no webhook, no post-call notification), or None.

    The platform's scorability verdict (``robocall``, ``wrong_number``…), or the built-in rules: an
    instant hangup (answered, then ended within ``instant_hangup`` by our clock and by Twilio's
    ``CallDuration``, both known and both saying so, with no longer audio) and a silent recording (Twilio
    ``absent`` with ErrorCode 16102). The recording is kept either way.
    """
    if call.scorable is False:
        return call.scorability_reason or "scorability_filter"
    if (
        recording is not None
        and recording.status == RecordingStatus.ABSENT
        and recording.error_code == SILENT_RECORDING_ERROR
    ):
        return "silent_recording"
    if call.answered_at is not None and call.ended_at is not None and call.duration_s is not None:
        limit = instant_hangup.total_seconds()
        by_clock = (call.ended_at - call.answered_at).total_seconds() <= limit
        by_twilio = call.duration_s <= limit
        # Audio longer than the limit is proof of engagement, whatever the timestamps say.
        by_audio = recording is None or recording.duration_s is None or recording.duration_s <= limit
        if by_clock and by_twilio and by_audio:
            return "instant_hangup"
    return None


# --- Recording ----------------------------------------------------------------------------------


class RecordingStatus(enum.StrEnum):
    REQUESTED = "requested"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"  # completed at Twilio, not yet in our store
    ARCHIVED = "archived"  # in our store, verified; Twilio copy still there
    TWILIO_DELETED = "twilio_deleted"  # archived and the Twilio copy is gone
    ABSENT = "absent"  # no audio was captured
    FAILED = "failed"
    DISCARDING = "discarding"  # audio the caller was not told about: being stopped and deleted at Twilio
    DISCARDED = "discarded"  # deleted at Twilio without ever being archived (``discard_reason`` says why)
    PURGED = "purged"  # its audio deleted for good (``purge_reason`` says why); metadata kept


# Why a recording was discarded: the call was not to be recorded (the toggle was off at arrival).
DISCARDED_RECORDING_OFF = "recording_off"

# Why a recording's audio was purged: the org's retention policy, a caller's erasure request, or the
# call was filtered out (not kept).
PURGE_RETENTION = "retention"
PURGE_ERASURE = "erasure"
PURGE_FILTERED = "filtered"
PURGE_REASONS = frozenset({PURGE_RETENTION, PURGE_ERASURE, PURGE_FILTERED})

LIVE_STATUSES = frozenset({RecordingStatus.REQUESTED, RecordingStatus.IN_PROGRESS})
ARCHIVED_STATUSES = frozenset({RecordingStatus.ARCHIVED, RecordingStatus.TWILIO_DELETED})
# Audio exists somewhere (our store, or Twilio only while ``completed``): what a purge may delete.
PURGEABLE_STATUSES = ARCHIVED_STATUSES | {RecordingStatus.COMPLETED}
# A recording in one of these will not change any more as far as the call's subscribers care.
SETTLED_STATUSES = ARCHIVED_STATUSES | {
    RecordingStatus.ABSENT,
    RecordingStatus.FAILED,
    RecordingStatus.PURGED,
}
# Twilio may still report these as absent or failed.
_AT_TWILIO_UNFINISHED = LIVE_STATUSES | {RecordingStatus.DISCARDING}
_LIVE_OR_DONE = frozenset({ProviderRecordingStatus.CAPTURING, ProviderRecordingStatus.COMPLETED})


@dataclass
class ArchivedAudio:
    storage_key: str
    size_bytes: int
    sha256: str
    content_type: str
    archived_at: datetime


class ResumeReason(enum.StrEnum):
    """Why a pause of a recording ended."""

    REQUESTED = "requested"  # the platform asked to resume
    MAX_PAUSE = "max_pause"  # nobody resumed it within CALLREC_MAX_PAUSE_S: resumed automatically
    CALL_ENDED = "call_ended"  # the call ended while paused: the pause closes at the call's end


@dataclass
class PauseInterval:
    """A stretch of a recording that was paused (card data, say). ``resumed_at`` None: still paused."""

    paused_at: datetime
    paused_by: str
    resumed_at: datetime | None = None
    resumed_by: str | None = None
    resume_reason: ResumeReason | None = None


@dataclass
class Recording:
    id: str
    call_id: str
    org_id: str | None
    kind: CallKind
    call_sid: str
    status: RecordingStatus
    requested_at: datetime
    call_started_at: datetime
    recording_sid: str | None = None
    media_url: str | None = None
    duration_s: int | None = None
    completed_at: datetime | None = None
    audio: ArchivedAudio | None = None
    twilio_deleted_at: datetime | None = None
    error_code: str | None = None
    failure_reason: str | None = None
    discard_reason: str | None = None
    pauses: list[PauseInterval] = field(default_factory=list)  # oldest first; the last may be open
    version: int = 0
    events: list[Event] = field(default_factory=list, compare=False, repr=False)
    purged_at: datetime | None = None
    purge_reason: str | None = None
    audio_deleted_at: datetime | None = None  # every copy (store, all versions; Twilio) is gone

    @classmethod
    def request(cls, *, call: Call, now: datetime) -> Recording:
        rec = cls._of(call, RecordingStatus.REQUESTED, now)
        rec._emit(events.RecordingRequested, now, call_sid=call.call_sid)
        return rec

    @classmethod
    def found(cls, *, call: Call, recording_sid: str, now: datetime) -> Recording:
        """A recording Twilio holds for this call that is not the call's recording: a second one (a
        retried start that Twilio's list did not show yet, or one started by someone else).

        Nothing Twilio holds is left behind. For a recorded call the caller heard the disclosure, so
        it is consented audio: archived exactly like the call's recording (it starts ``in_progress``),
        without becoming "the" recording of the call. For a call that was not to be recorded it is
        ``discarding``: stopped and deleted at Twilio, never archived.
        """
        status = RecordingStatus.IN_PROGRESS if call.recorded else RecordingStatus.DISCARDING
        rec = cls._of(call, status, now, recording_sid=recording_sid)
        if call.recorded:
            rec._emit(events.RecordingStarted, now, recording_sid=recording_sid)
        return rec

    @classmethod
    def _of(
        cls, call: Call, status: RecordingStatus, now: datetime, recording_sid: str | None = None
    ) -> Recording:
        return cls(
            id=new_id(),
            call_id=call.id,
            org_id=call.org_id,
            kind=call.kind,
            call_sid=call.call_sid,
            status=status,
            requested_at=now,
            call_started_at=call.started_at,
            recording_sid=recording_sid,
        )

    def _emit(self, event_type: type[RecordingEvent], now: datetime, **fields: Any) -> None:
        self.events.append(
            event_type(
                occurred_at=now, org_id=self.org_id, recording_id=self.id, call_id=self.call_id, **fields
            )
        )

    @property
    def is_archived(self) -> bool:
        return self.status in ARCHIVED_STATUSES

    def _attach_sid(self, recording_sid: str | None, now: datetime) -> None:
        if recording_sid and self.recording_sid is None:
            self.recording_sid = recording_sid
            self._emit(events.RecordingStarted, now, recording_sid=recording_sid)

    def started(self, *, recording_sid: str, now: datetime) -> None:
        """Twilio accepted the start request and named the recording."""
        self._attach_sid(recording_sid, now)
        if self.status == RecordingStatus.REQUESTED:
            self.status = RecordingStatus.IN_PROGRESS

    def provider_reported(
        self,
        *,
        status: ProviderRecordingStatus,
        recording_sid: str | None,
        now: datetime,
        media_url: str | None = None,
        duration_s: int | None = None,
        error_code: str | None = None,
    ) -> None:
        """Apply a Twilio status callback. Duplicates and late, out-of-order callbacks change nothing.

        A recording being discarded stays so on ``in-progress`` and ``completed`` (its audio is never
        archived); ``absent`` and ``failed`` end it as they end any recording Twilio still holds.
        """
        duration(duration_s, "recording duration")
        if recording_sid and self.recording_sid and recording_sid != self.recording_sid:
            raise InvalidTransition("callback names another recording of this call")
        self._attach_sid(recording_sid, now)
        if media_url and not self.media_url:
            self.media_url = media_url
        if self.status == RecordingStatus.DISCARDING and status in _LIVE_OR_DONE:
            if status == ProviderRecordingStatus.COMPLETED and self.completed_at is None:
                self.completed_at = now
                self.duration_s = duration_s
        elif status == ProviderRecordingStatus.CAPTURING:
            if self.status == RecordingStatus.REQUESTED:
                self.status = RecordingStatus.IN_PROGRESS
        elif status == ProviderRecordingStatus.COMPLETED:
            if self.status in LIVE_STATUSES:
                self.status = RecordingStatus.COMPLETED
                self.completed_at = now
                self.duration_s = duration_s
                assert self.recording_sid is not None
                self._emit(
                    events.RecordingCompletedAtTwilio,
                    now,
                    recording_sid=self.recording_sid,
                    duration_s=duration_s,
                )
        elif status == ProviderRecordingStatus.ABSENT:
            if self.status in _AT_TWILIO_UNFINISHED:
                self.status = RecordingStatus.ABSENT
                self.error_code = error_code
                self._emit(events.RecordingAbsent, now, error_code=error_code)
        else:
            if self.status in _AT_TWILIO_UNFINISHED:
                self.status = RecordingStatus.FAILED
                self.error_code = error_code
                self.failure_reason = f"twilio reported failure (error {error_code})"
                self._emit(events.RecordingFailed, now, error=self.failure_reason)

    def never_captured(self, now: datetime) -> None:
        """The call ended before Twilio could start capturing (instant hangup, init failure)."""
        if self.status == RecordingStatus.REQUESTED and self.recording_sid is None:
            self.status = RecordingStatus.ABSENT
            self._emit(events.RecordingAbsent, now, error_code=None)

    def archived(
        self, *, storage_key: str, size_bytes: int, sha256: str, content_type: str, now: datetime
    ) -> None:
        """The audio is in our store and was verified byte for byte. A purged recording stays purged."""
        if self.is_archived or self.status == RecordingStatus.PURGED:
            return
        if self.status != RecordingStatus.COMPLETED:
            raise InvalidTransition(f"cannot archive a recording that is {self.status}")
        assert self.recording_sid is not None
        self.audio = ArchivedAudio(storage_key, size_bytes, sha256, content_type, now)
        self.status = RecordingStatus.ARCHIVED
        self._emit(
            events.RecordingArchived,
            now,
            recording_sid=self.recording_sid,
            storage_key=storage_key,
            size_bytes=size_bytes,
            sha256=sha256,
            content_type=content_type,
            duration_s=self.duration_s,
        )

    def discarded(self, *, reason: str, now: datetime) -> None:
        """Twilio's copy of audio that must not be kept is gone; it was never archived."""
        if self.status == RecordingStatus.DISCARDED:
            return
        if self.status != RecordingStatus.DISCARDING:
            raise InvalidTransition(f"cannot discard a recording that is {self.status}")
        assert self.recording_sid is not None
        self.status = RecordingStatus.DISCARDED
        self.discard_reason = reason
        self.twilio_deleted_at = now
        self._emit(events.RecordingDiscarded, now, recording_sid=self.recording_sid, reason=reason)

    def deleted_at_twilio(self, now: datetime) -> None:
        """The Twilio copy is gone. Only ever after the audio is safely archived."""
        if self.status == RecordingStatus.TWILIO_DELETED:
            return
        if self.status != RecordingStatus.ARCHIVED:
            raise InvalidTransition("the Twilio copy may only be deleted once the audio is archived")
        assert self.recording_sid is not None
        self.status = RecordingStatus.TWILIO_DELETED
        self.twilio_deleted_at = now
        self._emit(events.RecordingDeletedAtTwilio, now, recording_sid=self.recording_sid)

    def purge(self, *, reason: str, now: datetime) -> None:
        """Delete the audio for good (``reason``: retention, erasure, filtered); the metadata stays.

        From ``archived``/``twilio_deleted`` (audio in our store) or ``completed`` (at Twilio only). Once
        purged the recording is never archived again nor served. ``RecordingPurged`` has the copies
        deleted; a second purge is a no-op.
        """
        if reason not in PURGE_REASONS:
            raise InvalidValue(f"unknown purge reason {reason!r}")
        if self.status == RecordingStatus.PURGED:
            return
        if self.status not in PURGEABLE_STATUSES:
            raise InvalidTransition(f"cannot purge a recording that is {self.status}")
        self.status = RecordingStatus.PURGED
        self.purged_at = now
        self.purge_reason = reason
        self._emit(
            events.RecordingPurged,
            now,
            recording_sid=self.recording_sid,
            storage_key=self.audio.storage_key if self.audio is not None else None,
            reason=reason,
        )

    def audio_deleted(self, now: datetime) -> None:
        """Every copy of the purged audio is gone: our store's (all versions) and Twilio's."""
        if self.status != RecordingStatus.PURGED:
            raise InvalidTransition("only a purged recording's audio is deleted")
        if self.audio_deleted_at is None:
            self.audio_deleted_at = now
        if self.twilio_deleted_at is None:
            self.twilio_deleted_at = now

    # --- pausing (sensitive moments: card data) ----------------------------------------------------

    @property
    def open_pause(self) -> PauseInterval | None:
        """The pause in force, if the recording is paused now."""
        last = self.pauses[-1] if self.pauses else None
        return last if last is not None and last.resumed_at is None else None

    def pause(self, *, by: str, now: datetime) -> bool:
        """Pause a live recording Twilio has named; returns whether this opened a pause (already
        paused: nothing changes). ``RecordingPaused`` asks Twilio to pause it."""
        if self.open_pause is not None:
            return False
        if self.status not in LIVE_STATUSES:
            raise InvalidTransition(f"the recording is no longer live ({self.status}); nothing to pause")
        if self.recording_sid is None:
            raise InvalidTransition(
                "the recording has not started at Twilio yet (it has no RecordingSid); retry in a moment"
            )
        self.pauses.append(PauseInterval(paused_at=now, paused_by=by))
        self._emit(events.RecordingPaused, now, call_sid=self.call_sid, recording_sid=self.recording_sid)
        return True

    def resume(self, *, by: str, now: datetime, reason: ResumeReason = ResumeReason.REQUESTED) -> bool:
        """Close the pause in force at ``now`` (not before it opened); returns whether one was open.
        ``RecordingResumed`` asks Twilio to resume capture, unless the call ended."""
        pause = self.open_pause
        if pause is None:
            return False
        pause.resumed_at = max(now, pause.paused_at)
        pause.resumed_by = by
        pause.resume_reason = reason
        assert self.recording_sid is not None
        self._emit(
            events.RecordingResumed,
            pause.resumed_at,
            call_sid=self.call_sid,
            recording_sid=self.recording_sid,
            paused_at=pause.paused_at,
            reason=reason.value,
        )
        return True
