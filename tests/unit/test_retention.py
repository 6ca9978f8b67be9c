"""Retention and legal hold through the bus: the policy, the hold, and the purge pass."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from application.commands import SetLegalHold, SetRetention
from application.errors import NotFound
from application.messagebus import MessageBus
from application.retention import RetentionPurger
from application.services import Services
from domain import events
from domain.audit import AuditActor
from domain.errors import InvalidValue
from domain.model import RecordingStatus
from tests.fakes import FakeClock, FakeTelephony, InMemoryRecordingStore, drain, make_services
from tests.support.database import Database
from tests.unit.test_handlers import (
    ACME,
    GLOBEX,
    GLOBEX_NUMBER,
    archived_call,
    given_org,
    sid,
)

ADMIN = AuditActor("admin@acme", "admin")


@pytest.fixture
def svc(db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore, clock: FakeClock) -> Services:
    return make_services(db=db, telephony=telephony, store=store, clock=clock)


async def audit_actions(svc: Services, org_id: str = ACME) -> list[str]:
    async with svc.reader() as uow:
        return [e.action for e in reversed(await uow.audit.page(org_id=org_id, limit=1000))]


async def status_of(db: Database, call_id: str) -> RecordingStatus | None:
    recording = await db.recording_for_call(call_id)
    return recording.status if recording is not None else None


async def keep(bus: MessageBus, days: int | None, org_id: str = ACME) -> None:
    await bus.handle(SetRetention(org_id, days, f"admin@{org_id}", ADMIN))


async def hold(bus: MessageBus, call_id: str, held: bool = True, reason: str = "dispute 4711") -> None:
    await bus.handle(SetLegalHold(ACME, call_id, held, reason, "admin@acme", ADMIN))


@pytest.fixture
async def calls(bus: MessageBus, svc: Services, telephony: FakeTelephony) -> dict[str, str]:
    """Acme (policy set per test) with calls 40 days old (one held) and one 20 days old; Globex,
    with no policy, with a call 40 days old."""
    await given_org(bus, recording=True)
    await given_org(bus, recording=True, org_id=GLOBEX, number=GLOBEX_NUMBER)
    old = (await archived_call(bus, svc, telephony, sid(1))).call_id
    held = (await archived_call(bus, svc, telephony, sid(2))).call_id
    other_org = (await archived_call(bus, svc, telephony, sid(3), to=GLOBEX_NUMBER)).call_id
    svc.clock.advance(days=20)  # type: ignore[attr-defined]
    recent = (await archived_call(bus, svc, telephony, sid(4))).call_id
    svc.clock.advance(days=20)  # type: ignore[attr-defined]
    await hold(bus, held)
    return {"old": old, "held": held, "other_org": other_org, "recent": recent}


async def test_the_pass_purges_exactly_what_is_past_the_policy_and_nothing_held_or_of_another_org(
    bus: MessageBus, svc: Services, db: Database, store: InMemoryRecordingStore, calls: dict[str, str]
) -> None:
    await keep(bus, 30)
    report = await RetentionPurger(svc, page_size=1).purge()  # pages of one: the keyset walks on
    await drain(svc)

    assert (report.orgs, report.purged, report.failed) == (1, 1, [])
    statuses = {name: await status_of(db, call_id) for name, call_id in calls.items()}
    assert statuses == {
        "old": RecordingStatus.PURGED,
        "held": RecordingStatus.TWILIO_DELETED,
        "other_org": RecordingStatus.TWILIO_DELETED,
        "recent": RecordingStatus.TWILIO_DELETED,
    }
    assert len(store.objects) == 3
    purged = await db.recording_for_call(calls["old"])
    assert purged is not None and purged.purge_reason == "retention" and purged.purged_at == svc.clock.now()
    assert (await db.call(calls["old"])).duration_s == 42  # the call's details stay
    async with svc.reader() as uow:
        [entry] = [e for e in await uow.audit.page(org_id=ACME, limit=100) if e.action == "purge_recording"]
    assert (entry.actor_role, entry.call_id, entry.target_id) == ("system", calls["old"], purged.id)


async def test_no_policy_purges_nothing(
    bus: MessageBus, svc: Services, store: InMemoryRecordingStore, calls: dict[str, str]
) -> None:
    report = await RetentionPurger(svc).purge()
    assert (report.orgs, report.purged) == (0, 0) and len(store.objects) == 4
    await keep(bus, 30)
    await keep(bus, None)  # back to indefinitely
    assert (await RetentionPurger(svc).purge()).purged == 0


async def test_a_second_pass_and_a_concurrent_one_change_nothing_more(
    bus: MessageBus, svc: Services, db: Database, calls: dict[str, str]
) -> None:
    await keep(bus, 10)  # the 20-day-old call is past it too
    first, second = await asyncio.gather(RetentionPurger(svc).purge(), RetentionPurger(svc).purge())
    again = await RetentionPurger(svc).purge()
    await drain(svc)

    assert first.purged + second.purged == 2 and again.purged == 0
    assert not first.failed and not second.failed
    assert len(await db.events_of(events.RecordingPurged)) == 2
    assert (await audit_actions(svc)).count("purge_recording") == 2


async def test_a_released_hold_lets_the_next_pass_purge_it(
    bus: MessageBus, svc: Services, db: Database, calls: dict[str, str]
) -> None:
    await keep(bus, 30)
    await RetentionPurger(svc).purge()
    assert await status_of(db, calls["held"]) == RecordingStatus.TWILIO_DELETED
    svc.clock.advance(seconds=1)  # type: ignore[attr-defined]
    await hold(bus, calls["held"], held=False, reason="")
    await RetentionPurger(svc).purge()
    assert await status_of(db, calls["held"]) == RecordingStatus.PURGED
    actions = await audit_actions(svc)
    assert actions.index("place_legal_hold") < actions.index("release_legal_hold")


async def test_a_hold_placed_on_a_purged_call_stays_and_the_api_shows_it(
    bus: MessageBus, svc: Services, db: Database, calls: dict[str, str]
) -> None:
    await hold(bus, calls["held"], reason="  new dispute  ")  # another reason replaces the first
    call = await db.call(calls["held"])
    assert call.legal_hold is not None and call.legal_hold.reason == "new dispute"
    assert call.legal_hold.held_by == "admin@acme" and call.held
    assert len(await db.events_of(events.LegalHoldPlaced)) == 2
    await hold(bus, calls["held"], reason="new dispute")  # the same again: nothing new
    assert len(await db.events_of(events.LegalHoldPlaced)) == 2


async def test_placing_a_hold_needs_a_reason_and_another_orgs_call_is_not_found(
    bus: MessageBus, db: Database, calls: dict[str, str]
) -> None:
    with pytest.raises(InvalidValue, match="reason"):
        await hold(bus, calls["recent"], reason="   ")
    with pytest.raises(NotFound):
        await hold(bus, calls["other_org"])
    assert (await db.call(calls["recent"])).legal_hold is None
    assert (await db.call(calls["other_org"])).legal_hold is None


@pytest.mark.parametrize("days", [0, -1, 3651])
async def test_a_retention_outside_1_to_3650_days_is_refused_and_changes_nothing(
    bus: MessageBus, svc: Services, db: Database, days: int
) -> None:
    await given_org(bus, recording=True)
    with pytest.raises(InvalidValue, match="1 to 3650"):
        await keep(bus, days)
    assert (await db.organization(ACME)).retention_days is None
    assert "set_retention" not in await audit_actions(svc)


async def test_a_retention_change_is_audited_once_with_who_and_the_new_value(
    bus: MessageBus, svc: Services, db: Database
) -> None:
    await given_org(bus, recording=True)
    await keep(bus, 3650)
    await keep(bus, 3650)
    assert (await db.organization(ACME)).retention_days == 3650
    async with svc.reader() as uow:
        [entry] = [e for e in await uow.audit.page(org_id=ACME, limit=100) if e.action == "set_retention"]
    assert (entry.actor, entry.reason) == ("admin@acme", "keep recordings 3650 days")
    [changed] = await db.events_of(events.RetentionPolicyChanged)
    assert (changed.days, changed.changed_by) == (3650, f"admin@{ACME}")


async def test_a_call_is_purged_once_it_is_older_than_the_policy(
    bus: MessageBus, svc: Services, db: Database, calls: dict[str, str], clock: FakeClock
) -> None:
    await keep(bus, 50)  # longer than the old call's 40 days
    purger = RetentionPurger(svc)
    assert (await purger.purge()).purged == 0
    clock.advance(timedelta(days=11))
    assert (await purger.purge()).purged == 1
    assert await status_of(db, calls["old"]) == RecordingStatus.PURGED
