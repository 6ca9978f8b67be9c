"""Benchmark: a calls-list page costs the same deep in the keyset as on top.

Fills a SQLite database with N calls of one org (one second apart; nine in ten recorded, four in
five of those archived), then times, in the same run, the list page as the API computes it
(``application.views.list_calls``: the keyset page of calls plus the recordings of those calls):

- the first page (no cursor),
- a page with the cursor 99% of the way down (near the oldest call),
- both again with ``recording=available``,
- a page of ``recording=processing`` when no call matches: the known limit, a sparse filter reads
  the whole org (the recording state is not in the keyset index),
- and, for contrast, the same deep position by ``OFFSET`` (what the list would cost without keyset).

It prints the median and 95th percentile of each and the ratio deep / first, which should be ~1.

    uv run python bench/call_list.py                 # 200k calls
    uv run python bench/call_list.py --calls 10000
    uv run python bench/call_list.py --million       # 1M calls (the fill takes a minute or two)

Not a test: timings depend on the machine. The figures measured are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from adapters.clock import SystemClock
from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.engine import create_engine, migrate
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from application import views
from application.ports import CallCursor
from application.services import Services, ServiceSettings

ORG = "bench-org"
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
BATCH = 20_000


def rows(count: int) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    rng = random.Random(1)
    for n in range(count):
        call_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        started_at = EPOCH + timedelta(seconds=n)
        recorded = rng.random() < 0.9
        call = {
            "id": call_id,
            "org_id": ORG,
            "kind": "customer",
            "call_sid": f"CA{n:032x}",
            "account_sid": "AC1",
            "from_number": "+15550001111",
            "to_number": "+15550100001",
            "status": "completed",
            "started_at": started_at,
            "answered_at": started_at,
            "ended_at": started_at + timedelta(seconds=30),
            "duration_s": 30,
            "greeting": "Hi.",
            "recorded": recorded,
            "recording_id": None,
            "version": 1,
        }
        recording = None
        if recorded and rng.random() < 0.8:
            recording = {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "call_id": call_id,
                "org_id": ORG,
                "kind": "customer",
                "call_sid": call["call_sid"],
                "recording_sid": f"RE{n:032x}",
                "status": "archived",
                "requested_at": started_at,
                "call_started_at": started_at,
                "duration_s": 28,
                "storage_key": f"{ORG}/{call_id}.mp3",
                "size_bytes": 480_000,
                "sha256": "0" * 64,
                "content_type": "audio/mpeg",
                "archived_at": started_at + timedelta(minutes=1),
                "version": 1,
                "updated_at": started_at + timedelta(minutes=1),
            }
            call["recording_id"] = recording["id"]
        yield call, recording


def fill(path: Path, count: int) -> None:
    url = f"sqlite+aiosqlite:///{path}"
    migrate(url)
    engine = sa.create_engine(f"sqlite:///{path}")
    calls: list[dict[str, Any]] = []
    recordings: list[dict[str, Any]] = []
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        conn.exec_driver_sql("PRAGMA synchronous=OFF")
    for n, (call, recording) in enumerate(rows(count), start=1):
        calls.append(call)
        if recording is not None:
            recordings.append(recording)
        if len(calls) == BATCH or n == count:
            with engine.begin() as conn:
                conn.execute(sa.insert(t.calls), calls)
                if recordings:
                    conn.execute(sa.insert(t.recordings), recordings)
            calls, recordings = [], []
            print(f"\r  filled {n:,} calls", end="", file=sys.stderr, flush=True)
    engine.dispose()
    print(f"\r  filled {count:,} calls in {time.perf_counter() - started:.1f} s", file=sys.stderr)


async def cursor_at(engine: Any, position: int) -> CallCursor:
    """The keyset cursor of the call ``position`` places from the newest."""
    c = t.calls.c
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(c.started_at, c.id)
                .where(c.org_id == ORG, c.kind == "customer")
                .order_by(c.started_at.desc(), c.id.desc())
                .offset(position)
                .limit(1)
            )
        ).one()
    return CallCursor(row.started_at, row.id)


async def timed(fn: Callable[[], Awaitable[int]], repeat: int) -> tuple[float, float, int]:
    """Median and 95th percentile in milliseconds, and the rows the last call returned."""
    returned = 0
    for _ in range(max(3, repeat // 10)):  # warm the page cache and the statement cache
        returned = await fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        returned = await fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1], returned


async def run(path: Path, count: int, limit: int, repeat: int) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    services = Services(
        uow_factory=lambda processed_by=None, read_only=False: SqlAlchemyUnitOfWork(
            engine, read_only=read_only
        ),
        telephony=None,  # type: ignore[arg-type]  # the list touches only the database
        store=None,  # type: ignore[arg-type]
        clock=SystemClock(),
        settings=ServiceSettings(public_url="http://bench.invalid"),
    )
    deep_position = int(count * 0.99)
    deep = await cursor_at(engine, deep_position)

    def page(after: CallCursor | None, recording: str | None = None) -> Callable[[], Awaitable[int]]:
        async def call() -> int:
            items, _ = await views.list_calls(
                services, org_id=ORG, limit=limit, after=after, recording_status=recording
            )
            return len(items)

        return call

    c = t.calls.c
    newest_first = (c.started_at.desc(), c.id.desc())
    own = (c.org_id == ORG, c.kind == "customer")

    def statement(stmt: Any) -> Callable[[], Awaitable[int]]:
        async def call() -> int:
            async with engine.connect() as conn:
                return len((await conn.execute(stmt)).all())

        return call

    keyset_sql = (
        sa.select(t.calls)
        .where(*own, sa.tuple_(c.started_at, c.id) < sa.tuple_(deep.started_at, deep.id))
        .order_by(*newest_first)
        .limit(limit + 1)
    )
    offset_sql = sa.select(t.calls).where(*own).order_by(*newest_first).offset(deep_position).limit(limit + 1)

    print(f"SQLite {sqlite3.sqlite_version}, {count:,} calls of one org, page of {limit}")
    print(f"{'case':<52}{'median ms':>10}{'p95 ms':>9}{'rows':>6}")
    cases = [
        ("first", "API page (views.list_calls): first page", page(None), repeat),
        ("deep", f"API page: cursor at call {deep_position:,}", page(deep), repeat),
        ("first-av", "API page, recording=available: first page", page(None, "available"), repeat),
        ("deep-av", f"API page, recording=available: at {deep_position:,}", page(deep, "available"), repeat),
        ("sparse", "API page, recording=processing (no call matches)", page(None, "processing"), 5),
        ("sql-keyset", f"SQL only: keyset page at {deep_position:,}", statement(keyset_sql), repeat),
        (
            "sql-offset",
            f"SQL only: OFFSET {deep_position:,} (no keyset)",
            statement(offset_sql),
            max(5, repeat // 20),
        ),
    ]
    results: dict[str, float] = {}
    for key, name, fn, times in cases:
        median, p95, returned = await timed(fn, times)
        results[key] = median
        print(f"{name:<52}{median:>10.3f}{p95:>9.3f}{returned:>6}")
    print(f"ratio deep / first: {results['deep'] / results['first']:.2f}")
    print(f"ratio deep / first, recording=available: {results['deep-av'] / results['first-av']:.2f}")
    contrast = results["sql-offset"] / results["sql-keyset"]
    print(f"for contrast, OFFSET / keyset at the same depth: {contrast:.1f}x")
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200_000, help="calls to fill (default 200000)")
    parser.add_argument("--million", action="store_true", help="fill 1,000,000 calls")
    parser.add_argument("--limit", type=int, default=50, help="page size (default 50)")
    parser.add_argument("--repeat", type=int, default=300, help="timed pages per case (default 300)")
    parser.add_argument("--db", type=Path, help="database file to fill and keep (default: a temp file)")
    args = parser.parse_args()
    count = 1_000_000 if args.million else args.calls
    with tempfile.TemporaryDirectory(prefix="callrec-bench-") as tmp:
        path = args.db or Path(tmp) / "bench.db"
        if path.exists():
            sys.exit(f"{path} exists: give a new file")
        fill(path, count)
        asyncio.run(run(path, count, args.limit, args.repeat))


if __name__ == "__main__":
    main()
