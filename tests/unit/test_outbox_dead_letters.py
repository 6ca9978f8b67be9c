"""In-process, an event whose handler keeps failing is dead-lettered after a bounded number of attempts."""

from __future__ import annotations

from datetime import timedelta

from application.outbox import OutboxRelay
from application.ports import OutboxMessage
from tests.fakes import FakeClock
from tests.support.database import Database
from tests.unit.test_outbox_relay_claims import busy_outbox


class PoisonedPublisher:
    """Fails every attempt at one message; publishes the rest."""

    def __init__(self, poison: str) -> None:
        self.poison = poison
        self.attempts_at_poison = 0
        self.published: list[OutboxMessage] = []

    async def publish(self, message: OutboxMessage) -> None:
        if message.id == self.poison:
            self.attempts_at_poison += 1
            raise RuntimeError("this handler always fails")
        self.published.append(message)


async def test_a_message_that_keeps_failing_is_dead_lettered_and_stops_blocking_its_aggregate(
    db: Database,
) -> None:
    clock = FakeClock()
    factory = await busy_outbox(db, clock)
    first = min((row.message for row in await db.outbox()), key=lambda m: m.seq)
    later_of_same_aggregate = [
        row.message.id for row in await db.outbox() if row.message.aggregate_id == first.aggregate_id
    ][1:]
    assert later_of_same_aggregate, "the test needs an aggregate with more than one event"
    publisher = PoisonedPublisher(first.id)
    relay = OutboxRelay(factory, publisher, clock, retry_base=timedelta(seconds=1), max_attempts=4)

    for _ in range(10):  # far more passes than attempts, each after every backoff has passed
        await relay.drain()
        clock.advance(timedelta(hours=1))

    assert publisher.attempts_at_poison == 4
    dead = next(row for row in await db.outbox() if row.message.id == first.id)
    assert dead.dead_at is not None and dead.published_at is None
    assert dead.message.attempts == 4 and "always fails" in (dead.last_error or "")
    published = {m.id for m in publisher.published}
    assert set(later_of_same_aggregate) <= published
    assert all(row.published_at is not None for row in await db.outbox() if row.message.id != first.id)


async def test_without_a_limit_a_failing_message_is_retried_on_every_due_pass(db: Database) -> None:
    clock = FakeClock()
    factory = await busy_outbox(db, clock)
    first = min((row.message for row in await db.outbox()), key=lambda m: m.seq)
    publisher = PoisonedPublisher(first.id)
    relay = OutboxRelay(factory, publisher, clock, retry_base=timedelta(seconds=1))  # Kafka mode

    for _ in range(6):
        await relay.drain()
        clock.advance(timedelta(hours=1))

    assert publisher.attempts_at_poison == 6
    assert all(row.dead_at is None for row in await db.outbox())
