"""What the benchmark modules share: the result file, the service process, wrk, and CPU accounting.

Every module writes one JSON object (see ``bench/__main__.py``): ``benchmark``, ``figures`` (each a
:func:`figure`), ``notes`` and ``artefacts``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
PYTHON = sys.executable
CALLREC = str(Path(PYTHON).with_name("callrec"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def command_line(description: str | None, *, out_required: bool = True) -> argparse.ArgumentParser:
    """A benchmark's command line: ``--out`` and ``--quick``; a module adds its own options."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, required=out_required, help="where to write the JSON result")
    parser.add_argument("--quick", action="store_true", help="a short version (well under a minute)")
    return parser


def arguments(description: str | None) -> argparse.Namespace:
    return command_line(description).parse_args()


def emit(out: Path | None, result: Mapping[str, Any]) -> None:
    """Write a benchmark's JSON result to ``out`` (if given) and print it."""
    text = json.dumps(result, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)


def figure(
    name: str,
    value: float,
    unit: str,
    *,
    goal: str | None = None,
    met: bool | None = None,
    baseline: tuple[str, float, str] | None = None,
) -> dict[str, Any]:
    """One figure; with a baseline, its ratio value / baseline."""
    base = None
    ratio = None
    if baseline is not None:
        base = {"name": baseline[0], "value": baseline[1], "unit": baseline[2]}
        ratio = round(value / baseline[1], 3) if baseline[1] else None
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "goal": goal,
        "met": met,
        "baseline": base,
        "ratio": ratio,
    }


def write_result(
    out: Path,
    benchmark: str,
    figures: Sequence[Mapping[str, Any]],
    notes: Sequence[str],
    artefacts: Sequence[str] = (),
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "benchmark": benchmark,
        "figures": list(figures),
        "notes": list(notes),
        "artefacts": list(artefacts),
    }
    out.write_text(json.dumps(body, indent=2) + "\n")


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def median_of(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- processes ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_cpu() -> float:
    """User + system CPU of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def get_status(url: str, headers: Mapping[str, str] | None = None, timeout: float = 2.0) -> int:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@dataclass
class Service:
    """One ``callrec serve`` process (its own session, stopped by its PID)."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0, since: float | None = None) -> float:
        """Seconds until ``/readyz`` answers 200 (from ``since``, a ``perf_counter`` time, or now)."""
        start = time.perf_counter() if since is None else since
        while get_status(self.base + "/readyz", timeout=1.0) != 200:
            if self.proc.poll() is not None:
                raise RuntimeError(f"callrec serve exited ({self.proc.returncode}): {self.log_tail()}")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"callrec serve not ready in {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.01)
        return time.perf_counter() - start

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""

    def stop(self) -> None:
        from tests.support.services import stop_pid

        stop_pid(self.proc.pid)


def start_service(
    env: Mapping[str, str], workdir: Path, argv: Sequence[str] | None = None, port: int | None = None
) -> Service:
    """``callrec serve`` (or ``argv`` + ``--port``) in ``workdir`` with ``env`` added to ours, less
    any ``CALLREC_*`` of ours (so the service runs on its defaults and ``env``)."""
    port = port or free_port()
    log = workdir / f"serve-{port}.log"
    command = [*(argv or [CALLREC, "serve"]), "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Service(proc, port, log)


# --- wrk (closed loop) ----------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class WrkResult:
    requests_per_s: float
    requests: int
    errors: int  # socket errors plus non-2xx/3xx responses
    p50_ms: float
    p99_ms: float
    cpu_s: float  # wrk's own CPU time
    duration_s: float


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str,
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    headers: Mapping[str, str] | None = None,
) -> WrkResult:
    """A closed-loop run of ``wrk`` (``connections`` keep-alive connections, each sending its next
    request as soon as the previous one is answered)."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: ./scripts/bootstrap --bench installs it")
    command = ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    before = children_cpu()
    started = time.perf_counter()
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    cpu = children_cpu() - before
    return parse_wrk(done.stdout + done.stderr, cpu_s=cpu, duration_s=elapsed)


def parse_wrk(out: str, *, cpu_s: float, duration_s: float) -> WrkResult:
    """The figures of ``wrk --latency``'s report."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rate is None or total is None:
        raise RuntimeError(f"cannot read wrk's output: {out}")
    socket_errors = re.search(r"Socket errors: (.*)", out)
    errors = sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1))) if socket_errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    return WrkResult(
        requests_per_s=float(rate.group(1)),
        requests=int(total.group(1)),
        errors=errors,
        p50_ms=_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_ms(p99.group(1)) if p99 else float("nan"),
        cpu_s=cpu_s,
        duration_s=duration_s,
    )


# --- the constant handler -------------------------------------------------------------------------

CONSTANT_SERVER = (
    "import sys\n"
    "from litestar import Litestar, get\n"
    "import entrypoints.http.app as http_app\n"
    "@get('/constant')\n"
    "async def constant() -> dict[str, str]:\n"
    "    return {'status': 'ok'}\n"
    "@get('/readyz')\n"
    "async def readyz() -> dict[str, str]:\n"
    "    return {'status': 'ready'}\n"
    "http_app.create_app = lambda settings=None: Litestar([constant, readyz])\n"
    "from entrypoints.cli import main\n"
    "sys.exit(main(['serve', *sys.argv[1:]]))\n"
)
"""A Litestar app of one handler returning a constant, served by ``callrec serve``'s own code
(``entrypoints.cli``, its uvicorn settings), with ``create_app`` swapped for this app."""
