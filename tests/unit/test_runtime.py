"""The background runtime: which loops each entrypoint runs, supervision, and shutdown (fake loops)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from entrypoints.runtime import BackgroundLoop, BackgroundRuntime, serve_loops, worker_loops


class FakeLoop:
    """Runs until ``stop`` is set (as a PollingLoop does), recording what happened to it."""

    def __init__(self, log: list[str], name: str, *, ignores_stop: bool = False) -> None:
        self.log = log
        self.name = name
        self.ignores_stop = ignores_stop
        self.publisher = SimpleNamespace(stop=self.stop_publisher)

    def wake(self) -> None:
        pass

    async def run_forever(self, stop: asyncio.Event) -> None:
        self.log.append(f"{self.name} started")
        try:
            await (asyncio.Event().wait() if self.ignores_stop else stop.wait())
        except asyncio.CancelledError:
            self.log.append(f"{self.name} cancelled")
            raise
        self.log.append(f"{self.name} stopped")

    run = run_forever  # the Kafka worker's spelling

    async def stop_publisher(self) -> None:
        self.log.append("publisher stopped")


def fake_container(log: list[str], *, bus: str = "inprocess", reconcile_interval_s: float = 300) -> Any:
    settings = SimpleNamespace(
        bus=bus, reconcile_interval_s=reconcile_interval_s, webhook_allow_private_networks=False
    )
    loops = {
        name: FakeLoop(log, name)
        for name in ("relay", "webhook_scheduler", "call_settler", "pause_limiter", "reconciler")
    }
    # The sweep ignores stop (a long archive): only cancelling stops it.
    loops["reconciler"].ignores_stop = True
    signal = SimpleNamespace(listeners=[])
    deliveries = SimpleNamespace(listeners=[])

    async def provide(name: str) -> FakeLoop:  # resources make some providers async
        return loops[name]

    return SimpleNamespace(
        settings=lambda: settings,
        commit_signal=lambda: signal,
        deliveries_signal=lambda: deliveries,
        **{name: (lambda name=name: provide(name)) for name in loops},
    )


def no_task_left(runtime: BackgroundRuntime) -> bool:
    others = asyncio.all_tasks() - {asyncio.current_task()}
    return not any(t.get_name() in runtime.names and not t.done() for t in others)


@pytest.mark.parametrize(
    ("bus", "interval", "expected"),
    [
        (
            "inprocess",
            300,
            ["outbox-relay", "webhook-delivery", "call-settling", "pause-limit", "reconciliation-sweep"],
        ),
        ("inprocess", 0, ["outbox-relay", "webhook-delivery", "call-settling", "pause-limit"]),
        (
            "kafka",
            300,
            ["outbox-relay", "webhook-delivery", "call-settling", "pause-limit"],
        ),  # the workers sweep
    ],
)
async def test_serve_runs_the_relay_webhooks_settling_and_the_embedded_sweep(
    bus: str, interval: float, expected: list[str]
) -> None:
    log: list[str] = []
    container = fake_container(log, bus=bus, reconcile_interval_s=interval)
    runtime = BackgroundRuntime(await serve_loops(container))
    assert runtime.names == expected
    runtime.start()
    await asyncio.sleep(0.01)
    running = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
    assert set(expected) <= running
    # Events wake the relay and deliveries the scheduler; nothing wakes the settler (it polls).
    assert [f.__self__.name for f in container.commit_signal().listeners] == ["relay"]
    assert [f.__self__.name for f in container.deliveries_signal().listeners] == ["webhook_scheduler"]

    await runtime.stop()

    assert no_task_left(runtime)
    if "reconciliation-sweep" in expected:
        assert log.index("reconciler cancelled") < log.index("relay stopped")  # the sweep goes first
    assert log.index("relay stopped") < log.index("webhook_scheduler stopped")
    assert ("publisher stopped" in log) == (bus == "kafka")
    if bus == "kafka":
        assert log.index("relay stopped") < log.index("publisher stopped")


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        (
            300,
            [
                "kafka-consumers",
                "outbox-relay",
                "webhook-delivery",
                "call-settling",
                "pause-limit",
                "reconciliation-sweep",
            ],
        ),
        (0, ["kafka-consumers", "outbox-relay", "webhook-delivery", "call-settling", "pause-limit"]),
    ],
)
async def test_a_worker_runs_the_consumers_a_relay_webhooks_settling_and_the_sweep(
    interval: float, expected: list[str]
) -> None:
    log: list[str] = []
    container = fake_container(log, bus="kafka", reconcile_interval_s=interval)
    runtime = BackgroundRuntime(await worker_loops(container, FakeLoop(log, "consumers")))
    assert runtime.names == expected
    running = asyncio.create_task(runtime.run())
    await asyncio.sleep(0.01)
    assert "consumers started" in log and "relay started" in log

    runtime.stopping.set()  # what SIGTERM does
    await asyncio.wait_for(running, timeout=1)

    assert no_task_left(runtime)
    assert {"consumers stopped", "relay stopped", "webhook_scheduler stopped", "call_settler stopped"} <= set(
        log
    )
    assert ("reconciler cancelled" in log) == bool(interval)


async def test_a_loop_that_crashes_is_logged_and_restarted_after_a_pause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0

    async def flaky(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        await stop.wait()

    log: list[str] = []
    steady = FakeLoop(log, "steady")
    runtime = BackgroundRuntime(
        [BackgroundLoop("flaky", flaky), BackgroundLoop("steady", steady.run_forever)], restart_pause_s=0.05
    )
    with caplog.at_level(logging.ERROR, logger="entrypoints.runtime"):
        runtime.start()
        await asyncio.sleep(0.02)
        assert runs == 1  # it waits before restarting
        for _ in range(100):
            if runs == 3:
                break
            await asyncio.sleep(0.01)
        assert runs == 3
        assert not runtime.stopping.is_set() and log == ["steady started"]  # the others carry on
        await runtime.stop()

    crashes = [r for r in caplog.records if "flaky crashed: restarting" in r.getMessage()]
    assert len(crashes) == 2 and all(r.exc_info for r in crashes)
    assert log == ["steady started", "steady stopped"]
    assert no_task_left(runtime)


async def test_a_loop_that_ends_on_its_own_is_restarted_too(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0

    async def quitter(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            await stop.wait()

    runtime = BackgroundRuntime([BackgroundLoop("quitter", quitter)], restart_pause_s=0.01)
    runtime.start()
    for _ in range(100):
        if runs == 2:
            break
        await asyncio.sleep(0.01)
    await runtime.stop()
    assert runs == 2
    assert any("quitter ended on its own" in r.getMessage() for r in caplog.records)


async def test_when_the_main_loop_fails_everything_stops_and_the_error_propagates() -> None:
    async def consumers(stop: asyncio.Event) -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("Kafka is gone")

    log: list[str] = []
    other = FakeLoop(log, "webhooks")
    runtime = BackgroundRuntime(
        [BackgroundLoop("consumers", consumers, restart=False), BackgroundLoop("webhooks", other.run_forever)]
    )
    with pytest.raises(RuntimeError, match="Kafka is gone"):
        await asyncio.wait_for(runtime.run(), timeout=1)
    assert log == ["webhooks started", "webhooks stopped"]
    assert no_task_left(runtime)


async def test_a_stop_during_the_restart_pause_ends_the_loop_at_once() -> None:
    async def broken(stop: asyncio.Event) -> None:
        raise RuntimeError("always")

    runtime = BackgroundRuntime([BackgroundLoop("broken", broken)], restart_pause_s=60)
    runtime.start()
    await asyncio.sleep(0.01)
    await asyncio.wait_for(runtime.stop(), timeout=1)
    assert no_task_left(runtime)


def test_loop_names_are_unique() -> None:
    async def run(stop: asyncio.Event) -> None:
        await stop.wait()

    with pytest.raises(ValueError, match="unique"):
        BackgroundRuntime([BackgroundLoop("a", run), BackgroundLoop("a", run)])
