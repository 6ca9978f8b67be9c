"""py-spy profiles of running service processes, and a summary of where their CPU went.

Each process gets a speedscope profile and an SVG flamegraph (two ``py-spy record`` processes,
``--subprocesses`` off, ``--nonblocking``: the target is never stopped, so its CPU figures stay its
own; ``BENCH_PYSPY_NATIVE=1`` records native frames instead, which needs stopping it). ``summarise`` reads a
speedscope file and ranks functions and libraries by self and total share of the samples.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.rig.stack import normal_priority
from tests.support.services import stop_pid

PY_SPY = Path(sys.executable).parent / "py-spy"


@dataclass
class Recording:
    name: str
    files: list[Path]
    procs: list[subprocess.Popen[bytes]]

    def finish(self, timeout_s: float = 30.0) -> None:
        """Waits for py-spy to write its files (it stops after its duration), then stops what is left."""
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
            self.stop()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                stop_pid(proc.pid)


def record(name: str, pid: int, duration_s: float, out_dir: Path) -> Recording:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / f"{name}.speedscope.json", out_dir / f"{name}.svg"]
    procs = []
    native = ["--native"] if os.environ.get("BENCH_PYSPY_NATIVE") else []
    for path, fmt in zip(files, ("speedscope", "flamegraph"), strict=True):
        with (out_dir / f"{name}.{fmt}.log").open("wb") as log:
            proc = subprocess.Popen(
                [
                    str(PY_SPY),
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(max(1, round(duration_s))),
                    "--format",
                    fmt,
                    "--output",
                    str(path),
                    "--rate",
                    "100",
                    *native,
                    *([] if native else ["--nonblocking"]),
                ],
                stdout=subprocess.DEVNULL,
                preexec_fn=normal_priority,
                stderr=log,
                start_new_session=True,
            )
        procs.append(proc)
    return Recording(name, files, procs)


def library_of(file: str) -> str:
    """A frame's library: the site-packages distribution, the project's layer, or the stdlib module."""
    path = file.replace("\\", "/")
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    for layer in ("domain", "application", "adapters", "entrypoints"):
        if f"/{layer}/" in path or path.startswith(f"{layer}/"):
            return f"callrec:{layer}"
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 1)
        module = rest[1].split("/", 1)[0].removesuffix(".py") if len(rest) > 1 else path
        return f"stdlib:{module}"
    return path or "?"


@dataclass
class Summary:
    samples: float
    self_fn: list[tuple[str, float]]
    total_fn: list[tuple[str, float]]
    self_lib: list[tuple[str, float]]
    total_lib: list[tuple[str, float]]

    def lines(self, top: int = 12) -> list[str]:
        def fmt(rows: list[tuple[str, float]]) -> str:
            return "; ".join(f"{name} {share:.0%}" for name, share in rows[:top])

        return [
            f"sampled: {self.samples:.1f} s not waiting",
            f"self by library: {fmt(self.self_lib)}",
            f"total by library: {fmt(self.total_lib)}",
            f"self by function: {fmt(self.self_fn)}",
            f"total by function: {fmt(self.total_fn)}",
        ]


# Leaf frames of a thread that waits (py-spy's own idle detection misses them on this machine): the
# selector's poll, an idle executor thread, uvloop's loop (its C poll under ``Runner.run``).
IDLE_LEAVES = {
    ("stdlib:selectors", "EpollSelector.select"),
    ("stdlib:selectors", "_PollLikeSelector.select"),
    ("stdlib:concurrent", "_worker"),
    ("stdlib:threading", "Condition.wait"),
    ("stdlib:asyncio", "Runner.run"),
}


def summarise(speedscope: dict[str, Any]) -> Summary:
    """Shares of the samples that were not waiting (see ``IDLE_LEAVES``)."""
    frames = speedscope["shared"]["frames"]
    names = [f"{f['name']} ({library_of(str(f.get('file', '')))})" for f in frames]
    libs = [library_of(str(f.get("file", ""))) for f in frames]
    idle = {i for i, f in enumerate(frames) if (libs[i], f["name"]) in IDLE_LEAVES}
    self_fn: Counter[str] = Counter()
    total_fn: Counter[str] = Counter()
    self_lib: Counter[str] = Counter()
    total_lib: Counter[str] = Counter()
    samples = 0.0
    for profile in speedscope["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            if not stack or stack[-1] in idle:
                continue
            samples += weight
            self_fn[names[stack[-1]]] += weight
            self_lib[libs[stack[-1]]] += weight
            for name in {names[i] for i in stack}:
                total_fn[name] += weight
            for lib in {libs[i] for i in stack}:
                total_lib[lib] += weight

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, n / samples) for name, n in counter.most_common()] if samples else []

    return Summary(samples, share(self_fn), share(total_fn), share(self_lib), share(total_lib))


def summarise_file(path: Path) -> Summary:
    return summarise(json.loads(path.read_text()))
