"""``PUT /api/v1/settings/call-recording/numbers/{number}`` and the numbers in the settings' ``GET``:
who may change a number's setting, what a bad request changes (nothing), and what Twilio's next call
on the number is told."""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from twilio.request_validator import RequestValidator

from domain.model import DISCLOSURE_TEXT
from tests.support.app import ApiHarness, api_harness, error_code, sqlite_api_harness

ACME, GLOBEX = "acme", "globex"
ACME_NUMBER, GLOBEX_NUMBER = "+15550000001", "+15550000002"
SETTINGS = "/api/v1/settings/call-recording"
ORIGIN = "http://testserver.local"


def number_path(number: str) -> str:
    return f"{SETTINGS}/numbers/{number.replace('+', '%2B')}"


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[ApiHarness]:
    async with sqlite_api_harness(tmp_path) as h:
        await h.org(ACME, ACME_NUMBER)
        await h.org(GLOBEX, GLOBEX_NUMBER)
        yield h


async def settings_of(h: ApiHarness, org_id: str) -> Any:
    r = await h.client.get(SETTINGS, headers=h.auth(org_id, "member"))
    assert r.status_code == 200, r.text
    return r.json()


async def audit_actions(h: ApiHarness, org_id: str) -> list[tuple[str, str | None]]:
    r = await h.client.get("/api/v1/audit-log", headers=h.auth(org_id, "admin"))
    assert r.status_code == 200, r.text
    return [(e["action"], e["target_id"]) for e in r.json()["items"]]


async def twiml_params(h: ApiHarness, to: str) -> dict[str, str]:
    """What Twilio is told when a call reaches ``to``: the stream's parameters."""
    form = {"CallSid": "CA" + secrets.token_hex(16), "AccountSid": "AC1", "From": "+15557654321", "To": to}
    signature = RequestValidator(h.settings.twilio_auth_token).compute_signature(
        h.settings.public_url + "/twilio/voice", form
    )
    r = await h.client.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": signature})
    assert r.status_code == 200, r.text
    stream = ET.fromstring(r.text).find("./Connect/Stream")
    assert stream is not None, r.text
    return {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


async def test_an_admin_sets_a_number_and_everyone_in_the_org_sees_it(harness: ApiHarness) -> None:
    h = harness
    before = await settings_of(h, ACME)
    assert before["numbers"] == [
        {"number": ACME_NUMBER, "mode": "inherit", "effective": True, "changed_by": None, "changed_at": None}
    ]
    assert (before["enabled"], before["changed_by"]) == (True, "setup")

    r = await h.client.put(number_path(ACME_NUMBER), json={"mode": "off"}, headers=h.auth(ACME, "admin"))

    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("number", "mode", "effective", "changed_by")} == {
        "number": ACME_NUMBER,
        "mode": "off",
        "effective": False,
        "changed_by": "admin@acme",
    }
    assert body["changed_at"].endswith("Z")
    after = await settings_of(h, ACME)
    assert after["numbers"] == [body] and after["enabled"] is True
    assert ("set_number_recording_off", ACME_NUMBER) in await audit_actions(h, ACME)
    assert (await settings_of(h, GLOBEX))["numbers"][0]["mode"] == "inherit"


async def test_a_literal_plus_in_the_path_works_too(harness: ApiHarness) -> None:
    h = harness
    r = await h.client.put(
        f"{SETTINGS}/numbers/{ACME_NUMBER}", json={"mode": "on"}, headers=h.auth(ACME, "admin")
    )
    assert r.status_code == 200, r.text
    assert (r.json()["number"], r.json()["mode"]) == (ACME_NUMBER, "on")


async def test_the_disclosure_in_the_twiml_follows_the_numbers_effective_setting(harness: ApiHarness) -> None:
    h = harness
    inheriting = await twiml_params(h, ACME_NUMBER)
    await h.client.put(number_path(ACME_NUMBER), json={"mode": "off"}, headers=h.auth(ACME, "admin"))
    off = await twiml_params(h, ACME_NUMBER)
    await h.client.put(SETTINGS, json={"enabled": False}, headers=h.auth(GLOBEX, "admin"))
    await h.client.put(number_path(GLOBEX_NUMBER), json={"mode": "on"}, headers=h.auth(GLOBEX, "admin"))
    on = await twiml_params(h, GLOBEX_NUMBER)

    assert (inheriting["recording"], inheriting["greeting"]) == ("on", f"{DISCLOSURE_TEXT} Hi, acme.")
    assert (off["recording"], off["greeting"]) == ("off", "Hi, acme.")
    assert (on["recording"], on["greeting"]) == ("on", f"{DISCLOSURE_TEXT} Hi, globex.")


