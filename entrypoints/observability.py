"""Metrics (Prometheus) and readiness, composed from the adapters' probes.

Two kinds of metric:

* counted in the process that does the work (HTTP requests, archives, webhook tries): module-level
  prometheus-client metrics in the default registry. ``callrec serve`` serves them on ``/metrics``;
  ``callrec worker`` on its own port (``CALLREC_METRICS_PORT``);
* read from the shared state on each scrape of ``callrec serve``'s ``/metrics`` (outbox backlog,
  recordings by state, stuck recordings, DLQ size, consumer lag): the same whichever process answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import timedelta
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.sqlalchemy.gauges import database_gauges, ping
from application.handlers import EVENT_HANDLERS
from application.ports import RecordingStore, StoredObject, WebhookMessage, WebhookSender
from application.reconcile import STUCK_STATUSES
from domain.model import RecordingStatus
from domain.webhooks import SendResult
from entrypoints.config import Settings
from entrypoints.runtime import resolve

disable_created_metrics()  # type: ignore[no-untyped-call]  # no ``*_created`` series beside each counter

HTTP_REQUESTS = Counter(
    "callrec_http_requests",
    "HTTP requests answered, by route template and status",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "callrec_http_request_duration_seconds", "time to answer an HTTP request", ["method", "route"]
)
ARCHIVES = Counter("callrec_archives", "archive uploads into the store, by outcome (ok, error)", ["outcome"])
ARCHIVE_DURATION = Histogram(
    "callrec_archive_duration_seconds",
    "time to stream one recording from Twilio into the store",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
ARCHIVE_BYTES = Counter("callrec_archive_bytes", "bytes archived into the store")
WEBHOOK_ATTEMPTS = Counter(
    "callrec_webhook_attempts", "webhook tries, by outcome (succeeded, failed, gone)", ["outcome"]
)


class InstrumentedStore:
    """The recording store, counting each ``put`` (an archive): its outcome, duration and bytes."""

    def __init__(self, store: RecordingStore) -> None:
        self._store = store
        self.max_url_lifetime = store.max_url_lifetime

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def put(
        self, key: str, chunks: AsyncIterator[bytes], *, content_type: str, metadata: Mapping[str, str]
    ) -> StoredObject:
        started = time.perf_counter()
        try:
            stored = await self._store.put(key, chunks, content_type=content_type, metadata=metadata)
        except BaseException:
            ARCHIVES.labels("error").inc()
            raise
        ARCHIVES.labels("ok").inc()
        ARCHIVE_DURATION.observe(time.perf_counter() - started)
        ARCHIVE_BYTES.inc(stored.size)
        return stored

    async def verify(self, key: str) -> StoredObject | None:
        return await self._store.verify(key)

    async def signed_url(
        self, key: str, *, expires_in: timedelta, download_filename: str | None = None
    ) -> str:
        return await self._store.signed_url(key, expires_in=expires_in, download_filename=download_filename)

    async def delete(self, key: str) -> None:
        await self._store.delete(key)


class InstrumentedSender:
    """The webhook sender, counting each try by outcome."""

    def __init__(self, sender: WebhookSender) -> None:
        self._sender = sender

    async def check_target(self, url: str) -> None:
        await self._sender.check_target(url)

    async def send(self, message: WebhookMessage) -> SendResult:
        result = await self._sender.send(message)
        WEBHOOK_ATTEMPTS.labels(result.outcome.value).inc()
        return result


# --- what is read on each scrape ------------------------------------------------------------------


def consumers() -> dict[str, list[str]]:
    """Consumer name → the event type names it handles."""
    found: dict[str, list[str]] = {}
    for event_type, handlers in EVENT_HANDLERS.items():
        for name, _ in handlers:
            found.setdefault(name, []).append(event_type.__name__)
    return found


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


async def state_metrics(container: Any) -> list[Metric]:
    """The gauges read from the database (and, with Kafka, the broker) right now."""
    settings: Settings = container.settings()
    now = container.clock().now()
    db = await database_gauges(
        await _engine(container),
        now=now,
        stuck_before=now - settings.reconcile_stuck_after,
        stuck_statuses=[status.value for status in STUCK_STATUSES],
    )
    families: list[Metric] = [
        _gauge("callrec_outbox_backlog", "committed events not yet handed on", db.outbox_backlog),
        _gauge(
            "callrec_outbox_oldest_age_seconds",
            "age of the oldest event not yet handed on (0 when none)",
            db.outbox_oldest_age_s,
        ),
    ]
    recordings = GaugeMetricFamily("callrec_recordings", "recordings by state", labels=["state"])
    stuck = GaugeMetricFamily(
        "callrec_recordings_stuck",
        "recordings unchanged for longer than CALLREC_RECONCILE_STUCK_AFTER_S, by state",
        labels=["state"],
    )
    for status in RecordingStatus:
        recordings.add_metric([status.value], db.recordings.get(status.value, 0))
    for status in STUCK_STATUSES:
        stuck.add_metric([status.value], db.stuck.get(status.value, 0))
    families += [recordings, stuck]
    dlq = GaugeMetricFamily(
        "callrec_dlq_messages",
        "dead letters: outbox rows given up on (in-process bus) or messages in callrec.dlq.v1 (Kafka)",
        labels=["bus"],
    )
    if settings.bus == "kafka":
        from adapters.kafka.monitoring import broker_gauges

        lags, dlq_size = await broker_gauges(container.kafka_options(), consumers())
        lag = GaugeMetricFamily(
            "callrec_consumer_lag", "messages not yet handled by a consumer group", labels=["group"]
        )
        for group, value in sorted(lags.items()):
            lag.add_metric([group], value)
        families.append(lag)
        dlq.add_metric(["kafka"], dlq_size)
    else:
        dlq.add_metric(["inprocess"], db.outbox_dead)
    families.append(dlq)
    return families


async def render_metrics(container: Any) -> bytes:
    """The Prometheus text of this process's counters followed by the shared state's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(await state_metrics(container)))
    return bytes(generate_latest(REGISTRY)) + bytes(generate_latest(registry))


async def _engine(container: Any) -> Any:
    return await resolve(container.engine)


# --- readiness ------------------------------------------------------------------------------------


async def readiness(container: Any) -> dict[str, str]:
    """Each dependency's answer: ``ok`` or why not. The database always; the broker with Kafka; the
    store with S3 (the embedded default's store is a local directory)."""
    settings: Settings = container.settings()
    checks: dict[str, Any] = {"database": lambda: _db_ping(container)}
    if settings.bus == "kafka":
        from adapters.kafka.monitoring import ping as kafka_ping

        checks["broker"] = lambda: kafka_ping(container.kafka_options())
    if settings.storage == "s3":
        checks["store"] = lambda: container.store().ping()

    async def check(probe: Any) -> str:
        try:
            async with asyncio.timeout(settings.ready_timeout_s):
                await probe()
        except TimeoutError:
            return f"no answer within {settings.ready_timeout_s:g} s"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        return "ok"

    results = await asyncio.gather(*(check(probe) for probe in checks.values()))
    return dict(zip(checks, results, strict=True))


async def _db_ping(container: Any) -> None:
    await ping(await _engine(container))
