"""What an operator watches on the broker: that it answers, each consumer group's lag, the DLQ's size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from adapters.kafka.options import KafkaOptions
from adapters.kafka.topics import KafkaTopics


async def ping(options: KafkaOptions) -> None:
    """Raise unless the broker answers a metadata request."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=options.bootstrap,
        client_id=f"{options.client_id}-ready",
        request_timeout_ms=options.request_timeout_ms,
    )
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


async def broker_gauges(
    options: KafkaOptions, consumers: Mapping[str, Sequence[str]]
) -> tuple[dict[str, int], int]:
    """Each consumer group's lag (messages on its topics past its committed offsets; a partition
    without a commit counts from its first offset), and the number of messages in the DLQ topic.

    ``consumers``: consumer name → the event type names it handles.
    """
    topics = KafkaTopics(options.topic_prefix)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=options.bootstrap,
        client_id=f"{options.client_id}-metrics",
        request_timeout_ms=options.request_timeout_ms,
    )
    reader = AIOKafkaConsumer(
        bootstrap_servers=options.bootstrap,
        client_id=f"{options.client_id}-metrics",
        enable_auto_commit=False,
        request_timeout_ms=options.request_timeout_ms,
    )
    await admin.start()
    try:
        await reader.start()
        try:
            await reader.topics()  # fetches the metadata partitions_for_topic reads
            wanted = {name for carried in consumers.values() for name in topics.carrying(carried)}
            wanted.add(topics.dlq)
            partitions = [
                TopicPartition(topic, p)
                for topic in sorted(wanted)
                for p in sorted(reader.partitions_for_topic(topic) or ())
            ]
            if not partitions:
                return dict.fromkeys((options.group_id(c) for c in consumers), 0), 0
            first = await reader.beginning_offsets(partitions)
            last = await reader.end_offsets(partitions)
        finally:
            await reader.stop()
        lags: dict[str, int] = {}
        for consumer, carried in consumers.items():
            group = options.group_id(consumer)
            mine = set(topics.carrying(carried))
            # Partitions named: the broker need not support fetching "all of the group's" offsets.
            committed = await admin.list_consumer_group_offsets(
                group, partitions=[tp for tp in partitions if tp.topic in mine]
            )
            lag = 0
            for tp in partitions:
                if tp.topic in mine:
                    done = committed.get(tp)
                    start = done.offset if done is not None and done.offset >= 0 else first[tp]
                    lag += max(0, last[tp] - start)
            lags[group] = lag
        dlq = sum(last[tp] - first[tp] for tp in partitions if tp.topic == topics.dlq)
        return lags, dlq
    finally:
        await admin.close()
