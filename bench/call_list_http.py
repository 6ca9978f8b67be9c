"""Benchmark: the calls list and a call's detail over HTTP, 1M calls of one org in PostgreSQL.

    uv run python -m bench.call_list_http --out bench/out/call_list_http.json [--quick] [--calls N]

A throwaway PostgreSQL, the project's migrations, then N calls of one org filled by SQL
(``generate_series``; one second apart; nine in ten recorded, four in five of those archived, so
``recording=available`` matches 72%, ``not_recorded`` 28%, and ``processing``/``failed`` none: the
sparse filters), every call settled and every archived recording already deleted at Twilio (so the
service's background scans have nothing to do). One ``callrec serve`` process (PostgreSQL, its
defaults otherwise) answers; the load comes from separate processes:

- closed loop: ``wrk``, 32 connections, against the list page, a call's detail and ``/healthz`` of the
  same process (the baseline: a handler returning a constant through the same middleware);
- open loop: ``bench/loadgen.py`` at a fixed offered 200 req/s (``wrk`` cannot hold a rate) for the
  first list page, a page 99% of the way down (keyset: it should cost the same), the first page with
  each ``recording=`` filter and a call's detail, p50/p99 measured from when each request was due.

``--quick``: 20k calls and short runs.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    OUT,
    PYTHON,
    ROOT,
    Service,
    arguments,
    figure,
    relative,
    start_service,
    write_result,
    wrk,
)
from entrypoints.http.cursors import encode_keyset

ORG = "bench-org"
EPOCH = "2024-01-01T00:00:00Z"
RATE = 200
CONNECTIONS = 32
P99_GOAL_MS = 25.0
LIST = "/api/v1/calls?limit=50"
FILTERS = ("available", "not_recorded", "processing", "failed")

# h: a stable pseudo-random 0..99 per call. recorded: h < 90; archived recording: h < 72.
FILL_CALLS = """
INSERT INTO calls (id, org_id, kind, call_sid, account_sid, from_number, to_number, status,
                   started_at, answered_at, ended_at, duration_s, greeting, recorded, recording_id,
                   version, settled_at)
SELECT md5('call' || n)::uuid::text, $1, 'customer', 'CA' || lpad(to_hex(n), 32, '0'), 'AC1',
       '+15550001111', '+15550100001', 'completed', t, t, t + interval '30 s', 30, 'Hi.', h < 90,
       CASE WHEN h < 72 THEN md5('recording' || n)::uuid::text END, 1, t + interval '2 min'
FROM (SELECT n, (hashint4(n)::bigint + 2147483648) % 100 AS h,
             $2::timestamptz + n * interval '1 s' AS t
      FROM generate_series(0, $3 - 1) AS n) AS s
"""
FILL_RECORDINGS = """
INSERT INTO recordings (id, call_id, org_id, kind, call_sid, recording_sid, status, requested_at,
                        call_started_at, duration_s, completed_at, storage_key, size_bytes, sha256,
                        content_type, archived_at, twilio_deleted_at, version, updated_at)
SELECT recording_id, id, org_id, kind, call_sid, 'RE' || substr(call_sid, 3), 'archived', started_at,
       started_at, 28, ended_at, org_id || '/' || id || '.mp3', 480000, repeat('0', 64), 'audio/mpeg',
       started_at + interval '1 min', started_at + interval '2 min', 1, started_at + interval '2 min'
FROM calls WHERE recording_id IS NOT NULL
"""


async def fill(port: int, count: int) -> tuple[str, str]:
    """Fills the database; returns the id of the newest call with an archived recording and the
    list's cursor 99% of the way down (near the oldest call)."""
    from datetime import datetime

    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="bench")
    try:
        await conn.execute(
            "INSERT INTO organizations (id, name, greeting, recording_enabled, created_at, version)"
            " VALUES ($1, 'Bench', 'Hi.', true, now(), 1)",
            ORG,
        )
        await conn.execute(FILL_CALLS, ORG, datetime.fromisoformat(EPOCH), count)
        await conn.execute(FILL_RECORDINGS)
        await conn.execute("ANALYZE")
        call_id: str = await conn.fetchval(
            "SELECT id FROM calls WHERE recording_id IS NOT NULL ORDER BY started_at DESC LIMIT 1"
        )
        deep = await conn.fetchrow(
            "SELECT started_at, id FROM calls ORDER BY started_at DESC, id DESC OFFSET $1 LIMIT 1",
            int(count * 0.99),
        )
        return call_id, encode_keyset(deep["started_at"], deep["id"])
    finally:
        await conn.close()


