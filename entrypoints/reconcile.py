"""``callrec reconcile``: one reconciliation sweep on demand.

The periodic sweep is one of the background loops of ``entrypoints/runtime.py``.
"""

from __future__ import annotations

import logging

from application.reconcile import RecordingReconciler, SweepReport
from entrypoints.config import Settings
from entrypoints.container import Container
from entrypoints.runtime import resolve

log = logging.getLogger(__name__)


async def reconcile_once(settings: Settings, *, drain_s: float) -> SweepReport:
    """One sweep now, then up to ``drain_s`` seconds handing on what it committed (in-process: to the
    handlers, here; with Kafka: to the topics). 0 leaves that to the running service's relay."""
    container = Container(settings=settings)
    await container.init_resources()  # type: ignore[misc]
    try:
        reconciler: RecordingReconciler = await resolve(container.reconciler)
        report = await reconciler.sweep()
        if drain_s > 0:
            # In-process the relay runs the handlers here; with Kafka it publishes for the workers.
            relay = await resolve(container.relay)
            try:
                await relay.drain(max_wait_s=drain_s)
            finally:
                if settings.bus == "kafka":
                    await relay.publisher.stop()
        return report
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
