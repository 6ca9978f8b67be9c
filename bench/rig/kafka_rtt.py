"""The floor under end of call → ``call.ended``: raw aiokafka produce → consume round trips on the same
Tansu, one message at a time (producer ``acks="all"`` as the service's, consumer assigned directly)."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def round_trips(bootstrap: str, count: int) -> list[float]:
    """``count`` produce → consume round trips (seconds), after a few warm-up ones."""
    topic = f"bench-rtt-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_end(partition)
        times: list[float] = []
        for n in range(count + 5):
            sent = time.monotonic()
            await producer.send_and_wait(topic, f"m{n}".encode())
            message = await asyncio.wait_for(consumer.getone(), 30)
            assert message.value == f"m{n}".encode()
            if n >= 5:
                times.append(time.monotonic() - sent)
        return times
    finally:
        await consumer.stop()
        await producer.stop()
