"""The topics: names (the public contract), which events each carries, and creating them on start."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from adapters.kafka.options import KafkaOptions
from domain.events import EVENT_TYPES

log = logging.getLogger(__name__)

AGGREGATE_TOPICS = {
    "organization": "callrec.organizations.v1",
    "call": "callrec.calls.v1",
    "recording": "callrec.recordings.v1",
    "audit": "callrec.audit.v1",
}
DLQ_TOPIC = "callrec.dlq.v1"

_TOPIC_ALREADY_EXISTS = 36


class KafkaTopics:
    """Topic names, with the optional prefix (e.g. to share one cluster between environments)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def for_aggregate(self, aggregate_type: str) -> str:
        try:
            return self.prefix + AGGREGATE_TOPICS[aggregate_type]
        except KeyError:
            raise ValueError(f"no topic for aggregate type {aggregate_type!r}") from None

    def for_event_type(self, type_name: str) -> str:
        return self.for_aggregate(EVENT_TYPES[type_name].aggregate_type)

    @property
    def events(self) -> list[str]:
        return [self.prefix + name for name in AGGREGATE_TOPICS.values()]

    @property
    def dlq(self) -> str:
        return self.prefix + DLQ_TOPIC

    @property
    def all(self) -> list[str]:
        return [*self.events, self.dlq]

    def carrying(self, type_names: Iterable[str]) -> list[str]:
        """The topics the given event types are published to."""
        return sorted({self.for_event_type(name) for name in type_names})


async def ensure_topics(options: KafkaOptions, topics: Iterable[str]) -> list[str]:
    """Create the topics that do not exist yet (partitions and replication from ``options``).

    Existing topics are left as they are. Returns the names created.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=options.bootstrap,
        client_id=f"{options.client_id}-admin",
        request_timeout_ms=options.request_timeout_ms,
    )
    await admin.start()
    try:
        wanted = list(topics)
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [NewTopic(name, options.partitions, options.replication) for name in missing],
            timeout_ms=options.request_timeout_ms,
        )
        created = []
        for topic, error_code, error_message in response.topic_errors:
            if error_code == 0:
                created.append(topic)
            elif error_code != _TOPIC_ALREADY_EXISTS:  # another process created it meanwhile
                raise RuntimeError(f"creating Kafka topic {topic} failed: {error_code} {error_message}")
        if created:
            log.info(
                "created Kafka topics %s (%d partitions, replication %d)",
                ", ".join(created),
                options.partitions,
                options.replication,
            )
        return created
    finally:
        await admin.close()
