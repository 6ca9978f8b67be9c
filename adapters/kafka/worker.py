"""``KafkaWorker``: the application's event consumers, one Kafka consumer group each, in one process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from adapters.kafka.consumer import KafkaEventConsumer
from adapters.kafka.dlq import DeadLetterQueue
from adapters.kafka.options import KafkaOptions
from adapters.kafka.topics import KafkaTopics, ensure_topics
from application.messagebus import EventDispatcher

log = logging.getLogger(__name__)


class KafkaWorker:
    """Runs the named consumers (all of the dispatcher's by default) until stopped.

    Several worker processes share the work: each consumer's group spreads its partitions over
    the processes, and moves them when a process joins, leaves or dies.
    """

    def __init__(
        self,
        dispatcher: EventDispatcher,
        options: KafkaOptions,
        consumers: Iterable[str] | None = None,
    ) -> None:
        known = dispatcher.all_consumers()
        names = sorted(known if consumers is None else set(consumers))
        unknown = set(names) - known
        if unknown:
            raise ValueError(f"unknown consumers {sorted(unknown)}; known: {sorted(known)}")
        self.options = options
        self.dead_letters = DeadLetterQueue(options)
        self.consumers = [KafkaEventConsumer(name, dispatcher, options, self.dead_letters) for name in names]

    async def start(self, stop: asyncio.Event | None = None, *, retry_interval_s: float = 2.0) -> bool:
        """Create missing topics and join the groups, waiting for the broker if it is not up yet.

        Returns False if ``stop`` was set before Kafka could be reached.
        """
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await ensure_topics(self.options, KafkaTopics(self.options.topic_prefix).all)
                await self.dead_letters.start()
                break
            except Exception as exc:
                log.warning("Kafka at %s not reachable yet: %s", self.options.bootstrap, exc)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=retry_interval_s)
                except TimeoutError:
                    pass
        else:
            return False
        # Joining a group takes a few seconds (the broker waits for more members): join all at once.
        results = await asyncio.gather(
            *(consumer.start() for consumer in self.consumers), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for consumer in self.consumers:
                await consumer.close()
            await self.dead_letters.stop()
            raise failures[0]
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Start (if needed), consume until ``stop`` is set, then leave the groups cleanly."""
        if not await self.start(stop):
            return
        try:
            await asyncio.gather(*(consumer.run(stop) for consumer in self.consumers))
        finally:
            await self.dead_letters.stop()

    async def wait_assigned(self, timeout_s: float = 30.0) -> None:
        """Until every consumer has partitions (tests and readiness checks)."""
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(consumer.assigned.wait() for consumer in self.consumers))
