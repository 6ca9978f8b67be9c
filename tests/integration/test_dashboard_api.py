"""The dashboard API over HTTP on a real database: authentication, isolation, errors, pagination."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis
import jwt
import pytest
from hypothesis import strategies as st

from application import commands
from application.ports import CallQuery
from application.views import recording_view
from domain.model import CallKind, ProviderRecordingStatus
from entrypoints.http.cursors import CURSOR_PATTERN, MAX_CURSOR_LENGTH, decode_keyset, encode_keyset
from tests.support.app import ApiHarness, api_harness, error_code, sqlite_api_harness

ACME, GLOBEX = "acme", "globex"
ACME_NUMBER, GLOBEX_NUMBER = "+15550000001", "+15550000002"


@pytest.fixture
async def harness(tmp_path: Path, database_url: str) -> AsyncIterator[ApiHarness]:
    async with api_harness(tmp_path, database_url) as h:
        await h.org(ACME, ACME_NUMBER)
        await h.org(GLOBEX, GLOBEX_NUMBER)
        yield h


@pytest.fixture
async def sqlite_harness(tmp_path: Path) -> AsyncIterator[ApiHarness]:
    async with sqlite_api_harness(tmp_path) as h:
        await h.org(ACME, ACME_NUMBER)
        await h.org(GLOBEX, GLOBEX_NUMBER)
        yield h


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sub": "jane",
        "org_id": ACME,
        "role": "admin",
        "iat": int(time.time()) - 5,
        "exp": int(time.time()) + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(
            lambda secret: jwt.encode(claims(exp=int(time.time()) - 5), secret, "HS256"), id="expired"
        ),
        pytest.param(
            lambda secret: jwt.encode(claims(), "another-secret-of-32-bytes-length!", "HS256"), id="wrong-key"
        ),
        pytest.param(lambda secret: jwt.encode(claims(), "", algorithm="none"), id="alg-none"),
        pytest.param(lambda secret: jwt.encode(claims(), secret, "HS512"), id="other-alg"),
        pytest.param(lambda secret: jwt.encode(claims(exp=None), secret, "HS256"), id="no-exp"),
        pytest.param(lambda secret: jwt.encode(claims(org_id=None), secret, "HS256"), id="no-org"),
        pytest.param(lambda secret: jwt.encode(claims(role="root"), secret, "HS256"), id="unknown-role"),
        pytest.param(lambda secret: jwt.encode(claims(sub=None), secret, "HS256"), id="no-sub"),
        pytest.param(lambda secret: jwt.encode(claims(sub=""), secret, "HS256"), id="empty-sub"),
        pytest.param(lambda secret: jwt.encode(claims(sub="x" * 201), secret, "HS256"), id="long-sub"),
        pytest.param(lambda secret: jwt.encode(claims(org_id=""), secret, "HS256"), id="empty-org"),
        pytest.param(lambda secret: jwt.encode(claims(org_id=7), secret, "HS256"), id="numeric-org"),
        pytest.param(lambda secret: jwt.encode(claims(org_id="acme\n"), secret, "HS256"), id="org-newline"),
        pytest.param(lambda secret: jwt.encode(claims(org_id="-acme"), secret, "HS256"), id="org-dash-first"),
        pytest.param(lambda secret: jwt.encode(claims(org_id="ac me"), secret, "HS256"), id="org-space"),
        pytest.param(lambda secret: jwt.encode(claims(org_id="a" * 65), secret, "HS256"), id="org-too-long"),
        pytest.param(
            lambda secret: jwt.encode(claims(iat=int(time.time()) + 3600), secret, "HS256"), id="future-iat"
        ),
        pytest.param(lambda secret: jwt.encode(claims(iat="yesterday"), secret, "HS256"), id="text-iat"),
        pytest.param(lambda secret: "not.a.jwt", id="garbage"),
    ],
)
async def test_a_bad_token_is_a_401_in_the_error_shape(
    sqlite_harness: ApiHarness, make_token: object
) -> None:
    token = make_token(sqlite_harness.settings.jwt_secret)  # type: ignore[operator]
    response = await sqlite_harness.client.get("/api/v1/calls", headers=bearer(token))
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"


@pytest.mark.parametrize("iat", [pytest.param(None, id="no-iat"), pytest.param(-60, id="past-iat")])
async def test_a_token_with_the_contract_claims_is_accepted_with_or_without_iat(
    sqlite_harness: ApiHarness, iat: int | None
) -> None:
    """The contract's claims are sub, org_id, role and exp; iat is optional (RFC 7519)."""
    issued = None if iat is None else int(time.time()) + iat
    token = jwt.encode(claims(iat=issued), sqlite_harness.settings.jwt_secret, "HS256")
    response = await sqlite_harness.client.get("/api/v1/calls", headers=bearer(token))
    assert response.status_code == 200, response.text


