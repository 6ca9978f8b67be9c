"""The background work of a process: which loops run, and running them.

Every background loop runs until a shared ``stop`` event is set:

=========================  ===============================================  ============================
loop                       does                                             on shutdown
=========================  ===============================================  ============================
``outbox-relay``           hands committed events on (``OutboxRelay``)      finishes what it started;
                                                                            then the Kafka publisher stops
``webhook-delivery``       sends the webhook deliveries that are due        finishes the tries in flight
                           (``WebhookDeliveryScheduler``)
``call-settling``          settles the calls whose scorability wait is      finishes its pass
                           over (``CallSettler``)
``pause-limit``            resumes recordings paused longer than            finishes its pass
                           ``CALLREC_MAX_PAUSE_S`` (``PauseLimiter``)
``reconciliation-sweep``   resumes stuck recordings every                   cancelled: a pass may be
                           ``CALLREC_RECONCILE_INTERVAL_S`` (``Recording-   archiving a long recording,
                           Reconciler``)                                    the next sweep resumes it
``kafka-consumers``        the consumers of ``callrec worker``              leave their groups cleanly
                           (``KafkaWorker``)
=========================  ===============================================  ============================

The entrypoints only choose: ``callrec serve`` runs ``serve_loops`` (relay, webhooks, settling, the
pause limit, and the sweep on the in-process bus), ``callrec worker`` runs ``worker_loops`` (consumers,
relay, webhooks, settling, the pause limit, sweep), ``callrec reconcile`` runs one sweep and drains the relay
(``entrypoints/reconcile.py``).
``BackgroundRuntime`` starts them, restarts one that crashes (logged, after a pause), and stops them
in order: it cancels the sweep first, then sets ``stop`` and waits for the others in the order given.
Several processes may run the same loops over one database: each claims, leases or idempotently
repeats what it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from entrypoints.config import Settings
from entrypoints.webhooks import announce_webhook_policy

log = logging.getLogger(__name__)

RESTART_PAUSE_S = 5.0


async def resolve(provider: Any) -> Any:
    """A provider's object; providers that depend on async resources hand back an awaitable."""
    value = provider()
    if inspect.isawaitable(value):
        value = await value
    return value


@dataclass(frozen=True)
class BackgroundLoop:
    """One loop: ``run(stop)`` works until ``stop`` is set.

    ``cancel``: shutdown cancels it rather than waiting for it. ``restart=False``: the process's main
    work (the Kafka consumers): when it ends or raises, the runtime stops and the error propagates,
    as the process exiting is what restarts it. ``after_stop`` runs once the loop has stopped.
    """

    name: str
    run: Callable[[asyncio.Event], Awaitable[None]]
    cancel: bool = False
    restart: bool = True
    after_stop: Callable[[], Awaitable[None]] | None = None


class BackgroundRuntime:
    """Starts, supervises and stops a process's background loops (see the module docstring)."""

    def __init__(self, loops: Sequence[BackgroundLoop], *, restart_pause_s: float = RESTART_PAUSE_S) -> None:
        names = [loop.name for loop in loops]
        if len(set(names)) != len(names):
            raise ValueError(f"loop names must be unique: {names}")
        self.loops = tuple(loops)
        self.restart_pause_s = restart_pause_s
        self.stopping = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def names(self) -> list[str]:
        return [loop.name for loop in self.loops]

    def start(self) -> None:
        for loop in self.loops:
            self._tasks[loop.name] = asyncio.create_task(self._supervise(loop), name=loop.name)

    async def run(self) -> None:
        """Start, run until ``stopping`` is set (a signal, or the main loop ended), then stop."""
        self.start()
        try:
            await self.stopping.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Cancel the loops marked ``cancel``, then set ``stopping`` and wait for the others in order;
        re-raises a main loop's error."""
        failure: BaseException | None = None
        for cancelled in (True, False):
            if not cancelled:
                self.stopping.set()
            for loop in self.loops:
                task = self._tasks.pop(loop.name, None) if loop.cancel == cancelled else None
                if task is None:
                    continue
                if cancelled:
                    task.cancel()
                [outcome] = await asyncio.gather(task, return_exceptions=True)
                if isinstance(outcome, Exception) and failure is None:
                    failure = outcome
                if loop.after_stop is not None:
                    await loop.after_stop()
        if failure is not None:
            raise failure

    async def _supervise(self, loop: BackgroundLoop) -> None:
        while True:
            try:
                await loop.run(self.stopping)
            except Exception:
                if not loop.restart:
                    log.exception("%s failed: stopping", loop.name)
                    self.stopping.set()
                    raise
                log.exception("%s crashed: restarting it in %.0f s", loop.name, self.restart_pause_s)
            else:
                if self.stopping.is_set():
                    return
                if not loop.restart:
                    self.stopping.set()
                    return
                log.error("%s ended on its own: restarting it in %.0f s", loop.name, self.restart_pause_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=self.restart_pause_s)
            if self.stopping.is_set():
                return


