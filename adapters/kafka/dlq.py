"""The dead-letter topic ``callrec.dlq.v1``: messages a consumer gave up on, and bringing them back.

A dead letter is the original message (same key, same value, the original headers) plus headers
saying who gave up and why: ``dlq-consumer``, ``dlq-group``, ``dlq-error``, ``dlq-attempts``,
``dlq-failed-at``, ``dlq-original-topic``, ``dlq-original-partition``, ``dlq-original-offset``.

Replaying produces the original message to its original topic again, with ``replay-consumer``
naming the one consumer that should handle it (every other consumer group skips it) and
``replayed-from`` naming the dead letter. Platform consumers see the event a second time, with the
same ``id``, which the contract's at-least-once delivery already asks them to deduplicate. The
consumer group ``{group_prefix}dlq-replay`` remembers how far a full replay got.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from adapters.kafka.envelope import EVENT_ID_HEADER, EVENT_TYPE_HEADER, Headers, header, without
from adapters.kafka.options import KafkaOptions
from adapters.kafka.publisher import new_producer
from adapters.kafka.topics import KafkaTopics, ensure_topics

DLQ_PREFIX = "dlq-"
REPLAY_PREFIX = "replay"
REPLAY_CONSUMER_HEADER = "replay-consumer"
REPLAYED_FROM_HEADER = "replayed-from"
REPLAY_GROUP = "dlq-replay"
MAX_ERROR_CHARS = 4000


class DeadLetterQueue:
    """Writes dead letters (``acks="all"``); ``send`` returns once the broker has them."""

    def __init__(self, options: KafkaOptions) -> None:
        self.options = options
        self.topic = KafkaTopics(options.topic_prefix).dlq
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is None:
            producer = new_producer(self.options)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send(
        self,
        record: ConsumerRecord[Any, Any],
        *,
        consumer: str,
        group: str,
        error: BaseException,
        attempts: int,
    ) -> None:
        assert self._producer is not None, "DeadLetterQueue.start() first"
        reason = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
        headers = [
            *without(record.headers, DLQ_PREFIX, REPLAY_PREFIX),
            ("dlq-consumer", consumer.encode()),
            ("dlq-group", group.encode()),
            ("dlq-error", reason.encode()),
            ("dlq-attempts", str(attempts).encode()),
            ("dlq-failed-at", datetime.now(UTC).isoformat().encode()),
            ("dlq-original-topic", record.topic.encode()),
            ("dlq-original-partition", str(record.partition).encode()),
            ("dlq-original-offset", str(record.offset).encode()),
        ]
        async with asyncio.timeout(self.options.publish_timeout_s):
            await self._producer.send_and_wait(
                self.topic, value=record.value, key=record.key, headers=headers
            )


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    replayed: bool  # a full replay went past it

    def get(self, name: str) -> str | None:
        return header(self.headers, name)

    @property
    def event_id(self) -> str | None:
        return self.get(EVENT_ID_HEADER)

    @property
    def event_type(self) -> str | None:
        return self.get(EVENT_TYPE_HEADER)

    @property
    def consumer(self) -> str | None:
        return self.get("dlq-consumer")

    @property
    def original_topic(self) -> str | None:
        return self.get("dlq-original-topic")

    def summary(self) -> dict[str, Any]:
        """What ``callrec dlq list`` shows."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "consumer": self.consumer,
            "attempts": int(self.get("dlq-attempts") or 0),
            "error": self.get("dlq-error"),
            "failed_at": self.get("dlq-failed-at"),
            "original": f"{self.original_topic}/{self.get('dlq-original-partition')}"
            f"@{self.get('dlq-original-offset')}",
            "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
            "replayed": self.replayed,
        }


