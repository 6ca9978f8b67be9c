"""Each of an org's numbers may override the org toggle: ``on``, ``off`` or ``inherit`` (the default).

The effective value when a call starts decides whether it is recorded and what the caller is told.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.commands import SetCallRecording, SetNumberRecording, UpsertOrganization
from application.errors import NotFound
from application.messagebus import MessageBus
from application.services import Services
from domain import events
from domain.audit import AuditActor
from domain.errors import InvalidValue
from domain.model import DISCLOSURE_TEXT, NumberRecordingMode, Organization
from tests.fakes import FakeClock, FakeTelephony, InMemoryRecordingStore, drain, make_services
from tests.support.database import Database
from tests.unit.test_handlers import (
    ACME,
    ACME_GREETING,
    ACME_NUMBER,
    GLOBEX,
    GLOBEX_NUMBER,
    agent_answers,
    given_org,
    incoming,
    operations,
    sid,
)

SECOND_NUMBER = "+15550001112"
ON, OFF, INHERIT = NumberRecordingMode.ON, NumberRecordingMode.OFF, NumberRecordingMode.INHERIT
ADMIN = AuditActor("jane@acme", "admin")


@pytest.fixture
def svc(db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore, clock: FakeClock) -> Services:
    return make_services(db=db, telephony=telephony, store=store, clock=clock)


async def given_two_numbers(bus: MessageBus, *, recording: bool) -> None:
    await bus.handle(UpsertOrganization(ACME, "Acme", [ACME_NUMBER, SECOND_NUMBER], ACME_GREETING))
    if recording:
        await bus.handle(SetCallRecording(ACME, True, "admin@acme"))


async def set_mode(bus: MessageBus, mode: NumberRecordingMode, number: str = ACME_NUMBER) -> Organization:
    org: Organization = await bus.handle(SetNumberRecording(ACME, number, mode, "jane@acme", ADMIN))
    return org


async def test_a_number_set_off_is_not_recorded_nor_disclosed_while_the_org_records(bus: MessageBus) -> None:
    await given_two_numbers(bus, recording=True)

    await set_mode(bus, OFF)
    off = await incoming(bus, sid(1), to=ACME_NUMBER)
    inheriting = await incoming(bus, sid(2), to=SECOND_NUMBER)

    assert (off.recorded, off.greeting) == (False, ACME_GREETING)
    assert (inheriting.recorded, inheriting.greeting) == (True, f"{DISCLOSURE_TEXT} {ACME_GREETING}")


async def test_a_number_set_on_is_recorded_and_disclosed_while_the_org_toggle_is_off(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_two_numbers(bus, recording=False)

    await set_mode(bus, ON)
    on = await incoming(bus, sid(1), to=ACME_NUMBER)
    inheriting = await incoming(bus, sid(2), to=SECOND_NUMBER)
    await agent_answers(bus, sid(1))
    await agent_answers(bus, sid(2))
    await drain(svc)

    assert on.recorded and on.greeting.startswith(DISCLOSURE_TEXT)
    assert (await db.call(on.call_id)).consent.disclosure_text == DISCLOSURE_TEXT
    assert not inheriting.recorded and DISCLOSURE_TEXT not in inheriting.greeting
    assert [args[0] for args in operations(telephony, "start_recording")] == [sid(1)]


async def test_flipping_a_number_mid_call_changes_its_next_call_not_this_one(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=False)
    await set_mode(bus, ON)
    during = await incoming(bus, sid(1))

    await set_mode(bus, OFF)
    repeated = await incoming(bus, sid(1))
    await agent_answers(bus, sid(1))
    await drain(svc)
    after = await incoming(bus, sid(2))
    await agent_answers(bus, sid(2))
    await drain(svc)

    assert during.recorded and repeated == during
    assert not after.recorded and after.greeting == ACME_GREETING
    assert [args[0] for args in operations(telephony, "start_recording")] == [sid(1)]
    assert await db.recording_for_call(after.call_id) is None


async def test_an_inheriting_number_follows_the_org_toggle(bus: MessageBus) -> None:
    await given_org(bus, recording=False)
    await set_mode(bus, ON)
    await set_mode(bus, INHERIT)

    before = await incoming(bus, sid(1))
    await bus.handle(SetCallRecording(ACME, True, "jane@acme"))
    after = await incoming(bus, sid(2))

    assert (before.recorded, after.recorded) == (False, True)
    assert after.greeting.startswith(DISCLOSURE_TEXT)


async def test_a_change_keeps_who_made_it_and_when_with_its_event_and_audit_record(
    bus: MessageBus, db: Database, clock: FakeClock
) -> None:
    await given_org(bus, recording=True)
    clock.advance(timedelta(minutes=5))

    await set_mode(bus, OFF)
    outbox_before = len(await db.outbox())
    await set_mode(bus, OFF)  # the same again: no change, no event, no audit record

    org = await db.organization(ACME)
    setting = org.number_recording[ACME_NUMBER]
    assert (setting.mode, setting.changed_by, setting.changed_at) == (OFF, "jane@acme", clock.now())
    assert org.records_calls_to(ACME_NUMBER) is False and org.recording_enabled is True
    [change] = await db.events_of(events.NumberRecordingChanged)
    assert (change.number, change.mode, change.effective, change.changed_by) == (
        ACME_NUMBER,
        "off",
        False,
        "jane@acme",
    )
    audited = [e for e in await db.events_of(events.AuditEntryAppended) if e.target_id == ACME_NUMBER]
    assert [(e.action, e.actor, e.actor_role) for e in audited] == [
        ("set_number_recording_off", "jane@acme", "admin")
    ]
    assert len(await db.outbox()) == outbox_before


@pytest.mark.parametrize(
    ("org_id", "number"), [(ACME, GLOBEX_NUMBER), (ACME, "+15550009999"), ("nobody", ACME_NUMBER)]
)
async def test_a_number_the_org_does_not_own_is_not_found_and_changes_nothing(
    bus: MessageBus, db: Database, org_id: str, number: str
) -> None:
    await given_org(bus, recording=True)
    await given_org(bus, recording=False, org_id=GLOBEX, number=GLOBEX_NUMBER)
    outbox_before = len(await db.outbox())

    with pytest.raises(NotFound):
        await bus.handle(SetNumberRecording(org_id, number, OFF, "jane@acme", ADMIN))

    assert len(await db.outbox()) == outbox_before
    assert (await db.organization(GLOBEX)).number_recording == {}


async def test_a_number_removed_from_the_org_loses_its_setting_and_comes_back_inheriting(
    bus: MessageBus, db: Database
) -> None:
    await given_two_numbers(bus, recording=True)
    await set_mode(bus, OFF)
    await set_mode(bus, ON, number=SECOND_NUMBER)

    await bus.handle(UpsertOrganization(ACME, "Acme", [SECOND_NUMBER], ACME_GREETING))
    assert set((await db.organization(ACME)).number_recording) == {SECOND_NUMBER}
    await bus.handle(UpsertOrganization(ACME, "Acme", [ACME_NUMBER, SECOND_NUMBER], ACME_GREETING))

    org = await db.organization(ACME)
    assert org.recording_mode(ACME_NUMBER) == INHERIT and org.records_calls_to(ACME_NUMBER) is True
    assert org.recording_mode(SECOND_NUMBER) == ON
    assert (await incoming(bus, sid(1))).recorded is True


def test_the_domain_refuses_a_setting_for_a_number_the_org_does_not_have() -> None:
    org = Organization(
        id=ACME, name="Acme", phone_numbers=[ACME_NUMBER], greeting="Hi", created_at=FakeClock().now()
    )

    with pytest.raises(InvalidValue):
        org.set_number_recording(number=GLOBEX_NUMBER, mode=ON, by="jane@acme", now=org.created_at)

    assert org.number_recording == {} and org.events == []
