"""The call page in a real Chromium: the player that recovers, the two-lane waveform, copy-link,
a page that updates itself, keyboard use, and every state it can show checked by ``check_page``."""

from __future__ import annotations

import asyncio
import io
import math
import struct
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from entrypoints.http.call_list import format_phone
from tests.e2e.conftest import RunningService, start_service
from tests.e2e.pages import check_page
from tests.e2e.test_dashboard_browser import browser, recorded_call, sign_in
from tests.e2e.test_recording_lifecycle import CALLER, arrive, callback, make_org, recording_sid_of
from tests.e2e.test_s3_archive_e2e import s3_env, s3_service
from tests.support.s3 import moto_server_process, sync_client
from tests.support.services import stop_pid
from tests.twilio_standin import TwilioStandin, call_status_payload, stream_status_payload

__all__ = ["browser", "s3_service"]  # fixtures, used by name

TTL_S = 3


# A seek that must fetch: to the middle of the longest stretch the player has not buffered.
def stereo_wav(seconds: float, rate: int = 8000) -> bytes:
    """Two channels that differ: the caller (left) a 440 Hz tone throughout, the agent (right) silent
    for the first half and a louder 660 Hz tone after."""
    frames = bytearray()
    for i in range(int(seconds * rate)):
        left = int(8000 * math.sin(2 * math.pi * 440 * i / rate))
        right = int(16000 * math.sin(2 * math.pi * 660 * i / rate)) if i >= seconds * rate / 2 else 0
        frames += struct.pack("<hh", left, right)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(frames))
    return buffer.getvalue()


@pytest.fixture
def short_ttl_service(tmp_path: Path, twilio_standin: TwilioStandin) -> Iterator[RunningService]:
    running = start_service(tmp_path, twilio_standin, {"CALLREC_PLAYBACK_URL_TTL_S": str(TTL_S)})
    try:
        yield running
    finally:
        stop_pid(running.pid)


async def until(page: Any, expression: str) -> None:
    """Wait (at most 20 s) until the expression is true in the page, polled from here: under the page's
    CSP Playwright's own ``wait_for_function`` cannot evaluate a predicate inside the page."""
    for _ in range(200):
        if await page.evaluate(expression):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"still false after 20 s: {expression}")


async def open_call(page: Any, service: RunningService, call_id: str) -> None:
    await page.goto(f"{service.base_url}/dashboard/calls/{call_id}")
    await until(page, "document.querySelector('#player').readyState >= 1")


async def wait_for_two_lanes(page: Any) -> None:
    await page.wait_for_selector("#waveform-figure[data-lanes='2']", timeout=10_000)
    labels = await page.locator("#lane-labels span").all_text_contents()
    assert labels == ["Caller", "Agent"]
    assert await page.locator("#waveform div").count() >= 1  # wavesurfer's host element


async def current_time(page: Any) -> float:
    value: float = await page.evaluate("document.querySelector('#player').currentTime")
    return value


async def test_the_player_recovers_when_its_signed_url_expires_and_keeps_its_place(
    short_ttl_service: RunningService, browser: Any
) -> None:
    service = short_ttl_service
    call_id = recorded_call(service, "acme", "+15550300001", stereo_wav(120))
    context = await browser.new_context()
    page = await sign_in(context, service, "acme", "member")
    await open_call(page, service, call_id)
    await wait_for_two_lanes(page)
    await asyncio.sleep(TTL_S + 1)  # every signed URL the page holds has expired

    # A seek far past what preload=metadata buffered needs a new range request: 403, then recovery.
    await page.evaluate(
        "(() => { const a = document.querySelector('#player'); a.currentTime = 90; a.play(); })()"
    )
    await until(page, "document.querySelector('#player-status').textContent.startsWith('Reconnected')")
    assert "playing again at 1:30" in await page.text_content("#player-status")
    assert 89.5 <= await current_time(page) < 100
    assert await page.evaluate("document.querySelector('#player').paused") is False

    # When it cannot recover (the session has ended), it says so and offers a way forward.
    await page.evaluate("document.querySelector('#player').pause()")
    await asyncio.sleep(TTL_S + 1)
    await context.clear_cookies()
    # Chromium may hold the whole file by now (no gap to seek into): make it fetch again instead.
    await page.evaluate("document.querySelector('#player').load()")
    await until(page, "document.querySelector('#player-status').textContent.includes('session has ended')")
    sign_in_link = await page.get_attribute("#player-status a", "href")
    assert sign_in_link == f"/dashboard/sign-in?next={quote(f'/dashboard/calls/{call_id}', safe='')}"
    await context.close()


