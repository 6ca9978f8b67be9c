"""The policy for filtered calls: a recording of a call the scorability filter marks non-engagement is
deleted once the call settles, only when the org asked for it, and never one of an engaged call."""

from __future__ import annotations

import pytest

from application.commands import EndCall, RecordScorability, SetNonEngagementPolicy, StartCall
from application.handlers import archive_recording, delete_twilio_copy
from application.messagebus import MessageBus
from application.services import Services
from application.views import get_call
from domain import events
from domain.events import decode_event
from domain.model import CallKind, CallStatus, RecordingStatus
from tests.fakes import FakeClock, FakeTelephony, InMemoryRecordingStore, drain, make_services
from tests.support.database import Database
from tests.unit.test_handlers import (
    ACCOUNT_SID,
    ACME,
    ACME_NUMBER,
    agent_answers,
    given_org,
    sid,
    twilio_completes,
)

CUSTOMER = (CallKind.CUSTOMER,)


@pytest.fixture
def svc(db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore, clock: FakeClock) -> Services:
    return make_services(db=db, telephony=telephony, store=store, clock=clock)


async def settled_call(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, n: int, *, scorable: bool | None
) -> str:
    """A recorded call, archived and ended; with a verdict (before it settles) unless None."""
    decision = await bus.handle(StartCall(sid(n), ACCOUNT_SID, "+15557654321", ACME_NUMBER))
    await agent_answers(bus, sid(n))
    await drain(svc)
    if scorable is not None:
        await bus.handle(RecordScorability(decision.call_id, scorable, None if scorable else "robocall"))
    await twilio_completes(bus, telephony, sid(n))
    await bus.handle(EndCall(sid(n), CallStatus.COMPLETED, 42))
    await drain(svc)
    return str(decision.call_id)


async def delete_filtered(bus: MessageBus) -> None:
    await bus.handle(SetNonEngagementPolicy(ACME, False, "admin@acme"))


async def recording_state(
    svc: Services, db: Database, call_id: str
) -> tuple[RecordingStatus, str, str | None]:
    recording = await db.recording_for_call(call_id)
    assert recording is not None
    view = (await get_call(svc, org_id=ACME, call_id=call_id, kinds=CUSTOMER)).recording
    return recording.status, view.status, view.reason


async def test_a_filtered_calls_recording_is_kept_by_default(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, db: Database
) -> None:
    await given_org(bus, recording=True)
    call_id = await settled_call(bus, svc, telephony, 1, scorable=False)
    assert (await recording_state(svc, db, call_id))[:2] == (RecordingStatus.TWILIO_DELETED, "available")


async def test_when_the_org_asks_a_filtered_calls_recording_is_deleted_everywhere_once_settled(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, store: InMemoryRecordingStore, db: Database
) -> None:
    await given_org(bus, recording=True)
    await delete_filtered(bus)
    call_id = await settled_call(bus, svc, telephony, 1, scorable=False)

    assert await recording_state(svc, db, call_id) == (RecordingStatus.PURGED, "not_recorded", "filtered")
    recording = await db.recording_for_call(call_id)
    assert recording is not None and recording.purge_reason == "filtered"
    assert recording.audio is not None and recording.audio.storage_key not in store.objects
    assert recording.recording_sid is not None and telephony.recordings[recording.recording_sid].deleted
    async with svc.reader() as uow:
        entries = await uow.audit.page(org_id=ACME, limit=50)
    assert [(e.action, e.call_id, e.reason) for e in entries if e.action == "purge_recording"] == [
        ("purge_recording", call_id, "filtered: robocall")
    ]


async def test_a_verdict_arriving_after_the_call_settled_applies_the_policy_then_in_force(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, db: Database
) -> None:
    await given_org(bus, recording=True)
    await delete_filtered(bus)
    call_id = await settled_call(bus, svc, telephony, 1, scorable=None)
    assert (await recording_state(svc, db, call_id))[1] == "available"

    await bus.handle(RecordScorability(call_id, False, "wrong_number"))
    await drain(svc)

    assert await recording_state(svc, db, call_id) == (RecordingStatus.PURGED, "not_recorded", "filtered")