async def test_a_dashboard_session_starts_from_a_token_without_iat(sqlite_harness: ApiHarness) -> None:
    h = sqlite_harness
    token = jwt.encode(claims(iat=None), h.settings.jwt_secret, "HS256")
    started = await h.client.post(
        "/dashboard/session", data={"token": token}, headers={"Origin": "http://testserver.local"}
    )
    assert started.status_code == 303 and started.headers["location"] == "/dashboard/calls"
    page = await h.client.get("/dashboard/calls")
    assert page.status_code == 200


@pytest.mark.parametrize("scheme", ["Basic", "Token", "JWT", ""])
async def test_only_the_bearer_scheme_carries_a_dashboard_token(
    sqlite_harness: ApiHarness, scheme: str
) -> None:
    token = sqlite_harness.token(ACME, "admin")
    header = f"{scheme} {token}" if scheme else token
    response = await sqlite_harness.client.get("/api/v1/calls", headers={"Authorization": header})
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_the_bearer_scheme_is_case_insensitive(sqlite_harness: ApiHarness) -> None:
    token = sqlite_harness.token(ACME, "admin")
    response = await sqlite_harness.client.get("/api/v1/calls", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200, response.text


async def test_the_service_token_cannot_use_the_dashboard_api_nor_a_jwt_the_internal_one(
    sqlite_harness: ApiHarness,
) -> None:
    h = sqlite_harness
    assert (await h.client.get("/api/v1/calls", headers=h.service_auth)).status_code == 401
    body = {"name": "x", "phone_numbers": ["+15550009999"], "greeting": "hi"}
    for role in ("member", "admin", "ops_admin"):
        r = await h.client.put("/internal/v1/organizations/x", json=body, headers=h.auth(ACME, role))
        assert r.status_code == 401


# --- tenant isolation ---------------------------------------------------------------------------


async def test_lists_hold_only_the_callers_own_calls(harness: ApiHarness) -> None:
    own = {await harness.archived_call(ACME_NUMBER), await harness.unrecorded_call(ACME_NUMBER)}
    theirs = await harness.archived_call(GLOBEX_NUMBER)
    response = await harness.client.get("/api/v1/calls", headers=harness.auth(ACME, "member"))
    assert {c["id"] for c in response.json()["items"]} == own
    for suffix in ("", "/recording", "/recording?download=true"):
        r = await harness.client.get(f"/api/v1/calls/{theirs}{suffix}", headers=harness.auth(ACME, "admin"))
        assert r.status_code == 404 and "location" not in r.headers
        assert error_code(r) == "not_found"


async def test_a_foreign_call_and_a_missing_call_answer_identically(harness: ApiHarness) -> None:
    theirs = await harness.archived_call(GLOBEX_NUMBER)
    foreign = await harness.client.get(f"/api/v1/calls/{theirs}", headers=harness.auth(ACME))
    missing = await harness.client.get("/api/v1/calls/" + "0" * 36, headers=harness.auth(ACME))
    assert (foreign.status_code, foreign.json()) == (missing.status_code, missing.json())


async def test_call_ids_are_unguessable(harness: ApiHarness) -> None:
    ids = [await harness.unrecorded_call(ACME_NUMBER) for _ in range(3)]
    for call_id in ids:
        assert len(call_id) == 36 and call_id[14] == "4"  # random UUIDs, not sequence numbers


# --- the call list ------------------------------------------------------------------------------


async def test_the_recording_filter_matches_what_each_call_says(harness: ApiHarness) -> None:
    archived = await harness.archived_call(ACME_NUMBER)
    await harness.bus.handle(commands.SetCallRecording(ACME, False, "x"))
    off = await harness.unrecorded_call(ACME_NUMBER)
    await harness.bus.handle(commands.SetCallRecording(ACME, True, "x"))
    ringing = await harness.unrecorded_call(ACME_NUMBER)  # recorded, not answered yet: processing
    expected = {"available": {archived}, "not_recorded": {off}, "processing": {ringing}, "failed": set()}
    for status, ids in expected.items():
        r = await harness.client.get(
            f"/api/v1/calls?recording={status}", headers=harness.auth(ACME, "member")
        )
        assert r.status_code == 200, r.text
        assert {c["id"] for c in r.json()["items"]} == ids, status
        assert all(c["recording"]["status"] == status for c in r.json()["items"])
    # and the SQL filter agrees with the view for every call the org has
    async with harness.services.uow() as uow:
        calls = await uow.calls.page(CallQuery(org_id=ACME, kinds=(CallKind.CUSTOMER,), limit=100))
        recordings = await uow.recordings.get_for_calls([c.id for c in calls])
    assert {c.id: recording_view(c, recordings.get(c.id)).status for c in calls} == {
        archived: "available",
        off: "not_recorded",
        ringing: "processing",
    }


async def test_date_filters_select_whole_utc_days(sqlite_harness: ApiHarness) -> None:
    h = sqlite_harness
    call_id = await h.unrecorded_call(ACME_NUMBER)
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)

    async def ids(query: str) -> set[str]:
        r = await h.client.get(f"/api/v1/calls?{query}", headers=h.auth(ACME, "member"))
        assert r.status_code == 200, r.text
        return {c["id"] for c in r.json()["items"]}

    assert await ids(f"from={today}&to={today}") == {call_id}
    assert await ids(f"to={yesterday}") == set()
    assert await ids(f"from={today + timedelta(days=1)}") == set()
    bad = await h.client.get(f"/api/v1/calls?from={today}&to={yesterday}", headers=h.auth(ACME))
    assert bad.status_code == 400 and "to" in bad.json()["error"]["message"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=ten",
        "cursor=%%%",
        "cursor=bm90LWpzb24",
        "from=yesterday",
        "recording=gone",
    ],
)
async def test_bad_list_parameters_are_a_400_naming_the_parameter(
    sqlite_harness: ApiHarness, query: str
) -> None:
    r = await sqlite_harness.client.get(f"/api/v1/calls?{query}", headers=sqlite_harness.auth(ACME, "member"))
    assert r.status_code == 400, r.text
    error_code(r)
    assert query.split("=")[0] in r.json()["error"]["message"]


