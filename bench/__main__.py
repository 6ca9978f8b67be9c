"""Run every benchmark and write docs/performance.md.

    uv run python -m bench [--quick] [--only NAME,...] [--doc docs/performance.md]

Each module runs as its own process (``python -m bench.NAME --out bench/out/NAME.json``), one after
the other; its output goes to ``bench/out/NAME.log``. A module that is missing, fails or writes no
valid result is reported in the document as failed, with its error. With ``--only``, the other
modules' results are taken from ``bench/out/`` (an earlier run), marked as such, if there are any.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.common import OUT, ROOT, relative
from bench.render import Machine, ModuleResult, render

MODULES = (
    "baselines",
    "startup",
    "call_list_http",
    "calls",
    "archive",
    "relay",
    "kafka_failover",
    "background_scan",
)
CHANGES = ROOT / "bench" / "changes.md"


def _cpus() -> str:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} x {model or platform.processor() or 'unknown'}"


def _ram() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _commit() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def _tail(path: Path, lines: int = 12) -> str:
    """The last lines of a log, with this checkout's paths made relative (the document is shared)."""
    text = path.read_text(errors="replace").replace(f"{ROOT}/", "") if path.exists() else ""
    return "\n".join(text.strip().splitlines()[-lines:])


def run_module(name: str, quick: bool, timeout: float) -> ModuleResult:
    out = OUT / f"{name}.json"
    log = OUT / f"{name}.log"
    if not (ROOT / "bench" / f"{name}.py").exists():
        return ModuleResult(name, error=f"bench/{name}.py does not exist")
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", f"bench.{name}", "--out", relative(out), *(["--quick"] if quick else [])]
    started = time.perf_counter()
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        try:
            returncode: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            returncode = None
            proc.send_signal(signal.SIGINT)  # KeyboardInterrupt: its servers are stopped on the way out
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    seconds = time.perf_counter() - started
    if returncode is None:
        return ModuleResult(name, error=f"timed out after {timeout:.0f} s\n{_tail(log)}", seconds=seconds)
    if returncode != 0:
        return ModuleResult(name, error=f"exit status {returncode}\n{_tail(log)}", seconds=seconds)
    try:
        data = json.loads(out.read_text())
    except (OSError, ValueError) as exc:
        return ModuleResult(name, error=f"no valid result in {out.name}: {exc}", seconds=seconds)
    if not isinstance(data, dict) or not isinstance(data.get("figures"), list):
        return ModuleResult(
            name, error=f"{out.name} is not a benchmark result (no figures list)", seconds=seconds
        )
    return ModuleResult(name, data=data, seconds=seconds)


def earlier_result(name: str) -> ModuleResult:
    out = OUT / f"{name}.json"
    try:
        data = json.loads(out.read_text())
    except (OSError, ValueError):
        return ModuleResult(name, error="not in --only, and no earlier result in bench/out/", skipped=True)
    when = datetime.fromtimestamp(out.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return ModuleResult(name, data=data, earlier=when)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs of every benchmark")
    parser.add_argument("--only", help="comma-separated benchmarks to run, of: " + ", ".join(MODULES))
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--timeout", type=float, help="seconds per benchmark (default 600 quick, 3600 full)")
    args = parser.parse_args()
    only = [n.strip() for n in args.only.split(",")] if args.only else list(MODULES)
    unknown = [n for n in only if n not in MODULES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(MODULES)}")
    timeout = args.timeout or (600.0 if args.quick else 3600.0)
    OUT.mkdir(parents=True, exist_ok=True)
    load_before = _load()
    started = time.perf_counter()
    results = []
    for name in MODULES:
        if name not in only:
            results.append(earlier_result(name))
            continue
        print(f"bench: {name} …", file=sys.stderr, flush=True)
        result = run_module(name, args.quick, timeout)
        status = "ok" if result.error is None else "FAILED: " + result.error.splitlines()[0]
        print(f"bench: {name} {status} ({result.seconds or 0:.0f} s)", file=sys.stderr, flush=True)
        results.append(result)
    machine = Machine(
        cpus=_cpus(),
        ram=_ram(),
        load_before=load_before,
        load_after=_load(),
        python=f"{platform.python_implementation()} {platform.python_version()} on {platform.platform()}",
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=_commit(),
        mode="quick" if args.quick else "full",
        seconds=time.perf_counter() - started,
    )
    command = (
        "uv run python -m bench"
        + (" --quick" if args.quick else "")
        + (f" --only {args.only}" if args.only else "")
    )
    changes = CHANGES.read_text() if CHANGES.exists() else "## What changed, before and after\n"
    args.doc.write_text(render(machine, results, changes, command))
    print(f"bench: wrote {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