async def test_the_waveform_has_two_lanes_and_a_click_seeks_and_the_page_works_by_keyboard(
    service: RunningService, browser: Any
) -> None:
    call_id = recorded_call(service, "globex", "+15550300002", stereo_wav(20))
    context = await browser.new_context(
        permissions=["clipboard-read", "clipboard-write"], timezone_id="America/New_York"
    )
    page = await sign_in(context, service, "globex", "member")
    back = "/dashboard/calls?recording=available"
    await page.goto(f"{service.base_url}/dashboard/calls/{call_id}?back={quote(back, safe='')}")
    await until(page, "document.querySelector('#player').readyState >= 1")
    await wait_for_two_lanes(page)
    assert await page.get_attribute("#back", "href") == back

    box = await page.locator("#waveform").bounding_box()
    await page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2)
    await until(page, "Math.abs(document.querySelector('#player').currentTime - 15) < 1")

    await page.click("#copy-link")
    await until(page, "document.querySelector('#page-status').textContent === 'Link copied.'")
    assert (
        await page.evaluate("navigator.clipboard.readText()")
        == f"{service.base_url}/dashboard/calls/{call_id}"
    )

    # Who called and when, in the browser's timezone (New York here), with the zone in the tooltip.
    heading = await page.text_content("h1") or ""
    assert heading.startswith(f"Call from {format_phone(CALLER)}") and "UTC" not in heading, heading
    assert "EST" in (await page.get_attribute("h1 time", "title") or "")

    await page.focus("body")
    reached = []
    for _ in range(30):
        await page.keyboard.press("Tab")
        reached.append(await page.evaluate("document.activeElement.id"))
    assert {"back", "player", "download", "copy-link"} <= set(reached), reached
    await check_page(page, "call-available")
    await context.close()


async def test_a_processing_page_updates_itself_once_the_recording_is_archived(
    service: RunningService, browser: Any
) -> None:
    make_org(service, "initech", "+15550300003", recording=True)
    call_sid, params = arrive(service, "+15550300003")
    service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
    recording_sid = recording_sid_of(service, call_sid)
    context = await browser.new_context()
    page = await sign_in(context, service, "initech", "member")
    await page.goto(f"{service.base_url}/dashboard/calls/{params['call_id']}")
    assert await page.get_attribute("#call-page", "data-state") == "live"
    assert "in progress" in (await page.text_content("#no-recording") or "")

    service.driver.call_status(call_status_payload(call_sid, "completed", duration=10))
    await page.wait_for_selector("#call-page[data-state='processing']", timeout=15_000)
    assert "The call has ended" in (await page.text_content("#page-status") or "")
    assert "Processing: the call ended" in (await page.text_content("#no-recording") or "")
    await check_page(page, "call-processing")

    service.standin.set_audio(recording_sid, stereo_wav(8), content_type="audio/wav")
    service.standin.complete_recording(recording_sid, duration=8)
    callback(service, call_sid, recording_sid, "completed", duration=8)
    await page.wait_for_selector("#call-page[data-state='available']", timeout=30_000)
    assert await page.text_content("#page-status") == "The recording is ready to play."
    assert await page.get_attribute("#call-page", "data-settled") == "true"
    await wait_for_two_lanes(page)
    note = await page.text_content("#length-note") or ""
    assert "0:08" in note and "0:10" in note and "agent answers" in note
    await context.close()