# --- bodies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"enabled": tru', None),
        (b'{"enabled": "yes"}', "enabled"),
        (b'{"enabled": 0}', "enabled"),
        (b'{"enabled": 1}', "enabled"),
        (b'{"enabled": "false"}', "enabled"),
        (b'{"enabled": null}', "enabled"),
        (b'{"enabled": true, "mode": "all"}', "mode"),
        (b"{}", "enabled"),
        (b"[]", None),
    ],
)
async def test_a_rejected_body_is_a_400_and_changes_nothing(
    sqlite_harness: ApiHarness, body: bytes, named: str | None
) -> None:
    h = sqlite_harness
    r = await h.client.put(
        "/api/v1/settings/call-recording",
        content=body,
        headers={**h.auth(ACME), "content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    error_code(r)
    if named:
        assert named in r.json()["error"]["message"]
    setting = await h.client.get("/api/v1/settings/call-recording", headers=h.auth(ACME))
    assert setting.json()["enabled"] is True


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/internal/v1/organizations/acme", {"name": "Acme", "phone_numbers": [1], "greeting": ""}, "phone"),
        ("/internal/v1/organizations/acme", {"name": 5, "phone_numbers": [], "greeting": ""}, "name"),
        ("/internal/v1/calls/{call_id}/scorability", {"scorable": 0}, "scorable"),
        ("/internal/v1/calls/{call_id}/scorability", {"scorable": "false"}, "scorable"),
    ],
)
async def test_internal_bodies_take_json_types_only(
    sqlite_harness: ApiHarness, path: str, body: dict[str, object], named: str
) -> None:
    """No coercion: a number or a string is not a boolean, a number is not a string."""
    h = sqlite_harness
    call_id = await h.archived_call(ACME_NUMBER)
    r = await h.client.request(
        "PUT" if "organizations" in path else "POST",
        path.format(call_id=call_id),
        json=body,
        headers=h.service_auth,
    )
    assert r.status_code == 400, r.text
    assert error_code(r) == "invalid_request"
    assert named in r.json()["error"]["message"]
    detail = await h.client.get(f"/api/v1/calls/{call_id}", headers=h.auth(ACME))
    assert detail.json()["non_engagement"] is False
    org = await h.client.get("/api/v1/settings/call-recording", headers=h.auth(ACME))
    assert org.status_code == 200


