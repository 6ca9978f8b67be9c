"""pytest fixtures for the Kafka tiers. Imported into ``tests/conftest.py``.

* ``kafka_broker`` (session): one Tansu broker for the whole run (memory storage), stopped by PID.
* ``kafka_options``: ``KafkaOptions`` on that broker with a topic and group prefix of the test's own,
  so tests sharing the broker never see each other's messages or groups; short timeouts.
* ``read_topics``: every message on some topics, read by a plain aiokafka consumer without a group.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from adapters.kafka.options import KafkaOptions
from tests.support.kafka import TansuBroker, running_tansu

__all__ = ["kafka_broker", "kafka_options", "kafka_test_options", "read_all", "read_topics"]

ReadTopics = Callable[..., Awaitable[list[ConsumerRecord[bytes, bytes]]]]


def kafka_test_options(bootstrap: str, **overrides: Any) -> KafkaOptions:
    """Options for a test: its own namespace on the broker, fast retries, short timeouts."""
    namespace = f"t{uuid.uuid4().hex[:10]}."
    settings: dict[str, Any] = {
        "bootstrap": bootstrap,
        "topic_prefix": namespace,
        "group_prefix": namespace,
        "partitions": 6,
        "replication": 1,
        "request_timeout_ms": 5_000,
        "publish_timeout_s": 5.0,
        "max_attempts": 3,
        "retry_backoff_s": 0.05,
        "retry_backoff_cap_s": 0.2,
        "message_time_limit_s": 20.0,
        "max_poll_interval_ms": 60_000,
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 1_000,
    }
    settings.update(overrides)
    return KafkaOptions(**settings)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    with running_tansu(tmp_path_factory.mktemp("tansu")) as broker:
        yield broker


@pytest.fixture
def kafka_options(kafka_broker: TansuBroker) -> KafkaOptions:
    return kafka_test_options(kafka_broker.bootstrap)


async def read_all(
    bootstrap: str, topics: list[str], *, expect: int = 0, timeout_s: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Everything on ``topics`` right now (at least ``expect`` records), from the beginning, without
    a consumer group.

    Tansu 0.6 reports wrong end offsets (its last batch's base offset + 1; after a restart, 1), so
    they are only a lower bound: a partition is read once past it and two fetches came back empty.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return []
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, 0)  # nothing is ever deleted in the tests
        records: list[ConsumerRecord[bytes, bytes]] = []
        quiet = dict.fromkeys(tps, 0)
        pending = set(tps)
        deadline = time.monotonic() + timeout_s
        while pending:
            assert time.monotonic() < deadline, (
                f"could not read {pending} to the end (end offsets {end}, expected {expect} records, "
                f"read {sorted((r.partition, r.offset) for r in records)})"
            )
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for got in batch.values():
                records.extend(got)
            for tp in list(pending):
                if tp not in batch and await consumer.position(tp) >= end[tp]:
                    quiet[tp] += 1
                    if quiet[tp] >= 2 and len(records) >= expect:
                        pending.discard(tp)
        return records
    finally:
        await consumer.stop()


@pytest.fixture
def read_topics(kafka_broker: TansuBroker) -> ReadTopics:
    async def read(topics: list[str], **kw: Any) -> list[ConsumerRecord[bytes, bytes]]:
        return await read_all(kafka_broker.bootstrap, topics, **kw)

    return read


async def eventually(probe: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 30.0) -> Any:
    """Poll ``probe`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
