"""docs/performance.md as rendered from the benchmark modules' JSON (no benchmark is run)."""

from __future__ import annotations

from typing import Any

from bench.common import figure
from bench.render import Machine, ModuleResult, render

MACHINE = Machine(
    cpus="2 x Test CPU",
    ram="7.8 GiB",
    load_before="1.00 0.50 0.25",
    load_after="2.00 1.00 0.50",
    python="CPython 3.11.7",
    date="2026-11-29 03:00 UTC",
    commit="abc1234",
    mode="quick",
    seconds=90.0,
)

STARTUP: dict[str, Any] = {
    "benchmark": "startup",
    "figures": [
        figure(
            "callrec serve ready",
            3.25,
            "s",
            goal="< 2 s",
            met=False,
            baseline=("python -c pass", 0.025, "s"),
        ),
    ],
    "notes": ["Runs: 3.2 s, 3.3 s."],
    "artefacts": ["bench/out/startup/importtime.txt"],
}
LIST: dict[str, Any] = {
    "benchmark": "call_list_http",
    "figures": [
        figure(
            "calls list, wrk 32 connections",
            4000.0,
            "req/s",
            goal="≥ 0.5x baseline",
            met=True,
            baseline=("/healthz | same process", 6600.0, "req/s"),
        ),
        figure("list, p99 at 200 req/s offered", 12.5, "ms", goal="< 25 ms", met=True),
        figure("call detail, wrk 32 connections", 611.0, "req/s"),
    ],
    "notes": ["200 req/s list: p50 3.1 ms."],
    "artefacts": [],
}


def rendered() -> str:
    results = [
        ModuleResult("startup", data=STARTUP, seconds=20.0),
        ModuleResult("call_list_http", data=LIST, seconds=40.0),
        ModuleResult(
            "calls", error="exit status 1\nTraceback ...\nRuntimeError: Tansu did not start", seconds=3.0
        ),
        ModuleResult("archive", data={**STARTUP, "benchmark": "archive"}, earlier="2026-11-28 10:00 UTC"),
        ModuleResult("baselines", error="not in --only, and no earlier result in bench/out/", skipped=True),
    ]
    return render(
        MACHINE, results, "## What changed, before and after\n\nBy hand.\n", "uv run python -m bench --quick"
    )


def table_rows(doc: str) -> list[list[str]]:
    section = doc.split("## Figures", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines[1:]]  # no header


def test_every_figure_is_a_row_beside_its_baseline_ratio_and_goal() -> None:
    rows = table_rows(rendered())
    assert rows[0] == [
        "startup",
        "callrec serve ready",
        "3.25 s",
        "python -c pass: 0.025 s",
        "130x",
        "< 2 s",
        "**not met**",
    ]
    assert rows[1] == [
        "call_list_http",
        "calls list, wrk 32 connections",
        "4,000 req/s",
        "/healthz \\| same process: 6,600 req/s",
        "0.606x",
        "≥ 0.5x baseline",
        "met",
    ]
    assert rows[2] == [
        "call_list_http",
        "list, p99 at 200 req/s offered",
        "12.5 ms",
        "",
        "",
        "< 25 ms",
        "met",
    ]
    assert rows[3] == ["call_list_http", "call detail, wrk 32 connections", "611 req/s", "", "", "", ""]


def test_a_failed_module_is_a_row_and_a_note_with_its_error() -> None:
    doc = rendered()
    rows = table_rows(doc)
    assert rows[4][:2] == ["calls", "(no figures)"]
    assert rows[4][-1] == "**failed**: RuntimeError: Tansu did not start"
    notes = doc.split("## Notes", 1)[1]
    assert "### calls, 3 s\n\n**Failed:**" in notes
    assert "exit status 1\nTraceback ...\nRuntimeError: Tansu did not start\n```" in notes


def test_a_module_not_run_on_purpose_is_not_a_failure() -> None:
    doc = rendered()
    rows = table_rows(doc)
    assert rows[-1] == [
        "baselines",
        "(no figures)",
        "",
        "",
        "",
        "",
        "not run: not in --only, and no earlier result in bench/out/",
    ]
    assert "### baselines\n\nNot run: not in --only" in doc


def test_the_machine_notes_artefacts_and_hand_written_section_are_included() -> None:
    doc = rendered()
    assert doc.startswith("# Performance\n")
    assert "`uv run python -m bench --quick` (quick run, 1.5 min)" in doc
    assert "| load average (1, 5, 15 min) before / after | 1.00 0.50 0.25 / 2.00 1.00 0.50 |" in doc
    assert "| CPUs | 2 x Test CPU |" in doc
    assert "## What changed, before and after\n\nBy hand.\n" in doc
    assert "- Runs: 3.2 s, 3.3 s.\n- Artefacts: `bench/out/startup/importtime.txt`" in doc
    assert "Not rerun: the result of an earlier run (2026-11-28 10:00 UTC)." in doc
    assert doc.index("## What changed") < doc.index("## Notes")
