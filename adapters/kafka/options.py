"""How the Kafka adapters connect and behave; the composition root fills it from the settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KafkaOptions:
    bootstrap: str = "localhost:9092"
    client_id: str = "callrec"
    # Prepended to every topic name; empty in production, so the names are exactly the contract's.
    topic_prefix: str = ""
    # A consumer group is named ``{group_prefix}{consumer}``, e.g. ``callrec.archive``.
    group_prefix: str = "callrec."
    partitions: int = 6
    replication: int = 1
    # Producing: how long one publish may take before the relay defers the event.
    request_timeout_ms: int = 10_000
    publish_timeout_s: float = 15.0
    # Consuming: attempts per message before it goes to the dead-letter topic, and the pause between.
    max_attempts: int = 5
    retry_backoff_s: float = 1.0
    retry_backoff_cap_s: float = 30.0
    # One message (all its attempts) may take this long; it must stay below max_poll_interval_ms.
    message_time_limit_s: float = 120.0
    max_poll_interval_ms: int = 300_000
    # A member that stops heartbeating (a SIGKILLed worker) loses its partitions after this long.
    session_timeout_ms: int = 2_000
    heartbeat_interval_ms: int = 666
    max_records: int = 100

    def __post_init__(self) -> None:
        if self.partitions < 1 or self.replication < 1:
            raise ValueError("Kafka partitions and replication must be at least 1")
        if self.max_attempts < 1:
            raise ValueError("CALLREC_KAFKA_MAX_ATTEMPTS must be at least 1")
        if self.message_time_limit_s * 1000 >= self.max_poll_interval_ms:
            raise ValueError(
                "the per-message time limit must stay below max_poll_interval_ms "
                f"({self.message_time_limit_s} s >= {self.max_poll_interval_ms} ms)"
            )
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("the heartbeat interval must be shorter than the session timeout")

    @property
    def max_poll_interval_s(self) -> float:
        return self.max_poll_interval_ms / 1000

    def group_id(self, consumer: str) -> str:
        return f"{self.group_prefix}{consumer}"
