"""The benchmarks' own tools: the open-loop load generator against a loopback server, wrk's report."""

from __future__ import annotations

import argparse
import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from bench import loadgen
from bench.common import parse_wrk

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[int]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield int(srv.sockets[0].getsockname()[1])
    finally:
        srv.close()


def answering(response: bytes, seen: list[bytes]) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                seen.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return handle


def options(port: int, **overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "port": port,
        "path": "/api/v1/calls?limit=50",
        "rate": 100,
        "duration": 0.2,
        "header": ["Authorization: Bearer t"],
        "timeout": 5.0,
        "max_connections": 64,
    }
    return argparse.Namespace(**{**values, **overrides})


async def test_every_request_is_sent_and_its_answer_read_on_kept_alive_connections() -> None:
    seen: list[bytes] = []
    body = b'{"items":[]}'
    response = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    async with server(answering(response, seen)) as port:
        result = await loadgen.run(options(port))
    assert (result["sent"], result["answered"], result["failed"]) == (20, 20, 0)
    assert result["statuses"] == {"200": 20}
    assert len(seen) == 20
    assert seen[0].startswith(b"GET /api/v1/calls?limit=50 HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer t\r\n" in seen[0]
    assert result["connections"] <= 20 and result["p99_ms"] is not None


async def test_chunked_answers_are_read_whole() -> None:
    seen: list[bytes] = []
    response = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    async with server(answering(response, seen)) as port:
        result = await loadgen.run(options(port, rate=50))
    assert (result["sent"], result["answered"]) == (10, 10)
    assert len(seen) == 10


async def test_errors_and_unanswered_requests_count_as_failed_and_infinitely_slow() -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the request, never answers, until the client goes away
        writer.close()

    async with server(never) as port:
        result = await loadgen.run(options(port, rate=50, timeout=0.2, max_connections=4))
    assert (result["sent"], result["answered"], result["failed"]) == (10, 0, 10)
    assert result["p50_ms"] is None and result["p99_ms"] is None
    # Timed-out connections keep their slot: the server's backlog stays bounded by max_connections.
    assert result["statuses"].get("timeout", 0) + result["statuses"].get("no-connection", 0) == 10
    assert result["statuses"].get("timeout", 0) <= 4

    seen: list[bytes] = []
    async with server(answering(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n", seen)) as port:
        result = await loadgen.run(options(port, rate=50))
    assert (result["answered"], result["failed"], result["statuses"]) == (0, 10, {"503": 10})


def test_percentile_is_nearest_rank_with_failures_as_infinity() -> None:
    ordered = [float(n) for n in range(1, 101)]
    assert loadgen.percentile(ordered, 0.5) == 50.0
    assert loadgen.percentile(ordered, 0.99) == 99.0
    assert loadgen.percentile([*ordered[:98], math.inf, math.inf], 0.99) == math.inf
    assert loadgen.percentile([], 0.5) == math.inf


WRK_REPORT = """Running 10s test @ http://127.0.0.1:8000/api/v1/calls?limit=50
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   142.63ms  151.15ms    1.30s   80.85%
    Req/Sec    36.86     27.59    74.00     71.43%
  Latency Distribution
     50%  750.22us
     75%  255.51ms
     90%  392.91ms
     99%    1.30s
  1435 requests in 10.01s, 17.77MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:    143.37
Transfer/sec:      1.77MB
"""


def test_wrk_report_is_read() -> None:
    result = parse_wrk(WRK_REPORT, cpu_s=0.5, duration_s=10.0)
    assert result.requests_per_s == 143.37
    assert result.requests == 1435
    assert result.errors == 9
    assert math.isclose(result.p50_ms, 0.75022)
    assert math.isclose(result.p99_ms, 1300.0)
