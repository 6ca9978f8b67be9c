"""The operations team's admin API: sees every org and the platform lines, every access audited first."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.engine import create_engine, migrate
from application import commands
from application.handlers import CallDecision
from tests.support.app import ApiHarness, api_harness, error_code

SUPPORT_LINE = "+15557770002"  # a platform line in api_harness's settings


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[ApiHarness]:
    url = f"sqlite+aiosqlite:///{tmp_path}/admin.db"
    await asyncio.to_thread(migrate, url)
    async with api_harness(tmp_path, url) as h:
        await h.org("acme", "+15550000001")
        yield h


async def audit_rows(h: ApiHarness) -> list[dict[str, object]]:
    """The operations team's entries (the org's own toggle change is in the log too)."""
    engine = create_engine(h.settings.database_url)
    try:
        async with engine.connect() as conn:
            a = t.audit_log.c
            rows = await conn.execute(select(t.audit_log).where(a.actor_role == "ops_admin").order_by(a.seq))
            return [dict(r._mapping) for r in rows]
    finally:
        await engine.dispose()


async def outbox_types(h: ApiHarness) -> list[str]:
    engine = create_engine(h.settings.database_url)
    try:
        async with engine.connect() as conn:
            return [r for (r,) in await conn.execute(select(t.outbox.c.type).order_by(t.outbox.c.seq))]
    finally:
        await engine.dispose()


async def support_call(h: ApiHarness) -> str:
    decision: CallDecision = await h.bus.handle(
        commands.StartCall(
            call_sid="CA" + secrets.token_hex(16),
            account_sid="AC1",
            from_number="+15550009999",
            to_number=SUPPORT_LINE,
        )
    )
    return decision.call_id


async def test_operations_list_an_orgs_calls_and_the_listing_is_audited(harness: ApiHarness) -> None:
    call_id = await harness.archived_call("+15550000001")
    r = await harness.client.get(
        "/api/v1/admin/calls?org_id=acme&kind=customer&reason=ticket+42",
        headers=harness.auth("ops", "ops_admin"),
    )
    assert r.status_code == 200, r.text
    assert [c["id"] for c in r.json()["items"]] == [call_id]
    [entry] = await audit_rows(harness)
    assert (entry["actor"], entry["action"], entry["org_id"], entry["reason"]) == (
        "ops_admin@ops",
        "list_calls",
        "acme",
        "ticket 42",
    )
    assert "PrivilegedAccessRecorded" in await outbox_types(harness)


async def test_platform_line_calls_are_visible_to_operations_only(harness: ApiHarness) -> None:
    call_id = await support_call(harness)
    r = await harness.client.get("/api/v1/admin/calls?kind=support", headers=harness.auth("ops", "ops_admin"))
    assert [c["id"] for c in r.json()["items"]] == [call_id]
    for role in ("member", "admin"):
        assert (await harness.client.get("/api/v1/calls", headers=harness.auth("acme", role))).json()[
            "items"
        ] == []
        denied = await harness.client.get(
            "/api/v1/admin/calls?kind=support", headers=harness.auth("acme", role)
        )
        assert denied.status_code == 403


async def test_a_recording_needs_a_reason_and_is_audited_before_the_url_is_issued(
    harness: ApiHarness,
) -> None:
    call_id = await harness.archived_call("+15550000001")
    ops = harness.auth("ops", "ops_admin")
    missing = await harness.client.get(f"/api/v1/admin/calls/{call_id}/recording", headers=ops)
    assert missing.status_code == 400 and "reason" in missing.json()["error"]["message"]
    assert await audit_rows(harness) == []
    r = await harness.client.get(
        f"/api/v1/admin/calls/{call_id}/recording?reason=customer+dispute+7&download=true", headers=ops
    )
    assert r.status_code == 307
    [entry] = await audit_rows(harness)
    assert (entry["action"], entry["call_id"], entry["org_id"], entry["call_kind"]) == (
        "download_recording",
        call_id,
        "acme",
        "customer",
    )
    served = await harness.client.get(r.headers["location"])
    assert served.status_code == 200 and "attachment" in served.headers["content-disposition"]


async def test_no_audit_log_means_no_access(harness: ApiHarness) -> None:
    call_id = await harness.archived_call("+15550000001")
    engine = create_engine(harness.settings.database_url)
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE audit_log RENAME TO audit_log_gone"))
    await engine.dispose()
    r = await harness.client.get(
        f"/api/v1/admin/calls/{call_id}/recording?reason=checking+a+complaint",
        headers=harness.auth("ops", "ops_admin"),
    )
    assert r.status_code == 503 and "location" not in r.headers
    assert error_code(r) == "audit_unavailable"


async def test_customer_listing_needs_an_org_and_platform_listing_takes_none(harness: ApiHarness) -> None:
    ops = harness.auth("ops", "ops_admin")
    assert (await harness.client.get("/api/v1/admin/calls?kind=customer", headers=ops)).status_code == 400
    assert (
        await harness.client.get("/api/v1/admin/calls?kind=support&org_id=acme", headers=ops)
    ).status_code == 400
    assert await audit_rows(harness) == []
