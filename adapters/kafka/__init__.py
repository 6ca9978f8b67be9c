"""Kafka (aiokafka) adapters: the outbox relay's publisher, the consumer workers and the dead-letter queue.

The topics are a public contract (``docs/events.md``): one topic per aggregate type, keyed by the
aggregate's id, the value a JSON envelope, headers ``event-id`` and ``event-type``.
"""

from adapters.kafka.envelope import decode_envelope, envelope_of, headers_of
from adapters.kafka.options import KafkaOptions
from adapters.kafka.publisher import KafkaEventPublisher
from adapters.kafka.topics import KafkaTopics

__all__ = [
    "KafkaEventPublisher",
    "KafkaOptions",
    "KafkaTopics",
    "decode_envelope",
    "envelope_of",
    "headers_of",
]