async def test_an_oversized_body_is_a_413_and_changes_nothing(sqlite_harness: ApiHarness) -> None:
    h = sqlite_harness
    huge = b'{"enabled": false, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = await h.client.put(
        "/api/v1/settings/call-recording",
        content=huge,
        headers={**h.auth(ACME), "content-type": "application/json"},
    )
    assert r.status_code == 413
    assert error_code(r) == "payload_too_large"
    setting = await h.client.get("/api/v1/settings/call-recording", headers=h.auth(ACME))
    assert setting.json()["enabled"] is True


async def test_a_member_cannot_change_the_toggle(sqlite_harness: ApiHarness) -> None:
    h = sqlite_harness
    r = await h.client.put(
        "/api/v1/settings/call-recording", json={"enabled": False}, headers=h.auth(ACME, "member")
    )
    assert r.status_code == 403
    assert (await h.client.get("/api/v1/settings/call-recording", headers=h.auth(ACME))).json()[
        "enabled"
    ] is True


# --- playback -----------------------------------------------------------------------------------


async def test_playback_redirects_to_a_short_lived_url_that_serves_ranges(sqlite_harness: ApiHarness) -> None:
    h = sqlite_harness
    audio = bytes(range(256)) * 100
    call_id = await h.archived_call(ACME_NUMBER, audio=audio)
    r = await h.client.get(f"/api/v1/calls/{call_id}/recording", headers=h.auth(ACME, "member"))
    assert r.status_code == 307 and r.headers["cache-control"] == "no-store"
    location = r.headers["location"]
    expires = int(location.split("expires=")[1].split("&")[0])
    assert 0 < expires - time.time() <= 15 * 60 + 5
    media = await h.client.get(location, headers={"Range": "bytes=10-19"})
    assert media.status_code == 206 and media.content == audio[10:20]
    download = await h.client.get(f"/api/v1/calls/{call_id}/recording?download=true", headers=h.auth(ACME))
    served = await h.client.get(download.headers["location"])
    disposition = served.headers["content-disposition"]
    assert (
        disposition.startswith("attachment") and "call-" in disposition and f"-{call_id}.mp3" in disposition
    )
    assert served.content == audio


async def test_the_call_detail_has_the_contract_fields(sqlite_harness: ApiHarness) -> None:
    h = sqlite_harness
    call_id = await h.archived_call(ACME_NUMBER)
    body = (await h.client.get(f"/api/v1/calls/{call_id}", headers=h.auth(ACME, "member"))).json()
    assert {
        "id",
        "from",
        "to",
        "status",
        "started_at",
        "answered_at",
        "ended_at",
        "duration_s",
        "recording",
    } <= set(body)
    assert set(body["recording"]) == {
        "status",
        "reason",
        "duration_s",
        "size_bytes",
        "content_type",
        "playback_url",
        "download_url",
        "purged_at",
    }
    assert body["recording"]["playback_url"] == f"/api/v1/calls/{call_id}/recording"


async def test_the_call_detail_says_what_became_of_every_other_recording_twilio_made_of_the_call(
    harness: ApiHarness,
) -> None:
    h = harness
    recorded = await h.archived_call(ACME_NUMBER, audio=b"ID3" + b"own" * 500)
    await h.bus.handle(commands.SetCallRecording(ACME, False, "x"))
    unrecorded = await h.unrecorded_call(ACME_NUMBER)
    for call_id, duration in ((recorded, 4), (unrecorded, 7)):
        async with h.services.uow() as uow:
            call = await uow.calls.get(call_id)
        assert call is not None
        other = h.telephony.add_recording(call.call_sid, status="completed", audio=b"ID3" + b"other" * 300)
        h.telephony.complete_recording(other, duration=duration)
        await h.bus.handle(
            commands.RecordRecordingStatus(
                call.call_sid, other, ProviderRecordingStatus.COMPLETED, duration_s=duration
            )
        )
        await h.relay.drain()
        assert h.telephony.is_deleted(other)

    detail = (await h.client.get(f"/api/v1/calls/{recorded}", headers=h.auth(ACME, "member"))).json()
    assert (detail["recording"]["status"], detail["recording"]["size_bytes"]) == ("available", 1503)
    assert detail["additional_recordings"] == [
        {
            "status": "archived",
            "reason": None,
            "duration_s": 4,
            "size_bytes": 1503,
            "content_type": "audio/mpeg",
        }
    ]
    detail = (await h.client.get(f"/api/v1/calls/{unrecorded}", headers=h.auth(ACME, "member"))).json()
    assert (detail["recording"]["status"], detail["recording"]["reason"]) == ("not_recorded", "recording_off")
    assert detail["additional_recordings"] == [
        {
            "status": "discarded",
            "reason": "recording_off",
            "duration_s": 7,
            "size_bytes": None,
            "content_type": None,
        }
    ]
    listed = (await h.client.get("/api/v1/calls?recording=available", headers=h.auth(ACME))).json()["items"]
    assert [c["id"] for c in listed] == [recorded]  # once, by its own recording
    assert listed[0]["recording"]["size_bytes"] == 1503


