"""The reconciliation sweep against a fake Twilio: what it finds, and how it resumes the work."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest

from application.commands import (
    EndCall,
    RecordRecordingStatus,
    RecordStreamEvent,
    SetCallRecording,
    StartCall,
    UpsertOrganization,
)
from application.handlers import CallDecision
from application.messagebus import MessageBus
from application.ports import TelephonyError
from application.reconcile import RecordingReconciler, SweepReport
from application.services import Services
from domain import events
from domain.model import CallStatus, ProviderRecordingStatus, Recording, RecordingStatus, StreamEvent
from tests.fakes import FakeClock, FakeTelephony, InMemoryRecordingStore, drain, make_services
from tests.support.database import Database

ORG, NUMBER = "org-acme", "+15550001111"
ACCOUNT_SID = "AC" + "0" * 32
STUCK_AFTER = timedelta(minutes=15)


def sid(n: int) -> str:
    return f"CA{n:032x}"


def audio_of(size: int = 100 * 1024) -> bytes:
    return b"ID3" + random.Random(size).randbytes(size - 3)


@pytest.fixture
def svc(db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore, clock: FakeClock) -> Services:
    return make_services(db=db, telephony=telephony, store=store, clock=clock)


@pytest.fixture
def reconciler(svc: Services) -> RecordingReconciler:
    return RecordingReconciler(svc, stuck_after=STUCK_AFTER)


async def recorded_call_in_progress(bus: MessageBus, svc: Services, call_sid: str) -> CallDecision:
    decision: CallDecision = await bus.handle(StartCall(call_sid, ACCOUNT_SID, "+15557654321", NUMBER))
    await bus.handle(RecordStreamEvent(call_sid, "MZ" + call_sid[2:], StreamEvent.STARTED))
    await drain(svc)
    return decision


@pytest.fixture
async def org(bus: MessageBus) -> None:
    await bus.handle(UpsertOrganization(ORG, "Acme", [NUMBER], "Hi, Acme here."))
    await bus.handle(SetCallRecording(ORG, True, "admin@acme"))


def twilio_sid_of(telephony: FakeTelephony, call_sid: str) -> str:
    [recording_sid] = [r.sid for r in telephony.recordings.values() if r.call_sid == call_sid]
    return recording_sid


async def recording_of(db: Database, call_id: str) -> Recording:
    recording = await db.recording_for_call(call_id)
    assert recording is not None
    return recording


async def lose_pending_events(db: Database, clock: FakeClock) -> None:
    """As if every unpublished event had gone to a dead-letter topic: nobody will deliver it."""
    await db.mark_outbox(published_at=clock.now())


async def complete_with_callback(
    bus: MessageBus, telephony: FakeTelephony, call_sid: str, audio: bytes
) -> str:
    recording_sid = twilio_sid_of(telephony, call_sid)
    telephony.set_audio(recording_sid, audio)
    telephony.complete_recording(recording_sid, duration=30)
    await bus.handle(
        RecordRecordingStatus(call_sid, recording_sid, ProviderRecordingStatus.COMPLETED, duration_s=30)
    )
    return recording_sid


# --- lost callbacks ------------------------------------------------------------------------------


@pytest.mark.usefixtures("org")
async def test_a_lost_completed_callback_is_found_by_the_sweep_and_the_recording_archived(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    clock: FakeClock,
    reconciler: RecordingReconciler,
) -> None:
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    recording_sid = twilio_sid_of(telephony, sid(1))
    audio = audio_of()
    telephony.set_audio(recording_sid, audio)
    telephony.complete_recording(recording_sid, duration=30)  # ...and its callback never arrives
    await bus.handle(EndCall(sid(1), CallStatus.COMPLETED, 31))

    clock.advance(STUCK_AFTER + timedelta(seconds=1))
    report = await reconciler.sweep()
    await drain(svc)

    assert report.resumed == {"twilio-said-completed": 1} and report.failed == []
    recording = await recording_of(db, decision.call_id)
    assert recording.status == RecordingStatus.TWILIO_DELETED
    assert recording.audio is not None and store.data(recording.audio.storage_key) == audio
    assert recording.duration_s == 30
    assert telephony.delete_count(recording_sid) == 1


@pytest.mark.usefixtures("org")
async def test_nothing_is_touched_before_it_has_been_stuck_long_enough(
    bus: MessageBus,
    svc: Services,
    telephony: FakeTelephony,
    clock: FakeClock,
    reconciler: RecordingReconciler,
) -> None:
    await recorded_call_in_progress(bus, svc, sid(1))
    telephony.complete_recording(twilio_sid_of(telephony, sid(1)))

    clock.advance(STUCK_AFTER - timedelta(seconds=1))
    report = await reconciler.sweep()

    assert report.examined == 0
    assert [op for op, _ in telephony.calls] == ["list_call_recordings", "start_recording"]


@pytest.mark.usefixtures("org")
async def test_a_long_call_still_being_recorded_is_left_alone(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    clock: FakeClock,
    reconciler: RecordingReconciler,
) -> None:
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    commits = db.commits

    clock.advance(hours=2)
    report = await reconciler.sweep()

    assert report.examined == 1 and not report.resumed
    assert db.commits == commits
    assert (await recording_of(db, decision.call_id)).status == RecordingStatus.IN_PROGRESS


@pytest.mark.usefixtures("org")
async def test_a_lost_absent_callback_marks_the_recording_absent_and_deletes_nothing(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    clock: FakeClock,
    reconciler: RecordingReconciler,
) -> None:
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    telephony.recordings[twilio_sid_of(telephony, sid(1))].status = "absent"

    clock.advance(STUCK_AFTER * 2)
    report = await reconciler.sweep()
    await drain(svc)

    assert report.resumed == {"twilio-said-absent": 1}
    assert (await recording_of(db, decision.call_id)).status == RecordingStatus.ABSENT
    assert [op for op, _ in telephony.calls if op == "delete_recording"] == []


@pytest.mark.usefixtures("org")
async def test_a_recording_twilio_started_but_whose_sid_was_never_saved_is_adopted_and_archived(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    clock: FakeClock,
    reconciler: RecordingReconciler,
) -> None:
    decision: CallDecision = await bus.handle(StartCall(sid(1), ACCOUNT_SID, "+15557654321", NUMBER))
    await bus.handle(RecordStreamEvent(sid(1), "MZ1", StreamEvent.STARTED))
    await lose_pending_events(db, clock)  # the start request went out, its answer was lost with the process
    recording_sid = telephony.add_recording(sid(1), status="completed", audio=audio_of())

    clock.advance(STUCK_AFTER * 2)
    report = await reconciler.sweep()
    await drain(svc)

    assert report.resumed == {"twilio-said-completed": 1}
    recording = await recording_of(db, decision.call_id)
    assert (recording.recording_sid, recording.status) == (recording_sid, RecordingStatus.TWILIO_DELETED)


@pytest.mark.usefixtures("org")
async def test_a_requested_recording_twilio_never_started_of_an_ended_call_becomes_absent(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    clock: FakeClock,
    reconciler: RecordingReconciler,
) -> None:
    decision: CallDecision = await bus.handle(StartCall(sid(1), ACCOUNT_SID, "+15557654321", NUMBER))
    await bus.handle(RecordStreamEvent(sid(1), "MZ1", StreamEvent.STARTED))
    await lose_pending_events(db, clock)
    await bus.handle(EndCall(sid(1), CallStatus.COMPLETED, 2))

    clock.advance(STUCK_AFTER * 2)
    report = await reconciler.sweep()

    assert report.resumed == {"never-captured": 1}
    assert (await recording_of(db, decision.call_id)).status == RecordingStatus.ABSENT


# --- failed archives and failed deletes ----------------------------------------------------------


@pytest.mark.usefixtures("org")
async def test_an_archive_whose_event_was_lost_after_failing_is_done_by_the_sweep(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    clock: FakeClock,
    reconciler: RecordingReconciler,
) -> None:
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    audio = audio_of()
    store.fail_next("put")
    recording_sid = await complete_with_callback(bus, telephony, sid(1), audio)
    await drain(svc, check=False)
    await lose_pending_events(db, clock)
    assert (await recording_of(db, decision.call_id)).status == RecordingStatus.COMPLETED

    clock.advance(STUCK_AFTER * 2)
    report = await reconciler.sweep()
    assert (await recording_of(db, decision.call_id)).status == RecordingStatus.ARCHIVED
    assert telephony.delete_count(recording_sid) == 0  # the delete follows the archive's own event
    await drain(svc)

    assert report.resumed == {"archive": 1}
    recording = await recording_of(db, decision.call_id)
    assert recording.status == RecordingStatus.TWILIO_DELETED
    assert recording.audio is not None and store.data(recording.audio.storage_key) == audio
    assert telephony.delete_count(recording_sid) == 1
    assert len(await db.events_of(events.RecordingArchived)) == 1


@pytest.mark.usefixtures("org")
async def test_a_sweep_whose_archive_fails_again_keeps_the_twilio_copy_and_says_so(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    clock: FakeClock,
    reconciler: RecordingReconciler,
) -> None:
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    store.fail_next("put")  # the archive's
    store.fail_next("put")  # the sweep's
    recording_sid = await complete_with_callback(bus, telephony, sid(1), audio_of())
    await drain(svc, check=False)
    await lose_pending_events(db, clock)

    clock.advance(STUCK_AFTER * 2)
    report = await reconciler.sweep()

    assert [recording_id for recording_id, _ in report.failed] == [
        (await recording_of(db, decision.call_id)).id
    ]
    assert "StorageError" in report.failed[0][1]
    assert (await recording_of(db, decision.call_id)).status == RecordingStatus.COMPLETED
    assert telephony.delete_count(recording_sid) == 0


@pytest.mark.usefixtures("org")
async def test_a_twilio_delete_whose_event_was_lost_after_failing_is_done_by_the_sweep(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    clock: FakeClock,
    reconciler: RecordingReconciler,
) -> None:
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    telephony.fail_next("delete_recording")
    recording_sid = await complete_with_callback(bus, telephony, sid(1), audio_of())
    await drain(svc, check=False)
    await lose_pending_events(db, clock)
    assert (await recording_of(db, decision.call_id)).status == RecordingStatus.ARCHIVED

    clock.advance(STUCK_AFTER * 2)
    report = await reconciler.sweep()

    assert report.resumed == {"delete-twilio-copy": 1}
    assert (await recording_of(db, decision.call_id)).status == RecordingStatus.TWILIO_DELETED
    assert telephony.is_deleted(recording_sid)


@pytest.mark.usefixtures("org")
async def test_two_sweeps_racing_archive_once_and_delete_once(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    clock: FakeClock,
) -> None:
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    store.fail_next("put")
    recording_sid = await complete_with_callback(bus, telephony, sid(1), audio_of())
    await drain(svc, check=False)
    await lose_pending_events(db, clock)
    clock.advance(STUCK_AFTER * 2)

    first, second = (RecordingReconciler(svc, stuck_after=STUCK_AFTER) for _ in range(2))
    await asyncio.gather(first.sweep(), second.sweep())
    await drain(svc)

    assert (await recording_of(db, decision.call_id)).status == RecordingStatus.TWILIO_DELETED
    assert len(await db.events_of(events.RecordingArchived)) == 1
    assert telephony.delete_count(recording_sid) == 1


# --- more than one recording of a call ------------------------------------------------------------


async def a_second_recording(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, call_sid: str, audio: bytes
) -> str:
    """Twilio holds a second recording of the call and has called back that it started."""
    other = telephony.add_recording(call_sid, status="in-progress")
    telephony.set_audio(other, audio)
    await bus.handle(RecordRecordingStatus(call_sid, other, ProviderRecordingStatus.CAPTURING))
    await drain(svc)
    return other


async def the_other_recording(db: Database, call_id: str) -> Recording:
    own = (await db.call(call_id)).recording_id
    [other] = [r for r in await db.recordings_of_call(call_id) if r.id != own]
    return other


@pytest.mark.usefixtures("org")
@pytest.mark.parametrize(
    ("stuck_in", "action"),
    [
        (RecordingStatus.IN_PROGRESS, "twilio-said-completed"),
        (RecordingStatus.COMPLETED, "archive"),
        (RecordingStatus.ARCHIVED, "delete-twilio-copy"),
    ],
)
async def test_a_second_recording_stuck_in_any_state_is_resumed_like_the_calls_own(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    clock: FakeClock,
    reconciler: RecordingReconciler,
    stuck_in: RecordingStatus,
    action: str,
) -> None:
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    await complete_with_callback(bus, telephony, sid(1), audio_of())
    await drain(svc)
    audio = audio_of(50 * 1024)
    other = await a_second_recording(bus, svc, telephony, sid(1), audio)
    telephony.complete_recording(other, duration=12)
    if stuck_in == RecordingStatus.COMPLETED:
        store.fail_next("put")
    if stuck_in == RecordingStatus.ARCHIVED:
        telephony.fail_next("delete_recording")
    if stuck_in != RecordingStatus.IN_PROGRESS:  # else its completed callback is lost
        await bus.handle(
            RecordRecordingStatus(sid(1), other, ProviderRecordingStatus.COMPLETED, duration_s=12)
        )
        await drain(svc, check=False)
    await lose_pending_events(db, clock)
    assert (await the_other_recording(db, decision.call_id)).status == stuck_in

    clock.advance(STUCK_AFTER * 2)
    report = await reconciler.sweep()
    await drain(svc)

    assert report.resumed == {action: 1} and report.failed == []
    resumed = await the_other_recording(db, decision.call_id)
    assert resumed.status == RecordingStatus.TWILIO_DELETED
    assert resumed.audio is not None and store.data(resumed.audio.storage_key) == audio
    assert telephony.is_deleted(other) and telephony.delete_count(other) == 1
    assert (await recording_of(db, decision.call_id)).recording_sid != other  # the call's own is unchanged


@pytest.mark.usefixtures("org")
async def test_a_recording_twilio_holds_that_nobody_told_us_of_is_adopted_and_archived(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    clock: FakeClock,
    reconciler: RecordingReconciler,
) -> None:
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    own_sid = twilio_sid_of(telephony, sid(1))
    telephony.complete_recording(own_sid, duration=30)  # ...and its completed callback is lost
    unknown = telephony.add_recording(sid(1), status="completed", audio=audio_of(60 * 1024))
    telephony.complete_recording(unknown, duration=25)  # started outside the service: no callbacks

    clock.advance(STUCK_AFTER * 2)
    report = await reconciler.sweep()
    await drain(svc)

    assert report.resumed == {"twilio-said-completed": 1, "adopted-from-twilio": 1}
    assert (await recording_of(db, decision.call_id)).recording_sid == own_sid
    adopted = await the_other_recording(db, decision.call_id)
    assert (adopted.recording_sid, adopted.status) == (unknown, RecordingStatus.TWILIO_DELETED)
    assert adopted.audio is not None and store.data(adopted.audio.storage_key) == audio_of(60 * 1024)
    assert telephony.is_deleted(own_sid) and telephony.is_deleted(unknown)


async def test_audio_of_an_unrecorded_call_is_discarded_by_the_sweep_along_with_what_nobody_told_us_of(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    clock: FakeClock,
    reconciler: RecordingReconciler,
) -> None:
    await bus.handle(UpsertOrganization(ORG, "Acme", [NUMBER], "Hi, Acme here."))  # recording off
    decision = await bus.handle(StartCall(sid(1), ACCOUNT_SID, "+15557654321", NUMBER))
    told = telephony.add_recording(sid(1), status="in-progress")
    await bus.handle(RecordRecordingStatus(sid(1), told, ProviderRecordingStatus.CAPTURING))
    await lose_pending_events(db, clock)  # the stop never reached Twilio
    untold = telephony.add_recording(sid(1), status="completed", audio=audio_of())

    clock.advance(STUCK_AFTER * 2)
    first = await reconciler.sweep()
    await drain(svc)
    assert telephony.status(told) == "stopped" and telephony.is_deleted(untold)
    telephony.complete_recording(told, duration=20)  # ...and its completed callback is lost
    clock.advance(STUCK_AFTER * 2)
    second = await reconciler.sweep()
    await drain(svc)

    assert first.resumed == {"twilio-said-in-progress": 1, "adopted-from-twilio": 1}
    assert second.resumed == {"twilio-said-completed": 1}
    assert telephony.is_deleted(told) and telephony.is_deleted(untold)
    assert store.objects == {}
    discarded = await db.recordings_of_call(decision.call_id)
    assert {(r.recording_sid, r.status) for r in discarded} == {
        (told, RecordingStatus.DISCARDED),
        (untold, RecordingStatus.DISCARDED),
    }


async def test_audio_being_discarded_that_twilio_no_longer_lists_ends_discarded(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    clock: FakeClock,
    reconciler: RecordingReconciler,
) -> None:
    await bus.handle(UpsertOrganization(ORG, "Acme", [NUMBER], "Hi, Acme here."))  # recording off
    decision = await bus.handle(StartCall(sid(1), ACCOUNT_SID, "+15557654321", NUMBER))
    gone = telephony.add_recording(sid(1), status="completed", audio=audio_of())
    await bus.handle(RecordRecordingStatus(sid(1), gone, ProviderRecordingStatus.COMPLETED, duration_s=4))
    await lose_pending_events(db, clock)
    telephony.recordings[gone].deleted = True  # deleted, and the record of it lost

    clock.advance(STUCK_AFTER * 2)
    report = await reconciler.sweep()
    await drain(svc)

    assert report.resumed == {"discard": 1}
    [recording] = await db.recordings_of_call(decision.call_id)
    assert (recording.status, recording.discard_reason) == (RecordingStatus.DISCARDED, "recording_off")


# --- robustness ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("org")
async def test_one_recording_failing_does_not_stop_the_sweep_for_the_others(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    clock: FakeClock,
) -> None:
    first = await recorded_call_in_progress(bus, svc, sid(1))
    second = await recorded_call_in_progress(bus, svc, sid(2))
    for call_sid in (sid(1), sid(2)):
        telephony.complete_recording(twilio_sid_of(telephony, call_sid))
    telephony.fail_next("list_call_recordings", error=TelephonyError("Twilio answered 503"))

    clock.advance(STUCK_AFTER * 2)
    report = await RecordingReconciler(svc, stuck_after=STUCK_AFTER, concurrency=1).sweep()
    await drain(svc)

    assert report.examined == 2 and report.resumed == {"twilio-said-completed": 1}
    assert len(report.failed) == 1 and "503" in report.failed[0][1]
    statuses = {(await recording_of(db, d.call_id)).status for d in (first, second)}
    assert statuses == {RecordingStatus.IN_PROGRESS, RecordingStatus.TWILIO_DELETED}

    report = await RecordingReconciler(svc, stuck_after=STUCK_AFTER).sweep()  # the next pass
    await drain(svc)
    assert report.resumed == {"twilio-said-completed": 1}


@pytest.mark.usefixtures("org")
async def test_settled_recordings_are_never_examined(
    bus: MessageBus,
    svc: Services,
    telephony: FakeTelephony,
    clock: FakeClock,
    reconciler: RecordingReconciler,
) -> None:
    await recorded_call_in_progress(bus, svc, sid(1))
    await complete_with_callback(bus, telephony, sid(1), audio_of())
    await drain(svc)
    await recorded_call_in_progress(bus, svc, sid(2))
    await bus.handle(
        RecordRecordingStatus(sid(2), twilio_sid_of(telephony, sid(2)), ProviderRecordingStatus.ABSENT)
    )

    clock.advance(days=30)
    report = await reconciler.sweep()

    assert report.examined == 0


async def test_run_forever_sweeps_until_stopped(svc: Services) -> None:
    reconciler = RecordingReconciler(svc, poll_interval=0.01)
    passes = 0
    three_passes = asyncio.Event()
    original = reconciler.sweep

    async def counting() -> SweepReport:
        nonlocal passes
        passes += 1
        if passes == 3:
            three_passes.set()
        return await original()

    reconciler.sweep = counting  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run_forever(stop))
    await asyncio.wait_for(three_passes.wait(), timeout=30)  # a hang detector, however loaded the machine
    stop.set()
    await asyncio.wait_for(task, timeout=30)
    assert task.done() and passes >= 3
