"""Pure accounting: percentiles, CPU and peak RSS read from ``/proc``, and the result's JSON shape."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by the nearest-rank method; ``None`` without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def parse_stat(text: str) -> tuple[int, float]:
    """``(process group, CPU seconds)`` from one ``/proc/PID/stat`` line: utime + stime of the process
    and cutime + cstime of its reaped children (a forking server's exited workers stay counted)."""
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); field N is fields[N - 3].
    pgrp = int(fields[5 - 3])
    ticks = sum(int(fields[n - 3]) for n in (14, 15, 16, 17))
    return pgrp, ticks / CLOCK_TICKS


def parse_ppid(text: str) -> int:
    """The parent's PID (field 4) from one ``/proc/PID/stat`` line."""
    return int(text[text.rindex(")") + 2 :].split()[4 - 3])


def parse_hwm_kib(status_text: str) -> int:
    """``VmHWM`` (peak resident set) in KiB from a ``/proc/PID/status`` text; 0 if absent."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@dataclass
class ProcReader:
    """Reads ``/proc`` (a directory argument so tests can hand it a fake one)."""

    root: Path = Path("/proc")

    def pids(self) -> list[int]:
        return [int(p.name) for p in self.root.iterdir() if p.name.isdigit()]

    def _read(self, pid: int, name: str) -> str | None:
        try:
            return (self.root / str(pid) / name).read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None

    def cpu(self, groups: Iterable[int], singles: Iterable[int] = ()) -> dict[int, float]:
        """CPU seconds of every process in each of these process groups (keyed by the group's leader)
        and of each of these single processes (keyed by PID)."""
        wanted, alone = set(groups), set(singles)
        totals = dict.fromkeys(wanted | alone, 0.0)
        read: dict[int, tuple[int, int, float]] = {}  # pid: (parent, group, CPU seconds)
        for pid in self.pids():
            text = self._read(pid, "stat")
            if text is not None:
                pgrp, seconds = parse_stat(text)
                read[pid] = (parse_ppid(text), pgrp, seconds)

        def group_of(pid: int) -> int | None:
            # A process that made its own session (PostgreSQL's backends do) still counts for the
            # group of the process that started it: walk up its parents.
            for _ in range(8):
                if pid not in read:
                    return None
                parent, pgrp, _seconds = read[pid]
                if pgrp in wanted:
                    return pgrp
                pid = parent
            return None

        for pid, (_parent, _pgrp, seconds) in read.items():
            if pid in alone:
                totals[pid] += seconds
            elif (group := group_of(pid)) is not None:
                totals[group] += seconds
        return totals

    def hwm_mb(self, leader: int, group: bool = True) -> float:
        """Peak RSS (MB) of the process, or the largest of its group's live processes."""
        best = 0.0
        for pid in self.pids() if group else [leader]:
            stat = self._read(pid, "stat")
            if stat is None or (group and parse_stat(stat)[0] != leader):
                continue
            status = self._read(pid, "status")
            if status is not None:
                best = max(best, parse_hwm_kib(status) / 1024)
        return best


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Per-name CPU seconds spent between two readings (a name missing afterwards: what was read last)."""
    return {name: max(0.0, after.get(name, before[name]) - before[name]) for name in before}


@dataclass
class Figure:
    name: str
    value: float | None
    unit: str
    goal: str | None = None
    met: bool | None = None
    baseline: dict[str, Any] | None = None
    ratio: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None if self.value is None else round(self.value, 3),
            "unit": self.unit,
            "goal": self.goal,
            "met": self.met,
            "baseline": self.baseline,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
        }


def figure(
    name: str,
    value: float | None,
    unit: str,
    *,
    below: float | None = None,
    at_most: float | None = None,
    baseline: tuple[str, float | None, str] | None = None,
) -> Figure:
    """A figure, judged against ``< below`` or ``≤ at_most`` when given, with a same-run baseline."""
    goal: str | None = None
    met: bool | None = None
    if below is not None:
        goal, met = f"< {below:g} {unit}", None if value is None else value < below
    elif at_most is not None:
        goal, met = f"≤ {at_most:g} {unit}", None if value is None else value <= at_most
    base = ratio = None
    if baseline is not None:
        base_name, base_value, base_unit = baseline
        if base_value is not None:  # a baseline not measured is left out
            base = {"name": base_name, "value": round(base_value, 3), "unit": base_unit}
            if value is not None and base_value:
                ratio = value / base_value
    return Figure(name, value, unit, goal, met, base, ratio)


@dataclass
class Result:
    benchmark: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    artefacts: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The interface's JSON; a figure without a value (nothing completed) becomes a note instead."""
        missing = [f.name for f in self.figures if f.value is None]
        return {
            "benchmark": self.benchmark,
            "figures": [f.as_json() for f in self.figures if f.value is not None],
            "notes": [*self.notes, *(f"no value measured for: {name}" for name in missing)],
            "artefacts": list(self.artefacts),
        }
