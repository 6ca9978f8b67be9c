"""Benchmark: whole calls through the service, open-loop at a fixed offered rate, from outside.

    uv run python -m bench.calls --out bench/out/calls.json [--quick] [--only main,ladder,...]

A full run takes 5-10 minutes on a shared 2-core machine; ``--quick`` runs only the two 10 calls/s
runs, 5 s each, in about 2 minutes (mostly starting PostgreSQL, Tansu, moto and the workers' group
joins, then draining what a loaded machine could not keep up with).
Logs of every process land in ``bench/out/calls/logs/``, profiles in ``bench/out/calls/``.

Starts the production shape as processes (a throwaway PostgreSQL, Tansu, a moto S3 server, the Twilio
stand-in, a webhook receiver, ``callrec serve`` and two ``callrec worker``s), then the embedded shape
(``callrec serve`` alone: SQLite, in-process bus, filesystem store), and drives calls at a fixed
offered rate: each call is the callback sequence Twilio sends, with a 160 KB recording, and a webhook
endpoint is subscribed to ``call.ended``. It reports, in the same run:

* production at 10 calls/s (py-spy profiles of the API and one worker meanwhile): completed calls/s,
  lost calls, end of call → ``call.ended`` received p50/p99, ``/twilio/voice`` p50/p99, the service's
  CPU per fully processed call (utime + stime of every service process from ``/proc``, over the
  run and its drain, divided by the calls completed), the other processes' CPU per call, peak RSS;
* the highest offered rate the production shape sustains (steps up until a call is lost, completion
  falls under 90 % of the offered rate or the p99 reaches 2 s), and ``/twilio/voice`` at twice it;
* 10 calls/s while a worker is SIGKILLed midway and a replacement started;
* the embedded shape at 10 calls/s;
* baselines: the driver's own CPU per call (``getrusage``, the webhook receiver's thread included)
  and raw aiokafka produce → consume round trips on the same Tansu.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import uvloop

from bench.rig import kafka_rtt, profiles
from bench.rig import stack as stacks
from bench.rig.load import AUDIO_SIZE, CallDriver, Phase, _rusage_cpu, new_session
from bench.rig.measure import Figure, ProcReader, Result, cpu_delta, figure, percentile

ROOT = Path(__file__).resolve().parents[1]
BASE_RATE = 10.0
SUSTAIN_P99_S = 2.0
SUSTAIN_SHARE = 0.9


@dataclass(frozen=True)
class Plan:
    main_s: float
    ladder: tuple[float, ...]
    step_s: float
    overload_s: float
    kill_s: float
    embedded_s: float
    rtt_count: int
    drain_s: float
    scenarios: frozenset[str]
    idle_s: float = 5.0


SCENARIOS = ("main", "ladder", "overload", "kill", "embedded")
FULL = Plan(
    30, (2.5, 5, 7.5, 10, 12.5, 15, 20, 25, 30, 40, 50, 60, 80), 15, 15, 30, 30, 300, 60, frozenset(SCENARIOS)
)
# --quick: the 10 calls/s runs of both shapes (the ladder, 2x and the kill take minutes; --only adds them).
QUICK = Plan(5, (2.5, 5, 10, 20), 4, 4, 6, 5, 30, 30, frozenset(("main", "embedded")), 2.0)


@dataclass
class Measured:
    """One phase's figures."""

    label: str
    rate: float
    offered: int
    completed: int
    errors: int
    completed_per_s: float
    ended_ms: list[float]
    voice_ms: list[float]
    lag_ms: list[float]
    service_cpu_s: dict[str, float]
    infra_cpu_s: dict[str, float]
    driver_cpu_s: float
    drain_s: float
    db_transactions: int | None = None  # PostgreSQL commits + rollbacks in the database meanwhile

    @property
    def lost(self) -> int:
        return self.offered - self.completed

    def p(self, which: list[float], q: float) -> float | None:
        return percentile(which, q)

    def per_call_ms(self, seconds: float) -> float | None:
        return seconds * 1000 / self.completed if self.completed else None

    @property
    def service_cpu_per_call_ms(self) -> float | None:
        return self.per_call_ms(sum(self.service_cpu_s.values()))

    @property
    def sustained(self) -> bool:
        p99 = self.p(self.ended_ms, 99)
        return (
            self.lost == 0
            and self.completed_per_s >= SUSTAIN_SHARE * self.rate
            and p99 is not None
            and p99 < SUSTAIN_P99_S * 1000
        )

    def line(self) -> str:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f}"

        cpu = self.service_cpu_per_call_ms
        return (
            f"{self.label}: offered {self.rate:g}/s ({self.offered} calls), "
            f"completed {self.completed_per_s:.1f}/s, "
            f"lost {self.lost} ({self.errors} failed callbacks), end→call.ended p50/p99 "
            f"{ms(self.p(self.ended_ms, 50))}/{ms(self.p(self.ended_ms, 99))} ms, /twilio/voice p50/p99 "
            f"{ms(self.p(self.voice_ms, 50))}/{ms(self.p(self.voice_ms, 99))} ms, service CPU/call "
            f"{ms(cpu)} ms, driver CPU/call {ms(self.per_call_ms(self.driver_cpu_s))} ms, "
            f"call start behind schedule p50/p99 {ms(self.p(self.lag_ms, 50))}/"
            f"{ms(self.p(self.lag_ms, 99))} ms, "
            f"drained {self.drain_s:.1f} s after the last call"
            + (
                ""
                if self.db_transactions is None
                else f", {self.db_transactions / max(1, self.completed):.1f} PostgreSQL transactions per call"
            )
        )


