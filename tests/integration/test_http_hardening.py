"""Hardening at the HTTP edge: security headers on every response, the OpenAPI document without UI
pages, and private files on disk."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from twilio.request_validator import RequestValidator

from adapters.s3_store import S3RecordingStore
from adapters.sqlalchemy.engine import create_engine, migrate
from entrypoints.config import Settings
from tests.support.app import ApiHarness, create_app, error_code, sqlite_api_harness

ACME, ACME_NUMBER = "acme", "+15550000001"
PAGE_CSP_DIRECTIVES = {"frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"}
API_CSP = "default-src 'none'; frame-ancestors 'none'"

ORIGIN = "http://testserver.local"


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[ApiHarness]:
    async with sqlite_api_harness(tmp_path) as h:
        await h.org(ACME, ACME_NUMBER)
        yield h


def csp_directives(response: httpx.Response) -> set[str]:
    return {d.strip() for d in response.headers["content-security-policy"].split(";") if d.strip()}


async def every_kind_of_response(h: ApiHarness) -> dict[str, httpx.Response]:
    """One response of each kind the app gives, by name."""
    client, auth = h.client, h.auth(ACME)
    call_id = await h.archived_call(ACME_NUMBER)
    recording = await client.get(f"/api/v1/calls/{call_id}/recording", headers=auth)
    form = {"CallSid": "CA" + "1" * 32, "AccountSid": "AC1", "From": "+15550001111", "To": ACME_NUMBER}
    url = h.settings.public_url + "/twilio/voice"
    signature = RequestValidator(h.settings.twilio_auth_token).compute_signature(url, form)
    token = h.token(ACME, "admin")
    await client.post("/dashboard/session", data={"token": token}, headers={"Origin": ORIGIN})
    responses = {
        "api json": await client.get("/api/v1/calls", headers=auth),
        "api 204": await client.delete("/api/v1/webhook-endpoints/nope", headers=auth),
        "api redirect": recording,
        "media": await client.get(recording.headers["location"]),
        "media error": await client.get("/media/nope?expires=1&sig=x"),
        "401": await client.get("/api/v1/calls"),
        "400": await client.get("/api/v1/calls?limit=0", headers=auth),
        "unknown path": await client.get("/no/such/path"),
        "method not allowed": await client.post("/api/v1/calls", headers=auth),
        "twiml": await client.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": signature}),
        "unsigned twilio": await client.post("/twilio/voice", data=form),
        "health": await client.get("/healthz"),
        "openapi": await client.get("/schema/openapi.json"),
        "page": await client.get("/dashboard/calls"),
        "page 404": await client.get("/dashboard/calls/nope"),
        "sign-in page": await client.get("/dashboard/sign-in"),
        "page redirect": await client.get("/dashboard/"),
    }
    expected = {"api json": 200, "api 204": 404, "api redirect": 307, "media": 200, "twiml": 200, "page": 200}
    for name, status in expected.items():
        assert responses[name].status_code == status, (name, responses[name].text)
    return responses


async def test_every_response_forbids_sniffing_and_referrers(harness: ApiHarness) -> None:
    for name, response in (await every_kind_of_response(harness)).items():
        assert response.headers.get_list("x-content-type-options") == ["nosniff"], name
        assert response.headers.get_list("referrer-policy") == ["no-referrer"], name


async def test_pages_may_not_be_framed_nor_rebased_nor_post_elsewhere(harness: ApiHarness) -> None:
    responses = await every_kind_of_response(harness)
    for name in ("page", "page 404", "sign-in page"):
        assert responses[name].headers["content-type"].startswith("text/html"), name
        directives = csp_directives(responses[name])
        assert PAGE_CSP_DIRECTIVES <= directives, (name, directives)
        assert "default-src 'self'" in directives, name


async def test_everything_but_the_pages_has_a_csp_that_allows_nothing(harness: ApiHarness) -> None:
    responses = await every_kind_of_response(harness)
    for name, response in responses.items():
        if name not in ("page", "page 404", "sign-in page"):
            assert response.headers.get_list("content-security-policy") == [API_CSP], name


# --- the OpenAPI document -----------------------------------------------------------------------


async def test_the_schema_path_serves_the_document_and_no_ui(harness: ApiHarness) -> None:
    client = harness.client
    for path in ("/schema", "/schema/openapi.json"):
        r = await client.get(path)
        assert r.status_code == 200 and r.json()["openapi"].startswith("3."), path
    as_yaml = await client.get("/schema/openapi.yaml")
    assert as_yaml.status_code == 200
    assert yaml.safe_load(as_yaml.text) == (await client.get("/schema/openapi.json")).json()
    for ui in ("swagger", "redoc", "elements", "rapidoc", "scalar", "oauth2-redirect.html", "nope"):
        r = await client.get(f"/schema/{ui}")
        assert r.status_code == 404, ui
        assert error_code(r) == "not_found"
        assert "<script" not in r.text


# --- files on disk ------------------------------------------------------------------------------


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The common 022: new files would be world-readable unless the code says otherwise."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_generated_secrets_live_in_a_directory_only_the_owner_can_enter(tmp_path: Path) -> None:
    var_dir = tmp_path / "deep" / "var"
    Settings.from_env({"CALLREC_VAR_DIR": str(var_dir)})
    assert mode(var_dir) == 0o700
    for name in ("jwt_secret", "service_token", "media_signing_key", "webhook_secret_key"):
        assert mode(var_dir / name) == 0o600, name


@pytest.mark.usefixtures("permissive_umask")
async def test_sqlite_files_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    database = var_dir / "callrec.db"
    url = f"sqlite+aiosqlite:///{database}"
    await asyncio.to_thread(migrate, url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE probe (x INTEGER)")
            await conn.exec_driver_sql("INSERT INTO probe VALUES (1)")
        files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
        assert all(f.exists() for f in files), list(var_dir.iterdir())
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert mode(var_dir) == 0o700
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("permissive_umask")
async def test_an_engine_on_a_new_sqlite_file_creates_it_private(tmp_path: Path) -> None:
    database = tmp_path / "fresh" / "callrec.db"
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE probe (x INTEGER)")
        assert mode(database) == 0o600
        assert mode(database.parent) == 0o700
    finally:
        await engine.dispose()


# --- the settings form under Referrer-Policy: no-referrer ---------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        # What a browser sends for the page's own form: no-referrer makes the Origin of a POST "null",
        # and Fetch Metadata says the request came from this origin.
        ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, 303),
        ({"Origin": "http://testserver.local"}, 303),
        ({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": "null", "Sec-Fetch-Site": "same-site"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}, 403),
        ({}, 403),
    ],
)
async def test_the_settings_form_works_without_referrers_and_still_refuses_other_sites(
    harness: ApiHarness, headers: dict[str, str], status: int
) -> None:
    h = harness
    await h.client.post(
        "/dashboard/session", data={"token": h.token(ACME, "admin")}, headers={"Origin": ORIGIN}
    )
    r = await h.client.post("/dashboard/settings", data={"enabled": "false"}, headers=headers)
    assert r.status_code == status, r.text
    enabled = (await h.client.get("/api/v1/settings/call-recording", headers=h.auth(ACME))).json()["enabled"]
    assert enabled is (status != 303)


def test_with_s3_the_pages_let_the_player_load_audio_from_the_presigned_urls_origin(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "CALLREC_VAR_DIR": str(tmp_path / "var"),
            "CALLREC_STORAGE": "s3",
            "CALLREC_S3_BUCKET": "recordings",
            "CALLREC_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        }
    )
    csp = create_app(settings=settings).state.page_headers["Content-Security-Policy"]
    media = next(d for d in csp.split("; ") if d.startswith("media-src"))
    assert media == "media-src 'self' http://127.0.0.1:9000"
    connect = next(d for d in csp.split("; ") if d.startswith("connect-src"))
    assert connect == "connect-src 'self' http://127.0.0.1:9000"  # the call page's waveform fetches it

    aws = S3RecordingStore("recordings", region="eu-west-1").media_origins
    assert "https://recordings.s3.eu-west-1.amazonaws.com" in aws
    filesystem = create_app(settings=Settings.from_env({"CALLREC_VAR_DIR": str(tmp_path / "fs")}))
    assert "media-src 'self';" in filesystem.state.page_headers["Content-Security-Policy"]