# --- OpenAPI ------------------------------------------------------------------------------------


async def test_the_openapi_document_lists_every_endpoint_with_its_errors(sqlite_harness: ApiHarness) -> None:
    doc = (await sqlite_harness.client.get("/schema/openapi.json")).json()
    paths = doc["paths"]
    for path, method in [
        ("/api/v1/settings/call-recording", "get"),
        ("/api/v1/settings/call-recording", "put"),
        ("/api/v1/calls", "get"),
        ("/api/v1/calls/{call_id}", "get"),
        ("/api/v1/calls/{call_id}/recording", "get"),
        ("/internal/v1/organizations/{org_id}", "put"),
        ("/internal/v1/calls/{call_id}/scorability", "post"),
        ("/internal/v1/calls/{call_id}/transfer", "post"),
    ]:
        operation = paths[path][method]
        assert operation.get("description") or operation.get("summary"), (path, method)
        assert "401" in operation["responses"], (path, method)
        assert "ErrorBody" in str(operation["responses"]["401"]), (path, method)
    detail = paths["/api/v1/calls/{call_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert detail["schema"]["$ref"].endswith("/CallDetailResponse")
    schemas = doc["components"]["schemas"]
    assert set(schemas["CallResponse"]["properties"]) < set(schemas["CallDetailResponse"]["properties"])
    extra = schemas["CallDetailResponse"]["properties"]["additional_recordings"]
    assert extra["type"] == "array" and extra["items"]["$ref"].endswith("/AdditionalRecordingResponse")
    assert set(schemas["AdditionalRecordingResponse"]["properties"]["status"]["enum"]) == {
        "processing",
        "archived",
        "discarded",
        "not_recorded",
        "failed",
        "purged",
    }


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


async def test_every_request_body_says_it_refuses_unknown_fields(sqlite_harness: ApiHarness) -> None:
    doc = (await sqlite_harness.client.get("/schema/openapi.json")).json()
    bodies = {
        f"{method.upper()} {path}": _resolve(doc, op["requestBody"]["content"]["application/json"]["schema"])
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict) and "requestBody" in op
    }
    assert len(bodies) >= 5, bodies
    for operation, schema in bodies.items():
        assert schema.get("additionalProperties") is False, operation


async def test_every_cursor_parameter_documents_the_format_the_server_takes(
    sqlite_harness: ApiHarness,
) -> None:
    h = sqlite_harness
    doc = (await h.client.get("/schema/openapi.json")).json()
    cursors = {
        f"{method.upper()} {path}": param["schema"]
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict)
        for param in op.get("parameters", [])
        if param["name"] == "cursor"
    }
    assert len(cursors) == 4, cursors
    for operation, schema in cursors.items():
        assert (schema["pattern"], schema["maxLength"]) == (CURSOR_PATTERN, MAX_CURSOR_LENGTH), operation
    for cursor in ("0.a", "9999999999999999." + "z" * 64, "1732800000000000.0f-_"):
        r = await h.client.get("/api/v1/calls", params={"cursor": cursor}, headers=h.auth(ACME))
        assert r.status_code == 200, (cursor, r.text)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(cursor=st.from_regex(CURSOR_PATTERN, fullmatch=True))
def test_every_string_of_the_cursor_pattern_names_a_position(cursor: str) -> None:
    at, item_id = decode_keyset(cursor)
    assert decode_keyset(encode_keyset(at, item_id)) == (at, item_id)


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(
    at=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
    item_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", fullmatch=True),
)
def test_a_cursor_round_trips_its_position_to_the_microsecond(at: datetime, item_id: str) -> None:
    cursor = encode_keyset(at, item_id)
    assert re.fullmatch(CURSOR_PATTERN, cursor)
    assert decode_keyset(cursor) == (at, item_id)