class Run:
    def __init__(self, stack: stacks.Stack, plan: Plan, out_dir: Path) -> None:
        self.stack = stack
        self.plan = plan
        self.out_dir = out_dir
        self.proc = ProcReader()
        self.gone: dict[str, float] = {}  # CPU seconds of service processes stopped, when last read

    def cpu(self) -> tuple[dict[str, float], dict[str, float]]:
        """CPU seconds so far: the service's processes, the others'."""
        singles = {self.stack.infra["twilio-standin"]}
        groups = {*self.stack.service.values(), *(p for p in self.stack.infra.values() if p not in singles)}
        read = self.proc.cpu(groups, singles)
        service = {**self.gone, **{name: read.get(pid, 0.0) for name, pid in self.stack.service.items()}}
        infra = {name: read.get(pid, 0.0) for name, pid in self.stack.infra.items()}
        return service, infra

    async def phase(
        self,
        driver: CallDriver,
        label: str,
        rate: float,
        duration_s: float,
        midway: Callable[[], None] | None = None,
        drain_s: float | None = None,
    ) -> Measured:
        tx_before = await self.db_transactions()
        service_before, infra_before = self.cpu()
        driver_before = _rusage_cpu()
        phase = await driver.open_loop(rate, duration_s, midway)
        done_at = await driver.drain(phase, drain_s or self.plan.drain_s)
        service_after, infra_after = self.cpu()
        driver_cpu = _rusage_cpu() - driver_before
        tx_after = await self.db_transactions()
        measured = self.measure(
            label,
            phase,
            done_at,
            cpu_delta(service_before, service_after),
            cpu_delta(infra_before, infra_after),
            driver_cpu,
        )
        if tx_before is not None and tx_after is not None:
            measured.db_transactions = tx_after - tx_before
        return measured

    async def db_transactions(self) -> int | None:
        """Commits + rollbacks so far in the service's PostgreSQL database (``None`` on SQLite)."""
        url = self.stack.env.get("CALLREC_DATABASE_URL", "")
        if not url.startswith("postgresql"):
            return None
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            await asyncio.sleep(1.1)  # backends report their counts about once a second
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            count = await conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
            )
            return int(count) - 1  # this read's own transaction
        finally:
            await conn.close()

    def measure(
        self,
        label: str,
        phase: Phase,
        done_at: float,
        service_cpu: dict[str, float],
        infra_cpu: dict[str, float],
        driver_cpu: float,
    ) -> Measured:
        arrived = self.stack.receiver.arrived
        done = [c for c in phase.calls if c.error is None and c.call_id in arrived and c.ended_at is not None]
        times = sorted(arrived[c.call_id] for c in done)
        last_end = max((c.ended_at or 0.0 for c in phase.calls), default=phase.began)
        errors = [c.error for c in phase.calls if c.error]
        if errors:
            print(f"{label}: {len(errors)} calls failed, e.g. {errors[0]}", file=sys.stderr)
        return Measured(
            label=label,
            rate=phase.rate,
            offered=len(phase.calls),
            completed=len(done),
            errors=len(errors),
            # Arrivals per second over their own span: the offered rate when the service keeps pace.
            completed_per_s=(len(times) - 1) / max(1e-9, times[-1] - times[0]) if len(times) > 1 else 0.0,
            ended_ms=[(arrived[c.call_id] - (c.ended_at or 0.0)) * 1000 for c in done],
            voice_ms=[c.voice_s * 1000 for c in phase.calls if c.voice_s is not None],
            lag_ms=[(c.started - c.scheduled) * 1000 for c in phase.calls if c.started],
            service_cpu_s=service_cpu,
            infra_cpu_s=infra_cpu,
            driver_cpu_s=driver_cpu,
            drain_s=max(0.0, done_at - last_end),
        )

    def peak_rss(self) -> dict[str, float]:
        return {name: self.proc.hwm_mb(pid) for name, pid in self.stack.service.items()}

    async def idle(self, seconds: float = 5.0) -> str:
        """What the service does with no calls: CPU (and PostgreSQL transactions) per second."""
        tx_before = await self.db_transactions()
        before, _ = self.cpu()
        started = time.monotonic()
        await asyncio.sleep(seconds)
        after, _ = self.cpu()
        tx_after = await self.db_transactions()
        elapsed = time.monotonic() - started
        text = f"{sum(cpu_delta(before, after).values()) * 1000 / elapsed:.0f} ms CPU per second"
        if tx_before is not None and tx_after is not None:
            # The reads themselves: each db_transactions() is one transaction, after its own sleep.
            text += f" and {(tx_after - tx_before) / (elapsed + 1.1):.1f} PostgreSQL transactions per second"
        return text

    async def settle_backlog(self, driver: CallDriver, what: str, result: Result) -> None:
        """Waits (up to 4 x the drain time) until every call so far is done, so the next scenario
        starts clean; says so in the notes when it is not."""
        await driver.drain(None, 4 * self.plan.drain_s)
        arrived = self.stack.receiver.arrived
        left = sum(1 for c in driver.played if c.error is None and c.call_id not in arrived)
        if left:
            result.notes.append(f"{left} calls still unfinished before {what}")


