"""``callrec purge``: one retention purge pass on demand.

The daily pass is one of the background loops of ``entrypoints/runtime.py``.
"""

from __future__ import annotations

from application.retention import PurgeReport, RetentionPurger
from entrypoints.config import Settings
from entrypoints.container import Container
from entrypoints.runtime import resolve


async def purge_once(settings: Settings, *, drain_s: float) -> PurgeReport:
    """One pass now, then up to ``drain_s`` seconds handing its ``RecordingPurged`` events on (in-process:
    to the deleting handlers, here; with Kafka: to the topics). 0 leaves that to the service's relay."""
    container = Container(settings=settings)
    await container.init_resources()  # type: ignore[misc]
    try:
        purger: RetentionPurger = await resolve(container.purger)
        report = await purger.purge()
        if drain_s > 0:
            relay = await resolve(container.relay)
            try:
                await relay.drain(max_wait_s=drain_s)
            finally:
                if settings.bus == "kafka":
                    await relay.publisher.stop()
        return report
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