@pytest.mark.parametrize(
    ("role", "number", "body", "status"),
    [
        ("member", ACME_NUMBER, {"mode": "off"}, 403),
        ("admin", GLOBEX_NUMBER, {"mode": "off"}, 404),  # another org's number
        ("admin", "+15550000099", {"mode": "off"}, 404),  # nobody's
        ("admin", "15550000001", {"mode": "off"}, 400),
        ("admin", "+1555000000x", {"mode": "off"}, 400),
        ("admin", "+0555000000", {"mode": "off"}, 400),
        ("admin", ACME_NUMBER, {"mode": "sometimes"}, 400),
        ("admin", ACME_NUMBER, {"mode": "off", "extra": 1}, 400),
        ("admin", ACME_NUMBER, {}, 400),
        ("admin", ACME_NUMBER, {"mode": None}, 400),
    ],
)
async def test_a_refused_change_answers_why_and_changes_nothing(
    harness: ApiHarness, role: str, number: str, body: dict[str, object], status: int
) -> None:
    h = harness
    before = [await settings_of(h, org) for org in (ACME, GLOBEX)]
    audit_before = await audit_actions(h, ACME)

    r = await h.client.put(number_path(number), json=body, headers=h.auth(ACME, role))

    assert r.status_code == status, r.text
    assert error_code(r)
    assert [await settings_of(h, org) for org in (ACME, GLOBEX)] == before
    assert await audit_actions(h, ACME) == audit_before


async def test_a_body_that_is_not_json_is_a_400(harness: ApiHarness) -> None:
    h = harness
    r = await h.client.put(
        number_path(ACME_NUMBER),
        content=b"{mode: off",
        headers={**h.auth(ACME, "admin"), "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and error_code(r)
    assert (await settings_of(h, ACME))["numbers"][0]["mode"] == "inherit"


async def test_a_number_setting_survives_the_database_and_leaves_with_its_number(
    tmp_path: Path, database_url: str
) -> None:
    async with api_harness(tmp_path, database_url) as h:
        await h.org(ACME, ACME_NUMBER)
        r = await h.client.put(number_path(ACME_NUMBER), json={"mode": "off"}, headers=h.auth(ACME, "admin"))
        assert r.status_code == 200, r.text
        assert (await settings_of(h, ACME))["numbers"][0]["mode"] == "off"

        for numbers in ([GLOBEX_NUMBER], [ACME_NUMBER, GLOBEX_NUMBER]):
            put = await h.client.put(
                f"/internal/v1/organizations/{ACME}",
                json={"name": "Acme", "phone_numbers": numbers, "greeting": "Hi, acme."},
                headers=h.service_auth,
            )
            assert put.status_code == 200, put.text

        assert [
            (n["number"], n["mode"], n["effective"]) for n in (await settings_of(h, ACME))["numbers"]
        ] == [
            (ACME_NUMBER, "inherit", True),
            (GLOBEX_NUMBER, "inherit", True),
        ]


async def sign_in(h: ApiHarness, role: str) -> None:
    r = await h.client.post(
        "/dashboard/session", data={"token": h.token(ACME, role)}, headers={"Origin": ORIGIN}
    )
    assert r.status_code == 303, r.text


async def test_the_settings_page_lets_admins_set_a_number_and_shows_who_did_it(harness: ApiHarness) -> None:
    h = harness
    await sign_in(h, "admin")
    page = (await h.client.get("/dashboard/settings")).text
    assert "A change applies from the next call" in page
    assert f"<legend>{ACME_NUMBER}</legend>" in page and "Never changed." in page

    r = await h.client.post(
        "/dashboard/settings/numbers", data={"number": ACME_NUMBER, "mode": "off"}, headers={"Origin": ORIGIN}
    )

    assert r.status_code == 303 and r.headers["location"] == f"/dashboard/settings#number-{ACME_NUMBER[1:]}"
    page = (await h.client.get("/dashboard/settings")).text
    assert f'id="mode-{ACME_NUMBER[1:]}-off" checked' in page
    assert "Last changed by admin@acme on <time" in page
    assert (await settings_of(h, ACME))["numbers"][0]["mode"] == "off"
    assert ("set_number_recording_off", ACME_NUMBER) in await audit_actions(h, ACME)


@pytest.mark.parametrize(
    ("role", "form", "origin", "status"),
    [
        ("member", {"number": ACME_NUMBER, "mode": "off"}, ORIGIN, 403),
        ("admin", {"number": ACME_NUMBER, "mode": "off"}, "https://evil.example", 403),
        ("admin", {"number": ACME_NUMBER, "mode": "off"}, None, 403),
        ("admin", {"number": GLOBEX_NUMBER, "mode": "off"}, ORIGIN, 404),
        ("admin", {"number": ACME_NUMBER, "mode": "sometimes"}, ORIGIN, 400),
        ("admin", {"number": "555-0001", "mode": "off"}, ORIGIN, 400),
        ("admin", {"mode": "off"}, ORIGIN, 400),
    ],
)
async def test_the_settings_page_refuses_what_it_must_and_changes_nothing(
    harness: ApiHarness, role: str, form: dict[str, str], origin: str | None, status: int
) -> None:
    h = harness
    await sign_in(h, role)
    before = [await settings_of(h, org) for org in (ACME, GLOBEX)]

    r = await h.client.post(
        "/dashboard/settings/numbers", data=form, headers={"Origin": origin} if origin else {}
    )

    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html") and "<h1>" in r.text
    assert [await settings_of(h, org) for org in (ACME, GLOBEX)] == before


async def test_members_see_each_number_read_only(harness: ApiHarness) -> None:
    h = harness
    await h.client.put(number_path(ACME_NUMBER), json={"mode": "off"}, headers=h.auth(ACME, "admin"))
    await sign_in(h, "member")

    page = (await h.client.get("/dashboard/settings")).text

    assert "Only admins can change these settings." in page
    assert "<form" not in page.replace('<form method="post" action="/dashboard/sign-out"', "")
    assert "Never record" in page and '<strong class="effective">not recorded</strong>' in page