# --- what each process runs ----------------------------------------------------------------------


async def relay_loop(container: Any) -> BackgroundLoop:
    """In-process the relay hands events to their handlers; with Kafka it publishes them (nothing
    connects until then), and the Kafka publisher stops once the relay has."""
    settings: Settings = container.settings()
    relay = await resolve(container.relay)
    container.commit_signal().listeners.append(relay.wake)
    stop_publisher = relay.publisher.stop if settings.bus == "kafka" else None
    return BackgroundLoop("outbox-relay", relay.run_forever, after_stop=stop_publisher)


async def webhook_loops(container: Any) -> list[BackgroundLoop]:
    """Webhook deliveries and the settling of the calls they announce. A commit that wrote deliveries
    wakes the scheduler; the settler polls (the consumers settle a call the moment its last piece
    arrives, the settler only finds those whose scorability wait ran out, or that a lost event left).

    Deliveries are database rows, so the process that sends need not be the one that consumed the
    event: several schedulers over one database are safe, each claims the deliveries it sends.
    """
    announce_webhook_policy(container.settings())
    scheduler = await resolve(container.webhook_scheduler)
    settler = await resolve(container.call_settler)
    container.deliveries_signal().listeners.append(scheduler.wake)
    return [
        BackgroundLoop("webhook-delivery", scheduler.run_forever),
        BackgroundLoop("call-settling", settler.run_forever),
    ]


async def pause_loop(container: Any) -> BackgroundLoop:
    """The automatic resume of pauses nobody ended; several processes may each run one."""
    limiter = await resolve(container.pause_limiter)
    return BackgroundLoop("pause-limit", limiter.run_forever)


async def sweep_loop(container: Any) -> list[BackgroundLoop]:
    """The periodic sweep, or none when ``CALLREC_RECONCILE_INTERVAL_S`` is 0. Idempotent: several
    processes may each run one."""
    settings: Settings = container.settings()
    if settings.reconcile_interval_s <= 0:
        return []
    reconciler = await resolve(container.reconciler)
    return [BackgroundLoop("reconciliation-sweep", reconciler.run_forever, cancel=True)]


async def serve_loops(container: Any) -> list[BackgroundLoop]:
    """``callrec serve``: the relay and webhooks in both bus modes; the sweep on the in-process bus
    (with Kafka the workers run it)."""
    settings: Settings = container.settings()
    loops = [await relay_loop(container), *await webhook_loops(container), await pause_loop(container)]
    if settings.bus == "inprocess":
        loops += await sweep_loop(container)
    return loops


async def worker_loops(container: Any, worker: Any) -> list[BackgroundLoop]:
    """``callrec worker``: the consumers (the main work), a relay for the events they commit (woken
    by those commits: without it they would wait for the API's relay to poll, once per hop), webhooks,
    and the sweep. An event committed after this relay stopped is published by another process's
    relay (relays lease what they publish, so several share the outbox)."""
    return [
        BackgroundLoop("kafka-consumers", worker.run, restart=False),
        await relay_loop(container),
        *await webhook_loops(container),
        await pause_loop(container),
        *await sweep_loop(container),
    ]
