"""Benchmark: the outbox relay publishing to Kafka, against real PostgreSQL and Tansu.

Fills the outbox with ``--messages`` ``CallEnded`` events spread over ``--aggregates`` calls (a
call's events go out one after another, in order), then drains it with the Kafka-mode relay
(``relay_id`` set: claims with a lease) and reports messages/s and CPU per message: the relay's
process, PostgreSQL's and Tansu's (from ``/proc``). The baseline is raw aiokafka in the same run:
the same messages produced with ``send`` and one wait for all, no database.

    uv run python -m bench.relay --out bench/out/relay.json [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import delete, func, select

from adapters.clock import SystemClock
from adapters.kafka.options import KafkaOptions
from adapters.kafka.publisher import KafkaEventPublisher
from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.engine import create_engine, migrate
from adapters.sqlalchemy.outbox import SqlAlchemyOutbox
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from application.outbox import OutboxRelay
from application.ports import OutboxMessage
from bench.common import command_line, emit
from domain import events as ev
from tests.support.kafka import running_tansu
from tests.support.services import create_database, throwaway_postgres

_TICK = os.sysconf("SC_CLK_TCK")


def _stats() -> dict[int, list[str]]:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            stats[int(entry)] = stat[stat.rindex(")") + 2 :].split()  # from field 3, the state
    return stats


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and its descendants, the reaped ones included."""
    stats = _stats()
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += sum(int(f) for f in stats[pid][11:15])  # utime, stime, cutime, cstime
            todo.extend(children.get(pid, []))
    return total / _TICK


