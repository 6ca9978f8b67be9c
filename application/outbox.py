"""The outbox relay: takes committed events from the outbox and hands them to a publisher.

The publisher is a port: in-process it dispatches straight to the event handlers; with Kafka it
produces to the topics. A message is marked published only after the publisher succeeded, so a
crash in between means it is published again (consumers deduplicate on the event id). A failing
message is deferred with exponential backoff and jitter and does not hold up the others. With
``max_attempts`` (the in-process bus, where a failure is a handler's, not a broker's) a message that
fails that many times is dead-lettered: it stays in the outbox, listed by ``callrec dlq list`` and
handed back by ``callrec dlq replay``, instead of being retried forever unseen.

A publisher that can deliver many messages at once (``BatchEventPublisher``: Kafka) gets each claimed
batch whole (one message per aggregate, so order within an aggregate holds), and the outcome is
written in one transaction: the delivered ones marked published in one statement, the rest deferred.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from datetime import timedelta

from application.polling import PollingLoop
from application.ports import (
    BatchEventPublisher,
    Clock,
    EventPublisher,
    OutboxMessage,
    UnitOfWork,
    UnitOfWorkFactory,
)

log = logging.getLogger(__name__)


class OutboxRelay(PollingLoop):
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        publisher: EventPublisher,
        clock: Clock,
        *,
        batch_size: int = 50,
        concurrency: int = 8,
        retry_base: timedelta = timedelta(seconds=1),
        retry_cap: timedelta = timedelta(minutes=5),
        poll_interval: float = 1.0,
        relay_id: str | None = None,
        lease: timedelta = timedelta(seconds=30),
        max_attempts: int | None = None,
    ) -> None:
        """``relay_id`` makes this relay lease what it publishes, so several relays can share the
        outbox (each lease must outlast one publish); without it the relay assumes it is alone."""
        self.uow_factory = uow_factory
        self.publisher = publisher
        self.clock = clock
        self.batch_size = batch_size
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.poll_interval = poll_interval
        self.relay_id = relay_id
        self.lease = lease
        self.max_attempts = max_attempts
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: dict[str, asyncio.Task[None]] = {}  # aggregate id → its message being handled
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Called after a commit that wrote events, so they go out without waiting for the poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Start handling every due message whose aggregate has none in flight; returns how many."""
        async with self.uow_factory() as uow:
            if self.relay_id is None:
                due = await uow.outbox.due(
                    now=self.clock.now(), limit=self.batch_size, exclude_aggregates=set(self._in_flight)
                )
            else:
                due = await uow.outbox.claim(
                    relay=self.relay_id,
                    now=self.clock.now(),
                    lease=self.lease,
                    limit=self.batch_size,
                    exclude_aggregates=set(self._in_flight),
                )
                await uow.commit()
        if due and isinstance(self.publisher, BatchEventPublisher):
            return await self._start_batch([m for m in due if m.aggregate_id not in self._in_flight])
        started = 0
        for message in due:
            if message.aggregate_id in self._in_flight:
                continue  # keep one aggregate's events in order
            await self._slots.acquire()
            task = asyncio.create_task(self._publish(message))
            self._in_flight[message.aggregate_id] = task
            task.add_done_callback(functools.partial(self._done, message.aggregate_id))
            started += 1
        return started

    def _done(self, aggregate_id: str, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(aggregate_id, None)
        self._slots.release()
        self._wake.set()

    async def _start_batch(self, batch: list[OutboxMessage]) -> int:
        """One task publishes the whole batch (one message per aggregate) and records the outcome."""
        if not batch:
            return 0
        await self._slots.acquire()
        task = asyncio.create_task(self._publish_batch(batch))
        for message in batch:
            self._in_flight[message.aggregate_id] = task
        task.add_done_callback(functools.partial(self._batch_done, [m.aggregate_id for m in batch]))
        return len(batch)

    def _batch_done(self, aggregate_ids: list[str], _task: asyncio.Task[None]) -> None:
        for aggregate_id in aggregate_ids:
            self._in_flight.pop(aggregate_id, None)
        self._slots.release()
        self._wake.set()

    async def _publish_batch(self, batch: list[OutboxMessage]) -> None:
        assert isinstance(self.publisher, BatchEventPublisher)
        try:
            outcomes = await self.publisher.publish_all(batch)
        except Exception as exc:
            outcomes = [exc] * len(batch)
        async with self.uow_factory() as uow:
            published = [m.id for m, error in zip(batch, outcomes, strict=True) if error is None]
            await uow.outbox.mark_all_published(published, self.clock.now())
            for message, error in zip(batch, outcomes, strict=True):
                if error is not None:
                    await self._failed(uow, message, error)
            await uow.commit()

    async def _publish(self, message: OutboxMessage) -> None:
        try:
            await self.publisher.publish(message)
        except Exception as exc:
            async with self.uow_factory() as uow:
                await self._failed(uow, message, exc)
                await uow.commit()
            return
        async with self.uow_factory() as uow:
            await uow.outbox.mark_published(message.id, self.clock.now())
            await uow.commit()

    async def _failed(self, uow: UnitOfWork, message: OutboxMessage, exc: Exception) -> None:
        """Dead-letter the message after its last attempt, else defer it with backoff and jitter."""
        error = f"{type(exc).__name__}: {exc}"[:2000]
        attempts = message.attempts + 1
        if self.max_attempts is not None and attempts >= self.max_attempts:
            log.error(
                "event %s %s failed %d times and is dead-lettered (callrec dlq list): %s",
                message.type,
                message.id,
                attempts,
                error,
            )
            await uow.outbox.dead_letter(message.id, now=self.clock.now(), error=error)
            return
        delay = min(self.retry_cap, self.retry_base * (2 ** min(message.attempts, 20)))
        delay = delay * random.uniform(0.5, 1.0)
        log.warning("event %s %s failed, retry in %s: %s", message.type, message.id, delay, error)
        await uow.outbox.defer(message.id, next_attempt_at=self.clock.now() + delay, error=error)