async def _open_dlq(options: KafkaOptions) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    topic = KafkaTopics(options.topic_prefix).dlq
    await ensure_topics(options, [topic])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=options.bootstrap,
        client_id=f"{options.client_id}-dlq",
        group_id=options.group_id(REPLAY_GROUP),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=max(options.request_timeout_ms, options.session_timeout_ms + 1000),
        session_timeout_ms=options.session_timeout_ms,
        heartbeat_interval_ms=options.heartbeat_interval_ms,
    )
    await consumer.start()
    try:
        await consumer.topics()  # loads the metadata
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
    except BaseException:
        await consumer.stop()
        raise
    return consumer, tps


async def _read_all(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], timeout_s: float
) -> tuple[list[DeadLetter], dict[TopicPartition, int]]:
    """Every record of ``tps`` from the beginning, and the offset after the last one per partition.

    The end offsets the broker reports are only a lower bound here (Tansu 0.6 reports the last
    batch's base offset + 1), so a partition counts as read once its position is past that and two
    fetches in a row brought nothing more.
    """
    reported_end = await consumer.end_offsets(tps)
    replayed_to = {tp: (await consumer.committed(tp)) or 0 for tp in tps}
    await consumer.seek_to_beginning(*tps)
    letters: list[DeadLetter] = []
    next_offset = dict(reported_end)
    quiet = dict.fromkeys(tps, 0)
    deadline = time.monotonic() + timeout_s
    pending = set(tps)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError("reading the dead-letter topic took too long")
        batch = await consumer.getmany(*pending, timeout_ms=200)
        for tp, records in batch.items():
            quiet[tp] = 0
            for r in records:
                next_offset[tp] = max(next_offset[tp], r.offset + 1)
                letters.append(
                    DeadLetter(
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key,
                        value=r.value,
                        headers=list(r.headers or ()),
                        replayed=r.offset < replayed_to[tp],
                    )
                )
        for tp in list(pending):
            if tp not in batch and await consumer.position(tp) >= reported_end[tp]:
                quiet[tp] += 1
                if quiet[tp] >= 2:
                    pending.discard(tp)
    letters.sort(key=lambda d: (d.partition, d.offset))
    return letters, next_offset


async def list_dead_letters(options: KafkaOptions, *, timeout_s: float = 60.0) -> list[DeadLetter]:
    """Every dead letter on the topic, oldest first per partition."""
    consumer, tps = await _open_dlq(options)
    try:
        letters, _ = await _read_all(consumer, tps, timeout_s)
        return letters
    finally:
        await consumer.stop()


async def replay_dead_letters(
    options: KafkaOptions,
    *,
    event_ids: Iterable[str] = (),
    consumer_name: str | None = None,
    timeout_s: float = 60.0,
) -> list[DeadLetter]:
    """Send dead letters back to their topics, each for the consumer that gave up on it.

    Without filters: every dead letter not replayed yet, and remember how far that got. With
    ``event_ids`` or ``consumer_name``: the matching ones, replayed or not (nothing is remembered).
    """
    wanted_ids = set(event_ids)
    filtered = bool(wanted_ids) or consumer_name is not None
    consumer, tps = await _open_dlq(options)
    producer = new_producer(options)
    try:
        await producer.start()
        letters, end = await _read_all(consumer, tps, timeout_s)
        chosen = [
            d
            for d in letters
            if (not filtered and not d.replayed)
            or (
                filtered
                and (not wanted_ids or d.event_id in wanted_ids)
                and (consumer_name is None or d.consumer == consumer_name)
            )
        ]
        dlq_topic = KafkaTopics(options.topic_prefix).dlq
        for d in chosen:
            if d.original_topic is None or d.consumer is None:
                continue
            headers = [
                *without(d.headers, DLQ_PREFIX, REPLAY_PREFIX),
                (REPLAY_CONSUMER_HEADER, d.consumer.encode()),
                (REPLAYED_FROM_HEADER, f"{dlq_topic}/{d.partition}@{d.offset}".encode()),
            ]
            await producer.send_and_wait(d.original_topic, value=d.value, key=d.key, headers=headers)
        if not filtered and end:
            await consumer.commit({tp: offset for tp, offset in end.items()})
        return chosen
    finally:
        await producer.stop()
        await consumer.stop()
