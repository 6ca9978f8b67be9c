"""Pausing a call's recording for sensitive moments: on the real database, with the fake Twilio.

Pauses and resumes commit their interval, event and audit record together; the consumer
``telephony.pause-recording`` then tells Twilio (``drain``). The automatic resume runs on a fake clock.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from application import views
from application.commands import EndCall, PauseRecording, ResumeRecording, TransferCall
from application.errors import NotFound
from application.messagebus import MessageBus
from application.pauses import PauseLimiter, PauseState
from application.services import Services
from domain import events
from domain.audit import AuditEntry
from domain.errors import InvalidTransition
from domain.model import CallKind, CallStatus, ResumeReason
from entrypoints.config import Settings
from tests.fakes import FakeClock, FakeTelephony, InMemoryRecordingStore, drain, make_services
from tests.support.database import Database
from tests.unit.test_handlers import (
    ACME,
    agent_answers,
    given_org,
    incoming,
    operations,
    recorded_call_in_progress,
    sid,
    twilio_recording_of,
)


@pytest.fixture
def svc(db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore, clock: FakeClock) -> Services:
    return make_services(db=db, telephony=telephony, store=store, clock=clock)


async def live_call(bus: MessageBus, svc: Services, n: int = 1) -> str:
    """A recorded call whose recording Twilio has started and named; returns the call id."""
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(n))
    return decision.call_id


async def pause(bus: MessageBus, call_id: str) -> PauseState:
    state: PauseState = await bus.handle(PauseRecording(call_id))
    return state


async def resume(bus: MessageBus, call_id: str) -> PauseState:
    state: PauseState = await bus.handle(ResumeRecording(call_id))
    return state


async def audit_actions(svc: Services) -> list[tuple[str, str, str | None]]:
    async with svc.reader() as uow:
        entries: list[AuditEntry] = await uow.audit.page(org_id=ACME, limit=50)
    return [(e.action, e.actor, e.reason) for e in reversed(entries) if e.action.endswith("_recording")]


async def test_a_pause_reaches_twilio_as_paused_with_silence_and_opens_an_interval(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, clock: FakeClock, db: Database
) -> None:
    call_id = await live_call(bus, svc)
    recording_sid = twilio_recording_of(telephony, sid(1))

    state = await pause(bus, call_id)

    assert state.recording.open_pause is not None
    assert operations(telephony, "pause_recording") == []  # only once committed, by the consumer
    await drain(svc)
    assert operations(telephony, "pause_recording") == [(sid(1), recording_sid, "silence")]
    assert telephony.status(recording_sid) == "paused"
    recording = await db.recording_for_call(call_id)
    assert recording is not None
    [interval] = recording.pauses
    assert (interval.paused_at, interval.paused_by, interval.resumed_at) == (
        clock.now(),
        "platform-service",
        None,
    )
    [paused] = await db.events_of(events.RecordingPaused)
    assert (paused.recording_sid, paused.call_sid) == (recording_sid, sid(1))
    assert await audit_actions(svc) == [("pause_recording", "platform-service", None)]


async def test_a_resume_reaches_twilio_as_in_progress_and_closes_the_interval(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, clock: FakeClock, db: Database
) -> None:
    call_id = await live_call(bus, svc)
    recording_sid = twilio_recording_of(telephony, sid(1))
    await pause(bus, call_id)
    paused_at = clock.now()
    await drain(svc)
    resumed_at = clock.advance(seconds=40)

    state = await resume(bus, call_id)
    await drain(svc)

    assert state.recording.open_pause is None
    assert operations(telephony, "resume_recording") == [(sid(1), recording_sid)]
    assert telephony.status(recording_sid) == "in-progress"
    recording = await db.recording_for_call(call_id)
    assert recording is not None
    [interval] = recording.pauses
    assert (interval.paused_at, interval.resumed_at) == (paused_at, resumed_at)
    assert interval.resume_reason == ResumeReason.REQUESTED
    [resumed] = await db.events_of(events.RecordingResumed)
    assert (resumed.paused_at, resumed.reason) == (paused_at, "requested")
    assert [a for a, _, _ in await audit_actions(svc)] == ["pause_recording", "resume_recording"]


async def test_pause_and_resume_are_idempotent_one_interval_one_request_each(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, clock: FakeClock, db: Database
) -> None:
    call_id = await live_call(bus, svc)
    assert (await resume(bus, call_id)).recording.pauses == []  # not paused: nothing to resume

    await pause(bus, call_id)
    clock.advance(seconds=1)
    again = await pause(bus, call_id)
    await drain(svc)
    await resume(bus, call_id)
    await resume(bus, call_id)
    await drain(svc)

    assert len(again.recording.pauses) == 1 and again.recording.pauses[
        0
    ].paused_at == clock.now() - timedelta(seconds=1)
    assert len(operations(telephony, "pause_recording")) == 1
    assert len(operations(telephony, "resume_recording")) == 1
    recording = await db.recording_for_call(call_id)
    assert recording is not None and len(recording.pauses) == 1
    assert len(await audit_actions(svc)) == 2


async def test_pausing_again_after_a_resume_opens_a_second_interval(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, clock: FakeClock, db: Database
) -> None:
    call_id = await live_call(bus, svc)
    for _ in range(2):
        await pause(bus, call_id)
        await drain(svc)
        clock.advance(seconds=10)
        await resume(bus, call_id)
        await drain(svc)
        clock.advance(seconds=10)

    recording = await db.recording_for_call(call_id)
    assert recording is not None and [p.resumed_at is not None for p in recording.pauses] == [True, True]
    assert len(operations(telephony, "pause_recording")) == 2
    assert telephony.status(twilio_recording_of(telephony, sid(1))) == "in-progress"


async def test_a_pause_superseded_before_its_consumer_ran_does_not_leave_twilio_paused(
    bus: MessageBus, svc: Services, telephony: FakeTelephony
) -> None:
    call_id = await live_call(bus, svc)
    await pause(bus, call_id)
    await resume(bus, call_id)  # both committed before either reached Twilio

    await drain(svc)

    assert operations(telephony, "pause_recording") == []  # the pause no longer describes the state
    assert len(operations(telephony, "resume_recording")) == 1
    assert telephony.status(twilio_recording_of(telephony, sid(1))) == "in-progress"


async def test_a_failed_twilio_pause_is_kept_and_retried_until_it_succeeds(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, clock: FakeClock
) -> None:
    call_id = await live_call(bus, svc)
    telephony.fail_next("pause_recording", times=2)

    await pause(bus, call_id)
    first = await drain(svc, check=False)
    clock.advance(minutes=1)  # the outbox's backoff
    await drain(svc, check=False)
    clock.advance(minutes=5)
    await drain(svc)

    assert first.failures, "the failure is reported, not swallowed"
    assert len(operations(telephony, "pause_recording")) == 3
    assert telephony.status(twilio_recording_of(telephony, sid(1))) == "paused"


async def test_the_pause_behavior_setting_reaches_twilio(
    db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore, clock: FakeClock
) -> None:
    svc = make_services(db=db, telephony=telephony, store=store, clock=clock)
    svc = replace(svc, settings=replace(svc.settings, pause_behavior="skip"))
    bus = MessageBus(svc)
    call_id = await live_call(bus, svc)

    await pause(bus, call_id)
    await drain(svc)

    [(_, _, behavior)] = operations(telephony, "pause_recording")
    assert behavior == "skip"


# --- refused ------------------------------------------------------------------------------------


async def test_pause_of_an_unknown_call_is_not_found(bus: MessageBus) -> None:
    with pytest.raises(NotFound):
        await pause(bus, "00000000-0000-4000-8000-000000000000")


async def test_pause_of_a_call_that_is_not_recorded_is_refused_and_changes_nothing(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, db: Database
) -> None:
    await given_org(bus, recording=False)
    decision = await incoming(bus, sid(1))
    await agent_answers(bus, sid(1))
    before = await db.event_types()

    with pytest.raises(InvalidTransition, match="not recorded"):
        await pause(bus, decision.call_id)
    with pytest.raises(InvalidTransition, match="not recorded"):
        await resume(bus, decision.call_id)

    assert await db.event_types() == before
    assert await audit_actions(svc) == []


async def test_pause_and_resume_of_an_ended_call_are_refused(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, db: Database
) -> None:
    call_id = await live_call(bus, svc)
    await bus.handle(EndCall(sid(1), CallStatus.COMPLETED, 30))

    with pytest.raises(InvalidTransition, match="ended"):
        await pause(bus, call_id)
    with pytest.raises(InvalidTransition, match="ended"):
        await resume(bus, call_id)
    await drain(svc)

    assert operations(telephony, "pause_recording") == []
    assert await db.events_of(events.RecordingPaused) == []


async def test_pause_before_twilio_named_the_recording_is_refused_until_it_has(
    bus: MessageBus, svc: Services, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await incoming(bus, sid(1))
    with pytest.raises(InvalidTransition, match="not been answered"):
        await pause(bus, decision.call_id)
    await agent_answers(bus, sid(1))  # the recording is requested; the start has not run yet

    with pytest.raises(InvalidTransition, match="not started at Twilio yet"):
        await pause(bus, decision.call_id)

    await drain(svc)  # Twilio starts it and names it
    assert (await pause(bus, decision.call_id)).recording.open_pause is not None


async def test_pause_after_the_call_left_the_platform_is_refused(bus: MessageBus, svc: Services) -> None:
    call_id = await live_call(bus, svc)
    await bus.handle(TransferCall(call_id, "completed"))

    with pytest.raises(InvalidTransition, match="transferred"):
        await pause(bus, call_id)


# --- a pause never outlives the call -----------------------------------------------------------


async def test_a_pause_open_when_the_call_ends_closes_at_the_calls_end_without_asking_twilio(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, clock: FakeClock, db: Database
) -> None:
    call_id = await live_call(bus, svc)
    await pause(bus, call_id)
    await drain(svc)
    ended_at = clock.advance(seconds=20)

    await bus.handle(EndCall(sid(1), CallStatus.COMPLETED, 30))
    await drain(svc)

    recording = await db.recording_for_call(call_id)
    assert recording is not None and recording.open_pause is None
    [interval] = recording.pauses
    assert (interval.resumed_at, interval.resumed_by, interval.resume_reason) == (
        ended_at,
        "system",
        ResumeReason.CALL_ENDED,
    )
    assert operations(telephony, "resume_recording") == []  # the call is over: nothing to resume
    assert await audit_actions(svc) == [
        ("pause_recording", "platform-service", None),
        ("resume_recording", "system", "the call ended while paused"),
    ]


async def test_a_forgotten_pause_is_resumed_after_the_maximum_pause(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, clock: FakeClock, db: Database
) -> None:
    call_id = await live_call(bus, svc)
    limiter = PauseLimiter(svc)
    await pause(bus, call_id)
    await drain(svc)

    clock.advance(svc.settings.max_pause - timedelta(seconds=1))
    assert await limiter.run_once() == 0
    resumed_at = clock.advance(seconds=1)
    assert await limiter.run_once() == 1
    assert await limiter.run_once() == 0  # once
    await drain(svc)

    recording = await db.recording_for_call(call_id)
    assert recording is not None
    [interval] = recording.pauses
    assert (interval.resumed_at, interval.resume_reason) == (resumed_at, ResumeReason.MAX_PAUSE)
    assert telephony.status(twilio_recording_of(telephony, sid(1))) == "in-progress"
    assert await audit_actions(svc) == [
        ("pause_recording", "platform-service", None),
        ("resume_recording", "system", "the maximum pause ran out"),
    ]
    [resumed] = await db.events_of(events.RecordingResumed)
    assert resumed.reason == "max_pause"


async def test_the_limiter_closes_a_pause_a_race_left_open_on_an_ended_call(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, clock: FakeClock, db: Database
) -> None:
    call_id = await live_call(bus, svc)
    await pause(bus, call_id)
    ended_at = clock.advance(seconds=5)
    async with svc.uow() as uow:  # the call ended in a transaction that did not see the pause
        call = await uow.calls.get(call_id)
        assert call is not None
        call.end(status=CallStatus.COMPLETED, duration_s=5, now=ended_at)
        await uow.commit()
    clock.advance(seconds=5)

    assert await PauseLimiter(svc).run_once() == 1
    await drain(svc)

    recording = await db.recording_for_call(call_id)
    assert recording is not None
    assert [(p.resumed_at, p.resume_reason) for p in recording.pauses] == [
        (ended_at, ResumeReason.CALL_ENDED)
    ]
    assert operations(telephony, "resume_recording") == []


# --- read side ------------------------------------------------------------------------------------


async def test_the_call_detail_lists_its_pauses(bus: MessageBus, svc: Services, clock: FakeClock) -> None:
    call_id = await live_call(bus, svc)
    await pause(bus, call_id)
    clock.advance(seconds=30)
    await resume(bus, call_id)
    clock.advance(seconds=30)
    await pause(bus, call_id)

    view = await views.get_call(svc, org_id=ACME, call_id=call_id, kinds=(CallKind.CUSTOMER,))

    assert [p.resumed_at is None for p in view.pauses] == [False, True]


# --- settings -------------------------------------------------------------------------------------


def test_the_maximum_pause_and_the_pause_behavior_come_from_the_environment(tmp_path: Path) -> None:
    default = Settings.from_env({"CALLREC_VAR_DIR": str(tmp_path)}).service_settings
    assert (default.max_pause, default.pause_behavior) == (timedelta(minutes=5), "silence")
    chosen = Settings.from_env(
        {"CALLREC_VAR_DIR": str(tmp_path), "CALLREC_MAX_PAUSE_S": "90", "CALLREC_PAUSE_BEHAVIOR": "skip"}
    ).service_settings
    assert (chosen.max_pause, chosen.pause_behavior) == (timedelta(seconds=90), "skip")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CALLREC_PAUSE_BEHAVIOR": "mute"}, "CALLREC_PAUSE_BEHAVIOR"),
        ({"CALLREC_MAX_PAUSE_S": "0"}, "CALLREC_MAX_PAUSE_S must be between 1 and 86400 seconds"),
    ],
)
def test_a_bad_pause_setting_stops_the_service_naming_the_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env({"CALLREC_VAR_DIR": str(tmp_path), **env})
