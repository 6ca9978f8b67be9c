"""Erasure by caller: through the bus and the outbox on the real database, fakes for the outside world."""

from __future__ import annotations

import pytest

from application.commands import EndCall, RequestErasure, StartCall
from application.erasure import get_erasure_request, process_erasure
from application.errors import NotFound
from application.messagebus import MessageBus
from application.services import Services
from domain import events
from domain.audit import AuditActor
from domain.erasure import ErasureStatus
from domain.errors import InvalidValue
from domain.model import CallStatus, RecordingStatus
from tests.fakes import FakeClock, FakeTelephony, InMemoryRecordingStore, drain, make_services
from tests.support.database import Database
from tests.unit.test_handlers import (
    ACCOUNT_SID,
    ACME,
    ACME_NUMBER,
    GLOBEX,
    GLOBEX_NUMBER,
    agent_answers,
    given_org,
    sid,
    twilio_completes,
)

ADMIN = AuditActor("admin@acme", "admin")
CALLER, OTHER_CALLER = "+15557770001", "+15557770002"


async def call_from(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, n: int, caller: str, to: str = ACME_NUMBER
) -> str:
    """An archived, ended call from ``caller``; returns its id."""
    decision = await bus.handle(StartCall(sid(n), ACCOUNT_SID, caller, to))
    await agent_answers(bus, sid(n))
    await drain(svc)
    await twilio_completes(bus, telephony, sid(n))
    await bus.handle(EndCall(sid(n), CallStatus.COMPLETED, 42))
    await drain(svc)
    return str(decision.call_id)


async def erase(bus: MessageBus, svc: Services, caller: str = CALLER, org_id: str = ACME) -> str:
    request = await bus.handle(RequestErasure(org_id, caller, "the caller asked (ticket 12)", ADMIN))
    await drain(svc)
    return str(request.id)


@pytest.fixture
def svc(db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore, clock: FakeClock) -> Services:
    return make_services(db=db, telephony=telephony, store=store, clock=clock)


@pytest.fixture
async def two_orgs(bus: MessageBus) -> None:
    await given_org(bus, recording=True)
    await given_org(bus, recording=True, org_id=GLOBEX, number=GLOBEX_NUMBER)


@pytest.mark.usefixtures("two_orgs")
async def test_erasure_redacts_the_caller_in_every_call_of_the_org_and_no_other_org(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, db: Database
) -> None:
    mine = [await call_from(bus, svc, telephony, n, CALLER) for n in (1, 2)]
    someone_else = await call_from(bus, svc, telephony, 3, OTHER_CALLER)
    globex = await call_from(bus, svc, telephony, 4, CALLER, to=GLOBEX_NUMBER)

    request_id = await erase(bus, svc)

    request = await get_erasure_request(svc, org_id=ACME, request_id=request_id)
    assert request.status == ErasureStatus.COMPLETED
    assert sorted(request.erased_call_ids) == sorted(mine)
    assert request.caller_number is None  # the request no longer holds the number either
    for call_id in mine:
        assert (await db.call(call_id)).from_number == f"redacted:{request_id}"
    assert (await db.call(someone_else)).from_number == OTHER_CALLER
    assert (await db.call(globex)).from_number == CALLER
    erased = await db.events_of(events.CallerDataErased)
    assert sorted(e.call_id for e in erased) == sorted(mine)
    assert all(e.org_id == ACME and e.redacted_as == f"redacted:{request_id}" for e in erased)


@pytest.mark.usefixtures("two_orgs")
async def test_after_erasure_the_number_survives_in_no_stored_event_of_those_calls(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, db: Database
) -> None:
    call_id = await call_from(bus, svc, telephony, 1, CALLER)
    await erase(bus, svc)
    payloads = [row.message.payload for row in await db.outbox() if row.message.aggregate_id == call_id]
    assert payloads, "the call's events are in the outbox"
    assert not any(CALLER.encode() in payload for payload in payloads)


@pytest.mark.usefixtures("two_orgs")
async def test_each_erased_call_has_an_audit_record_of_who_asked_and_why(
    bus: MessageBus, svc: Services, telephony: FakeTelephony
) -> None:
    calls = [await call_from(bus, svc, telephony, n, CALLER) for n in (1, 2)]
    request_id = await erase(bus, svc)
    async with svc.reader() as uow:
        entries = await uow.audit.page(org_id=ACME, limit=100)
    erased = [e for e in entries if e.action == "erase_caller_data"]
    assert sorted(e.call_id or "" for e in erased) == sorted(calls)
    assert {(e.actor, e.target_id, e.reason) for e in erased} == {
        ("admin@acme", request_id, "the caller asked (ticket 12)")
    }
    assert [e.target_id for e in entries if e.action == "request_erasure"] == [request_id]
    async with svc.reader() as uow:
        globex = await uow.audit.page(org_id=GLOBEX, limit=100)
    assert [e.action for e in globex] == ["turn_recording_on"]