def postmaster_of(port: int) -> int:
    """The PID of the postmaster listening on ``port``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"postgres") and str(port).encode() in argv:
            return int(entry)
    raise RuntimeError("postmaster not found")


def events_for(messages: int, aggregates: int) -> list[ev.Event]:
    now = datetime.now(UTC)
    calls = [str(uuid.uuid4()) for _ in range(aggregates)]
    return [
        ev.CallEnded(
            occurred_at=now,
            org_id="bench-org",
            call_id=calls[n % aggregates],
            call_sid=f"CA{n:032x}",
            status="completed",
            duration_s=30,
        )
        for n in range(messages)
    ]


async def fill(engine: Any, events: list[ev.Event]) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(t.outbox))
        await SqlAlchemyOutbox(conn).add(events, datetime.now(UTC) - timedelta(seconds=1))


class OneByOne:
    """The Kafka publisher without ``publish_all``: the relay publishes message by message (before)."""

    def __init__(self, publisher: KafkaEventPublisher) -> None:
        self.publisher = publisher

    async def publish(self, message: OutboxMessage) -> None:
        await self.publisher.publish(message)


async def relay_run(
    engine: Any, options: KafkaOptions, events: list[ev.Event], batch: int, *, batched: bool
) -> dict[str, Any]:
    await fill(engine, events)
    publisher = KafkaEventPublisher(options)
    await publisher.start()
    relay = OutboxRelay(
        lambda **kw: SqlAlchemyUnitOfWork(engine, **kw),
        publisher if batched else OneByOne(publisher),
        SystemClock(),
        relay_id="bench",
        batch_size=batch,
        lease=timedelta(seconds=60),
    )
    started, cpu = time.perf_counter(), time.process_time()
    await relay.drain(max_wait_s=600)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await publisher.stop()
    async with engine.connect() as conn:
        left = (await conn.execute(select(func.count()).where(t.outbox.c.published_at.is_(None)))).scalar()
    return {"elapsed_s": elapsed, "relay_cpu_s": cpu, "unpublished": left}


async def raw_run(options: KafkaOptions, events: list[ev.Event]) -> dict[str, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=options.bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    topic = f"{options.topic_prefix}callrec.calls.v1"
    payloads = [(e.aggregate_id.encode(), ev.encode_event(e)) for e in events]
    started, cpu = time.perf_counter(), time.process_time()
    futures = [await producer.send(topic, value, key=key) for key, value in payloads]
    await asyncio.gather(*futures)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await producer.stop()
    return {"elapsed_s": elapsed, "relay_cpu_s": cpu}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    messages, aggregates = (600, 200) if args.quick else (args.messages, args.aggregates)
    events = events_for(messages, aggregates)
    with (
        tempfile.TemporaryDirectory() as tmp,
        throwaway_postgres() as server,
        running_tansu(Path(tmp)) as broker,
    ):
        url = await asyncio.to_thread(create_database, server, "relay_bench")
        await asyncio.to_thread(migrate, url)
        engine = create_engine(url)
        postmaster = postmaster_of(server.port)
        assert broker.pid is not None
        options = replace(
            KafkaOptions(), bootstrap=broker.bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}."
        )
        results: dict[str, Any] = {}
        for name in ("raw aiokafka", "relay, one by one", "relay"):
            pg, tansu = tree_cpu_s(postmaster), tree_cpu_s(broker.pid)
            if name == "raw aiokafka":
                result = await raw_run(options, events)
            else:
                result = await relay_run(engine, options, events, args.batch, batched=name == "relay")
            result["postgres_cpu_s"] = tree_cpu_s(postmaster) - pg
            result["tansu_cpu_s"] = tree_cpu_s(broker.pid) - tansu
            results[name] = result
            print(name, json.dumps(result), file=sys.stderr, flush=True)
        await engine.dispose()
    relay, raw, before = results["relay"], results["raw aiokafka"], results["relay, one by one"]
    rate, raw_rate = messages / relay["elapsed_s"], messages / raw["elapsed_s"]

    def per_message_ms(result: dict[str, Any]) -> float:
        cpu = sum(float(result[key]) for key in ("relay_cpu_s", "postgres_cpu_s", "tansu_cpu_s"))
        return 1000 * cpu / messages

    figures = [
        {
            "name": "outbox relay → Kafka, messages/s",
            "value": round(rate, 1),
            "unit": "msg/s",
            "goal": None,
            "met": None,
            "baseline": {
                "name": "raw aiokafka produce, no database",
                "value": round(raw_rate, 1),
                "unit": "msg/s",
            },
            "ratio": round(rate / raw_rate, 3),
        },
        {
            "name": "outbox relay CPU per message (relay + PostgreSQL + Tansu)",
            "value": round(per_message_ms(relay), 3),
            "unit": "ms",
            "goal": None,
            "met": None,
            "baseline": {
                "name": "raw aiokafka produce",
                "value": round(per_message_ms(raw), 3),
                "unit": "ms",
            },
            "ratio": round(per_message_ms(relay) / per_message_ms(raw), 2),
        },
        {
            "name": "outbox relay CPU per message (relay process only)",
            "value": round(1000 * relay["relay_cpu_s"] / messages, 3),
            "unit": "ms",
            "goal": None,
            "met": None,
            "baseline": {
                "name": "the relay message by message (before batching)",
                "value": round(1000 * before["relay_cpu_s"] / messages, 3),
                "unit": "ms",
            },
            "ratio": round(relay["relay_cpu_s"] / before["relay_cpu_s"], 3),
        },
        {
            "name": "outbox relay → Kafka, messages/s, against the relay message by message",
            "value": round(rate, 1),
            "unit": "msg/s",
            "goal": None,
            "met": None,
            "baseline": {
                "name": "the relay message by message (before batching)",
                "value": round(messages / before["elapsed_s"], 1),
                "unit": "msg/s",
            },
            "ratio": round(before["elapsed_s"] / relay["elapsed_s"], 2),
        },
    ]
    return {
        "benchmark": "relay",
        "figures": figures,
        "notes": [
            f"{messages} CallEnded events over {aggregates} calls; relay batch {args.batch};"
            " PostgreSQL (fsync off) and Tansu (memory) on this machine",
            f"raw results: {json.dumps(results)}",
        ],
        "artefacts": [],
    }


def main() -> None:
    parser = command_line(__doc__, out_required=False)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--aggregates", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    emit(args.out, asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
