"""``KafkaEventConsumer``: one named consumer of the application, as one Kafka consumer group.

How a message becomes exactly one effect:

* The consumer's handler runs through ``EventDispatcher.dispatch(event, only=[name])``, which skips
  an event whose ``(consumer, event id)`` is already recorded and records it in the same transaction
  as the effect. A redelivered message therefore changes nothing.
* Offsets are committed by hand, only for messages whose handling has returned (the effect and its
  marker are committed by then), after each batch and, by the rebalance listener, before partitions
  move to another member. A crash between the two means a redelivery, which the marker absorbs.
* One message, all its attempts included, may take ``message_time_limit_s``, which is below
  ``max_poll_interval_ms``; a batch stops early (and seeks back) rather than overstay the poll
  interval.
* A message that still fails after ``max_attempts`` (or that cannot be decoded at all) goes to the
  dead-letter topic with its error and original headers, and the partition moves on.

Partitions of one batch are handled concurrently; one partition's messages strictly in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from structlog.contextvars import bound_contextvars

from adapters.kafka.dlq import REPLAY_CONSUMER_HEADER, DeadLetterQueue
from adapters.kafka.envelope import EVENT_TYPE_HEADER, UndecodableMessage, decode_envelope, header
from adapters.kafka.options import KafkaOptions
from adapters.kafka.topics import KafkaTopics
from application.messagebus import EventDispatcher
from domain.events import Event, log_context

log = logging.getLogger(__name__)


def consumer_config(options: KafkaOptions, name: str) -> dict[str, Any]:
    """The ``AIOKafkaConsumer`` settings of the consumer ``name`` (its group is ``group_id(name)``)."""
    return {
        "bootstrap_servers": options.bootstrap,
        "client_id": f"{options.client_id}-{name}",
        "group_id": options.group_id(name),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": options.max_records,
        "max_poll_interval_ms": options.max_poll_interval_ms,
        # The listener waits for the message in hand (at most the time limit) before rejoining.
        "rebalance_timeout_ms": int(options.message_time_limit_s * 1000) + 10_000,
        "session_timeout_ms": options.session_timeout_ms,
        "heartbeat_interval_ms": options.heartbeat_interval_ms,
        "request_timeout_ms": max(options.request_timeout_ms, options.session_timeout_ms + 5000),
    }


class _CommitBeforeMoving(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KafkaEventConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.owner._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.owner._on_assigned(set(assigned))


class KafkaEventConsumer:
    def __init__(
        self,
        name: str,
        dispatcher: EventDispatcher,
        options: KafkaOptions,
        dead_letters: DeadLetterQueue,
    ) -> None:
        self.name = name
        self.dispatcher = dispatcher
        self.options = options
        self.dead_letters = dead_letters
        self.group_id = options.group_id(name)
        self.event_types = {
            event_type.__name__
            for event_type, handlers in dispatcher.event_handlers.items()
            if any(handler_name == name for handler_name, _ in handlers)
        }
        if not self.event_types:
            raise ValueError(f"no event handler is named {name!r}")
        self.topics = KafkaTopics(options.topic_prefix).carrying(self.event_types)
        self.assignment: frozenset[TopicPartition] = frozenset()
        self.assigned = asyncio.Event()
        self.stats: Counter[str] = Counter()
        self._consumer: AIOKafkaConsumer | None = None
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._revoking = False
        self._done: dict[TopicPartition, int] = {}  # next offset per partition, its effects committed

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(**consumer_config(self.options, self.name))
        consumer.subscribe(self.topics, listener=_CommitBeforeMoving(self))
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        log.info("consumer %s joining group %s on %s", self.name, self.group_id, ", ".join(self.topics))

    async def close(self) -> None:
        """Stop a consumer that was started but never ran (``run`` stops its own)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; then finish the message in hand, commit and leave the group."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        stopper = asyncio.create_task(self._watch(stop))
        try:
            while not self._stop.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=500)
                except KafkaError as exc:
                    log.warning("consumer %s: fetching failed: %s", self.name, exc)
                    await self._pause(1.0)
                    continue
                if not batch:
                    continue
                polled_at = time.monotonic()
                self._idle.clear()
                try:
                    await asyncio.gather(
                        *(self._handle_partition(tp, records, polled_at) for tp, records in batch.items())
                    )
                    if not self._revoking:
                        await self._commit()
                finally:
                    self._idle.set()
            await self._commit()
        finally:
            stopper.cancel()
            self._consumer = None
            await consumer.stop()  # leaves the group: its partitions move at once
            log.info("consumer %s stopped (%s)", self.name, dict(self.stats))

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stop.set()

    async def _pause(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        except TimeoutError:
            pass

    # --- rebalancing ------------------------------------------------------------------------------

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Before partitions move: let the message in hand finish, then commit what was handled."""
        self._revoking = True
        try:
            await self._idle.wait()
            await self._commit(only=revoked)
            for tp in revoked:
                self._done.pop(tp, None)
            self.assignment = frozenset()
            self.assigned.clear()
        finally:
            self._revoking = False

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.assignment = frozenset(assigned)
        log.info(
            "consumer %s assigned %s",
            self.name,
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(assigned)) or "nothing",
        )
        if assigned:
            self.assigned.set()

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        owned = consumer.assignment()
        offsets = {
            tp: offset for tp, offset in self._done.items() if tp in owned and (only is None or tp in only)
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on; the next owner gets these messages again and the markers skip them.
            log.info("consumer %s: commit refused (%s); handled messages may be redelivered", self.name, exc)
            return
        except KafkaError as exc:
            log.warning("consumer %s: commit failed: %s", self.name, exc)
            return
        for tp, offset in offsets.items():
            if self._done.get(tp) == offset:
                del self._done[tp]

    # --- handling ---------------------------------------------------------------------------------

    def _seek_back(self, tp: TopicPartition, offset: int) -> None:
        if self._consumer is None:
            return
        try:
            self._consumer.seek(tp, offset)
        except IllegalStateError:
            pass  # no longer ours: the next owner starts from the committed offset

    async def _handle_partition(
        self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]], polled_at: float
    ) -> None:
        for record in records:
            out_of_time = (
                time.monotonic() - polled_at + self.options.message_time_limit_s
                >= self.options.max_poll_interval_s
            )
            if self._stop.is_set() or self._revoking or out_of_time:
                self._seek_back(tp, record.offset)  # poll again before handling the rest
                return
            try:
                done = await self._handle(record)
            except Exception:
                log.exception("consumer %s: unexpected failure at %s/%d", self.name, tp.topic, record.offset)
                done = False
            if not done:
                self._seek_back(tp, record.offset)
                if not self._revoking:
                    await self._pause(self.options.retry_backoff_s)
                return
            self._done[tp] = record.offset + 1

    async def _handle(self, record: ConsumerRecord[Any, Any]) -> bool:
        """Handle one message; True once it needs nothing more (handled, not ours, or dead-lettered)."""
        target = header(record.headers, REPLAY_CONSUMER_HEADER)
        if target is not None and target != self.name:
            return True  # a replay meant for another consumer
        type_name = header(record.headers, EVENT_TYPE_HEADER)
        if type_name is not None and type_name not in self.event_types:
            return True
        try:
            event = decode_envelope(record.value, type_name)
        except UndecodableMessage as exc:
            return await self._dead_letter(record, exc, attempts=1)
        if type(event).__name__ not in self.event_types:
            return True
        with bound_contextvars(consumer=self.name, **log_context(event)):
            return await self._handle_event(record, event)

    async def _handle_event(self, record: ConsumerRecord[Any, Any], event: Event) -> bool:
        """Dispatch to this consumer with retries; dead-letter after the last attempt."""
        deadline = time.monotonic() + self.options.message_time_limit_s
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self.dispatcher.dispatch(event, only=[self.name])
            except Exception as exc:
                error: BaseException = exc
            else:
                self.stats["handled"] += 1
                return True
            if self._stop.is_set() or self._revoking:
                return False  # not given up on: whoever owns the partition next tries again
            pause = min(self.options.retry_backoff_cap_s, self.options.retry_backoff_s * 2 ** (attempt - 1))
            if attempt >= self.options.max_attempts or time.monotonic() + pause >= deadline:
                break
            log.warning(
                "consumer %s: %s %s failed (attempt %d), retrying in %.1f s: %s",
                self.name,
                type(event).__name__,
                event.id,
                attempt,
                pause,
                error,
            )
            self.stats["retried"] += 1
            await self._pause(pause)
        return await self._dead_letter(record, error, attempts=attempt)

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], error: BaseException, *, attempts: int
    ) -> bool:
        try:
            await self.dead_letters.send(
                record, consumer=self.name, group=self.group_id, error=error, attempts=attempts
            )
        except Exception:
            log.exception("consumer %s: could not write a dead letter; the message stays put", self.name)
            return False
        self.stats["dead_lettered"] += 1
        log.error(
            "consumer %s gave up on %s/%d after %d attempt(s), sent to the dead-letter topic: %s",
            self.name,
            record.topic,
            record.offset,
            attempts,
            error,
        )
        return True
