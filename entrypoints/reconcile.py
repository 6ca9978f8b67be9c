"""``callrec reconcile``: one reconciliation sweep on demand (the periodic one is a background loop)."""

from __future__ import annotations

from application.reconcile import RecordingReconciler, SweepReport
from entrypoints.config import Settings
from entrypoints.container import Container
from entrypoints.once import run_once
from entrypoints.runtime import resolve


async def reconcile_once(settings: Settings, *, drain_s: float) -> SweepReport:
    """One sweep now, then up to ``drain_s`` seconds handing on what it committed."""

    async def sweep(container: Container) -> SweepReport:
        reconciler: RecordingReconciler = await resolve(container.reconciler)
        return await reconciler.sweep()

    return await run_once(settings, sweep, drain_s=drain_s)