def phase_figures(m: Measured, shape: str, rtt: list[float] | None, peak: dict[str, float]) -> list[Figure]:
    rtt_p50 = percentile(rtt, 50) if rtt else None
    rtt_p99 = percentile(rtt, 99) if rtt else None
    driver = m.per_call_ms(m.driver_cpu_s)
    at = f"{shape}, {m.rate:g} calls/s"
    figs = [
        figure(f"{at}: completed", m.completed_per_s, "calls/s"),
        figure(f"{at}: lost calls", float(m.lost), "calls", at_most=0),
        figure(
            f"{at}: end of call → call.ended p50",
            m.p(m.ended_ms, 50),
            "ms",
            baseline=("raw aiokafka produce→consume p50, same Tansu", rtt_p50 * 1000, "ms")
            if rtt_p50
            else None,
        ),
        figure(
            f"{at}: end of call → call.ended p99",
            m.p(m.ended_ms, 99),
            "ms",
            baseline=("raw aiokafka produce→consume p99, same Tansu", rtt_p99 * 1000, "ms")
            if rtt_p99
            else None,
        ),
        figure(f"{at}: /twilio/voice p50", m.p(m.voice_ms, 50), "ms"),
        figure(f"{at}: /twilio/voice p99", m.p(m.voice_ms, 99), "ms"),
        figure(
            f"{at}: service CPU per fully processed call ({' + '.join(m.service_cpu_s)})",
            m.service_cpu_per_call_ms,
            "ms",
            at_most=15,
            baseline=("the load generator's own CPU per call", driver, "ms"),
        ),
    ]
    if m.db_transactions is not None and m.completed:
        figs.append(figure(f"{at}: PostgreSQL transactions per call", m.db_transactions / m.completed, "tx"))
    figs += [
        figure(f"{at}: CPU per call of {name} (not the service)", m.per_call_ms(s), "ms")
        for name, s in m.infra_cpu_s.items()
    ]
    figs += [figure(f"{shape}: peak RSS of {name}", mb, "MB", at_most=120) for name, mb in peak.items()]
    return figs