async def test_calls_without_audio_explain_why_and_pass_the_page_checks(
    service: RunningService, browser: Any
) -> None:
    make_org(service, "umbrella", "+15550300004", recording=False)
    off_sid, off = arrive(service, "+15550300004")
    service.driver.call_status(call_status_payload(off_sid, "completed", duration=4))
    make_org(service, "hooli", "+15550300005", recording=True)
    failed_sid, failed = arrive(service, "+15550300005")
    service.driver.stream_status(stream_status_payload(failed_sid, "stream-started"))
    recording_sid = recording_sid_of(service, failed_sid)
    callback(service, failed_sid, recording_sid, "failed", error_code="13617")
    service.driver.call_status(call_status_payload(failed_sid, "completed", duration=6))

    context = await browser.new_context()
    page = await sign_in(context, service, "umbrella", "member")
    await page.goto(f"{service.base_url}/dashboard/calls/{off['call_id']}")
    assert "Recording was off" in (await page.text_content("#no-recording") or "")
    assert await page.get_attribute("#call-page", "data-settled") == "true"
    await check_page(page, "call-not-recorded")
    await context.close()

    # Without the Clipboard API the link is shown, selected, for the viewer to copy.
    context = await browser.new_context()
    await context.add_init_script("Object.defineProperty(navigator, 'clipboard', { value: undefined })")
    page = await sign_in(context, service, "umbrella", "member")
    await page.goto(f"{service.base_url}/dashboard/calls/{off['call_id']}")
    assert await page.is_hidden("#call-link")
    await page.click("#copy-link")
    await until(
        page, "document.querySelector('#page-status').textContent.startsWith('Copying is not available')"
    )
    assert await page.input_value("#call-link") == f"{service.base_url}/dashboard/calls/{off['call_id']}"
    assert await page.evaluate("document.activeElement.id") == "call-link"
    await context.close()

    context = await browser.new_context()
    page = await sign_in(context, service, "hooli", "member")
    await page.goto(f"{service.base_url}/dashboard/calls/{failed['call_id']}")
    await page.wait_for_selector("#call-page[data-state='failed']", timeout=15_000)
    assert "nothing more will happen" in (await page.text_content("#no-recording") or "")
    assert await page.text_content("#failure-code a") == "13617"
    await check_page(page, "call-failed")
    await context.close()


async def test_with_s3_the_waveform_draws_from_the_presigned_url_when_the_bucket_allows_cors(
    s3_service: RunningService, browser: Any
) -> None:
    call_id = recorded_call(s3_service, "acme", "+15550300006", stereo_wav(10))
    context = await browser.new_context()
    page = await sign_in(context, s3_service, "acme", "member")
    await open_call(page, s3_service, call_id)
    await wait_for_two_lanes(page)  # moto answers CORS for any origin, as a bucket's CORS rule would
    await context.close()


@pytest.fixture
def s3_service_without_cors(tmp_path: Path, twilio_standin: TwilioStandin) -> Iterator[RunningService]:
    with moto_server_process(tmp_path / "moto.log", {"MOTO_DISABLE_GLOBAL_CORS": "true"}) as moto:
        sync_client(moto.endpoint_url).create_bucket(Bucket="callrec-no-cors")
        running = start_service(tmp_path, twilio_standin, s3_env(moto, "callrec-no-cors"))
        try:
            yield running
        finally:
            stop_pid(running.pid)


async def test_with_s3_and_no_cors_on_the_bucket_the_page_keeps_the_plain_player(
    s3_service_without_cors: RunningService, browser: Any
) -> None:
    service = s3_service_without_cors
    call_id = recorded_call(service, "acme", "+15550300007", stereo_wav(10))
    context = await browser.new_context()
    page = await sign_in(context, service, "acme", "member")
    await open_call(page, service, call_id)
    await page.wait_for_selector("#waveform-figure[data-waveform='unavailable']", state="attached")
    assert await page.evaluate("document.querySelector('#waveform-figure').hidden") is True
    assert await page.evaluate("document.querySelector('#player').play().then(() => 'playing')") == "playing"
    await context.close()
