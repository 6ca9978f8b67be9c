"""Baselines: what the machine does with no service in the way, measured in the same run.

    uv run python -m bench.baselines --out bench/out/baselines.json [--quick]

- ``python -c pass``: median start and exit of this interpreter;
- raw asyncpg: transactions per second (each ``BEGIN; INSERT; SELECT; COMMIT``) on a throwaway
  PostgreSQL, 8 connections in one process;
- raw aiokafka: produce → consume round trips per second on Tansu, one at a time (``acks="all"``, as
  the service produces; consumer defaults, as the service's);
- a Litestar handler returning a constant, served by ``callrec serve``'s own code and uvicorn
  settings (only ``create_app`` swapped), under ``wrk`` with 32 connections.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import (
    CONSTANT_SERVER,
    PYTHON,
    arguments,
    figure,
    start_service,
    write_result,
    wrk,
)
from bench.startup import python_pass

CONNECTIONS = 32


async def asyncpg_transactions(port: int, seconds: float, workers: int = 8) -> float:
    import asyncpg

    pool = await asyncpg.create_pool(
        host="127.0.0.1", port=port, user="postgres", database="postgres", min_size=workers, max_size=workers
    )
    try:
        await pool.execute("CREATE TABLE bench (id bigserial PRIMARY KEY, payload text NOT NULL)")
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            async with pool.acquire() as conn:
                while time.perf_counter() < deadline:
                    async with conn.transaction():
                        row_id = await conn.fetchval(
                            "INSERT INTO bench (payload) VALUES ($1) RETURNING id", "x"
                        )
                        await conn.fetchval("SELECT payload FROM bench WHERE id = $1", row_id)
                    done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return done / (time.perf_counter() - started)
    finally:
        await pool.close()


async def kafka_round_trips(bootstrap: str, seconds: float) -> float:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("bench", 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    try:
        partition = TopicPartition("bench", 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        sent = 0

        async def round_trip() -> None:
            nonlocal sent
            sent += 1
            await producer.send_and_wait("bench", str(sent).encode())
            while int((await consumer.getone()).value or b"0") != sent:
                pass

        await round_trip()  # warm: metadata, first fetch
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            await round_trip()
            count += 1
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


def constant_handler(seconds: float) -> tuple[float, float, float]:
    """req/s, p99 ms and wrk's share of a core."""
    with tempfile.TemporaryDirectory(prefix="callrec-bench-") as tmp:
        env = {"CALLREC_VAR_DIR": str(Path(tmp) / "var")}
        service = start_service(env, Path(tmp), argv=[PYTHON, "-c", CONSTANT_SERVER])
        try:
            service.wait_ready()
            wrk(service.base + "/constant", connections=4, duration_s=1)  # warm up
            result = wrk(service.base + "/constant", connections=CONNECTIONS, duration_s=seconds)
        finally:
            service.stop()
    return result.requests_per_s, result.p99_ms, result.cpu_s / result.duration_s


def main() -> None:
    args = arguments(__doc__)
    from tests.support.kafka import running_tansu
    from tests.support.services import throwaway_postgres

    seconds = 2.0 if args.quick else 5.0
    pass_s = python_pass(5 if args.quick else 20)
    with throwaway_postgres() as pg:
        transactions = asyncio.run(asyncpg_transactions(pg.port, seconds))
    with tempfile.TemporaryDirectory(prefix="callrec-tansu-") as tmp, running_tansu(Path(tmp)) as broker:
        round_trips = asyncio.run(kafka_round_trips(broker.bootstrap, seconds))
    rate, p99, wrk_share = constant_handler(seconds)
    write_result(
        args.out,
        "baselines",
        [
            figure("python -c pass", round(pass_s * 1000, 1), "ms"),
            figure("raw asyncpg transactions (8 connections)", round(transactions), "tx/s"),
            figure("raw aiokafka produce → consume round trips (one at a time)", round(round_trips, 1), "/s"),
            figure(f"constant Litestar handler, wrk {CONNECTIONS} connections", round(rate), "req/s"),
        ],
        [
            "Transaction: BEGIN; INSERT … RETURNING id; SELECT by id; COMMIT (PostgreSQL with fsync=off).",
            "Round trip: send_and_wait (acks=all), then getone() until that record arrives;"
            " Tansu, memory storage.",
            f"Constant handler: `callrec serve`'s code and uvicorn settings, no middleware; p99 {p99:.1f} ms;"
            f" wrk used {100 * wrk_share:.0f}% of a core.",
        ],
    )


if __name__ == "__main__":
    main()