async def production_phases(run: Run, result: Result, plan: Plan) -> None:
    stack = run.stack
    wanted = plan.scenarios
    async with new_session() as session:
        driver = CallDriver(stack, session)
        await driver.setup_org()
        rtt = await kafka_rtt.round_trips(stack.env["CALLREC_KAFKA_BOOTSTRAP"], plan.rtt_count)
        for q in (50, 99):
            result.figures.append(
                figure(
                    f"raw aiokafka produce→consume round trip p{q} (same Tansu)",
                    (percentile(rtt, q) or 0.0) * 1000,
                    "ms",
                )
            )
        result.notes.append(
            f"production, idle (no calls): the service's processes use {await run.idle(plan.idle_s)}"
        )
        # Warm-up: a few calls so that first-call costs (imports, connections, topic metadata) stay out.
        await run.phase(driver, "warm-up", 5, 2)

        main: Measured | None = None
        if "main" in wanted:
            out = run.out_dir
            recordings = [
                profiles.record("api", stack.service["api"], plan.main_s, out),
                profiles.record("worker-1", stack.service["worker-1"], plan.main_s, out),
            ]
            try:
                main = await run.phase(driver, "production main", BASE_RATE, plan.main_s)
            finally:
                for rec in recordings:
                    rec.finish()
            result.notes.append(main.line())
            for rec in recordings:
                result.artefacts += [
                    str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f) for f in rec.files
                ]
                if rec.files[0].exists():
                    summary = profiles.summarise_file(rec.files[0])
                    text = "\n".join(summary.lines(15))
                    (out / f"{rec.name}.summary.txt").write_text(text + "\n")
                    result.notes.append(
                        f"profile of {rec.name} during the 10 calls/s run: "
                        + " | ".join(summary.lines(8)[1:3])
                    )

        sustainable: Measured | None = None
        if "ladder" in wanted:
            steps: list[Measured] = []
            for rate in plan.ladder:
                step = await run.phase(driver, "production step", rate, plan.step_s)
                steps.append(step)
                result.notes.append(step.line() + ("" if step.sustained else " — not sustained"))
                if not step.sustained:
                    break
                sustainable = step
            if sustainable is not None:
                result.figures.append(
                    figure("production: highest sustainable offered rate", sustainable.rate, "calls/s")
                )
                result.figures.append(
                    figure(
                        "production: end of call → call.ended p99 at the sustainable rate "
                        f"({sustainable.rate:g} calls/s)",
                        sustainable.p(sustainable.ended_ms, 99),
                        "ms",
                        below=1000,
                        baseline=(
                            "raw aiokafka produce→consume p99, same Tansu",
                            (percentile(rtt, 99) or 0) * 1000,
                            "ms",
                        ),
                    )
                )
            else:
                lowest = steps[0]
                result.figures.append(figure("production: highest sustainable offered rate", 0.0, "calls/s"))
                result.figures.append(
                    figure(
                        "production: end of call → call.ended p99 at the lowest step "
                        f"({lowest.rate:g} calls/s, not sustained)",
                        lowest.p(lowest.ended_ms, 99),
                        "ms",
                        below=1000,
                    )
                )
            result.notes.append(
                f"a step is sustained when no call is lost, completion keeps ≥ {SUSTAIN_SHARE:.0%} of the "
                f"offered rate and end→call.ended p99 < {SUSTAIN_P99_S:g} s; "
                f"steps of {plan.step_s:g} s from {plan.ladder[0]:g}/s"
            )

        if "overload" in wanted:
            await run.settle_backlog(driver, "the 2x run", result)
            rate = 2 * (sustainable.rate if sustainable else plan.ladder[0])
            # Its backlog drains (up to 4 x the drain time) before the next scenario.
            over = await run.phase(
                driver, "production 2x sustainable", rate, plan.overload_s, drain_s=4 * plan.drain_s
            )
            result.notes.append(over.line())
            result.figures.append(
                figure(
                    f"production: /twilio/voice p99 at 2x the sustainable rate ({rate:g} calls/s)",
                    over.p(over.voice_ms, 99),
                    "ms",
                    below=100,
                )
            )
            result.figures.append(
                figure(
                    f"production: completed at 2x the sustainable rate ({rate:g} calls/s offered)",
                    over.completed_per_s,
                    "calls/s",
                )
            )

        peak_killed: dict[str, float] = {}
        if "kill" in wanted:
            await run.settle_backlog(driver, "the kill run", result)

            def kill_one() -> None:
                victim = stack.service["worker-1"]
                peak_killed["worker-1"] = run.proc.hwm_mb(victim)
                run.gone["worker-1"] = run.cpu()[0]["worker-1"]
                os.killpg(victim, signal.SIGKILL)
                stack.stop_service("worker-1")  # reaps it
                stack.start_worker("worker-3")

            # Stragglers get 4 x the drain time: a call is lost only if it never arrives.
            killed = await run.phase(
                driver,
                "production, worker-1 SIGKILLed midway",
                BASE_RATE,
                plan.kill_s,
                kill_one,
                drain_s=4 * plan.drain_s,
            )
            result.notes.append(killed.line())
            result.figures.append(
                figure(
                    "production, 10 calls/s, a worker SIGKILLed and replaced: end of call → call.ended p99",
                    killed.p(killed.ended_ms, 99),
                    "ms",
                    below=5000,
                )
            )
            result.figures.append(
                figure(
                    "production, 10 calls/s, a worker SIGKILLed and replaced: lost calls",
                    float(killed.lost),
                    "calls",
                    at_most=0,
                )
            )

        peak = {**peak_killed, **run.peak_rss()}
        if main is not None:
            result.figures[:0] = phase_figures(main, "production", rtt, peak)
        result.notes.append(
            "production peak RSS (VmHWM) by process: " + ", ".join(f"{k} {v:.0f} MB" for k, v in peak.items())
        )


