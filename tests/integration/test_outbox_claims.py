"""Several relays on one SQL outbox: leases in ``claimed_by``/``claimed_until``, SKIP LOCKED on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.clock import SystemClock
from adapters.sqlalchemy import tables as t
from application.commands import SetCallRecording, StartCall, UpsertOrganization
from application.messagebus import MessageBus
from application.outbox import OutboxRelay
from application.ports import OutboxMessage
from application.services import Services, ServiceSettings
from entrypoints.container import CommitSignal, UnitOfWorkFactory
from tests.fakes_store import InMemoryRecordingStore
from tests.fakes_telephony import FakeTelephony


class SlowPublisher:
    def __init__(self, log: list[tuple[str, OutboxMessage]], name: str) -> None:
        self.log, self.name = log, name

    async def publish(self, message: OutboxMessage) -> None:
        await asyncio.sleep(0.002)
        self.log.append((self.name, message))


async def filled_outbox(engine: AsyncEngine) -> UnitOfWorkFactory:
    factory = UnitOfWorkFactory(engine, CommitSignal(), SystemClock())
    svc = Services(
        factory, FakeTelephony(), InMemoryRecordingStore(), SystemClock(), ServiceSettings("http://x")
    )
    bus = MessageBus(svc)
    await bus.handle(UpsertOrganization("org-a", "Acme", ["+15550001111"], "Hi."))
    for n in range(15):
        await bus.handle(StartCall(f"CA{n:032x}", "AC" + "0" * 32, "+15559999999", "+15550001111"))
        await bus.handle(SetCallRecording("org-a", n % 2 == 0, "admin"))
    return factory


async def test_relays_sharing_the_outbox_publish_each_event_once_and_each_aggregate_in_order(
    engine: AsyncEngine,
) -> None:
    factory = await filled_outbox(engine)
    log: list[tuple[str, OutboxMessage]] = []
    relays = [
        OutboxRelay(
            factory, SlowPublisher(log, name), SystemClock(), relay_id=name, batch_size=5, concurrency=4
        )
        for name in ("relay-1", "relay-2", "relay-3")
    ]

    await asyncio.gather(*(r.drain(max_wait_s=30) for r in relays))

    async with engine.connect() as conn:
        rows = list((await conn.execute(select(t.outbox))).mappings())
    assert all(r["published_at"] is not None for r in rows)
    assert Counter(m.id for _, m in log) == Counter(r["id"] for r in rows)  # each exactly once
    for aggregate in {m.aggregate_id for _, m in log}:
        seqs = [m.seq for _, m in log if m.aggregate_id == aggregate]
        assert seqs == sorted(seqs)


async def test_two_relays_claiming_at_the_same_moment_take_different_messages(engine: AsyncEngine) -> None:
    factory = await filled_outbox(engine)
    clock = SystemClock()
    first_claimed = asyncio.Event()

    async def claim(relay: str, hold_s: float) -> list[OutboxMessage]:
        async with factory() as uow:
            taken = await uow.outbox.claim(
                relay=relay, now=clock.now(), lease=timedelta(seconds=30), limit=6, exclude_aggregates=set()
            )
            first_claimed.set()
            await asyncio.sleep(hold_s)  # the claim is not committed yet
            await uow.commit()
            return taken

    async def second() -> list[OutboxMessage]:
        await first_claimed.wait()
        return await claim("relay-2", 0)

    one, two = await asyncio.gather(claim("relay-1", 0.3), second())
    assert one and two
    assert {m.id for m in one}.isdisjoint(m.id for m in two)
    assert {m.aggregate_id for m in one}.isdisjoint(m.aggregate_id for m in two)
    async with engine.connect() as conn:
        result = await conn.execute(
            select(t.outbox.c.id, t.outbox.c.claimed_by).where(t.outbox.c.claimed_by.is_not(None))
        )
        leased = {message_id: relay for message_id, relay in result}
    assert leased == {**{m.id: "relay-1" for m in one}, **{m.id: "relay-2" for m in two}}
