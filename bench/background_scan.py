"""Benchmark: how long a request waits while the settle pass works through many unsettled calls (SQLite).

Fills a SQLite database with ended calls, none settled yet, then, in the
same run, settles ``--calls`` of them twice while a request's writing unit of work (what a command
such as ``/twilio/voice``'s ``StartCall`` opens; read-only requests take no write lock) is opened every
10 ms and timed:

- before: the former pass, one transaction per call, back to back, and no turns: a waiting request
  polls for SQLite's write lock (the busy timeout) and keeps losing it to the pass;
- after: ``CallSettler`` (pages of ``batch_size`` calls per transaction) with the units of work of
  the process taking turns in FIFO order (``adapters.sqlalchemy.engine.transaction_turns``).

    uv run python -m bench.background_scan --out bench/out/background_scan.json [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from adapters.sqlalchemy import engine as engine_module
from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.engine import create_engine, migrate
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from application.services import Services, ServiceSettings
from application.settling import CallSettler
from bench.common import command_line, emit

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def fill(path: Path, count: int) -> None:
    """``count`` answered calls of one org, ended one second apart, none settled, none recorded."""
    migrate(f"sqlite+aiosqlite:///{path}")
    engine = sa.create_engine(f"sqlite:///{path}")
    rows = [
        {
            "id": str(uuid.uuid4()),
            "org_id": "bench-org",
            "kind": "customer",
            "call_sid": f"CA{n:032x}",
            "account_sid": "AC1",
            "from_number": "+15550001111",
            "to_number": "+15550100001",
            "status": "completed",
            "started_at": EPOCH + timedelta(seconds=n),
            "answered_at": EPOCH + timedelta(seconds=n),
            "ended_at": EPOCH + timedelta(seconds=n + 30),
            "duration_s": 30,
            "greeting": "Hi.",
            "recorded": False,
            "recording_state": "not_recorded",
            "version": 1,
        }
        for n in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(t.calls), rows)
    engine.dispose()


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


async def measure(path: Path, calls: int, *, after: bool) -> dict[str, Any]:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    if not after:
        engine_module._turns.pop(engine.sync_engine, None)
    clock = FixedClock(EPOCH + timedelta(seconds=calls + 30))  # the first ``calls`` calls are due
    svc = Services(
        uow_factory=lambda **kw: SqlAlchemyUnitOfWork(engine, **kw),
        telephony=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
        clock=clock,
        settings=ServiceSettings(public_url="http://bench"),
    )
    settler = CallSettler(svc)
    latencies: list[float] = []
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            started = time.perf_counter()
            async with SqlAlchemyUnitOfWork(engine) as uow:
                await uow.calls.get("no-such-call")
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    reading = asyncio.create_task(reader())
    await asyncio.sleep(0.3)
    started = time.perf_counter()
    if after:
        settled = await settler.run_once()
    else:
        async with svc.uow() as uow:
            due = await uow.calls.settling(ended_before=clock.now(), limit=calls)
        settled = await settler._settle_each([call.id for call in due])
    elapsed = time.perf_counter() - started
    done.set()
    await reading
    await engine.dispose()
    latencies.sort()
    return {
        "settled": settled,
        "pass_s": elapsed,
        "reads": len(latencies),
        "read_max_ms": 1000 * latencies[-1],
        "read_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "read_p50_ms": 1000 * latencies[len(latencies) // 2],
    }


def fresh_copy(template: Path, target: Path) -> Path:
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copy(template, target)
    return target


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    total, calls = (5_000, 100) if args.quick else (args.rows, args.calls)
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template.db"
        await asyncio.to_thread(fill, template, total)
        before = await measure(fresh_copy(template, Path(tmp) / "run.db"), calls, after=False)
        after = await measure(fresh_copy(template, Path(tmp) / "run.db"), calls, after=True)
    figures = [
        {
            "name": f"longest wait of a writing unit of work during a settle pass of {calls} calls (SQLite)",
            "value": round(after["read_max_ms"], 1),
            "unit": "ms",
            "goal": None,
            "met": None,
            "baseline": {"name": "the former pass", "value": round(before["read_max_ms"], 1), "unit": "ms"},
            "ratio": round(after["read_max_ms"] / before["read_max_ms"], 3),
        },
        {
            "name": f"settle pass of {calls} calls (SQLite, a reader alongside)",
            "value": round(after["pass_s"], 3),
            "unit": "s",
            "goal": None,
            "met": None,
            "baseline": {"name": "the former pass", "value": round(before["pass_s"], 3), "unit": "s"},
            "ratio": round(after["pass_s"] / before["pass_s"], 3),
        },
    ]
    return {
        "benchmark": "background_scan",
        "figures": figures,
        "notes": [
            f"{total} calls in the database, {calls} due; a writing unit of work every 10 ms",
            f"before: {json.dumps(before)}",
            f"after: {json.dumps(after)}",
        ],
        "artefacts": [],
    }


def main() -> None:
    parser = command_line(__doc__, out_required=False)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    emit(args.out, asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