async def embedded_phases(run: Run, result: Result, plan: Plan) -> None:
    async with new_session() as session:
        driver = CallDriver(run.stack, session)
        await driver.setup_org()
        result.notes.append(f"embedded, idle (no calls): the service uses {await run.idle(plan.idle_s)}")
        await run.phase(driver, "warm-up", 5, 2)
        m = await run.phase(driver, "embedded", BASE_RATE, plan.embedded_s)
        result.notes.append(m.line())
        result.figures += phase_figures(m, "embedded", None, run.peak_rss())


def run_all(plan: Plan, out_dir: Path) -> Result:
    result = Result("calls")
    started = time.monotonic()
    result.notes.append(
        f"machine: {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}; shared with "
        "other work, so absolute figures move between runs; the driver (and its webhook receiver thread) "
        f"runs on the same machine, at nice {stacks.DRIVER_NICE} when allowed, to keep its schedule"
    )
    result.notes.append(
        "each call: voice → stream-started → recording in-progress → stream-stopped → call completed → "
        f"recording completed ({AUDIO_SIZE // 1024} KB), signed as Twilio signs; calls start open-loop at "
        "the offered rate; end of call is when the call-completed callback goes out"
    )
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    try:
        if plan.scenarios & {"main", "ladder", "overload", "kill"}:
            with stacks.workdir(out_dir / "logs" / "production") as work, stacks.production(work) as prod:
                with stacks.prioritised(prod.receiver):
                    runner.run(production_phases(Run(prod, plan, out_dir), result, plan))
        if "embedded" in plan.scenarios:
            with stacks.workdir(out_dir / "logs" / "embedded") as work, stacks.embedded(work) as emb:
                with stacks.prioritised(emb.receiver):
                    runner.run(embedded_phases(Run(emb, plan, out_dir), result, plan))
    finally:
        runner.close()
    result.notes.append(
        f"the whole run took {time.monotonic() - started:.0f} s; "
        f"load average at the end {os.getloadavg()[0]:.2f}"
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "calls.json")
    parser.add_argument("--quick", action="store_true", help="short phases (well under a minute of load)")
    parser.add_argument(
        "--only", help=f"comma-separated subset of {SCENARIOS} (default: all; with --quick: main,embedded)"
    )
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    chosen = frozenset(s.strip() for s in args.only.split(",") if s.strip()) if args.only else base.scenarios
    plan = Plan(**{**base.__dict__, "scenarios": chosen})
    out_dir = args.out.parent / "calls"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = run_all(plan, out_dir)
    args.out.write_text(json.dumps(result.as_json(), indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result.as_json(), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
