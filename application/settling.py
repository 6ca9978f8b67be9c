"""Settling calls: the loop that settles the calls whose scorability wait is over.

A call settles (``Call.settle``, which records ``CallSettled``, what webhooks announce) once it has
ended and its recording has settled, but not before ``CALLREC_SCORABILITY_WAIT_S`` after it ended.
Each pass settles the calls whose wait is over, and any call a lost event left unsettled.

Run ``run_forever(stop)`` wherever the webhook delivery scheduler runs (``entrypoints/runtime.py``);
``wake()`` after a commit makes the next pass immediate. Several settlers over one database are safe:
each settles in its own transaction, and a call settles once.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from application.errors import ConcurrencyConflict
from application.polling import PollingLoop
from application.retry import retry_conflicts
from application.services import Services

log = logging.getLogger(__name__)


class CallSettler(PollingLoop):
    def __init__(self, services: Services, *, batch_size: int = 100, poll_interval: float = 1.0) -> None:
        self.services = services
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._in_flight: dict[str, asyncio.Task[None]] = {}  # each pass settles within itself
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> int:
        """One pass; returns how many calls it settled (``drain()`` repeats until none)."""
        return await self.settle_waiting_calls()

    async def settle_waiting_calls(self) -> int:
        """Settle the calls whose scorability wait is over (and any a lost event left behind)."""
        svc = self.services
        now = svc.clock.now()
        async with svc.uow() as uow:
            waiting = await uow.calls.settling(
                ended_before=now - svc.settings.scorability_wait, limit=self.batch_size
            )

        async def settle(call_id: str) -> bool:
            async with svc.uow() as uow:
                fresh = await uow.calls.get(call_id)
                if fresh is None or fresh.settled_at is not None:
                    return False
                recording = await uow.recordings.get_for_call(call_id)
                done = fresh.settle(
                    recording,
                    now=svc.clock.now(),
                    scorability_wait=svc.settings.scorability_wait,
                    instant_hangup=svc.settings.instant_hangup,
                )
                await uow.commit()
                return done

        settled = 0
        for call in waiting:
            try:
                settled += await retry_conflicts(functools.partial(settle, call.id), what="settling a call")
            except ConcurrencyConflict:
                continue  # still contended: the next pass settles it
        return settled
