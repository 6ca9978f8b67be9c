"""An open-loop HTTP load generator: GET one path at a fixed offered rate, whatever the answers take.

    python -m bench.loadgen --port 8000 --path '/api/v1/calls?limit=50' --rate 200 --duration 10
        [--header 'Authorization: Bearer ...'] [--timeout 5] [--max-connections 64]

``wrk`` is closed loop (each connection waits for its answer before the next request), so it cannot
hold a rate, and ``wrk2`` is not packaged by Debian. Here request ``i`` is due at ``start + i/rate``
and is sent then on an idle keep-alive connection. A new one is opened when none is idle, up to
``--max-connections`` (counting those closed on a timeout: the server may still be working on their
request); past that the request counts as failed, so an overloaded server's backlog stays bounded.
Latency is measured from when the request was due, so a slow server cannot hide its queue (no
coordinated omission). A request that fails or takes longer than ``--timeout`` counts as infinitely
slow in the percentiles.

Prints one JSON object: sent, answered (2xx), failed, statuses, p50/p90/p99/max in ms (``null`` when
infinite), the achieved rate, and the generator's own CPU seconds and wall time (its cost).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import time
from collections import Counter
from typing import Any


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status of one HTTP/1.1 response (its body read and dropped) and whether to keep the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.read()  # until close
        return status, False
    return status, headers.get("connection", "").lower() != "close"


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.inf
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    host = "127.0.0.1"
    extra = "".join(f"{h}\r\n" for h in args.header)
    request = f"GET {args.path} HTTP/1.1\r\nHost: {host}:{args.port}\r\n{extra}\r\n".encode()
    idle: list[Connection] = []
    opened = 0
    latencies: list[float] = []
    statuses: Counter[str] = Counter()

    async def connect() -> Connection:
        nonlocal opened
        opened += 1
        reader, writer = await asyncio.open_connection(host, args.port)
        return Connection(reader, writer)

    for _ in range(min(args.max_connections, max(4, args.rate // 20))):  # a warm pool
        idle.append(await connect())

    async def one(due: float) -> None:
        if idle:
            conn = idle.pop()
        elif opened < args.max_connections:
            try:
                conn = await connect()
            except OSError:
                statuses["connect-error"] += 1
                latencies.append(math.inf)
                return
        else:
            statuses["no-connection"] += 1
            latencies.append(math.inf)
            return
        try:
            conn.writer.write(request)
            status, keep = await asyncio.wait_for(read_response(conn.reader), args.timeout)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            TimeoutError,
        ) as exc:
            conn.close()
            if not isinstance(exc, TimeoutError):  # the server may still be working on a timed-out
                opened_slot_free()  # request: its slot stays taken, so the backlog stays bounded
            statuses["timeout" if isinstance(exc, TimeoutError) else "error"] += 1
            latencies.append(math.inf)
            return
        latencies.append((time.perf_counter() - due) * 1000 if 200 <= status < 300 else math.inf)
        statuses[str(status)] += 1
        if keep:
            idle.append(conn)
        else:
            conn.close()
            opened_slot_free()

    def opened_slot_free() -> None:
        nonlocal opened
        opened -= 1

    total = int(args.rate * args.duration)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    start = time.perf_counter() + 0.05  # the loop's clock can be as coarse as a millisecond
    tasks: set[asyncio.Task[None]] = set()
    late = 0
    for i in range(total):
        due = start + i / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            late += 1
        task = asyncio.create_task(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sending = time.perf_counter() - start
    if tasks:
        await asyncio.wait(tasks, timeout=args.timeout + 1)
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    for conn in idle:
        conn.close()
    ordered = sorted(latencies)
    answered = sum(1 for v in latencies if v != math.inf)

    def ms(value: float) -> float | None:
        return None if value == math.inf else round(value, 3)

    return {
        "path": args.path,
        "offered_rate": args.rate,
        "sent": total,
        "answered": answered,
        "failed": len(latencies) - answered + (total - len(latencies)),
        "statuses": dict(statuses),
        "p50_ms": ms(percentile(ordered, 0.50)),
        "p90_ms": ms(percentile(ordered, 0.90)),
        "p99_ms": ms(percentile(ordered, 0.99)),
        "max_ms": ms(ordered[-1] if ordered else math.inf),
        "achieved_rate": round(total / sending, 1) if sending > 0 else None,
        "late_sends": late,
        "connections": opened,
        "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 3),
        "wall_s": round(wall, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--rate", type=int, default=200, help="requests per second offered")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds before a request counts as failed"
    )
    parser.add_argument(
        "--max-connections", type=int, default=64, help="connections open at once (timed-out ones count)"
    )
    args = parser.parse_args()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(run(args))))


if __name__ == "__main__":
    main()
