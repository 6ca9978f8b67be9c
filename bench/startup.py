"""Benchmark: ``callrec serve`` on a fresh, empty ``./var`` (its embedded defaults) until ``/readyz`` is 200.

    uv run python -m bench.startup --out bench/out/startup.json [--quick]

Each run execs ``callrec serve`` in a new empty directory (no ``CALLREC_*`` set: SQLite created and
migrated, secrets generated) and polls ``/readyz`` every 10 ms; the figure is the median of 5 runs
(2 with ``--quick``) beside the median start of ``python -c pass``. Artefact: the 15 costliest
imports (cumulative) of what ``serve`` imports, from ``python -X importtime``.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import (
    OUT,
    PYTHON,
    ROOT,
    arguments,
    figure,
    median_of,
    relative,
    start_service,
    write_result,
)

GOAL_S = 2.0
SERVE_IMPORTS = "import entrypoints.cli, entrypoints.http.app, adapters.sqlalchemy.engine, uvicorn"


def python_pass(runs: int) -> float:
    """Median seconds of ``python -c pass`` (this interpreter)."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([PYTHON, "-c", "pass"], check=True)
        samples.append(time.perf_counter() - started)
    return median_of(samples)


def ready_time() -> float:
    with tempfile.TemporaryDirectory(prefix="callrec-startup-") as tmp:
        started = time.perf_counter()
        service = start_service({}, Path(tmp))
        try:
            return service.wait_ready(since=started)
        finally:
            service.stop()


def import_times(path: Path, top: int = 15) -> list[tuple[int, int, str]]:
    """Writes the ``top`` costliest imports by cumulative time to ``path``; returns them
    (self us, cumulative us, name)."""
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", SERVE_IMPORTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            rows.append((int(match.group(1)), int(match.group(2)), match.group(3)[1:] + match.group(4)))
    rows.sort(key=lambda row: row[1], reverse=True)
    lines = [f"python -X importtime -c {SERVE_IMPORTS!r}: the {top} costliest imports", ""]
    lines.append(f"{'self ms':>9} {'cumulative ms':>14}  module (indented by depth)")
    lines += [f"{own / 1000:>9.1f} {cum / 1000:>14.1f}  {name}" for own, cum, name in rows[:top]]
    path.write_text("\n".join(lines) + "\n")
    return rows[:top]


def main() -> None:
    args = arguments(__doc__)
    runs = 2 if args.quick else 5
    baseline = python_pass(5 if args.quick else 20)
    if not args.quick:
        ready_time()  # one unmeasured run: the first touch of the files after an install is not a start-up
    samples = [ready_time() for _ in range(runs)]
    ready = median_of(samples)
    artefact = OUT / "startup" / "importtime.txt"
    artefact.parent.mkdir(parents=True, exist_ok=True)
    top = import_times(artefact)
    heaviest = ", ".join(f"{name.strip()} {cum / 1000:.0f} ms" for _, cum, name in top[:4])
    write_result(
        args.out,
        "startup",
        [
            figure(
                f"callrec serve ready on a fresh ./var (median of {runs})",
                round(ready, 3),
                "s",
                goal=f"< {GOAL_S:g} s",
                met=ready < GOAL_S,
                baseline=("python -c pass", round(baseline, 4), "s"),
            )
        ],
        [
            "Exec of `callrec serve` in a new empty directory until `/readyz` answers 200 (SQLite created and"
            " migrated, secrets generated); runs: " + ", ".join(f"{s:.2f} s" for s in samples) + ".",
            f"Costliest imports (cumulative): {heaviest}.",
        ],
        [relative(artefact)],
    )


if __name__ == "__main__":
    main()