@pytest.mark.usefixtures("two_orgs")
async def test_running_the_erasure_twice_changes_nothing_more(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, db: Database
) -> None:
    await call_from(bus, svc, telephony, 1, CALLER)
    request_id = await erase(bus, svc)
    [requested] = await db.events_of(events.ErasureRequested)
    outbox_before = len(await db.outbox())

    await process_erasure(requested, svc.for_consumer("erasure.process", "redelivered"))

    assert len(await db.outbox()) == outbox_before
    request = await get_erasure_request(svc, org_id=ACME, request_id=request_id)
    assert len(request.erased_call_ids) == 1


@pytest.mark.usefixtures("two_orgs")
async def test_a_call_live_during_the_erasure_loses_the_audio_it_finishes_afterwards(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, store: InMemoryRecordingStore, db: Database
) -> None:
    decision = await bus.handle(StartCall(sid(9), ACCOUNT_SID, CALLER, ACME_NUMBER))
    await agent_answers(bus, sid(9))
    await drain(svc)

    request_id = await erase(bus, svc)
    assert (await get_erasure_request(svc, org_id=ACME, request_id=request_id)).status == "completed"
    assert (await db.call(decision.call_id)).from_number == f"redacted:{request_id}"

    await twilio_completes(bus, telephony, sid(9))  # the live recording finishes and is archived
    await bus.handle(EndCall(sid(9), CallStatus.COMPLETED, 42))
    await drain(svc)

    recording = await db.recording_for_call(decision.call_id)
    assert recording is not None and recording.status == RecordingStatus.PURGED
    assert recording.purge_reason == "erasure" and store.objects == {}
    assert recording.recording_sid is not None and telephony.recordings[recording.recording_sid].deleted


@pytest.mark.usefixtures("two_orgs")
async def test_another_orgs_erasure_request_is_not_found(bus: MessageBus, svc: Services) -> None:
    request_id = await erase(bus, svc, org_id=GLOBEX)
    with pytest.raises(NotFound):
        await get_erasure_request(svc, org_id=ACME, request_id=request_id)


@pytest.mark.usefixtures("two_orgs")
@pytest.mark.parametrize(("number", "reason"), [("5557770001", "asked"), (CALLER, "  ")])
async def test_a_bad_erasure_request_is_refused_and_records_nothing(
    bus: MessageBus, db: Database, number: str, reason: str
) -> None:
    with pytest.raises(InvalidValue):
        await bus.handle(RequestErasure(ACME, number, reason, ADMIN))
    assert await db.events_of(events.ErasureRequested) == []


async def hold(svc: Services, call_id: str) -> None:
    async with svc.uow() as uow:
        call = await uow.calls.get(call_id)
        assert call is not None
        call.place_legal_hold(by="legal@acme", reason="dispute 7", now=svc.clock.now())
        await uow.commit()


@pytest.mark.usefixtures("two_orgs")
async def test_erasure_deletes_the_audio_of_the_callers_calls_and_lists_the_held_ones_untouched(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, store: InMemoryRecordingStore, db: Database
) -> None:
    erased, held = [await call_from(bus, svc, telephony, n, CALLER) for n in (1, 2)]
    globex = await call_from(bus, svc, telephony, 3, CALLER, to=GLOBEX_NUMBER)
    await hold(svc, held)
    keys = {c: (await db.recording_for_call(c)).audio.storage_key for c in (erased, held, globex)}  # type: ignore[union-attr]

    request_id = await erase(bus, svc)

    request = await get_erasure_request(svc, org_id=ACME, request_id=request_id)
    assert (request.status, request.erased_call_ids, request.held_call_ids) == ("completed", [erased], [held])
    assert request.recordings_purged == 1
    gone = await db.recording_for_call(erased)
    assert gone is not None and gone.status == RecordingStatus.PURGED and gone.purge_reason == "erasure"
    assert keys[erased] not in store.objects
    assert keys[held] in store.objects and keys[globex] in store.objects
    assert (await db.call(held)).from_number == CALLER  # a held call is left exactly as it is
    [completed] = await db.events_of(events.ErasureCompleted)
    assert completed.held_call_ids == [held]
