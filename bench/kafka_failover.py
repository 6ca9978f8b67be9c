"""Benchmark: how long a SIGKILLed worker's partitions stay unconsumed, against a real Tansu.

Two consumer processes share one group (the settings ``adapters.kafka.consumer.consumer_config``
gives the service's consumers, from ``KafkaOptions``) on a 6-partition topic while this process
produces ``--rate`` messages/s. Once both consume, one is SIGKILLed and a replacement started at
once (what a supervisor does). Reported, per session timeout: the time from the SIGKILL until the
dead member's partitions are consumed again, and the p99 of produce → first receipt over the
messages produced from 5 s before the kill to the end of the run.

    uv run python -m bench.kafka_failover --out bench/out/kafka_failover.json [--quick]
    uv run python -m bench.kafka_failover --session-ms 10000 3000   # compare settings
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from adapters.kafka.consumer import consumer_config
from adapters.kafka.options import KafkaOptions
from adapters.kafka.topics import ensure_topics
from bench.common import command_line, emit
from tests.support.kafka import running_tansu

DEFAULT = KafkaOptions()


def options_for(bootstrap: str, session_ms: int) -> KafkaOptions:
    """The service's options with this session timeout (heartbeat as the composition root sets it)."""
    return replace(
        DEFAULT,
        bootstrap=bootstrap,
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=min(3000, session_ms // 3),
    )


# --- the consumer process ------------------------------------------------------------------------


async def consume(bootstrap: str, topic: str, group: str, session_ms: int) -> None:
    options = replace(options_for(bootstrap, session_ms), group_prefix="")
    consumer = AIOKafkaConsumer(topic, **consumer_config(options, group))
    await consumer.start()
    reported: frozenset[int] = frozenset()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            assigned = frozenset(tp.partition for tp in consumer.assignment())
            if assigned != reported:
                reported = assigned
                print(json.dumps({"assigned": sorted(assigned), "t": now}), flush=True)
            for tp, records in batch.items():
                for record in records:
                    print(json.dumps({"p": tp.partition, "id": record.value.decode(), "t": now}), flush=True)
            if batch:
                await consumer.commit()
    finally:
        await consumer.stop()


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Member:
    name: str
    proc: asyncio.subprocess.Process
    assigned: set[int] = field(default_factory=set)
    received: int = 0
    changes: list[tuple[float, list[int]]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None


@dataclass
class Run:
    sent: dict[str, tuple[float, int]] = field(default_factory=dict)  # id → (time, partition)
    first_seen: dict[str, float] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    seen_after: dict[int, float] = field(default_factory=dict)  # partition → first receipt after kill
    killed_at: float | None = None


async def spawn(run: Run, name: str, bootstrap: str, topic: str, group: str, session_ms: int) -> Member:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.kafka_failover",
        "--consume",
        bootstrap,
        topic,
        group,
        str(session_ms),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    member = Member(name, proc)
    run.members.append(member)
    member.reader = asyncio.create_task(read(run, member))
    return member


async def read(run: Run, member: Member) -> None:
    assert member.proc.stdout is not None
    async for line in member.proc.stdout:
        item = json.loads(line)
        if "assigned" in item:
            member.assigned = set(item["assigned"])
            member.changes.append((item["t"], item["assigned"]))
            continue
        member.received += 1
        run.first_seen.setdefault(item["id"], item["t"])
        if run.killed_at is not None and item["t"] >= run.killed_at:
            run.seen_after.setdefault(item["p"], item["t"])


async def measure(bootstrap: str, session_ms: int, *, rate: float, after_s: float) -> dict[str, Any]:
    topic = f"failover-{uuid.uuid4().hex[:8]}"
    options = options_for(bootstrap, session_ms)
    await ensure_topics(options, [topic])
    run = Run()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    stop = asyncio.Event()

    async def produce() -> None:
        n = 0
        while not stop.is_set():
            message_id = f"{n}"
            meta = await producer.send_and_wait(topic, message_id.encode(), key=f"k{n % 60}".encode())
            run.sent[message_id] = (time.time(), meta.partition)
            n += 1
            await asyncio.sleep(1 / rate)

    producing = asyncio.create_task(produce())
    a = await spawn(run, "a", bootstrap, topic, topic, session_ms)
    b = await spawn(run, "b", bootstrap, topic, topic, session_ms)
    started = time.monotonic()
    while not (a.assigned and b.assigned and a.received and b.received):
        if time.monotonic() - started > 120:
            raise RuntimeError("the two consumers never both consumed")
        await asyncio.sleep(0.1)
    await asyncio.sleep(5)
    victim = a.assigned.copy()
    run.killed_at = time.time()
    a.proc.send_signal(signal.SIGKILL)
    await spawn(run, "a2", bootstrap, topic, topic, session_ms)
    await asyncio.sleep(after_s)
    stop.set()
    await producing
    await asyncio.sleep(1)
    await producer.stop()
    for member in run.members:
        if member.proc.returncode is None:
            member.proc.send_signal(signal.SIGTERM)
            await member.proc.wait()
    resumed = [run.seen_after[p] - run.killed_at for p in victim if p in run.seen_after]
    window = [sent_at for sent_at, _ in run.sent.values() if sent_at >= run.killed_at - 5]
    latencies = sorted(
        run.first_seen[mid] - sent_at
        for mid, (sent_at, _) in run.sent.items()
        if sent_at >= run.killed_at - 5 and mid in run.first_seen
    )
    lost = sum(1 for mid, (sent_at, _) in run.sent.items() if sent_at >= run.killed_at - 5) - len(latencies)
    return {
        "session_ms": session_ms,
        "heartbeat_ms": options.heartbeat_interval_ms,
        "victim_partitions": sorted(victim),
        "resumed_s": max(resumed) if len(resumed) == len(victim) else None,
        "p50_s": statistics.median(latencies) if latencies else None,
        "p99_s": latencies[int(len(latencies) * 0.99)] if latencies else None,
        "messages": len(window),
        "assignments": {
            m.name: [(round(t - run.killed_at, 2), parts) for t, parts in m.changes] for m in run.members
        },
        "unreceived": lost,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    with tempfile.TemporaryDirectory() as tmp, running_tansu(Path(tmp)) as broker:
        for session_ms in args.session_ms:
            for _ in range(args.repeat):
                result = await measure(broker.bootstrap, session_ms, rate=args.rate, after_s=args.after_s)
                print(json.dumps(result), file=sys.stderr, flush=True)
                results.append(result)
    figures = []
    for result in results:
        goal_met = result["p99_s"] is not None and result["p99_s"] < 5 and result["unreceived"] == 0
        label = f"session {result['session_ms']} ms, heartbeat {result['heartbeat_ms']} ms"
        figures.append(
            {
                "name": f"SIGKILL → its partitions consumed again ({label})",
                "value": result["resumed_s"],
                "unit": "s",
                "goal": None,
                "met": None,
                "baseline": None,
                "ratio": None,
            }
        )
        figures.append(
            {
                "name": f"produce → received p99 around a SIGKILL ({label})",
                "value": result["p99_s"],
                "unit": "s",
                "goal": "< 5 s",
                "met": goal_met,
                "baseline": None,
                "ratio": None,
            }
        )
    return {
        "benchmark": "kafka_failover",
        "figures": figures,
        "notes": [
            f"Tansu (memory storage), 6 partitions, {args.rate:g} messages/s, two consumer processes;"
            " one SIGKILLed and replaced at once",
            f"raw results: {json.dumps(results)}",
        ],
        "artefacts": [],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--consume":
        bootstrap, topic, group, session_ms = sys.argv[2:6]
        asyncio.run(consume(bootstrap, topic, group, int(session_ms)))
        return
    parser = command_line(__doc__, out_required=False)
    parser.add_argument("--session-ms", type=int, nargs="+", default=[DEFAULT.session_timeout_ms])
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    args.after_s = 15.0 if args.quick else 25.0
    emit(args.out, asyncio.run(main_async(args)))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
