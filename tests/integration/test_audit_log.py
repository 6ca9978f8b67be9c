"""The audit log: a hash chain that concurrent writers never fork, that ``callrec audit verify``
checks, and that each org's admins read (their org's records only)."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.audit import published_head, read_chain
from adapters.sqlalchemy.engine import create_engine, migrate
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from application import commands
from application.errors import ConcurrencyConflict
from application.handlers import CallDecision
from domain.audit import AuditActor, AuditEntry, ChainReport, verify_chain
from entrypoints.cli import main as callrec
from tests.support.app import ApiHarness, error_code, sqlite_api_harness

ACME, GLOBEX = "acme", "globex"
ACME_NUMBER, GLOBEX_NUMBER = "+15550000001", "+15550000002"
WRITERS, TASKS, APPENDS = 2, 4, 6  # processes, concurrent tasks in each, appends per task


# --- the chain: concurrent writers, tampering, truncation ---------------------------------------


async def _append(engine: AsyncEngine, actor: str, n: int) -> None:
    entry = AuditEntry.record(
        actor=AuditActor(actor, "member", request_id=f"req-{n}", source_address="198.51.100.7"),
        action="play_recording",
        now=datetime.now(UTC),
        org_id=ACME,
        call_id=f"call-{n}",
        call_kind="customer",
    )

    # A writer that found the chain head taken (a duplicate seq) fails the test: that is never retried.
    # Only a transaction SQLite could not even begin (its lock wait ran out under load) is tried again.
    for attempt in range(3):
        try:
            async with SqlAlchemyUnitOfWork(engine) as uow:
                uow.audit.add(entry)
                await uow.commit()
            return
        except ConcurrencyConflict as exc:
            if not str(exc).startswith("database busy") or attempt == 2:
                raise


async def _writer(url: str, name: str) -> None:
    engine = create_engine(url)
    try:
        await asyncio.gather(
            *(_append(engine, f"{name}-{task}", i) for task in range(TASKS) for i in range(APPENDS))
        )
    finally:
        await engine.dispose()


_start: Any = None  # in the spawned writer: the barrier both writers start from


def _keep_barrier(barrier: Any) -> None:
    global _start
    _start = barrier


def writer_process(url: str, name: str) -> None:
    """The other API process: its own engine, several requests appending at once."""
    _start.wait(60)
    asyncio.run(_writer(url, name))


async def chain(engine: AsyncEngine) -> ChainReport:
    async with engine.connect() as conn:
        entries = [e async for e in read_chain(conn)]
        head = await published_head(conn)
    return verify_chain(entries, published=head)


async def test_concurrent_writers_in_two_processes_never_fork_the_chain(
    database_url: str, engine: AsyncEngine
) -> None:
    # This process and a spawned one, each with its own engine and several transactions at once,
    # starting together.
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=context, initializer=_keep_barrier, initargs=(start,)) as pool:
        child = loop.run_in_executor(pool, writer_process, database_url, "p1")
        await asyncio.to_thread(start.wait, 60)
        await asyncio.gather(child, _writer(database_url, "p0"))
    report = await chain(engine)
    total = WRITERS * TASKS * APPENDS
    assert report.broken is None, report.broken
    assert report.count == total and report.head is not None and report.head.seq == total
    async with engine.connect() as conn:
        writers = {r for (r,) in await conn.execute(select(t.audit_log.c.actor))}
        heads = await conn.execute(select(t.outbox.c.id).where(t.outbox.c.type == "AuditEntryAppended"))
        assert len(heads.all()) == total  # every append published its head
    assert {w.split("-")[0] for w in writers} == {f"p{w}" for w in range(WRITERS)}


@pytest.fixture
async def five(engine: AsyncEngine) -> list[str]:
    """Five chained entries; their ids in chain order."""
    for n in range(5):
        await _append(engine, f"member-{n}", n)
    async with engine.connect() as conn:
        return [i for (i,) in await conn.execute(select(t.audit_log.c.id).order_by(t.audit_log.c.seq))]


async def tamper(engine: AsyncEngine, statement: object) -> None:
    async with engine.begin() as conn:
        await conn.execute(statement)  # type: ignore[call-overload]


async def test_an_intact_chain_verifies(engine: AsyncEngine, five: list[str]) -> None:
    report = await chain(engine)
    assert report.broken is None and report.count == 5


async def test_an_edited_text_value_breaks_the_chain_at_that_record(
    engine: AsyncEngine, five: list[str]
) -> None:
    a = t.audit_log.c
    await tamper(engine, update(t.audit_log).where(a.id == five[2]).values(actor="someone-else"))
    report = await chain(engine)
    assert report.broken is not None and report.broken.entry_id == five[2] and report.broken.seq == 3
    assert "edited" in report.broken.problem


async def test_a_deleted_middle_record_breaks_the_chain_where_it_was(
    engine: AsyncEngine, five: list[str]
) -> None:
    await tamper(engine, delete(t.audit_log).where(t.audit_log.c.id == five[2]))
    report = await chain(engine)
    assert report.broken is not None and report.broken.entry_id == five[3]
    assert "removed" in report.broken.problem


async def test_swapped_records_break_the_chain_at_the_first_of_them(
    engine: AsyncEngine, five: list[str]
) -> None:
    a = t.audit_log.c
    await tamper(engine, update(t.audit_log).where(a.id == five[1]).values(seq=-2))
    await tamper(engine, update(t.audit_log).where(a.id == five[2]).values(seq=2))
    await tamper(engine, update(t.audit_log).where(a.id == five[1]).values(seq=3))
    report = await chain(engine)
    assert report.broken is not None and report.broken.seq == 2 and report.broken.entry_id == five[2]


async def test_a_truncated_tail_is_caught_against_the_published_head(
    engine: AsyncEngine, five: list[str]
) -> None:
    await tamper(engine, delete(t.audit_log).where(t.audit_log.c.id.in_(five[3:])))
    async with engine.connect() as conn:
        entries = [e async for e in read_chain(conn)]
    assert verify_chain(entries).broken is None  # the chain alone cannot tell
    report = await chain(engine)  # the outbox holds the head published on callrec.audit.v1
    assert report.broken is not None and report.broken.seq == 5 and "truncated" in report.broken.problem


async def test_callrec_audit_verify_exits_non_zero_naming_the_edited_record(
    database_url: str,
    engine: AsyncEngine,
    five: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CALLREC_DATABASE_URL", database_url)
    monkeypatch.setenv("CALLREC_VAR_DIR", str(tmp_path / "var"))
    assert await asyncio.to_thread(callrec, ["audit", "verify"]) == 0
    assert "intact: 5 records" in capsys.readouterr().out
    await tamper(engine, text("UPDATE audit_log SET reason = 'nothing to see' WHERE seq = 3"))
    assert await asyncio.to_thread(callrec, ["audit", "verify"]) == 1
    assert five[2] in capsys.readouterr().err


async def test_the_migration_chains_the_entries_logged_before_it(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/legacy.db"
    await asyncio.to_thread(migrate, url, "0012")
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for n, minute in enumerate((7, 3, 5)):
                await conn.execute(
                    text(
                        "INSERT INTO audit_log (id, occurred_at, actor, actor_role, action, reason, org_id)"
                        " VALUES (:id, :at, 'ops', 'ops_admin', 'list_calls', 'ticket', 'acme')"
                    ),
                    {"id": f"legacy-{n}", "at": f"2026-11-01 09:0{minute}:00.000000"},
                )
        await asyncio.to_thread(migrate, url)
        report = await chain(engine)
        async with engine.connect() as conn:
            order = [i for (i,) in await conn.execute(select(t.audit_log.c.id).order_by(t.audit_log.c.seq))]
    finally:
        await engine.dispose()
    assert report.broken is None and report.count == 3
    assert order == ["legacy-1", "legacy-2", "legacy-0"]  # in the order they happened


# --- the customer's view ------------------------------------------------------------------------


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[ApiHarness]:
    async with sqlite_api_harness(tmp_path, CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS="true") as harness:
        await harness.org(ACME, ACME_NUMBER)
        await harness.org(GLOBEX, GLOBEX_NUMBER)
        yield harness


async def log_of(h: ApiHarness, org_id: str, **params: str | int) -> list[dict[str, object]]:
    r = await h.client.get("/api/v1/audit-log", params=params, headers=h.auth(org_id, "admin"))
    assert r.status_code == 200, r.text
    items: list[dict[str, object]] = r.json()["items"]
    return items


async def test_admins_see_their_orgs_accesses_and_changes_newest_first_and_nothing_else(
    h: ApiHarness,
) -> None:
    call_id = await h.archived_call(ACME_NUMBER)
    globex_call = await h.archived_call(GLOBEX_NUMBER)
    ops = {"Authorization": f"Bearer {h.token('ops', 'ops_admin', 'ops@platform')}"}
    r = await h.client.get(f"/api/v1/admin/calls/{call_id}/recording?reason=ticket+4711+dispute", headers=ops)
    assert r.status_code == 307
    played = await h.client.get(
        f"/api/v1/calls/{call_id}/recording", headers={**h.auth(ACME, "member"), "X-Request-ID": "req-42"}
    )
    assert played.status_code == 307
    assert (
        await h.client.get(f"/api/v1/calls/{globex_call}/recording", headers=h.auth(GLOBEX, "member"))
    ).status_code == 307

    entries = await log_of(h, ACME)
    assert [(e["actor"], e["actor_role"], e["action"], e["call_id"], e["reason"]) for e in entries] == [
        ("member@acme", "member", "play_recording", call_id, None),
        ("ops@platform", "ops_admin", "play_recording", call_id, "ticket 4711 dispute"),
        ("setup", "system", "turn_recording_on", None, None),
    ]
    assert entries[0]["request_id"] == "req-42" and entries[0]["outcome"] == "granted"
    assert set(entries[0]) >= {
        "id",
        "occurred_at",
        "actor",
        "actor_role",
        "action",
        "call_id",
        "reason",
        "outcome",
    }
    globex = await log_of(h, GLOBEX)
    assert [e["call_id"] for e in globex if e["call_id"]] == [globex_call]
    assert not {e["id"] for e in entries} & {e["id"] for e in globex}

    first = await h.client.get("/api/v1/audit-log?limit=2", headers=h.auth(ACME, "admin"))
    rest = await log_of(h, ACME, cursor=first.json()["next_cursor"])
    assert [e["id"] for e in first.json()["items"] + rest] == [e["id"] for e in entries]


async def test_members_and_the_operations_team_cannot_read_the_log(h: ApiHarness) -> None:
    for role in ("member", "ops_admin"):
        r = await h.client.get("/api/v1/audit-log", headers=h.auth(ACME, role))
        assert r.status_code == 403


async def test_changes_are_audited_without_secrets_or_urls(h: ApiHarness) -> None:
    admin = h.auth(ACME, "admin")
    assert (
        await h.client.put("/api/v1/settings/call-recording", json={"enabled": False}, headers=admin)
    ).status_code == 200
    created = await h.client.post(
        "/api/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/hook", "events": ["call.ended"]},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()
    rotated = await h.client.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=admin)
    assert (
        await h.client.delete(f"/api/v1/webhook-endpoints/{endpoint['id']}", headers=admin)
    ).status_code == 204
    entries = await log_of(h, ACME)
    assert [(e["action"], e["target_id"]) for e in entries[:4]] == [
        ("delete_webhook_endpoint", endpoint["id"]),
        ("rotate_webhook_secret", endpoint["id"]),
        ("create_webhook_endpoint", endpoint["id"]),
        ("turn_recording_off", None),
    ]
    engine = create_engine(h.settings.database_url)
    async with engine.connect() as conn:
        stored = " ".join(str(v) for row in await conn.execute(select(t.audit_log)) for v in row)
    await engine.dispose()
    for secret in (endpoint["secret"], rotated.json()["secret"], "whsec_", "sig=", "127.0.0.1:9"):
        assert secret not in stored


async def test_no_audit_log_means_no_playback_url_for_the_org_either(h: ApiHarness) -> None:
    call_id = await h.archived_call(ACME_NUMBER)
    engine = create_engine(h.settings.database_url)
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE audit_log RENAME TO audit_log_gone"))
    await engine.dispose()
    r = await h.client.get(f"/api/v1/calls/{call_id}/recording", headers=h.auth(ACME, "member"))
    assert r.status_code == 503 and "location" not in r.headers
    assert error_code(r) == "audit_unavailable"


async def test_the_access_log_page_is_for_admins(h: ApiHarness) -> None:
    call_id = await h.archived_call(ACME_NUMBER)
    ops = {"Authorization": f"Bearer {h.token('ops', 'ops_admin', 'ops@platform')}"}
    await h.client.get(f"/api/v1/admin/calls/{call_id}/recording?reason=ticket+77", headers=ops)
    await h.client.put(
        f"/api/v1/settings/call-recording/numbers/{ACME_NUMBER}",
        json={"mode": "off"},
        headers=h.auth(ACME, "admin"),
    )
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://testserver.local"}
    for role, status in (("member", 403), ("admin", 200)):
        body = urlencode({"token": h.token(ACME, role)})
        assert (await h.client.post("/dashboard/session", content=body, headers=form)).status_code == 303
        page = await h.client.get("/dashboard/audit-log")
        assert page.status_code == status
    assert "ticket 77" in page.text and "operations team" in page.text and "Access log" in page.text
    # times are <time> elements the page's script puts in the viewer's zone; a number change names it
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"', page.text)
    assert "(+1 (555) 000-0001)" in page.text


# --- consent evidence ---------------------------------------------------------------------------


async def test_the_call_carries_the_consent_record_of_the_greeting_it_was_given(h: ApiHarness) -> None:
    async def start(number: str) -> CallDecision:
        decision: CallDecision = await h.bus.handle(
            commands.StartCall("CA" + secrets.token_hex(16), "AC1", "+15550001111", number)
        )
        return decision

    recorded = await start(ACME_NUMBER)
    await h.bus.handle(commands.SetCallRecording(ACME, False, "admin@acme"))
    unrecorded = await start(ACME_NUMBER)
    member = h.auth(ACME, "member")
    consent = (await h.client.get(f"/api/v1/calls/{recorded.call_id}", headers=member)).json()["consent"]
    assert consent["recorded"] is True and consent["disclosure_version"] and consent["disclosed_at"]
    assert recorded.greeting.startswith(consent["disclosure_text"])
    consent = (await h.client.get(f"/api/v1/calls/{unrecorded.call_id}", headers=member)).json()["consent"]
    assert consent == {
        "recorded": False,
        "disclosure_text": None,
        "disclosure_version": None,
        "disclosed_at": None,
    }
    assert "recorded" not in unrecorded.greeting.lower()
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://testserver.local"}
    await h.client.post(
        "/dashboard/session", content=urlencode({"token": h.token(ACME, "member")}), headers=form
    )
    page = await h.client.get(f"/dashboard/calls/{recorded.call_id}")
    assert recorded.greeting.split(".")[0] in page.text and 'id="consent"' in page.text
