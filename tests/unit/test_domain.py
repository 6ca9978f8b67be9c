"""The aggregates' rules, one behaviour per test. Plain objects, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.twilio_telephony import recording_status
from domain import events
from domain.audit import AuditEntry
from domain.errors import InvalidTransition, InvalidValue
from domain.model import (
    DISCLOSURE_TEXT,
    DISCLOSURE_VERSION,
    PLATFORM_GREETING,
    Call,
    CallKind,
    CallStatus,
    Organization,
    ProviderRecordingStatus,
    Recording,
    RecordingStatus,
    greeting_with_disclosure,
)

T0 = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
GREETING = "Hi, you've reached Acme Plumbing. How can I help?"
RE = "RE" + "1" * 32


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def org(*, recording: bool = False) -> Organization:
    o = Organization.create(
        id="org-acme", name="Acme", phone_numbers=["+15550001111"], greeting=GREETING, now=T0
    )
    if recording:
        o.set_recording(enabled=True, by="admin@acme", now=T0)
    o.events.clear()
    return o


def start_call(organization: Organization | None = None, *, platform_kind: CallKind | None = None) -> Call:
    return Call.start(
        call_sid="CA" + "a" * 32,
        account_sid="AC" + "0" * 32,
        from_number="+15557654321",
        to_number="+15550001111",
        now=at(1),
        org=organization,
        platform_kind=platform_kind,
    )


def requested_recording() -> Recording:
    call = start_call(org(recording=True))
    recording = call.answer(at(5))
    assert recording is not None
    recording.events.clear()
    return recording


def completed_recording() -> Recording:
    recording = requested_recording()
    recording.provider_reported(
        status=ProviderRecordingStatus.COMPLETED, recording_sid=RE, now=at(60), duration_s=55
    )
    recording.events.clear()
    return recording


def archive(recording: Recording, now: datetime | None = None) -> None:
    recording.archived(
        storage_key="orgs/org-acme/x.mp3",
        size_bytes=1234,
        sha256="ab" * 32,
        content_type="audio/mpeg",
        now=now or at(70),
    )


def types(evts: list[events.Event]) -> list[str]:
    return [type(e).__name__ for e in evts]


# --- organization -------------------------------------------------------------------------------


def test_a_new_organization_does_not_record() -> None:
    o = Organization.create(id="o1", name="Acme", phone_numbers=["+15550001111"], greeting=GREETING, now=T0)

    assert o.recording_enabled is False
    assert types(o.events) == ["OrganizationCreated"]


def test_toggle_change_is_an_event_naming_who_and_when() -> None:
    o = org()

    o.set_recording(enabled=True, by="admin@acme", now=at(30))

    assert o.recording_enabled is True
    assert (o.recording_changed_by, o.recording_changed_at) == ("admin@acme", at(30))
    [change] = o.events
    assert isinstance(change, events.RecordingSettingChanged)
    assert (change.enabled, change.changed_by, change.occurred_at, change.org_id) == (
        True,
        "admin@acme",
        at(30),
        "org-acme",
    )


def test_setting_the_toggle_to_what_it_already_is_is_not_an_event() -> None:
    o = org(recording=True)

    o.set_recording(enabled=True, by="someone-else", now=at(30))

    assert o.events == []
    assert o.recording_changed_by == "admin@acme"


def test_profile_update_naming_the_same_numbers_in_another_order_is_not_an_event() -> None:
    numbers = ["+1555000001", "+1555000002"]
    o = Organization.create(id="o1", name="Acme", phone_numbers=numbers, greeting="Hi", now=T0)
    o.events.clear()

    o.update_profile(name="Acme", phone_numbers=["+1555000002", "+1555000001"], greeting="Hi", now=at(1))
    assert o.events == []

    o.update_profile(name="Acme Inc", phone_numbers=["+1555000002"], greeting="Hi", now=at(2))
    assert types(o.events) == ["OrganizationUpdated"]
    assert o.phone_numbers == ["+1555000002"]


# --- call: the recording decision and the disclosure ---------------------------------------------


def test_call_started_while_toggle_off_is_not_recorded() -> None:
    call = start_call(org(recording=False))

    assert call.recorded is False
    assert call.kind == CallKind.CUSTOMER


def test_call_keeps_the_toggle_value_it_started_with() -> None:
    o = org(recording=True)
    call = start_call(o)

    o.set_recording(enabled=False, by="admin@acme", now=at(2))

    assert call.recorded is True
    assert DISCLOSURE_TEXT in call.greeting
    assert call.answer(at(3)) is not None


def test_greeting_carries_the_disclosure_only_when_recorded() -> None:
    recorded = start_call(org(recording=True))
    unrecorded = start_call(org(recording=False))

    assert recorded.greeting == f"{DISCLOSURE_TEXT} {GREETING}"
    assert unrecorded.greeting == GREETING
    assert DISCLOSURE_TEXT not in unrecorded.greeting


def test_disclosure_is_spoken_first_and_the_greeting_is_trimmed() -> None:
    assert greeting_with_disclosure("  Hello there.  ", recorded=True) == f"{DISCLOSURE_TEXT} Hello there."
    assert greeting_with_disclosure("  Hello there.  ", recorded=False) == "Hello there."


@pytest.mark.parametrize("kind", [CallKind.DISCOVERY, CallKind.SUPPORT])
def test_platform_lines_are_recorded_whatever_the_toggle(kind: CallKind) -> None:
    call = start_call(None, platform_kind=kind)

    assert call.recorded is True
    assert call.kind == kind
    assert call.org_id is None
    assert call.greeting == f"{DISCLOSURE_TEXT} {PLATFORM_GREETING}"


def test_a_platform_line_ignores_an_org_that_has_recording_off() -> None:
    call = start_call(org(recording=False), platform_kind=CallKind.SUPPORT)

    assert call.recorded is True
    assert call.org_id is None


def test_a_call_belongs_to_an_org_or_a_platform_line() -> None:
    with pytest.raises(InvalidValue):
        start_call(None)


def test_consent_record_names_the_disclosure_wording_version_and_moment() -> None:
    call = start_call(org(recording=True))

    assert call.consent.recorded is True
    assert call.consent.disclosure_text == DISCLOSURE_TEXT
    assert call.consent.disclosure_version == DISCLOSURE_VERSION
    assert call.consent.disclosed_at == call.started_at == at(1)


def test_consent_record_of_an_unrecorded_call_holds_no_disclosure() -> None:
    call = start_call(org(recording=False))

    assert call.consent.recorded is False
    assert (call.consent.disclosure_text, call.consent.disclosure_version, call.consent.disclosed_at) == (
        None,
        None,
        None,
    )


def test_call_started_event_carries_the_decision_and_the_disclosure_version() -> None:
    recorded = start_call(org(recording=True))
    unrecorded = start_call(org(recording=False))

    [started] = recorded.events
    assert isinstance(started, events.CallStarted)
    assert (started.recorded, started.disclosure_version) == (True, DISCLOSURE_VERSION)
    assert started.kind == "customer"
    assert (started.call_id, started.call_sid, started.org_id) == (recorded.id, recorded.call_sid, "org-acme")
    [started] = unrecorded.events
    assert isinstance(started, events.CallStarted)
    assert (started.recorded, started.disclosure_version) == (False, None)


def test_every_call_gets_its_own_unguessable_id() -> None:
    ids = {start_call(org()).id for _ in range(50)}

    assert len(ids) == 50
    assert all(len(i) == 36 for i in ids)


# --- call: answer, end, scorability, transfer ----------------------------------------------------


def test_capture_is_requested_only_when_the_agent_answers() -> None:
    call = start_call(org(recording=True))

    assert call.status == CallStatus.RINGING
    assert call.recording_id is None
    assert "RecordingRequested" not in types(call.events)

    recording = call.answer(at(5))

    assert recording is not None
    assert recording.status == RecordingStatus.REQUESTED
    assert recording.requested_at == at(5)
    assert (recording.call_id, recording.call_sid, recording.org_id) == (call.id, call.call_sid, "org-acme")
    assert recording.call_started_at == call.started_at
    assert call.recording_id == recording.id
    assert (call.status, call.answered_at) == (CallStatus.IN_PROGRESS, at(5))
    assert types(call.events)[-1] == "CallAnswered"
    assert types(recording.events) == ["RecordingRequested"]


def test_answering_an_unrecorded_call_requests_nothing() -> None:
    call = start_call(org(recording=False))

    assert call.answer(at(5)) is None
    assert call.recording_id is None
    assert call.answered_at == at(5)


def test_a_second_answer_requests_nothing_more() -> None:
    call = start_call(org(recording=True))
    first = call.answer(at(5))
    assert first is not None
    call.events.clear()

    assert call.answer(at(6)) is None
    assert call.recording_id == first.id
    assert call.answered_at == at(5)
    assert call.events == []


def test_a_call_that_ended_before_the_answer_requests_nothing() -> None:
    call = start_call(org(recording=True))
    call.end(status=CallStatus.CANCELED, duration_s=0, now=at(2))

    assert call.answer(at(3)) is None
    assert call.answered_at is None
    assert call.status == CallStatus.CANCELED


def test_ending_a_call_twice_changes_nothing() -> None:
    call = start_call(org())
    call.end(status=CallStatus.COMPLETED, duration_s=42, now=at(43))
    call.events.clear()

    call.end(status=CallStatus.FAILED, duration_s=1, now=at(99))

    assert (call.status, call.duration_s, call.ended_at) == (CallStatus.COMPLETED, 42, at(43))
    assert call.events == []


def test_a_live_status_does_not_end_a_call() -> None:
    call = start_call(org())

    with pytest.raises(InvalidTransition):
        call.end(status=CallStatus.IN_PROGRESS, duration_s=None, now=at(2))
    assert not call.ended


def test_non_engagement_verdict_keeps_the_recording() -> None:
    call = start_call(org(recording=True))
    recording = call.answer(at(5))
    assert recording is not None
    recording.provider_reported(
        status=ProviderRecordingStatus.COMPLETED, recording_sid=RE, now=at(60), duration_s=55
    )
    archive(recording)
    before = (recording.status, recording.audio, recording.version)
    recording.events.clear()

    call.record_scorability(scorable=False, reason="robocall", now=at(80))

    assert call.non_engagement is True
    assert call.recording_id == recording.id
    assert (recording.status, recording.audio, recording.version) == before
    assert recording.events == []
    assert types(call.events)[-1] == "CallScorabilityRecorded"


def test_the_same_scorability_verdict_twice_is_one_event() -> None:
    call = start_call(org())
    call.events.clear()

    call.record_scorability(scorable=False, reason="wrong_number", now=at(2))
    call.record_scorability(scorable=False, reason="wrong_number", now=at(3))

    [verdict] = call.events
    assert isinstance(verdict, events.CallScorabilityRecorded)
    assert (verdict.scorable, verdict.reason) == (False, "wrong_number")


def test_a_scorable_call_is_not_non_engagement() -> None:
    call = start_call(org())
    assert call.non_engagement is False  # no verdict yet
    call.record_scorability(scorable=True, reason=None, now=at(2))
    assert call.non_engagement is False


def test_warm_transfer_records_started_then_completed_once_each() -> None:
    call = start_call(org(recording=True))
    call.events.clear()

    for stage in ("started", "started", "completed", "completed", "started"):
        call.transfer(stage=stage, now=at(10))

    assert types(call.events) == ["TransferStarted", "TransferCompleted"]
    assert call.transfer_stage == "completed"
    completed = call.events[-1]
    assert isinstance(completed, events.TransferCompleted)
    assert completed.call_sid == call.call_sid


def test_transfer_completed_without_a_started_stage_still_counts() -> None:
    call = start_call(org(recording=True))
    call.events.clear()

    call.transfer(stage="completed", now=at(10))

    assert types(call.events) == ["TransferCompleted"]


def test_transfer_does_not_end_the_call_or_touch_the_decision() -> None:
    call = start_call(org(recording=True))
    call.answer(at(2))

    call.transfer(stage="started", now=at(10))

    assert not call.ended
    assert call.recorded is True


def test_unknown_transfer_stage_is_refused() -> None:
    call = start_call(org())

    with pytest.raises(InvalidTransition):
        call.transfer(stage="cancelled", now=at(10))
    assert call.transfer_stage is None


# --- recording lifecycle ------------------------------------------------------------------------


def test_completed_callback_completes_the_recording_once() -> None:
    recording = requested_recording()

    recording.provider_reported(
        status=ProviderRecordingStatus.COMPLETED,
        recording_sid=RE,
        now=at(60),
        duration_s=55,
        media_url="https://api.twilio.com/x/RE1",
    )

    assert recording.status == RecordingStatus.COMPLETED
    assert (recording.recording_sid, recording.duration_s, recording.completed_at) == (RE, 55, at(60))
    assert recording.media_url == "https://api.twilio.com/x/RE1"
    assert types(recording.events) == ["RecordingStarted", "RecordingCompletedAtTwilio"]


def test_duplicate_completed_callback_changes_nothing() -> None:
    recording = completed_recording()

    recording.provider_reported(
        status=ProviderRecordingStatus.COMPLETED, recording_sid=RE, now=at(90), duration_s=99
    )

    assert recording.status == RecordingStatus.COMPLETED
    assert (recording.duration_s, recording.completed_at) == (55, at(60))
    assert recording.events == []


def test_in_progress_after_completed_is_ignored() -> None:
    recording = completed_recording()

    recording.provider_reported(status=ProviderRecordingStatus.CAPTURING, recording_sid=RE, now=at(90))

    assert recording.status == RecordingStatus.COMPLETED
    assert recording.events == []


def test_in_progress_after_archive_is_ignored() -> None:
    recording = completed_recording()
    archive(recording)
    recording.events.clear()

    recording.provider_reported(status=ProviderRecordingStatus.CAPTURING, recording_sid=RE, now=at(90))
    recording.provider_reported(
        status=ProviderRecordingStatus.COMPLETED, recording_sid=RE, now=at(91), duration_s=1
    )

    assert recording.status == RecordingStatus.ARCHIVED
    assert recording.events == []


def test_twilio_naming_the_recording_twice_is_one_started_event() -> None:
    recording = requested_recording()

    recording.started(recording_sid=RE, now=at(6))
    recording.provider_reported(status=ProviderRecordingStatus.CAPTURING, recording_sid=RE, now=at(7))
    recording.started(recording_sid=RE, now=at(8))

    assert recording.status == RecordingStatus.IN_PROGRESS
    assert types(recording.events) == ["RecordingStarted"]


def test_a_callback_naming_another_recording_of_the_call_is_refused() -> None:
    recording = requested_recording()
    recording.started(recording_sid=RE, now=at(6))

    with pytest.raises(InvalidTransition):
        recording.provider_reported(
            status=ProviderRecordingStatus.COMPLETED, recording_sid="RE" + "9" * 32, now=at(60)
        )
    assert recording.status == RecordingStatus.IN_PROGRESS


def test_twilio_words_are_parsed_at_the_edge_and_an_unknown_one_is_not_a_status() -> None:
    assert recording_status("paused") == (ProviderRecordingStatus.CAPTURING, True)
    assert recording_status("processing") == (ProviderRecordingStatus.CAPTURING, False)
    assert recording_status("completed") == (ProviderRecordingStatus.COMPLETED, False)
    assert recording_status("paused-forever") is None


def test_absent_means_no_audio_was_captured() -> None:
    recording = requested_recording()

    recording.provider_reported(
        status=ProviderRecordingStatus.ABSENT, recording_sid=RE, now=at(9), error_code="13617"
    )

    assert recording.status == RecordingStatus.ABSENT
    assert recording.error_code == "13617"
    assert types(recording.events)[-1] == "RecordingAbsent"


def test_completed_after_absent_is_ignored() -> None:
    recording = requested_recording()
    recording.provider_reported(status=ProviderRecordingStatus.ABSENT, recording_sid=RE, now=at(9))
    recording.events.clear()

    recording.provider_reported(
        status=ProviderRecordingStatus.COMPLETED, recording_sid=RE, now=at(10), duration_s=1
    )

    assert recording.status == RecordingStatus.ABSENT
    assert recording.events == []


def test_failed_callback_marks_the_recording_failed_with_the_error_code() -> None:
    recording = requested_recording()

    recording.provider_reported(
        status=ProviderRecordingStatus.FAILED, recording_sid=RE, now=at(9), error_code="13610"
    )

    assert recording.status == RecordingStatus.FAILED
    assert recording.error_code == "13610"
    assert recording.failure_reason is not None and "13610" in recording.failure_reason
    assert types(recording.events)[-1] == "RecordingFailed"


def test_a_recording_never_captured_is_absent() -> None:
    recording = requested_recording()

    recording.never_captured(at(3))

    assert recording.status == RecordingStatus.ABSENT
    [absent] = recording.events
    assert isinstance(absent, events.RecordingAbsent)
    assert absent.error_code is None


def test_never_captured_leaves_a_running_recording_alone() -> None:
    recording = requested_recording()
    recording.started(recording_sid=RE, now=at(6))
    recording.events.clear()

    recording.never_captured(at(7))

    assert recording.status == RecordingStatus.IN_PROGRESS
    assert recording.events == []


def test_only_a_completed_recording_can_be_archived() -> None:
    recording = requested_recording()
    recording.started(recording_sid=RE, now=at(6))

    with pytest.raises(InvalidTransition):
        archive(recording)
    assert recording.audio is None


def test_archiving_keeps_the_measured_audio_and_says_so() -> None:
    recording = completed_recording()

    archive(recording, at(70))

    assert recording.status == RecordingStatus.ARCHIVED
    assert recording.is_archived
    assert recording.audio is not None
    audio = recording.audio
    assert (audio.size_bytes, audio.sha256, audio.archived_at) == (1234, "ab" * 32, at(70))
    [archived] = recording.events
    assert isinstance(archived, events.RecordingArchived)
    assert (archived.recording_sid, archived.size_bytes, archived.duration_s) == (RE, 1234, 55)


def test_archiving_twice_changes_nothing() -> None:
    recording = completed_recording()
    archive(recording, at(70))
    recording.events.clear()

    archive(recording, at(80))

    assert recording.audio is not None and recording.audio.archived_at == at(70)
    assert recording.events == []


@pytest.mark.parametrize("stage", ["requested", "in_progress", "completed", "absent"])
def test_twilio_copy_cannot_be_deleted_before_archive(stage: str) -> None:
    recording = requested_recording()
    if stage != "requested":
        recording.started(recording_sid=RE, now=at(6))
    if stage == "completed":
        recording.provider_reported(
            status=ProviderRecordingStatus.COMPLETED, recording_sid=RE, now=at(60), duration_s=55
        )
    if stage == "absent":
        recording.provider_reported(status=ProviderRecordingStatus.ABSENT, recording_sid=RE, now=at(60))
    status_before = recording.status

    with pytest.raises(InvalidTransition):
        recording.deleted_at_twilio(at(90))
    assert recording.status == status_before
    assert recording.twilio_deleted_at is None


def test_twilio_copy_is_deleted_once_after_archive() -> None:
    recording = completed_recording()
    archive(recording)
    recording.events.clear()

    recording.deleted_at_twilio(at(80))
    recording.deleted_at_twilio(at(81))

    assert recording.status == RecordingStatus.TWILIO_DELETED
    assert recording.is_archived
    assert recording.twilio_deleted_at == at(80)
    assert types(recording.events) == ["RecordingDeletedAtTwilio"]


# --- a second recording of one call ---------------------------------------------------------------

RE2 = "RE" + "2" * 32


def test_a_second_recording_of_a_recorded_call_is_archived_like_the_first_without_replacing_it() -> None:
    call = start_call(org(recording=True))
    first = call.answer(at(5))
    assert first is not None

    second = Recording.found(call=call, recording_sid=RE2, now=at(20))
    second.provider_reported(
        status=ProviderRecordingStatus.COMPLETED, recording_sid=RE2, now=at(60), duration_s=40
    )
    archive(second)
    second.deleted_at_twilio(at(80))

    assert call.recording_id == first.id != second.id
    assert (second.call_id, second.org_id, second.recording_sid) == (call.id, "org-acme", RE2)
    assert second.status == RecordingStatus.TWILIO_DELETED and second.duration_s == 40
    assert types(second.events) == [
        "RecordingStarted",
        "RecordingCompletedAtTwilio",
        "RecordingArchived",
        "RecordingDeletedAtTwilio",
    ]


def test_audio_of_an_unrecorded_call_is_discarded_and_can_never_be_archived() -> None:
    call = start_call(org(recording=False))

    found = Recording.found(call=call, recording_sid=RE2, now=at(20))
    found.provider_reported(status=ProviderRecordingStatus.CAPTURING, recording_sid=RE2, now=at(21))
    found.provider_reported(
        status=ProviderRecordingStatus.COMPLETED, recording_sid=RE2, now=at(60), duration_s=40
    )

    assert found.status == RecordingStatus.DISCARDING and found.duration_s == 40
    assert found.events == []  # nothing asks for it to be archived
    with pytest.raises(InvalidTransition):
        archive(found)
    assert call.recording_id is None


def test_an_answer_after_twilios_audio_was_adopted_requests_no_second_recording() -> None:
    call = start_call(org(recording=True))
    adopted = Recording.request(call=call, now=at(2))
    call.recording_id = adopted.id

    assert call.answer(at(5)) is None
    assert call.recording_id == adopted.id and call.answered_at == at(5)


def test_discarding_deletes_once_and_says_why() -> None:
    found = Recording.found(call=start_call(org()), recording_sid=RE2, now=at(20))

    found.discarded(reason="recording_off", now=at(61))
    found.discarded(reason="recording_off", now=at(62))

    assert found.status == RecordingStatus.DISCARDED
    assert (found.discard_reason, found.twilio_deleted_at) == ("recording_off", at(61))
    assert types(found.events) == ["RecordingDiscarded"]
    for event in found.events:
        assert events.decode_event(event.type_name(), events.encode_event(event)) == event


def test_a_recording_that_is_to_be_kept_cannot_be_discarded() -> None:
    with pytest.raises(InvalidTransition):
        completed_recording().discarded(reason="recording_off", now=at(61))


@pytest.mark.parametrize(
    ("callback", "ends"),
    [(ProviderRecordingStatus.ABSENT, "absent"), (ProviderRecordingStatus.FAILED, "failed")],
)
def test_absent_or_failed_ends_a_recording_being_discarded(
    callback: ProviderRecordingStatus, ends: str
) -> None:
    found = Recording.found(call=start_call(org()), recording_sid=RE2, now=at(20))

    found.provider_reported(status=callback, recording_sid=RE2, now=at(30), error_code="16102")
    found.provider_reported(status=ProviderRecordingStatus.COMPLETED, recording_sid=RE2, now=at(31))

    assert found.status == RecordingStatus(ends)


def test_platform_line_recordings_belong_to_no_org() -> None:
    call = start_call(None, platform_kind=CallKind.DISCOVERY)
    recording = call.answer(at(2))

    assert recording is not None
    assert (recording.org_id, recording.kind) == (None, CallKind.DISCOVERY)


def test_every_event_of_a_call_survives_its_json_payload() -> None:
    call = start_call(org(recording=True))
    recording = call.answer(at(2))
    assert recording is not None
    recording.provider_reported(
        status=ProviderRecordingStatus.COMPLETED, recording_sid=RE, now=at(60), duration_s=55
    )
    archive(recording)
    recording.deleted_at_twilio(at(80))
    call.transfer(stage="completed", now=at(50))
    call.record_scorability(scorable=False, reason="robocall", now=at(81))
    call.end(status=CallStatus.COMPLETED, duration_s=80, now=at(82))

    for event in [*call.events, *recording.events]:
        decoded = events.decode_event(event.type_name(), events.encode_event(event))
        assert decoded == event
        assert decoded.occurred_at.tzinfo is not None


# --- property: Twilio's callbacks in any order, any number of times -------------------------------

CALLBACKS = st.lists(
    st.sampled_from(
        [ProviderRecordingStatus.CAPTURING, ProviderRecordingStatus.COMPLETED, ProviderRecordingStatus.ABSENT]
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(callbacks=CALLBACKS, started_first=st.booleans())
def test_any_order_of_recording_callbacks_ends_sane_and_completes_at_most_once(
    callbacks: list[ProviderRecordingStatus], started_first: bool
) -> None:
    recording = requested_recording()
    if started_first:
        recording.started(recording_sid=RE, now=at(5))

    for i, status in enumerate(callbacks):
        recording.provider_reported(status=status, recording_sid=RE, now=at(10 + i), duration_s=30)

    emitted = types(recording.events)
    terminal = next((s for s in callbacks if s in ("completed", "absent")), None)
    assert emitted.count("RecordingCompletedAtTwilio") <= 1
    assert emitted.count("RecordingAbsent") <= 1
    assert emitted.count("RecordingStarted") == (1 if started_first or callbacks else 0)
    assert not ("RecordingCompletedAtTwilio" in emitted and "RecordingAbsent" in emitted)
    if terminal == "completed":
        assert recording.status == RecordingStatus.COMPLETED
        assert emitted.count("RecordingCompletedAtTwilio") == 1
        assert recording.completed_at == at(10 + callbacks.index(ProviderRecordingStatus.COMPLETED))
    elif terminal == "absent":
        assert recording.status == RecordingStatus.ABSENT
        assert "RecordingCompletedAtTwilio" not in emitted
        assert recording.completed_at is None
    elif callbacks or started_first:
        assert recording.status == RecordingStatus.IN_PROGRESS
    else:
        assert recording.status == RecordingStatus.REQUESTED
    assert recording.recording_sid == (RE if callbacks or started_first else None)


# --- grammar of values (issue 9) -----------------------------------------------------------------


@pytest.mark.parametrize("org_id", ["a:b", "..", ".", "a/b", "a\n", "_a", "-a", "a b", "x" * 65, ""])
def test_an_org_id_outside_the_identifier_grammar_is_refused(org_id: str) -> None:
    with pytest.raises(InvalidValue):
        Organization.create(id=org_id, name="X", phone_numbers=[], greeting="", now=T0)


@pytest.mark.parametrize("number", ["+15550001111\n", " +15550001111", "15550001111", "+0555000111", "+1555"])
def test_a_number_that_is_not_exactly_e164_is_refused(number: str) -> None:
    with pytest.raises(InvalidValue):
        Organization.create(id="acme", name="X", phone_numbers=[number], greeting="", now=T0)
    with pytest.raises(InvalidValue):
        org().update_profile(name="X", phone_numbers=[number], greeting="", now=T0)


def test_negative_durations_are_refused_and_change_nothing() -> None:
    call = start_call(org(recording=True))
    recording = call.answer(at(5))
    assert recording is not None
    with pytest.raises(InvalidValue):
        call.end(status=CallStatus.COMPLETED, duration_s=-1, now=at(9))
    assert not call.ended and call.duration_s is None
    recording.started(recording_sid=RE, now=at(6))
    with pytest.raises(InvalidValue):
        recording.provider_reported(
            status=ProviderRecordingStatus.COMPLETED, recording_sid=RE, duration_s=-3, now=at(9)
        )
    assert recording.status == RecordingStatus.IN_PROGRESS and recording.duration_s is None


def test_an_unknown_call_status_is_an_invalid_value() -> None:
    assert CallStatus.parse("no-answer") is CallStatus.NO_ANSWER
    with pytest.raises(InvalidValue, match="unknown call status"):
        CallStatus.parse("vanished")


@pytest.mark.parametrize(("action", "reason"), [("peek", "support ticket 7"), ("list_calls", "  ")])
def test_an_audit_entry_refuses_an_unknown_action_or_a_blank_reason(action: str, reason: str) -> None:
    with pytest.raises(InvalidValue):
        AuditEntry.record(
            actor="op", actor_role="ops_admin", action=action, reason=reason, now=T0, org_id=None
        )
