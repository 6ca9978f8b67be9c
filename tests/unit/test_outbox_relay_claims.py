"""Several outbox relays on one outbox (Kafka mode): each leases what it publishes."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta

from application.commands import SetCallRecording, StartCall, UpsertOrganization
from application.messagebus import MessageBus
from application.outbox import OutboxRelay
from application.ports import OutboxMessage
from tests.fakes import FakeClock, make_services
from tests.support.database import Database, UnitOfWorkFactory


class RecordingPublisher:
    """Remembers what it published, yielding to the other relays in between."""

    def __init__(self, log: list[tuple[str, OutboxMessage]], name: str) -> None:
        self.log, self.name = log, name

    async def publish(self, message: OutboxMessage) -> None:
        await asyncio.sleep(0)
        self.log.append((self.name, message))


async def busy_outbox(db: Database, clock: FakeClock) -> UnitOfWorkFactory:
    svc = make_services(db=db, clock=clock)
    bus = MessageBus(svc)
    await bus.handle(UpsertOrganization("org-a", "Acme", ["+15550001111"], "Hi."))
    await bus.handle(SetCallRecording("org-a", True, "admin"))
    for n in range(20):
        await bus.handle(StartCall(f"CA{n:032x}", "AC" + "0" * 32, "+15559999999", "+15550001111"))
        await bus.handle(SetCallRecording("org-a", n % 2 == 0, "admin"))
    assert isinstance(svc.uow_factory, UnitOfWorkFactory)
    return svc.uow_factory


def relay(
    factory: UnitOfWorkFactory, clock: FakeClock, log: list[tuple[str, OutboxMessage]], name: str
) -> OutboxRelay:
    return OutboxRelay(
        factory, RecordingPublisher(log, name), clock, relay_id=name, batch_size=7, concurrency=3
    )


async def test_relays_sharing_an_outbox_publish_each_event_once_and_each_aggregate_in_order(
    db: Database,
) -> None:
    clock = FakeClock()
    factory = await busy_outbox(db, clock)
    log: list[tuple[str, OutboxMessage]] = []
    relays = [relay(factory, clock, log, name) for name in ("relay-1", "relay-2", "relay-3")]

    await asyncio.gather(*(r.drain() for r in relays))

    assert Counter(m.id for _, m in log) == Counter(row.message.id for row in await db.outbox())  # once each
    assert all(row.published_at is not None for row in await db.outbox())
    for aggregate in {m.aggregate_id for _, m in log}:
        seqs = [m.seq for _, m in log if m.aggregate_id == aggregate]
        assert seqs == sorted(seqs)
    assert len({name for name, _ in log}) > 1, "the work was shared"


async def test_what_a_dead_relay_had_leased_goes_out_once_its_lease_expires(db: Database) -> None:
    clock = FakeClock()
    factory = await busy_outbox(db, clock)
    async with factory() as uow:
        taken = await uow.outbox.claim(
            relay="dead", now=clock.now(), lease=timedelta(seconds=30), limit=5, exclude_aggregates=set()
        )
        await uow.commit()
    log: list[tuple[str, OutboxMessage]] = []
    survivor = relay(factory, clock, log, "survivor")

    await survivor.drain()
    assert {m.id for _, m in log}.isdisjoint(m.id for m in taken)
    held_back = {m.aggregate_id for m in taken}
    assert all(m.aggregate_id not in held_back for _, m in log), "their aggregates wait, in order"

    clock.advance(seconds=31)
    await survivor.drain()
    assert {m.id for m in taken} <= {m.id for _, m in log}
    assert all(row.published_at is not None for row in await db.outbox())


class BatchPublisher(RecordingPublisher):
    """A batch publisher (like Kafka's) that refuses the first message of ``refused`` once."""

    def __init__(self, log: list[tuple[str, OutboxMessage]], name: str, refused: str) -> None:
        super().__init__(log, name)
        self.refused: str | None = refused
        self.batches: list[list[OutboxMessage]] = []

    async def publish_all(self, messages: Sequence[OutboxMessage]) -> list[Exception | None]:
        await asyncio.sleep(0)
        self.batches.append(list(messages))
        outcomes: list[Exception | None] = []
        for message in messages:
            if message.aggregate_id == self.refused:
                self.refused = None
                outcomes.append(ConnectionError("broker went away"))
            else:
                self.log.append((self.name, message))
                outcomes.append(None)
        return outcomes


async def test_batching_relays_publish_each_event_once_in_order_and_defer_only_what_failed(
    db: Database,
) -> None:
    clock = FakeClock()
    factory = await busy_outbox(db, clock)
    rows = await db.outbox()
    refused = rows[5].message.aggregate_id
    log: list[tuple[str, OutboxMessage]] = []
    publishers = [BatchPublisher(log, name, refused) for name in ("relay-1", "relay-2")]
    relays = [
        OutboxRelay(factory, p, clock, relay_id=p.name, batch_size=7, concurrency=2) for p in publishers
    ]

    await asyncio.gather(*(r.drain() for r in relays))
    deferred = [row for row in await db.outbox() if row.published_at is None]
    assert {row.message.aggregate_id for row in deferred} == {refused}
    assert deferred[0].message.attempts == 1 and "broker went away" in (deferred[0].last_error or "")
    assert deferred[0].claimed_by is None

    clock.advance(seconds=31)
    await asyncio.gather(*(r.drain() for r in relays))
    assert Counter(m.id for _, m in log) == Counter(row.message.id for row in rows)  # once each
    assert all(row.published_at is not None for row in await db.outbox())
    for aggregate in {m.aggregate_id for _, m in log}:
        seqs = [m.seq for _, m in log if m.aggregate_id == aggregate]
        assert seqs == sorted(seqs)
    batches = [batch for p in publishers for batch in p.batches]
    assert all(len({m.aggregate_id for m in batch}) == len(batch) <= 7 for batch in batches)
    assert len(batches) < len(rows) / 2, "published in batches, not one by one"
