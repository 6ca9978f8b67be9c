"""Running the reconciliation sweep: once on demand (``callrec reconcile``) or beside a worker.

``callrec serve`` on the embedded default runs it periodically itself (``entrypoints.http.app``).
A Kafka worker starts it with ``start_periodic_sweep(container, stop)`` after ``init_resources()``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from application.reconcile import RecordingReconciler, SweepReport
from entrypoints.config import Settings
from entrypoints.container import Container

log = logging.getLogger(__name__)


async def _resolve(provider: Any) -> Any:
    value = provider()
    return await value if inspect.isawaitable(value) else value


async def start_periodic_sweep(container: Container, stop: asyncio.Event) -> asyncio.Task[None] | None:
    """Start the periodic sweep (every ``CALLREC_RECONCILE_INTERVAL_S``) until ``stop`` is set.

    Returns the task (cancel it at shutdown: a pass may be in the middle of a long archive), or None
    when the interval is 0. Several processes may each run one: every step it takes is idempotent.
    """
    settings: Settings = container.settings()
    if settings.reconcile_interval_s <= 0:
        return None
    reconciler: RecordingReconciler = await _resolve(container.reconciler)
    return asyncio.create_task(
        reconciler.run_forever(stop, settings.reconcile_interval_s), name="reconciliation-sweep"
    )


async def reconcile_once(settings: Settings, *, drain_s: float) -> SweepReport:
    """One sweep now, then up to ``drain_s`` seconds handing on what it committed (in-process: to the
    handlers, here; with Kafka: to the topics). 0 leaves that to the running service's relay."""
    container = Container(settings=settings)
    await container.init_resources()  # type: ignore[misc]
    try:
        reconciler: RecordingReconciler = await _resolve(container.reconciler)
        report = await reconciler.sweep()
        if drain_s > 0:
            # In-process the relay runs the handlers here; with Kafka it publishes for the workers.
            relay = await _resolve(container.relay)
            try:
                await relay.drain(max_wait_s=drain_s)
            finally:
                if settings.bus == "kafka":
                    await relay.publisher.stop()
        return report
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
