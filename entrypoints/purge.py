"""``callrec purge``: one retention purge pass on demand (the daily one is a background loop)."""

from __future__ import annotations

from application.retention import PurgeReport, RetentionPurger
from entrypoints.config import Settings
from entrypoints.container import Container
from entrypoints.once import run_once
from entrypoints.runtime import resolve


async def purge_once(settings: Settings, *, drain_s: float) -> PurgeReport:
    """One pass now, then up to ``drain_s`` seconds handing its ``RecordingPurged`` events on (to the
    handlers that delete the audio, here, or to the topics)."""

    async def purge(container: Container) -> PurgeReport:
        purger: RetentionPurger = await resolve(container.purger)
        return await purger.purge()

    return await run_once(settings, purge, drain_s=drain_s)
