"""``KafkaEventPublisher``: the outbox relay's publisher when ``CALLREC_BUS=kafka``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from adapters.kafka.envelope import envelope_of, headers_of
from adapters.kafka.options import KafkaOptions
from adapters.kafka.topics import KafkaTopics, ensure_topics
from application.ports import OutboxMessage

log = logging.getLogger(__name__)


class KafkaUnavailable(Exception):
    """The broker cannot be reached right now; the event stays in the outbox for a later attempt."""


def new_producer(options: KafkaOptions) -> AIOKafkaProducer:
    """A plain producer with ``acks="all"``: no idempotence or transactions (consumers deduplicate)."""
    return AIOKafkaProducer(
        bootstrap_servers=options.bootstrap,
        client_id=options.client_id,
        acks="all",
        enable_idempotence=False,
        request_timeout_ms=options.request_timeout_ms,
    )


class KafkaEventPublisher:
    """Implements the relay's ``EventPublisher`` port: produces each event to its aggregate's topic.

    Nothing connects when it is built: the first ``publish`` creates the topics (if missing) and
    starts the producer. While the broker is unreachable, ``publish`` fails fast (one connection
    attempt per ``reconnect_interval_s``) so the relay defers events instead of blocking on them.
    """

    def __init__(self, options: KafkaOptions, *, reconnect_interval_s: float = 1.0) -> None:
        self.options = options
        self.topics = KafkaTopics(options.topic_prefix)
        self.reconnect_interval_s = reconnect_interval_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._last_attempt = float("-inf")
        self._last_error: str | None = None

    async def start(self) -> None:
        """Connect now (topics created if missing); raises ``KafkaUnavailable`` if it cannot."""
        await self._ensure_producer(throttle=False)

    async def _ensure_producer(self, *, throttle: bool = True) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is not None:
                return self._producer
            now = time.monotonic()
            if throttle and now - self._last_attempt < self.reconnect_interval_s:
                raise KafkaUnavailable(f"Kafka at {self.options.bootstrap} unreachable: {self._last_error}")
            self._last_attempt = now
            producer = new_producer(self.options)
            try:
                async with asyncio.timeout(self.options.publish_timeout_s):
                    await ensure_topics(self.options, self.topics.all)
                    await producer.start()
            except Exception as exc:
                self._last_error = str(exc) or type(exc).__name__
                await producer.stop()
                raise KafkaUnavailable(
                    f"Kafka at {self.options.bootstrap} unreachable: {self._last_error}"
                ) from exc
            log.info("Kafka producer connected to %s", self.options.bootstrap)
            self._producer = producer
            return producer

    async def publish(self, message: OutboxMessage) -> None:
        """Produce with ``acks="all"`` and wait for the broker's acknowledgement."""
        producer = await self._ensure_producer()
        async with asyncio.timeout(self.options.publish_timeout_s):
            await producer.send_and_wait(
                self.topics.for_aggregate(message.aggregate_type),
                value=envelope_of(message),
                key=message.aggregate_id.encode(),
                headers=headers_of(message),
            )

    async def publish_all(self, messages: Sequence[OutboxMessage]) -> list[Exception | None]:
        """Produce them all at once (the producer batches them per partition, one request each) and
        wait for every acknowledgement; for each message, None or its error."""
        try:
            producer = await self._ensure_producer()
        except KafkaUnavailable as exc:
            return [exc] * len(messages)
        sent: list[asyncio.Future[Any] | Exception] = []
        for message in messages:
            try:
                sent.append(
                    await producer.send(
                        self.topics.for_aggregate(message.aggregate_type),
                        value=envelope_of(message),
                        key=message.aggregate_id.encode(),
                        headers=headers_of(message),
                    )
                )
            except Exception as exc:
                sent.append(exc)
        pending = [f for f in sent if isinstance(f, asyncio.Future)]
        if pending:
            await asyncio.wait(pending, timeout=self.options.publish_timeout_s)
        results: list[Exception | None] = []
        for outcome in sent:
            if isinstance(outcome, Exception):
                results.append(outcome)
            elif not outcome.done() or outcome.cancelled():
                outcome.cancel()
                results.append(TimeoutError("no acknowledgement in time"))
            else:
                error = outcome.exception()
                results.append(
                    error if isinstance(error, Exception) or error is None else RuntimeError(error)
                )
        return results

    async def stop(self) -> None:
        """Flush what is in flight (bounded: with the broker gone the relay publishes it again)."""
        async with self._lock:
            producer, self._producer = self._producer, None
            if producer is not None:
                try:
                    async with asyncio.timeout(self.options.publish_timeout_s):
                        await producer.stop()
                except TimeoutError:
                    log.warning("Kafka producer did not flush in time; unacknowledged events stay queued")
