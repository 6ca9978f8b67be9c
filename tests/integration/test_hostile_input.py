"""Input an attacker would send, over HTTP on a real SQLite database: refused clearly, nothing changed.

Each test here failed before its fix (issue 9 of the tracker): quadratic form parsing, ids and numbers
outside their grammar, unbounded Range and duration values, JSON nested too deep, and the dashboard's
session cookie and forms.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest

from adapters.filesystem_store import validate_key
from adapters.twilio_telephony import TwilioTelephony, TwilioTelephonyError
from application.handlers import storage_key
from domain.model import CallKind, Recording, RecordingStatus
from entrypoints.http.forms import FORM_MAX_BYTES, FORM_MAX_FIELDS, FormRejected, parse_form
from tests.support.app import ApiHarness, api_harness, asgi_transport, error_code, sqlite_api_harness
from tests.twilio_standin import (
    TwilioCallbackDriver,
    TwilioStandin,
    call_status_payload,
    recording_status_payload,
)

ACME, GLOBEX = "acme", "globex"
ACME_NUMBER, GLOBEX_NUMBER = "+15550000001", "+15550000002"
PLATFORM_LINE = "+15557770002"  # the harness's support line
ORIGIN = "http://testserver.local"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[ApiHarness]:
    async with sqlite_api_harness(tmp_path) as h:
        await h.org(ACME, ACME_NUMBER)
        await h.org(GLOBEX, GLOBEX_NUMBER)
        yield h


def twilio(h: ApiHarness) -> TwilioCallbackDriver:
    """Twilio's callbacks, signed with the harness's auth token, into the in-process app."""
    return TwilioCallbackDriver(ORIGIN, h.settings.twilio_auth_token, async_transport=asgi_transport(h.app))


# --- forms: bounded before and while they are parsed --------------------------------------------


def test_a_form_of_one_key_repeated_is_refused_in_linear_time() -> None:
    body = b"&".join([b"CallSid=CA1"] * 100_000)  # ~1.2 MB: the body that froze the service
    started = time.process_time()
    with pytest.raises(FormRejected, match="more than"):
        parse_form(body)
    assert time.process_time() - started < 1.0  # the quadratic multidict took 20-45 s
    with pytest.raises(FormRejected, match="repeated"):
        parse_form(b"CallSid=CA1&CallSid=CA2")
    with pytest.raises(FormRejected, match="UTF-8"):
        parse_form(b"From=%ff")
    fields = "&".join(f"f{i}=v" for i in range(FORM_MAX_FIELDS))
    assert len(parse_form(fields.encode())) == FORM_MAX_FIELDS


@pytest.mark.parametrize(
    "path", ["/twilio/voice", "/twilio/recording-status", "/dashboard/session", "/dashboard/settings"]
)
async def test_form_routes_refuse_bodies_past_their_small_limit(harness: ApiHarness, path: str) -> None:
    if path == "/dashboard/settings":  # without a session the body is not even read
        await sign_in(harness, ACME)
    body = b"&".join([b"a=1"] * (FORM_MAX_BYTES // 2))
    headers = {**FORM, "Origin": ORIGIN, "X-Twilio-Signature": "A" * 27 + "="}
    r = await harness.client.post(path, content=body, headers=headers)
    assert r.status_code == 413, r.text


async def sign_in(harness: ApiHarness, org_id: str) -> None:
    token = harness.token(org_id, "admin")
    r = await harness.client.post(
        "/dashboard/session", content=urlencode({"token": token}), headers={**FORM, "Origin": ORIGIN}
    )
    assert r.status_code == 303, r.text


async def test_a_twilio_callback_without_a_signature_is_refused_before_its_form_is_read(
    harness: ApiHarness,
) -> None:
    # The same body with a well-formed (wrong) signature is read and refused as a form; without one it
    # is never looked at.
    body = b"&".join([b"CallSid=CA1"] * 500)
    r = await harness.client.post("/twilio/voice", content=body, headers=FORM)
    assert r.status_code == 403 and error_code(r) == "forbidden"
    signed = {**FORM, "X-Twilio-Signature": "A" * 27 + "="}
    r = await harness.client.post("/twilio/voice", content=body, headers=signed)
    assert r.status_code == 400 and "more than" in r.json()["error"]["message"]
    r = await harness.client.post("/twilio/voice", content=b"{}", headers={"X-Twilio-Signature": "A" * 28})
    assert r.status_code == 415


async def test_a_cross_site_form_cannot_sign_a_browser_in(harness: ApiHarness) -> None:
    token = harness.token(ACME, "admin")
    for origin in ("https://evil.example", "null", None):
        headers = {**FORM, **({"Origin": origin} if origin else {})}
        r = await harness.client.post(
            "/dashboard/session", content=urlencode({"token": token}), headers=headers
        )
        assert r.status_code == 403, origin
        assert "set-cookie" not in r.headers


async def test_the_session_cookie_lives_as_long_as_its_token_and_sign_out_ends_it(
    harness: ApiHarness,
) -> None:
    token = harness.token(ACME, "admin")  # 12 hours
    r = await harness.client.post(
        "/dashboard/session", content=urlencode({"token": token}), headers={**FORM, "Origin": ORIGIN}
    )
    assert r.status_code == 303, r.text
    cookie = SimpleCookie(r.headers["set-cookie"])["callrec_session"]
    assert 12 * 3600 - 60 <= int(cookie["max-age"]) <= 12 * 3600
    if cookie["expires"]:
        expires = parsedate_to_datetime(cookie["expires"])
        assert (expires - datetime.now(UTC)).total_seconds() <= 12 * 3600 + 60
    assert (await harness.client.get("/dashboard/calls")).status_code == 200

    forged = await harness.client.post("/dashboard/sign-out", headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    r = await harness.client.post("/dashboard/sign-out", headers={"Origin": ORIGIN})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/sign-in"
    cleared = SimpleCookie(r.headers["set-cookie"])["callrec_session"]
    assert cleared.value == "" or int(cleared["max-age"] or 1) <= 0
    assert (await harness.client.get("/dashboard/calls")).status_code == 303  # back to the sign-in notice


# --- one grammar for ids and phone numbers ------------------------------------------------------


@pytest.mark.parametrize("org_id", ["a:b", "%2e%2e", "..", "a.b", "_x", "a%0A", "a%20b", "x" * 65])
async def test_an_org_id_outside_the_grammar_is_refused_and_creates_nothing(
    harness: ApiHarness, org_id: str
) -> None:
    body = {"name": "X", "phone_numbers": ["+15550009999"], "greeting": "Hi"}
    r = await harness.client.put(
        f"/internal/v1/organizations/{org_id}", json=body, headers=harness.service_auth
    )
    assert r.status_code in (400, 404), r.text
    async with harness.services.uow() as uow:
        assert await uow.organizations.get_by_phone_number("+15550009999") is None


def test_every_accepted_org_id_gives_a_storage_key_every_store_accepts() -> None:
    for org_id in ("acme", "A-1_b", "x" * 64, "a:b", "..", "ünïcode", "a/b"):  # the last four: legacy rows
        recording = Recording(
            id="0b8f3c1e-5d2a-4f6b-9c7d-1e2f3a4b5c6d",
            call_id="7c6b5a4d-3e2f-1a0b-9c8d-7e6f5a4b3c2d",
            org_id=org_id,
            kind=CallKind.CUSTOMER,
            call_sid="CA1",
            status=RecordingStatus.COMPLETED,
            requested_at=datetime(2026, 11, 28, tzinfo=UTC),
            call_started_at=datetime(2026, 11, 28, tzinfo=UTC),
        )
        key = storage_key(recording)
        validate_key(key)  # raises for a segment the filesystem store refuses (S3 takes these too)
        assert key.startswith("orgs/") and key.count("/") == 6


@pytest.mark.parametrize(
    "numbers",
    [
        [PLATFORM_LINE + "\n"],  # a platform line with a trailing newline
        [GLOBEX_NUMBER + "\n"],  # another org's number, likewise
        [" " + GLOBEX_NUMBER],
        ["+15550009999\n"],
    ],
)
async def test_a_number_that_is_not_exactly_e164_is_refused(harness: ApiHarness, numbers: list[str]) -> None:
    body = {"name": "Initech", "phone_numbers": numbers, "greeting": "Hi"}
    r = await harness.client.put(
        "/internal/v1/organizations/initech", json=body, headers=harness.service_auth
    )
    assert r.status_code == 400 and error_code(r) == "invalid_request", r.text
    async with harness.services.uow() as uow:
        assert await uow.organizations.get("initech") is None


async def test_a_taken_number_is_always_phone_number_taken(harness: ApiHarness) -> None:
    for number in (PLATFORM_LINE, GLOBEX_NUMBER):
        body = {"name": "Initech", "phone_numbers": [number], "greeting": "Hi"}
        r = await harness.client.put(
            "/internal/v1/organizations/initech", json=body, headers=harness.service_auth
        )
        assert r.status_code == 409 and error_code(r) == "phone_number_taken", r.text


# --- values that used to end in a 500 -----------------------------------------------------------


async def test_a_range_header_with_thousands_of_digits_is_answered_not_crashed_on(
    harness: ApiHarness,
) -> None:
    audio = bytes(range(256)) * 8
    call_id = await harness.archived_call(ACME_NUMBER, audio)
    r = await harness.client.get(f"/api/v1/calls/{call_id}/recording", headers=harness.auth(ACME, "member"))
    assert r.status_code == 307
    url = r.headers["location"]
    huge = "9" * 5000
    whole = await harness.client.get(url, headers={"Range": f"bytes=0-{huge}"})
    assert whole.status_code == 206 and whole.content == audio
    suffix = await harness.client.get(url, headers={"Range": f"bytes=-{huge}"})
    assert suffix.status_code == 206 and suffix.content == audio
    past = await harness.client.get(url, headers={"Range": f"bytes={huge}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(audio)}"


@pytest.mark.parametrize(
    ("method", "path", "auth"),
    [
        ("PUT", "/api/v1/settings/call-recording", "admin"),
        ("POST", "/api/v1/webhook-endpoints", "admin"),
        ("PUT", "/internal/v1/organizations/acme", "service"),
        ("POST", "/internal/v1/calls/x/scorability", "service"),
    ],
)
async def test_json_nested_a_thousand_deep_is_a_400(
    harness: ApiHarness, method: str, path: str, auth: str
) -> None:
    headers = harness.service_auth if auth == "service" else harness.auth(ACME, auth)
    deep = "[" * 1000 + "]" * 1000
    for body in (deep, f'{{"enabled": {deep}}}', f'{{"name": "x", "phone_numbers": {deep}}}'):
        r = await harness.client.request(
            method, path, content=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert r.status_code == 400 and error_code(r) in ("invalid_request", "bad_request"), (
            body[:20],
            r.text,
        )


@pytest.mark.parametrize("value", ["9223372036854775808", "-5", "1e3", "99999999", " 7"])
async def test_an_out_of_range_call_duration_is_refused_and_the_call_does_not_end(
    harness: ApiHarness, value: str
) -> None:
    driver = twilio(harness)
    call_sid = "CA" + "1" * 32
    r = await driver.avoice(
        {"CallSid": call_sid, "AccountSid": "AC1", "From": "+15550001111", "To": ACME_NUMBER}
    )
    assert r.status_code == 200
    payload = {**call_status_payload(call_sid, "completed", duration=5), "CallDuration": value}
    r = await driver.acall_status(payload)
    assert r.status_code == 400 and "CallDuration" in r.json()["error"]["message"], r.text
    async with harness.services.uow() as uow:
        call = await uow.calls.get_by_sid(call_sid)
    assert call is not None and not call.ended and call.duration_s is None


async def test_an_unknown_call_status_is_a_400_and_the_call_does_not_end(harness: ApiHarness) -> None:
    driver = twilio(harness)
    call_sid = "CA" + "3" * 32
    r = await driver.avoice(
        {"CallSid": call_sid, "AccountSid": "AC1", "From": "+15550001111", "To": ACME_NUMBER}
    )
    assert r.status_code == 200
    r = await driver.acall_status(call_status_payload(call_sid, "vanished", duration=5))
    assert r.status_code == 400 and error_code(r) == "invalid_request", r.text
    assert "unknown call status" in r.json()["error"]["message"]
    async with harness.services.uow() as uow:
        call = await uow.calls.get_by_sid(call_sid)
    assert call is not None and not call.ended


async def test_a_negative_recording_duration_is_refused_but_twilios_unknown_minus_one_is_not(
    harness: ApiHarness,
) -> None:
    driver = twilio(harness)
    call_sid = "CA" + "2" * 32
    await driver.avoice({"CallSid": call_sid, "AccountSid": "AC1", "From": "+15550001111", "To": ACME_NUMBER})
    await driver.astream_status({"CallSid": call_sid, "StreamSid": "MZ1", "StreamEvent": "stream-started"})
    await harness.relay.drain()
    recording_sid = next(s for s, rec in harness.telephony.recordings.items() if rec.call_sid == call_sid)

    def status(event: str, duration: str) -> dict[str, str]:
        payload = recording_status_payload(
            call_sid=call_sid, recording_sid=recording_sid, status=event, standin_base="http://twilio.invalid"
        )
        return {**payload, "RecordingDuration": duration}

    assert (await driver.arecording_status(status("in-progress", "-1"))).status_code == 204
    refused = await driver.arecording_status(status("completed", "-7"))
    assert refused.status_code == 400
    async with harness.services.uow() as uow:
        recording = await uow.recordings.get_for_call((await uow.calls.get_by_sid(call_sid)).id)  # type: ignore[union-attr]
    assert recording is not None and recording.status == RecordingStatus.IN_PROGRESS
    assert recording.duration_s is None


async def test_an_unknown_recording_status_is_refused_at_the_edge_and_an_unknown_stream_event_ignored(
    harness: ApiHarness,
) -> None:
    driver = twilio(harness)
    call_sid = "CA" + "4" * 32
    await driver.avoice({"CallSid": call_sid, "AccountSid": "AC1", "From": "+15550001111", "To": ACME_NUMBER})
    stray = await driver.astream_status(
        {"CallSid": call_sid, "StreamSid": "MZ1", "StreamEvent": "stream-paused"}
    )
    assert stray.status_code == 204
    await harness.relay.drain()
    assert not [rec for rec in harness.telephony.recordings.values() if rec.call_sid == call_sid]
    await driver.astream_status({"CallSid": call_sid, "StreamSid": "MZ1", "StreamEvent": "stream-started"})
    await harness.relay.drain()
    recording_sid = next(s for s, rec in harness.telephony.recordings.items() if rec.call_sid == call_sid)
    payload = recording_status_payload(
        call_sid=call_sid,
        recording_sid=recording_sid,
        status="paused-forever",
        standin_base="http://twilio.invalid",
    )
    r = await driver.arecording_status(payload)
    assert r.status_code == 400 and "unknown RecordingStatus" in r.json()["error"]["message"], r.text
    async with harness.services.uow() as uow:
        call = await uow.calls.get_by_sid(call_sid)
        assert call is not None
        recording = await uow.recordings.get_for_call(call.id)
    assert recording is not None and recording.status == RecordingStatus.IN_PROGRESS


async def test_a_sip_caller_is_answered_and_sids_outside_twilios_grammar_are_refused(
    tmp_path: Path, database_url: str
) -> None:
    async with api_harness(tmp_path, database_url) as h:
        await h.org(ACME, ACME_NUMBER)
        driver = twilio(h)
        sip = "sip:" + "long.caller.name" * 8 + "@pbx.example.com"  # wider than any E.164 number
        call = {"CallSid": "CA" + "3" * 32, "AccountSid": "AC1", "From": sip, "To": ACME_NUMBER}
        r = await driver.avoice(call)
        assert r.status_code == 200 and "<Connect>" in r.text, r.text
        for field, value in (("CallSid", "CA" + "4" * 100), ("CallSid", "CA-1"), ("From", "+1555\x00")):
            r = await driver.avoice({**call, "CallSid": "CA" + "5" * 32, field: value})
            assert r.status_code == 400 and field in r.json()["error"]["message"], (field, r.text)
        async with h.services.uow() as uow:
            assert await uow.calls.get_by_sid("CA" + "5" * 32) is None


async def test_the_twilio_adapter_never_puts_a_sid_with_a_trailing_newline_into_a_url(
    twilio_standin: TwilioStandin,
) -> None:
    async with TwilioTelephony(
        twilio_standin.account_sid, twilio_standin.auth_token, api_base=twilio_standin.base_url
    ) as telephony:
        for sid in ("RE" + "1" * 32 + "\n", "RE1/../x", "RE 1"):
            with pytest.raises(TwilioTelephonyError, match="malformed"):
                await telephony.delete_recording(sid)
    assert twilio_standin.requests("delete_recording") == []
