"""Erasure requests and the filtered-call setting over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.app import ApiHarness, api_harness, error_code

ACME, GLOBEX = "acme", "globex"
ACME_NUMBER, GLOBEX_NUMBER = "+15550000001", "+15550000002"
CALLER = "+15550001111"  # every call of the harness comes from it


@pytest.fixture
async def harness(tmp_path: Path, database_url: str) -> AsyncIterator[ApiHarness]:
    async with api_harness(tmp_path, database_url) as h:
        await h.org(ACME, ACME_NUMBER)
        await h.org(GLOBEX, GLOBEX_NUMBER)
        yield h


async def test_an_erasure_request_is_accepted_then_redacts_the_callers_calls_of_the_org_only(
    harness: ApiHarness,
) -> None:
    h = harness
    acme_call = await h.archived_call(ACME_NUMBER)
    globex_call = await h.archived_call(GLOBEX_NUMBER)

    accepted = await h.client.post(
        "/api/v1/erasure-requests",
        json={"caller_number": CALLER, "reason": "caller asked by email"},
        headers=h.auth(ACME),
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "pending"
    request_id = accepted.json()["id"]
    await h.relay.drain()

    body = (await h.client.get(f"/api/v1/erasure-requests/{request_id}", headers=h.auth(ACME))).json()
    assert body["status"] == "completed"
    assert body["caller_number"] == f"redacted:{request_id}"
    assert body["erased_calls"] == [acme_call] and body["calls_erased"] == 1
    assert body["held_calls"] == []
    assert CALLER not in str(body)
    acme = (await h.client.get(f"/api/v1/calls/{acme_call}", headers=h.auth(ACME))).json()
    assert acme["from"] == f"redacted:{request_id}"
    globex = (await h.client.get(f"/api/v1/calls/{globex_call}", headers=h.auth(GLOBEX))).json()
    assert globex["from"] == CALLER
    foreign = await h.client.get(f"/api/v1/erasure-requests/{request_id}", headers=h.auth(GLOBEX))
    assert foreign.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"caller_number": "5550001111", "reason": "x"},
        {"caller_number": CALLER},
        {"caller_number": CALLER, "reason": ""},
        {"caller_number": CALLER, "reason": "x", "org_id": GLOBEX},
    ],
)
async def test_a_bad_erasure_request_is_a_400_and_erases_nothing(
    harness: ApiHarness, body: dict[str, object]
) -> None:
    h = harness
    call_id = await h.archived_call(ACME_NUMBER)
    response = await h.client.post("/api/v1/erasure-requests", json=body, headers=h.auth(ACME))
    assert response.status_code == 400, response.text
    error_code(response)
    await h.relay.drain()
    assert (await h.client.get(f"/api/v1/calls/{call_id}", headers=h.auth(ACME))).json()["from"] == CALLER


async def test_keep_non_engagement_defaults_to_true_and_is_set_beside_the_toggle(harness: ApiHarness) -> None:
    h = harness
    url = "/api/v1/settings/call-recording"
    assert (await h.client.get(url, headers=h.auth(ACME))).json()["keep_non_engagement"] is True

    changed = await h.client.put(
        url, json={"enabled": True, "keep_non_engagement": False}, headers=h.auth(ACME)
    )
    assert changed.status_code == 200 and changed.json()["keep_non_engagement"] is False
    # The body of before keeps working, and leaves the policy as it is.
    toggled = await h.client.put(url, json={"enabled": False}, headers=h.auth(ACME))
    assert toggled.json() == {**toggled.json(), "enabled": False, "keep_non_engagement": False}
    assert (await h.client.get(url, headers=h.auth(GLOBEX))).json()["keep_non_engagement"] is True
    bad = await h.client.put(url, json={"enabled": True, "keep_non_engagement": "no"}, headers=h.auth(ACME))
    assert bad.status_code == 400

    log = (await h.client.get("/api/v1/audit-log", headers=h.auth(ACME))).json()["items"]
    assert "delete_filtered_recordings" in [e["action"] for e in log]


async def test_the_settings_pages_checkbox_sets_the_policy_for_admins_of_this_site_only(
    harness: ApiHarness,
) -> None:
    h = harness
    origin = {"Origin": "http://testserver.local"}
    url = "/api/v1/settings/call-recording"
    await h.client.post("/dashboard/session", data={"token": h.token(ACME, "member")}, headers=origin)
    as_member = await h.client.post("/dashboard/settings/non-engagement", data={}, headers=origin)
    assert as_member.status_code == 403
    await h.client.post("/dashboard/session", data={"token": h.token(ACME, "admin")}, headers=origin)
    page = (await h.client.get("/dashboard/settings")).text
    assert (
        'id="keep-non-engagement"' in page
        and "checked" in page.partition('id="keep-non-engagement"')[2][:120]
    )
    cross_site = await h.client.post(
        "/dashboard/settings/non-engagement", data={}, headers={"Origin": "https://evil.example"}
    )
    assert cross_site.status_code == 403
    assert (await h.client.get(url, headers=h.auth(ACME))).json()["keep_non_engagement"] is True

    form = {**origin, "Content-Type": "application/x-www-form-urlencoded"}
    unchecked = await h.client.post(
        "/dashboard/settings/non-engagement", content=b"", headers=form
    )  # as browsers

    assert unchecked.status_code == 303
    assert (await h.client.get(url, headers=h.auth(ACME))).json()["keep_non_engagement"] is False
    assert "deleted once the call settles" in (await h.client.get("/dashboard/settings")).text
    checked = await h.client.post(
        "/dashboard/settings/non-engagement", data={"keep_non_engagement": "true"}, headers=origin
    )
    assert checked.status_code == 303
    assert (await h.client.get(url, headers=h.auth(ACME))).json()["keep_non_engagement"] is True
