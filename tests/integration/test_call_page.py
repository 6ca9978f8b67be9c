"""The call page over HTTP: what it says in each state, its back link, the state it polls, its CSP."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from application import commands, views
from domain.model import CallKind, CallStatus, StreamEvent
from entrypoints.http.call_page import recording_explanation
from tests.support.app import ApiHarness, sqlite_api_harness

ACME, ACME_NUMBER = "acme", "+15550001000"
GLOBEX, GLOBEX_NUMBER = "globex", "+15550002000"
ORIGIN = "http://testserver.local"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[ApiHarness]:
    async with sqlite_api_harness(tmp_path) as harness:
        await harness.org(ACME, ACME_NUMBER)
        await harness.org(GLOBEX, GLOBEX_NUMBER)
        yield harness


async def sign_in(h: ApiHarness, org: str = ACME) -> None:
    r = await h.client.post(
        "/dashboard/session", data={"token": h.token(org, "member")}, headers={"Origin": ORIGIN}
    )
    assert r.status_code == 303


async def answered_call(h: ApiHarness) -> tuple[str, str]:
    """A recorded call the agent answered, still going: (call sid, call id)."""
    call_sid = "CA" + secrets.token_hex(16)
    decision = await h.bus.handle(commands.StartCall(call_sid, "AC1", "+15550001111", ACME_NUMBER))
    await h.bus.handle(commands.RecordStreamEvent(call_sid, "MZ1", StreamEvent.STARTED))
    await h.relay.drain()
    return call_sid, decision.call_id


async def state(h: ApiHarness, call_id: str) -> dict[str, object]:
    r = await h.client.get(f"/dashboard/calls/{call_id}/state.json")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store", r.text
    body: dict[str, object] = r.json()
    return body


async def test_an_archived_call_shows_its_lengths_consent_and_player_with_a_nonce_for_the_waveform(
    h: ApiHarness,
) -> None:
    call_id = await h.archived_call(ACME_NUMBER)
    await sign_in(h)
    page = await h.client.get(f"/dashboard/calls/{call_id}")
    assert page.status_code == 200
    text = page.text
    assert "<h1" in text and "Call from +1 (555) 000-1111" in text
    assert re.search(r'<dd id="call-length">0:06</dd>', text) and '<dd id="audio-length">0:05</dd>' in text
    assert "recording starts when the agent answers" in text
    assert 'aria-label="Recording of the call from +1 (555) 000-1111"' in text
    assert f'href="/dashboard/calls/{call_id}/audio?download=true"' in text
    assert f'data-link="{ORIGIN}/dashboard/calls/{call_id}"' in text

    csp = page.headers["content-security-policy"]
    nonce = re.search(r"style-src 'self' 'nonce-([A-Za-z0-9_-]+)'", csp)
    assert nonce and f'nonce="{nonce[1]}"' in text
    assert "connect-src 'self'" in csp and "script-src 'self';" in csp
    again = await h.client.get(f"/dashboard/calls/{call_id}")
    assert nonce[1] not in again.headers["content-security-policy"]  # one per response
    listing = await h.client.get("/dashboard/calls")
    assert "style-src 'self';" in listing.headers["content-security-policy"]  # only the call page


@pytest.mark.parametrize(
    ("back", "href"),
    [
        ("/dashboard/calls?recording=failed", "/dashboard/calls?recording=failed"),
        ("https://evil.example/dashboard/calls", "/dashboard/calls"),
        ("//evil.example/dashboard/calls", "/dashboard/calls"),
        ("/dashboard/settings", "/dashboard/calls"),
        ("/dashboard/calls/../settings", "/dashboard/calls"),
    ],
)
async def test_the_back_link_keeps_the_calls_filters_and_goes_nowhere_else(
    h: ApiHarness, back: str, href: str
) -> None:
    call_id = await h.archived_call(ACME_NUMBER)
    await sign_in(h)
    r = await h.client.get(f"/dashboard/calls/{call_id}", params={"back": back})
    assert r.status_code == 200
    assert f'<a id="back" class="target" href="{href}">' in r.text


async def test_the_polled_state_follows_a_call_from_live_to_processing_and_settles_once_archived(
    h: ApiHarness,
) -> None:
    call_sid, call_id = await answered_call(h)
    assert (await h.client.get(f"/dashboard/calls/{call_id}/state.json")).status_code == 401
    await sign_in(h)
    assert (await state(h, call_id))["state"] == "live"
    page = await h.client.get(f"/dashboard/calls/{call_id}")
    assert 'data-state="live"' in page.text and 'data-settled="false"' in page.text
    assert "The call is in progress" in page.text

    await h.bus.handle(commands.EndCall(call_sid, CallStatus.COMPLETED, 6))
    polled = await state(h, call_id)
    assert (polled["state"], polled["settled"]) == ("processing", False)
    assert polled["announcement"] == "The call has ended; its recording is being processed."
    assert (
        "Processing: the call ended moments ago" in (await h.client.get(f"/dashboard/calls/{call_id}")).text
    )

    archived = await h.archived_call(ACME_NUMBER)
    polled = await state(h, archived)
    assert (polled["state"], polled["settled"]) == ("available", True)


async def test_a_stuck_archive_says_how_long_and_that_it_is_retried(h: ApiHarness) -> None:
    call_sid, call_id = await answered_call(h)
    await h.bus.handle(commands.EndCall(call_sid, CallStatus.COMPLETED, 6))
    view = await views.get_call(h.services, org_id=ACME, call_id=call_id, kinds=(CallKind.CUSTOMER,))
    assert view.call.ended_at is not None
    later = view.call.ended_at + timedelta(minutes=20)
    text = recording_explanation(view, now=later, stuck_after=timedelta(minutes=15))
    assert text.startswith("Processing: the call ended 20 minutes ago") and "retrying by itself" in text
    soon = recording_explanation(
        view, now=view.call.ended_at + timedelta(minutes=1), stuck_after=timedelta(minutes=15)
    )
    assert "1 minute ago" in soon and "retrying" not in soon


async def test_another_orgs_call_state_is_not_found_and_an_unrecorded_call_says_why(h: ApiHarness) -> None:
    theirs = await h.archived_call(GLOBEX_NUMBER)
    await h.bus.handle(commands.SetCallRecording(ACME, False, "admin@acme"))
    ours = await h.unrecorded_call(ACME_NUMBER)
    await sign_in(h)
    assert (await h.client.get(f"/dashboard/calls/{theirs}/state.json")).status_code == 404
    polled = await state(h, ours)
    assert polled["recording"] == {"status": "not_recorded", "reason": "recording_off"}
    page = (await h.client.get(f"/dashboard/calls/{ours}")).text
    assert "Recording was off when this call came in" in page and "heard no recording notice" in page


async def test_a_non_engagement_call_says_why_in_plain_words(h: ApiHarness) -> None:
    robocall = await h.archived_call(ACME_NUMBER)
    await h.bus.handle(commands.RecordScorability(robocall, False, "robocall"))
    await sign_in(h)
    page = (await h.client.get(f"/dashboard/calls/{robocall}")).text
    assert "Marked as non-engagement: an automated call (robocall)." in page
    plain = (await h.client.get(f"/dashboard/calls/{await h.archived_call(ACME_NUMBER)}")).text
    assert 'id="non-engagement"' not in plain
