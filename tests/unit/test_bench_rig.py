"""The call rig's pure parts: percentiles, CPU and peak RSS from a (fake) ``/proc``, the result's JSON
shape, a phase's verdict and the profile summary. No timing is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.calls import Measured
from bench.rig.measure import CLOCK_TICKS, ProcReader, Result, cpu_delta, figure, parse_stat, percentile
from bench.rig.profiles import library_of, summarise


def stat_line(
    pid: int,
    comm: str,
    pgrp: int,
    utime: int,
    stime: int,
    cutime: int = 0,
    cstime: int = 0,
    ppid: int = 1,
) -> str:
    # Fields 1-17 of /proc/PID/stat, then the rest (ignored).
    times = f"{utime} {stime} {cutime} {cstime}"
    return f"{pid} ({comm}) S {ppid} {pgrp} {pgrp} 0 -1 4194560 10 0 0 0 {times} 20 0 1 0\n"


def fake_proc(
    root: Path, processes: dict[int, tuple[str, int, int, int, int]], parents: dict[int, int] | None = None
) -> ProcReader:
    for pid, (comm, pgrp, utime, stime, hwm_kib) in processes.items():
        (root / str(pid)).mkdir(parents=True)
        ppid = (parents or {}).get(pid, 1)
        (root / str(pid) / "stat").write_text(stat_line(pid, comm, pgrp, utime, stime, ppid=ppid))
        (root / str(pid) / "status").write_text(f"Name:\t{comm}\nVmHWM:\t  {hwm_kib} kB\nVmRSS:\t 1 kB\n")
    (root / "self").mkdir()
    return ProcReader(root)


def test_percentiles_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([3.0, 1.0, 2.0], 50) == 2
    assert percentile([7.0], 99) == 7
    assert percentile([], 50) is None


def test_a_stat_line_with_spaces_and_parentheses_in_the_name() -> None:
    pgrp, seconds = parse_stat(stat_line(42, "python -m (x) y", 40, 150, 50, 30, 20))
    assert pgrp == 40
    assert seconds == pytest.approx((150 + 50 + 30 + 20) / CLOCK_TICKS)


def test_cpu_summed_per_process_group_and_per_single_process(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        {
            100: ("callrec", 100, 300, 100, 150_000),
            101: ("callrec child", 100, 50, 50, 90_000),
            200: ("runuser", 200, 1, 0, 1_000),
            201: ("postgres", 200, 1000, 0, 20_000),
            202: ("postgres backend", 202, 400, 0, 20_000),  # its own session, a child of 201
            300: ("standin", 1, 10, 10, 50_000),
            301: ("somebody else", 1, 999, 999, 1),
        },
        parents={201: 200, 202: 201},
    )
    read = proc.cpu(groups=[100, 200], singles=[300])
    assert read == {
        100: pytest.approx(500 / CLOCK_TICKS),
        200: pytest.approx(1401 / CLOCK_TICKS),
        300: pytest.approx(20 / CLOCK_TICKS),
    }
    assert proc.hwm_mb(100) == pytest.approx(150_000 / 1024)
    assert proc.hwm_mb(300, group=False) == pytest.approx(50_000 / 1024)
    assert proc.hwm_mb(999) == 0


def test_cpu_between_two_readings_keeps_the_last_of_a_process_gone_since() -> None:
    before = {"api": 1.0, "worker-1": 2.0}
    after = {"api": 1.5}
    assert cpu_delta(before, after) == {"api": pytest.approx(0.5), "worker-1": 0.0}


def test_the_result_json_shape_with_goals_baselines_and_ratios() -> None:
    result = Result("calls")
    result.figures.append(figure("cpu", 30.0, "ms", at_most=15, baseline=("driver", 5.0, "ms")))
    result.figures.append(figure("p99", 800.0, "ms", below=1000))
    result.figures.append(figure("rate", None, "calls/s"))
    result.notes.append("a note")
    result.artefacts.append("bench/out/calls/api.svg")
    data = result.as_json()
    assert set(data) == {"benchmark", "figures", "notes", "artefacts"}
    assert data["benchmark"] == "calls"
    cpu, p99 = data["figures"]  # the figure without a value became a note
    assert set(cpu) == {"name", "value", "unit", "goal", "met", "baseline", "ratio"}
    assert (cpu["goal"], cpu["met"], cpu["ratio"]) == ("≤ 15 ms", False, 6.0)
    assert cpu["baseline"] == {"name": "driver", "value": 5.0, "unit": "ms"}
    assert (p99["goal"], p99["met"], p99["baseline"], p99["ratio"]) == ("< 1000 ms", True, None, None)
    assert data["notes"] == ["a note", "no value measured for: rate"]
    assert figure("x", 1.0, "ms", baseline=("not measured", None, "ms")).baseline is None


def measured(rate: float, offered: int, completed_per_s: float, ended_ms: list[float]) -> Measured:
    return Measured(
        label="step",
        rate=rate,
        offered=offered,
        completed=len(ended_ms),
        errors=0,
        completed_per_s=completed_per_s,
        ended_ms=ended_ms,
        voice_ms=[10.0],
        lag_ms=[1.0],
        service_cpu_s={"api": 1.0, "worker-1": 0.5},
        infra_cpu_s={"postgres": 0.2},
        driver_cpu_s=0.1,
        drain_s=0.5,
    )


def test_a_step_is_sustained_only_without_loss_keeping_pace_and_under_the_p99_bound() -> None:
    fine = measured(10, 100, 9.7, [300.0] * 100)
    assert fine.sustained and fine.lost == 0
    assert fine.service_cpu_per_call_ms == pytest.approx(15.0)
    assert "offered 10/s" in fine.line()
    assert not measured(10, 100, 9.7, [300.0] * 99).sustained  # one lost
    assert not measured(10, 100, 8.0, [300.0] * 100).sustained  # falling behind
    assert not measured(10, 100, 9.7, [300.0] * 98 + [2500.0] * 2).sustained  # p99 explodes


def test_profile_summary_ranks_self_and_total_shares_by_function_and_library() -> None:
    site = "/x/.venv/lib/python3.11/site-packages"
    speedscope = {
        "shared": {
            "frames": [
                {"name": "main", "file": "/repo/entrypoints/cli.py", "line": 1},
                {"name": "execute", "file": f"{site}/asyncpg/connection.py", "line": 2},
                {"name": "compile", "file": f"{site}/sqlalchemy/sql/compiler.py", "line": 3},
                {"name": "select", "file": "/usr/lib/python3.11/selectors.py", "line": 4},
            ]
        },
        "profiles": [{"samples": [[0, 1], [0, 1], [0, 2], [0, 3]], "weights": [1, 1, 1, 1]}],
    }
    summary = summarise(speedscope)
    assert summary.samples == 4
    assert summary.self_lib[0] == ("asyncpg", 0.5)
    assert dict(summary.total_lib)["callrec:entrypoints"] == 1.0
    assert dict(summary.self_fn)["compile (sqlalchemy)"] == 0.25
    assert library_of("/usr/lib/python3.11/asyncio/base_events.py") == "stdlib:asyncio"
    assert library_of("/repo/adapters/sqlalchemy/outbox.py") == "callrec:adapters"
    assert any("asyncpg 50%" in line for line in summary.lines())
