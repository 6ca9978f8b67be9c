"""The loop shared by the background work: the outbox relay, the webhook delivery scheduler, the call
settler, the pause limit and the reconciliation sweep (``entrypoints/runtime.py`` runs them)."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class PollingLoop:
    """Runs ``run_once`` when woken (a commit wrote work) or every ``poll_interval`` seconds.

    Subclasses set ``poll_interval``, ``_wake`` (an ``asyncio.Event``) and ``_in_flight`` (the tasks
    of the work they started), and implement ``run_once``, returning how many items they started.
    """

    poll_interval: float
    _wake: asyncio.Event
    _in_flight: dict[str, asyncio.Task[None]]

    async def run_once(self) -> int:
        raise NotImplementedError

    async def drain(self, max_wait_s: float = 30.0) -> None:
        """Handle everything due now and wait for it (tests and shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait_s
        while loop.time() < deadline:
            started = await self.run_once()
            if self._in_flight:
                await asyncio.wait(list(self._in_flight.values()), timeout=deadline - loop.time())
            elif not started:
                return

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:
                log.exception("%s pass failed", type(self).__name__)
            wake = asyncio.create_task(self._wake.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait(
                {wake, stopping}, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
            wake.cancel()
            stopping.cancel()
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=30)