def answers(service: Service, cases: list[tuple[str, str]], headers: dict[str, str]) -> list[str]:
    """Each case's status and number of items (checked once before the load: no error path is timed)."""
    out = []
    for name, path in cases:
        request = urllib.request.Request(service.base + path, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
        items = body.get("items")
        out.append(f"{name} {len(items)} items" if isinstance(items, list) else f"{name} 1 call")
    return out


def wait_idle(service: Service, timeout: float = 60.0) -> None:
    """Until the service spends under a tenth of a core (a backlog of slow requests drained)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = service.cpu()
        time.sleep(0.5)
        if service.cpu() - before < 0.05:
            return


def open_loop(service: Service, path: str, auth: str, duration: float, timeout: float) -> dict[str, Any]:
    cpu = service.cpu()
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "bench.loadgen",
            "--port",
            str(service.port),
            "--path",
            path,
            "--rate",
            str(RATE),
            "--duration",
            str(duration),
            "--header",
            auth,
            "--timeout",
            str(timeout),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    result["server_cpu_s"] = service.cpu() - cpu
    return result


def profile(service: Service, url: str, headers: dict[str, str], seconds: float, svg: Path) -> bool:
    """A py-spy flame graph of the service while ``wrk`` (8 connections) loads ``url``."""
    spy = subprocess.Popen(
        [
            str(Path(PYTHON).with_name("py-spy")),
            "record",
            "--pid",
            str(service.proc.pid),
            "--duration",
            str(round(seconds)),
            "--rate",
            "200",
            "--nonblocking",
            "-o",
            str(svg),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wrk(url, connections=8, duration_s=seconds, headers=headers)
    return spy.wait(timeout=seconds + 30) == 0 and svg.exists()


def main() -> None:
    args = arguments(__doc__)
    from adapters.sqlalchemy.engine import migrate
    from entrypoints.http.auth import issue_token
    from tests.support.services import create_database, throwaway_postgres

    count = 20_000 if args.quick else 1_000_000
    closed_s = 2.0 if args.quick else 10.0
    open_s = 2.0 if args.quick else 10.0
    profile_s = 2.0 if args.quick else 10.0
    timeout_s = 2.0 if args.quick else 5.0  # an open-loop request slower than this counts as failed
    artefacts_dir = OUT / "call_list_http"
    artefacts_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    figures: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    artefacts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="callrec-bench-") as tmp, throwaway_postgres() as pg:
        url = create_database(pg, "bench")
        migrate(url)
        started = time.perf_counter()
        detail_id, deep_cursor = asyncio.run(fill(pg.port, count))
        notes.append(f"{count:,} calls of one org filled by SQL in {time.perf_counter() - started:.1f} s.")
        secret = secrets.token_urlsafe(32)
        env = {
            "CALLREC_DATABASE_URL": url,
            "CALLREC_VAR_DIR": str(Path(tmp) / "var"),
            "CALLREC_JWT_SECRET": secret,
        }
        service = start_service(env, Path(tmp))
        try:
            service.wait_ready()
            token = issue_token(secret, org_id=ORG, role="member", sub="bench")
            headers = {"Authorization": f"Bearer {token}"}
            auth = f"Authorization: Bearer {token}"
            detail = f"/api/v1/calls/{detail_id}"
            cases = [
                ("call detail", detail),
                ("list", LIST),
                ("list, cursor 99% down", f"{LIST}&cursor={deep_cursor}"),
            ]  # the sparse filters last: an overloaded run leaves work behind (waited out)
            cases += [(f"list recording={f}", f"{LIST}&recording={f}") for f in FILTERS]
            notes.append("What each request returns: " + "; ".join(answers(service, cases, headers)) + ".")
            wrk(service.base + LIST, connections=4, duration_s=1, headers=headers)  # warm up
            single = wrk(service.base + LIST, connections=1, duration_s=closed_s, headers=headers)
            health = wrk(service.base + "/healthz", connections=CONNECTIONS, duration_s=closed_s)
            listing = wrk(service.base + LIST, connections=CONNECTIONS, duration_s=closed_s, headers=headers)
            one = wrk(service.base + detail, connections=CONNECTIONS, duration_s=closed_s, headers=headers)
            raw["wrk"] = {"healthz": vars(health), "list": vars(listing), "detail": vars(one)}
            baseline = ("/healthz, same process, wrk 32 conn.", health.requests_per_s, "req/s")
            ratio = listing.requests_per_s / health.requests_per_s
            figures.append(
                figure(
                    f"calls list (limit=50), wrk {CONNECTIONS} connections",
                    round(listing.requests_per_s, 1),
                    "req/s",
                    goal="≥ 0.5x baseline",
                    met=ratio >= 0.5,
                    baseline=baseline,
                )
            )
            figures.append(
                figure(
                    f"call detail, wrk {CONNECTIONS} connections",
                    round(one.requests_per_s, 1),
                    "req/s",
                    baseline=baseline,
                )
            )
            closed = (("/healthz", health), ("list", listing), ("detail", one))
            for name, result in closed:
                notes.append(
                    f"wrk {CONNECTIONS} conn. {name}: {result.requests_per_s:,.0f} req/s,"
                    f" p50 {result.p50_ms:.1f} ms,"
                    f" p99 {result.p99_ms:.1f} ms, {result.errors} errors; wrk used"
                    f" {100 * result.cpu_s / result.duration_s:.0f}% of a core."
                )
            notes.append(
                f"wrk 1 conn. list: {single.requests_per_s:,.0f} req/s, p50 {single.p50_ms:.1f} ms,"
                f" p99 {single.p99_ms:.1f} ms."
            )
            if listing.requests_per_s < RATE:
                notes.append(
                    f"The list's closed-loop capacity ({listing.requests_per_s:,.0f} req/s) is below the"
                    f" offered {RATE} req/s: the open-loop runs of the list measure a growing queue."
                )
            raw["open_loop"] = {}
            for name, path in cases:
                wait_idle(service)
                measured = open_loop(service, path, auth, open_s, timeout_s)
                raw["open_loop"][name] = measured
                p99 = measured["p99_ms"]
                shown = float(p99) if p99 is not None else math.inf
                figures.append(
                    figure(
                        f"{name}, p99 at {RATE} req/s offered" + (" (timeouts)" if p99 is None else ""),
                        round(shown, 2) if p99 is not None else timeout_s * 1000,
                        "ms",
                        goal=f"< {P99_GOAL_MS:.0f} ms",
                        met=shown < P99_GOAL_MS,
                    )
                )
                p50 = "∞" if measured["p50_ms"] is None else f"{measured['p50_ms']:.1f} ms"
                p99_text = f"≥ {timeout_s:g} s (timeouts)" if p99 is None else f"{p99:.1f} ms"
                share = 100 * measured["server_cpu_s"] / measured["wall_s"]
                per_answer = (
                    f"{1000 * measured['server_cpu_s'] / measured['answered']:.1f} ms CPU per answer"
                    if measured["answered"]
                    else "none answered in time"
                )
                notes.append(
                    f"{RATE} req/s {name}: p50 {p50}, p99 {p99_text},"
                    f" {measured['answered']}/{measured['sent']}"
                    f" answered; service {share:.0f}% of a core,"
                    f" {per_answer};"
                    f" generator {100 * measured['cpu_s'] / measured['wall_s']:.0f}% of a core."
                )
            wait_idle(service)
            profiled = [
                ("list", service.base + LIST),
                ("list-processing", f"{service.base}{LIST}&recording=processing"),
                ("detail", service.base + detail),
            ]
            for stem, url_ in profiled:
                svg = artefacts_dir / f"profile-{stem}.svg"
                svg.unlink(missing_ok=True)
                if profile(service, url_, headers, profile_s, svg):
                    artefacts.append(relative(svg))
                else:
                    notes.append(f"py-spy could not profile {stem} (needs ptrace: root or CAP_SYS_PTRACE).")
        finally:
            service.stop()
            shutil.copyfile(service.log, artefacts_dir / "serve.log")
    (artefacts_dir / "raw.json").write_text(json.dumps(raw, indent=2) + "\n")
    notes.append(
        "Load from separate processes: wrk (closed loop) and bench/loadgen.py (open loop, latency"
        " from when each request was due; a timeout or error counts as infinitely slow)."
    )
    notes.append(
        "Flame graphs (py-spy, 200 Hz) of the service under wrk with 8 connections, after the measured runs."
    )
    write_result(
        args.out, "call_list_http", figures, notes, [relative(artefacts_dir / "raw.json"), *artefacts]
    )


if __name__ == "__main__":
    main()