# --- the page shell -----------------------------------------------------------------------------

ORIGIN = "http://testserver.local"


async def sign_in(h: ApiHarness, role: str = "admin", **form: str) -> Any:
    data = {"token": h.token(ACME, role), **form}
    return await h.client.post("/dashboard/session", data=data, headers={"Origin": ORIGIN})


async def test_every_signed_in_page_is_laid_out_for_phones_titled_apart_and_marks_the_current_one(
    sqlite_harness: ApiHarness,
) -> None:
    h = sqlite_harness
    call_id = await h.archived_call(ACME_NUMBER)
    await sign_in(h)
    titles = set()
    for path, current in [
        ("/dashboard/calls", "/dashboard/calls"),
        ("/dashboard/settings", "/dashboard/settings"),
        ("/dashboard/audit-log", "/dashboard/audit-log"),
        (f"/dashboard/calls/{call_id}", None),
    ]:
        r = await h.client.get(path)
        assert r.status_code == 200, path
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in r.text, path
        assert '<form method="post" action="/dashboard/sign-out"' in r.text, path
        marked = re.findall(r'<a href="([^"]+)" aria-current="page">', r.text)
        assert marked == ([current] if current else []), path
        titles.add(re.findall(r"<title>(.*?)</title>", r.text)[0])
    assert len(titles) == 4, titles
    assert '<meta name="viewport"' in (await h.client.get("/dashboard/sign-in")).text


@pytest.mark.parametrize(
    "path", ["/dashboard/nope", "/dashboard/calls?cursor=not-a-cursor", "/dashboard/audit-log?cursor=x"]
)
async def test_a_dashboard_error_is_a_page_with_a_heading_and_a_way_back(
    sqlite_harness: ApiHarness, path: str
) -> None:
    h = sqlite_harness
    await sign_in(h)
    r = await h.client.get(path)
    assert r.status_code in (400, 404), r.text
    assert r.headers["content-type"].startswith("text/html")
    assert re.search(r"<h1>[^<]+</h1>", r.text) and 'href="/dashboard/calls"' in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]


async def test_a_missing_call_page_has_a_heading_and_a_way_back(sqlite_harness: ApiHarness) -> None:
    h = sqlite_harness
    await sign_in(h, "member")
    r = await h.client.get("/dashboard/calls/" + "0" * 32)
    assert r.status_code == 404 and "<h1>Call not found</h1>" in r.text
    assert '<a id="back" href="/dashboard/calls">' in r.text


async def test_the_api_keeps_its_json_errors(sqlite_harness: ApiHarness) -> None:
    h = sqlite_harness
    for path, status in [("/api/v1/nope", 404), ("/api/v1/calls?cursor=x", 400), ("/nope", 404)]:
        r = await h.client.get(path, headers=h.auth(ACME))
        assert r.status_code == status and r.headers["content-type"] == "application/json", path
        assert error_code(r) in ("not_found", "invalid_request"), path


async def test_sign_in_returns_to_the_page_asked_for(sqlite_harness: ApiHarness) -> None:
    h = sqlite_harness
    call_id = await h.archived_call(ACME_NUMBER)
    asked = await h.client.get(f"/dashboard/calls/{call_id}")
    assert asked.status_code == 303
    notice = await h.client.get(asked.headers["location"])
    target = f"/dashboard/calls/{call_id}"
    assert f'<input type="hidden" name="next" value="{target}">' in notice.text
    started = await sign_in(h, next=target)
    assert started.status_code == 303 and started.headers["location"] == target
    assert (await h.client.get(target)).status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/dashboard/calls",
        "//evil.example/dashboard/calls",
        "/\\evil.example",
        "/dashboard/\\\\evil.example",
        "/dashboard/../api/v1/calls",
        "/dashboard/%2e%2e/api/v1/calls",
        "/api/v1/calls",
        "javascript:alert(1)",
        "/dashboard/calls\n",
        "",
    ],
)
async def test_sign_in_never_returns_outside_the_dashboard(sqlite_harness: ApiHarness, target: str) -> None:
    h = sqlite_harness
    started = await sign_in(h, next=target)
    assert started.status_code == 303 and started.headers["location"] == "/dashboard/calls"
    notice = await h.client.get("/dashboard/sign-in", params={"next": target})
    assert 'name="next"' not in notice.text