async def test_an_engaged_calls_recording_is_never_deleted_by_the_policy(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, db: Database
) -> None:
    await given_org(bus, recording=True)
    await delete_filtered(bus)
    engaged = await settled_call(bus, svc, telephony, 1, scorable=True)
    no_verdict = await settled_call(bus, svc, telephony, 2, scorable=None)
    for call_id in (engaged, no_verdict):
        assert (await recording_state(svc, db, call_id))[:2] == (RecordingStatus.TWILIO_DELETED, "available")


async def test_a_held_filtered_call_keeps_its_recording(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, db: Database
) -> None:
    await given_org(bus, recording=True)
    await delete_filtered(bus)
    decision = await bus.handle(StartCall(sid(1), ACCOUNT_SID, "+15557654321", ACME_NUMBER))
    async with svc.uow() as uow:
        call = await uow.calls.get(decision.call_id)
        assert call is not None
        call.place_legal_hold(by="legal@acme", reason="dispute", now=svc.clock.now())
        await uow.commit()
    await agent_answers(bus, sid(1))
    await drain(svc)
    await bus.handle(RecordScorability(decision.call_id, False, "robocall"))
    await twilio_completes(bus, telephony, sid(1))
    await bus.handle(EndCall(sid(1), CallStatus.COMPLETED, 42))
    await drain(svc)
    assert (await recording_state(svc, db, decision.call_id))[1] == "available"


async def test_turning_the_policy_back_on_keeps_later_filtered_calls(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, db: Database
) -> None:
    await given_org(bus, recording=True)
    await delete_filtered(bus)
    await bus.handle(SetNonEngagementPolicy(ACME, True, "admin@acme"))
    call_id = await settled_call(bus, svc, telephony, 1, scorable=False)
    assert (await recording_state(svc, db, call_id))[1] == "available"
    async with svc.reader() as uow:
        actions = [e.action for e in await uow.audit.page(org_id=ACME, limit=50)]
    assert actions.count("delete_filtered_recordings") == 1 and actions.count("keep_filtered_recordings") == 1


async def test_deleting_twilios_copy_after_the_recording_was_purged_meanwhile_is_no_error(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, db: Database
) -> None:
    """With Kafka, ``calls.settle`` (which may purge a filtered call) and ``telephony.delete-recording``
    handle the same ``RecordingArchived`` side by side: the latter must not trip over the purge."""
    await given_org(bus, recording=True)
    decision = await bus.handle(StartCall(sid(1), ACCOUNT_SID, "+15557654321", ACME_NUMBER))
    await agent_answers(bus, sid(1))
    await drain(svc)
    await twilio_completes(bus, telephony, sid(1))
    async with svc.uow_factory() as uow:  # archive only: the events stay in the outbox
        [completed] = [
            m
            for m in await uow.outbox.due(now=svc.clock.now(), limit=100, exclude_aggregates=set())
            if m.type == "RecordingCompletedAtTwilio"
        ]
    await archive_recording(decode_event(completed.type, completed.payload), svc)  # type: ignore[arg-type]
    [archived] = await db.events_of(events.RecordingArchived)

    async def purged_meanwhile() -> None:
        async with svc.uow_factory() as uow:
            recording = await uow.recordings.get(archived.recording_id)
            assert recording is not None and recording.status == RecordingStatus.ARCHIVED
            recording.purge(reason="filtered", now=svc.clock.now())
            await uow.commit()

    telephony.after_next("delete_recording", purged_meanwhile)
    await delete_twilio_copy(archived, svc)

    recording = await db.recording(archived.recording_id)
    assert recording.status == RecordingStatus.PURGED
    assert decision.call_id == recording.call_id
