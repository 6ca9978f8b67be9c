"""Pause and resume over HTTP (``/internal/v1/calls/{id}/recording/pause|resume``) on SQLite and
PostgreSQL: the answer, Twilio told after the commit, the call's pauses in the API and on its page,
the audit log, and the refusals."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest

from application import commands
from application.handlers import CallDecision
from application.pauses import PauseLimiter
from domain.model import StreamEvent
from tests.fakes import FakeClock
from tests.support.app import ApiHarness, api_harness, error_code

ACME, ACME_NUMBER = "acme", "+15550000001"
GLOBEX, GLOBEX_NUMBER = "globex", "+15550000002"


@pytest.fixture
async def harness(tmp_path: Path, database_url: str) -> AsyncIterator[ApiHarness]:
    async with api_harness(tmp_path, database_url) as h:
        await h.org(ACME, ACME_NUMBER)
        await h.org(GLOBEX, GLOBEX_NUMBER, recording=False)
        yield h


async def live_call(h: ApiHarness, number: str = ACME_NUMBER) -> tuple[str, str]:
    """A call the agent answered, whose recording Twilio started: (call id, call sid)."""
    call_sid = "CA" + secrets.token_hex(16)
    decision: CallDecision = await h.bus.handle(
        commands.StartCall(call_sid=call_sid, account_sid="AC1", from_number="+15551230000", to_number=number)
    )
    await h.bus.handle(commands.RecordStreamEvent(call_sid, "MZ1", StreamEvent.STARTED))
    await h.relay.drain()
    return decision.call_id, call_sid


def twilio_status(h: ApiHarness, call_sid: str) -> str:
    [status] = [r.status for r in h.telephony.recordings.values() if r.call_sid == call_sid]
    return status


async def test_pause_and_resume_answer_the_pause_state_and_reach_twilio_after_the_commit(
    harness: ApiHarness,
) -> None:
    h = harness
    call_id, call_sid = await live_call(h)
    url = f"/internal/v1/calls/{call_id}/recording"

    paused = await h.client.post(f"{url}/pause", headers={**h.service_auth, "X-Request-ID": "req-pause-1"})
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert (body["call_id"], body["paused"]) == (call_id, True)
    [pause] = body["pauses"]
    assert pause["resumed_at"] is None and pause["paused_by"] == "platform-service"
    assert pause["paused_at"].endswith("Z")
    await h.relay.drain()
    assert twilio_status(h, call_sid) == "paused"

    again = await h.client.post(f"{url}/pause", headers=h.service_auth)
    assert again.status_code == 200 and again.json() == body  # idempotent: the state as it is
    await h.relay.drain()
    assert len([c for c in h.telephony.calls if c[0] == "pause_recording"]) == 1

    resumed = await h.client.post(f"{url}/resume", headers=h.service_auth)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused"] is False
    [closed] = resumed.json()["pauses"]
    assert closed["resume_reason"] == "requested" and closed["resumed_at"] is not None
    await h.relay.drain()
    assert twilio_status(h, call_sid) == "in-progress"

    detail = (await h.client.get(f"/api/v1/calls/{call_id}", headers=h.auth(ACME, "member"))).json()
    assert detail["pauses"] == [closed]

    log = (await h.client.get("/api/v1/audit-log", headers=h.auth(ACME, "admin"))).json()["items"]
    actions = [(e["action"], e["actor"], e["actor_role"], e["call_id"]) for e in log][:2]
    assert actions == [
        ("resume_recording", "platform-service", "system", call_id),
        ("pause_recording", "platform-service", "system", call_id),
    ]
    assert log[1]["request_id"] == "req-pause-1"


async def test_the_call_page_lists_its_pauses(harness: ApiHarness) -> None:
    h = harness
    call_id, _ = await live_call(h)
    await h.client.post(f"/internal/v1/calls/{call_id}/recording/pause", headers=h.service_auth)
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://testserver.local"}
    await h.client.post(
        "/dashboard/session", content=urlencode({"token": h.token(ACME, "member")}), headers=form
    )

    page = await h.client.get(f"/dashboard/calls/{call_id}")

    assert page.status_code == 200
    assert 'id="pauses"' in page.text and "still paused" in page.text


@pytest.mark.parametrize("action", ["pause", "resume"])
async def test_pause_and_resume_of_an_ended_call_are_409_and_change_nothing(
    harness: ApiHarness, action: str
) -> None:
    h = harness
    call_id = await h.archived_call(ACME_NUMBER)

    r = await h.client.post(f"/internal/v1/calls/{call_id}/recording/{action}", headers=h.service_auth)

    assert r.status_code == 409 and error_code(r) == "invalid_state"
    assert "ended" in r.json()["error"]["message"]
    detail = (await h.client.get(f"/api/v1/calls/{call_id}", headers=h.auth(ACME, "member"))).json()
    assert detail["pauses"] == []


async def test_pause_of_an_unrecorded_call_is_409(harness: ApiHarness) -> None:
    h = harness
    call_id, _ = await live_call(h, GLOBEX_NUMBER)

    r = await h.client.post(f"/internal/v1/calls/{call_id}/recording/pause", headers=h.service_auth)

    assert r.status_code == 409 and "not recorded" in r.json()["error"]["message"]
    assert not [c for c in h.telephony.calls if c[0] == "pause_recording"]


async def test_pause_of_an_unknown_call_is_404_and_needs_the_service_token(harness: ApiHarness) -> None:
    h = harness
    path = "/internal/v1/calls/00000000-0000-4000-8000-000000000000/recording/pause"
    assert (await h.client.post(path, headers=h.service_auth)).status_code == 404
    assert (await h.client.post(path)).status_code == 401
    assert (await h.client.post(path, headers=h.auth(ACME, "admin"))).status_code == 401


async def test_a_forgotten_pause_is_resumed_by_the_pause_limit_loop(harness: ApiHarness) -> None:
    h = harness
    call_id, call_sid = await live_call(h)
    await h.client.post(f"/internal/v1/calls/{call_id}/recording/pause", headers=h.service_auth)
    await h.relay.drain()
    later = FakeClock(datetime.now(UTC) + h.services.settings.max_pause + timedelta(seconds=1))

    assert await PauseLimiter(replace(h.services, clock=later)).run_once() == 1
    await h.relay.drain()

    assert twilio_status(h, call_sid) == "in-progress"
    detail = (await h.client.get(f"/api/v1/calls/{call_id}", headers=h.auth(ACME, "member"))).json()
    [pause] = detail["pauses"]
    assert (pause["resume_reason"], pause["resumed_by"]) == ("max_pause", "system")
