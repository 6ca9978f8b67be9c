"""Retention, legal hold and purged recordings over HTTP, on SQLite and PostgreSQL; ``callrec purge``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import select, update

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.engine import create_engine
from application.retention import RetentionPurger
from entrypoints.cli import main as callrec
from tests.support.app import ApiHarness, api_harness, error_code

ACME, GLOBEX = "org-acme", "org-globex"
ACME_NUMBER, GLOBEX_NUMBER = "+15550000001", "+15550000002"
FORM = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://testserver.local"}


@pytest.fixture
async def h(tmp_path: Path, database_url: str) -> AsyncIterator[ApiHarness]:
    async with api_harness(tmp_path, database_url) as harness:
        await harness.org(ACME, ACME_NUMBER)
        await harness.org(GLOBEX, GLOBEX_NUMBER)
        yield harness


async def age(database_url: str, call_id: str, days: int) -> None:
    """Move a call (and its recordings) ``days`` days into the past."""
    engine = create_engine(database_url)
    c, r = t.calls.c, t.recordings.c
    try:
        async with engine.begin() as conn:
            started = (await conn.execute(select(c.started_at).where(c.id == call_id))).scalar_one()
            earlier = started - timedelta(days=days)
            await conn.execute(update(t.calls).where(c.id == call_id).values(started_at=earlier))
            await conn.execute(
                update(t.recordings).where(r.call_id == call_id).values(call_started_at=earlier)
            )
    finally:
        await engine.dispose()


async def recording_of(h: ApiHarness, call_id: str) -> dict[str, object]:
    r = await h.client.get(f"/api/v1/calls/{call_id}", headers=h.auth(ACME, "member"))
    assert r.status_code == 200, r.text
    recording: dict[str, object] = r.json()["recording"]
    return recording


async def test_retention_is_indefinite_by_default_and_admins_set_it(h: ApiHarness) -> None:
    member, admin = h.auth(ACME, "member"), h.auth(ACME, "admin")
    assert (await h.client.get("/api/v1/settings/retention", headers=member)).json() == {"days": None}
    r = await h.client.put("/api/v1/settings/retention", json={"days": 90}, headers=admin)
    assert (r.status_code, r.json()) == (200, {"days": 90})
    assert (
        await h.client.put("/api/v1/settings/retention", json={"days": 1}, headers=member)
    ).status_code == 403
    r = await h.client.put("/api/v1/settings/retention", json={"days": 90.0}, headers=admin)
    assert r.json() == {"days": 90}  # JSON has one kind of number: 90.0 is a whole number of days
    for bad in ({"days": 0}, {"days": 3651}, {"days": "90"}, {"days": 1.5}, {}, {"days": 9, "x": 1}):
        r = await h.client.put("/api/v1/settings/retention", json=bad, headers=admin)
        assert r.status_code == 400 and error_code(r) == "invalid_request", (bad, r.text)
    assert (await h.client.get("/api/v1/settings/retention", headers=member)).json() == {"days": 90}
    assert (await h.client.get("/api/v1/settings/retention", headers=h.auth(GLOBEX))).json() == {"days": None}
    r = await h.client.put("/api/v1/settings/retention", json={"days": None}, headers=admin)
    assert r.json() == {"days": None}
    log = (await h.client.get("/api/v1/audit-log", headers=admin)).json()["items"]
    assert [(e["action"], e["actor"]) for e in log if e["action"] == "set_retention"] == [
        ("set_retention", f"admin@{ACME}"),
        ("set_retention", f"admin@{ACME}"),
    ]


async def test_an_admin_places_and_releases_a_legal_hold_and_the_call_shows_it(h: ApiHarness) -> None:
    call_id = await h.archived_call(ACME_NUMBER)
    other = await h.archived_call(GLOBEX_NUMBER)
    admin, path = h.auth(ACME, "admin"), f"/api/v1/calls/{call_id}/legal-hold"
    for bad in (
        {"held": True, "reason": "  "},
        {"held": True},
        {"reason": "x"},
        {"held": "yes", "reason": "x"},
    ):
        r = await h.client.put(path, json=bad, headers=admin)
        assert r.status_code == 400, (bad, r.text)
    assert (
        await h.client.put(path, json={"held": True, "reason": "x"}, headers=h.auth(ACME, "member"))
    ).status_code == 403
    r = await h.client.put(
        f"/api/v1/calls/{other}/legal-hold", json={"held": True, "reason": "x"}, headers=admin
    )
    assert r.status_code == 404 and error_code(r) == "not_found"

    r = await h.client.put(path, json={"held": True, "reason": "Dispute 2026-117"}, headers=admin)
    assert r.status_code == 200
    hold = r.json()
    assert (hold["held"], hold["reason"], hold["held_by"]) == (True, "Dispute 2026-117", f"admin@{ACME}")
    call = (await h.client.get(f"/api/v1/calls/{call_id}", headers=h.auth(ACME, "member"))).json()
    assert call["legal_hold"] == hold
    await h.client.post(
        "/dashboard/session", content=urlencode({"token": h.token(ACME, "member")}), headers=FORM
    )
    assert "Dispute 2026-117" in (await h.client.get(f"/dashboard/calls/{call_id}")).text

    r = await h.client.put(path, json={"held": False, "reason": ""}, headers=admin)
    assert r.json() == {"held": False, "reason": None, "held_by": None, "held_at": None}
    actions = [e["action"] for e in (await h.client.get("/api/v1/audit-log", headers=admin)).json()["items"]]
    assert "place_legal_hold" in actions and "release_legal_hold" in actions


async def test_a_purged_recording_is_explained_and_its_playback_refused_everywhere(
    h: ApiHarness, database_url: str
) -> None:
    call_id = await h.archived_call(ACME_NUMBER)
    kept = await h.archived_call(ACME_NUMBER)
    await age(database_url, call_id, 40)
    async with h.services.reader() as uow:
        recording = await uow.recordings.get_for_call(call_id)
    assert recording is not None and recording.audio is not None
    key = recording.audio.storage_key
    assert await h.services.store.verify(key) is not None
    await h.client.put("/api/v1/settings/retention", json={"days": 30}, headers=h.auth(ACME, "admin"))

    report = await RetentionPurger(h.services).purge()
    await h.relay.drain()

    assert report.purged == 1
    assert await h.services.store.verify(key) is None
    purged = await recording_of(h, call_id)
    assert (purged["status"], purged["reason"], purged["playback_url"]) == ("purged", "retention", None)
    assert purged["purged_at"] is not None and (await recording_of(h, kept))["status"] == "available"
    listed = await h.client.get("/api/v1/calls?recording=purged", headers=h.auth(ACME, "member"))
    assert [c["id"] for c in listed.json()["items"]] == [call_id]
    for path in (f"/api/v1/calls/{call_id}/recording", f"/api/v1/calls/{call_id}/recording?download=true"):
        r = await h.client.get(path, headers=h.auth(ACME, "member"))
        assert r.status_code == 410 and error_code(r) == "recording_purged" and "location" not in r.headers
        assert "retention policy" in r.json()["error"]["message"]
    ops = {"Authorization": f"Bearer {h.token('ops', 'ops_admin', 'ops@platform')}"}
    r = await h.client.get(f"/api/v1/admin/calls/{call_id}/recording?reason=ticket+9", headers=ops)
    assert r.status_code == 410

    await h.client.post(
        "/dashboard/session", content=urlencode({"token": h.token(ACME, "member")}), headers=FORM
    )
    page = await h.client.get(f"/dashboard/calls/{call_id}")
    assert "retention policy" in page.text and "Deleted on" in page.text and 'id="player"' not in page.text
    assert "Deleted" in (await h.client.get("/dashboard/calls")).text
    audio = await h.client.get(f"/dashboard/calls/{call_id}/audio?download=true")
    assert (
        audio.status_code == 410
        and "retention policy" in audio.text
        and "text/html" in audio.headers["content-type"]
    )


async def test_the_settings_page_shows_and_sets_the_retention(h: ApiHarness) -> None:
    for role in ("member", "admin"):
        await h.client.post(
            "/dashboard/session", content=urlencode({"token": h.token(ACME, role)}), headers=FORM
        )
        page = await h.client.get("/dashboard/settings")
        assert "indefinitely" in page.text and ('id="save-retention"' in page.text) == (role == "admin")
    r = await h.client.post("/dashboard/settings/retention", content=urlencode({"days": "365"}), headers=FORM)
    assert r.status_code == 303
    assert "365 days" in (await h.client.get("/dashboard/settings")).text
    r = await h.client.post(
        "/dashboard/settings/retention", content=urlencode({"days": "forever"}), headers=FORM
    )
    assert r.status_code == 400
    await h.client.post("/dashboard/settings/retention", content=urlencode({"days": ""}), headers=FORM)
    r = await h.client.get("/api/v1/settings/retention", headers=h.auth(ACME, "member"))
    assert r.json() == {"days": None}


async def test_callrec_purge_runs_one_pass_and_the_audit_chain_records_every_deletion(
    h: ApiHarness,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = [await h.archived_call(ACME_NUMBER) for _ in range(2)]
    held = await h.archived_call(ACME_NUMBER)
    for call_id in (*old, held):
        await age(database_url, call_id, 8)
    admin = h.auth(ACME, "admin")
    await h.client.put(
        f"/api/v1/calls/{held}/legal-hold", json={"held": True, "reason": "court"}, headers=admin
    )
    await h.client.put("/api/v1/settings/retention", json={"days": 7}, headers=admin)
    monkeypatch.setenv("CALLREC_DATABASE_URL", database_url)
    monkeypatch.setenv("CALLREC_VAR_DIR", str(tmp_path / "var"))  # the harness's: same files, same secrets

    assert await asyncio.to_thread(callrec, ["purge", "--drain-s", "10"]) == 0
    assert (
        "1 organizations with a retention policy; purged 2 recordings; 0 calls failed"
        in capsys.readouterr().out
    )
    assert await asyncio.to_thread(callrec, ["purge", "--drain-s", "0"]) == 0
    assert "purged 0 recordings" in capsys.readouterr().out

    for call_id in old:
        recording = await recording_of(h, call_id)
        assert recording["status"] == "purged"
    assert (await recording_of(h, held))["status"] == "available"
    async with h.services.reader() as uow:
        gone = [await uow.recordings.get_for_call(c) for c in old]
    assert all(r is not None and r.audio_deleted_at is not None for r in gone)
    log = (await h.client.get("/api/v1/audit-log?limit=200", headers=admin)).json()["items"]
    purges = [e for e in log if e["action"] == "purge_recording"]
    assert sorted(e["call_id"] for e in purges) == sorted(old)
    assert {(e["actor_role"], e["outcome"]) for e in purges} == {("system", "succeeded")}
    assert await asyncio.to_thread(callrec, ["audit", "verify"]) == 0
    assert "intact" in capsys.readouterr().out


async def test_an_admin_places_and_releases_a_legal_hold_from_the_call_page(h: ApiHarness) -> None:
    call_id = await h.archived_call(ACME_NUMBER)
    other = await h.archived_call(GLOBEX_NUMBER)
    path = f"/dashboard/calls/{call_id}/legal-hold"

    async def session(role: str) -> None:
        token = urlencode({"token": h.token(ACME, role)})
        assert (await h.client.post("/dashboard/session", content=token, headers=FORM)).status_code == 303

    async def hold() -> object:
        r = await h.client.get(f"/api/v1/calls/{call_id}", headers=h.auth(ACME, "member"))
        return r.json()["legal_hold"]["held"]

    await session("member")
    page = (await h.client.get(f"/dashboard/calls/{call_id}")).text
    assert 'id="place-hold"' not in page  # members see a hold, never the form
    form = urlencode({"held": "true", "reason": "Dispute 7"})
    assert (await h.client.post(path, content=form, headers=FORM)).status_code == 403
    await session("admin")
    assert 'id="place-hold"' in (await h.client.get(f"/dashboard/calls/{call_id}")).text
    cross_site = FORM | {"Origin": "https://evil.example"}
    assert (await h.client.post(path, content=form, headers=cross_site)).status_code == 403
    blank = urlencode({"held": "true", "reason": "  "})
    assert (await h.client.post(path, content=blank, headers=FORM)).status_code == 400
    foreign = f"/dashboard/calls/{other}/legal-hold"
    assert (await h.client.post(foreign, content=form, headers=FORM)).status_code == 404
    assert await hold() is False  # nothing above changed anything

    r = await h.client.post(path, content=form, headers=FORM)
    assert r.status_code == 303 and r.headers["location"] == f"/dashboard/calls/{call_id}#legal-hold"
    page = (await h.client.get(f"/dashboard/calls/{call_id}")).text
    assert await hold() is True and "Dispute 7" in page and 'id="release-hold"' in page
    release = urlencode({"held": "false"})
    assert (await h.client.post(path, content=release, headers=FORM)).status_code == 303
    assert await hold() is False
    actions = [
        e["action"]
        for e in (await h.client.get("/api/v1/audit-log", headers=h.auth(ACME, "admin"))).json()["items"]
    ]
    assert actions.count("place_legal_hold") == 1 and actions.count("release_legal_hold") == 1
