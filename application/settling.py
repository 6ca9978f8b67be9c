"""Settling calls: the loop that settles the calls whose scorability wait is over.

A call settles (``Call.settle``, which records ``CallSettled``, what webhooks announce) once it has
ended and its recording has settled, but not before ``CALLREC_SCORABILITY_WAIT_S`` after it ended.
Each pass settles the calls whose wait is over, and any call a lost event left unsettled, in pages:
one short transaction reads and settles at most ``batch_size`` calls, so however many calls wait, a
request waits for one page at most (on SQLite the transactions of a process take turns in order).

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
from domain.model import Call, Recording

log = logging.getLogger(__name__)


class CallSettler(PollingLoop):
    def __init__(self, services: Services, *, batch_size: int = 10, poll_interval: float = 1.0) -> None:
        """``batch_size``: the most calls one transaction reads and settles (a page of the pass)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
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
        """Settle the calls whose scorability wait is over (and any a lost event left behind), a page
        of at most ``batch_size`` calls per short transaction, so requests get their turn in between."""
        settled = 0
        while True:
            page, done = await self._settle_page()
            settled += done
            if page < self.batch_size or not done:
                return settled
            await asyncio.sleep(0)

    async def _settle_page(self) -> tuple[int, int]:
        """Read a page of waiting calls and settle them in one transaction: (read, settled)."""
        svc = self.services
        now = svc.clock.now()
        async with svc.uow() as uow:
            waiting = await uow.calls.settling(
                ended_before=now - svc.settings.scorability_wait, limit=self.batch_size
            )
            recordings = await uow.recordings.get_for_calls([call.id for call in waiting])
            settled = sum(self._settle(call, recordings.get(call.id)) for call in waiting)
            if not settled:
                return len(waiting), 0
            try:
                await uow.commit()
                return len(waiting), settled
            except ConcurrencyConflict:
                pass  # one of them changed meanwhile: settle them one by one, from fresh reads
        return len(waiting), await self._settle_each([call.id for call in waiting])

    def _settle(self, call: Call, recording: Recording | None) -> bool:
        svc = self.services
        return call.settle(
            recording,
            now=svc.clock.now(),
            scorability_wait=svc.settings.scorability_wait,
            instant_hangup=svc.settings.instant_hangup,
        )

    async def _settle_each(self, call_ids: list[str]) -> int:
        async def settle(call_id: str) -> bool:
            async with self.services.uow() as uow:
                fresh = await uow.calls.get(call_id)
                if fresh is None or fresh.settled_at is not None:
                    return False
                done = self._settle(fresh, await uow.recordings.get_for_call(call_id))
                await uow.commit()
                return done

        settled = 0
        for call_id in call_ids:
            try:
                settled += await retry_conflicts(functools.partial(settle, call_id), what="settling a call")
            except ConcurrencyConflict:
                continue  # still contended: the next pass settles it
        return settled
