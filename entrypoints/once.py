"""One background pass on demand (``callrec reconcile``, ``callrec purge``), outside a running service.

The periodic passes are background loops of ``entrypoints/runtime.py``; these run one now.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from entrypoints.config import Settings
from entrypoints.container import Container
from entrypoints.runtime import resolve

Report = TypeVar("Report")


async def run_once(
    settings: Settings, work: Callable[[Container], Awaitable[Report]], *, drain_s: float
) -> Report:
    """``work`` once in a container of its own, then up to ``drain_s`` seconds handing on the events it
    committed (in-process: to the handlers, here; with Kafka: to the topics, for the workers). 0 leaves
    that to the running service's relay."""
    container = Container(settings=settings)
    await container.init_resources()  # type: ignore[misc]
    try:
        report = await work(container)
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
