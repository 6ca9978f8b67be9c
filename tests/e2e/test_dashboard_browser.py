"""The dashboard in a real Chromium: sign in, find the call, play and download its recording."""

from __future__ import annotations

import io
import math
import shutil
import struct
import wave
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningService
from tests.e2e.test_recording_lifecycle import (
    archived,
    arrive,
    callback,
    make_org,
    recording_sid_of,
)
from tests.support.services import missing_service
from tests.support.waiting import wait_for
from tests.twilio_standin import call_status_payload, stream_status_payload

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def sine_wav(seconds: float = 1.0, rate: int = 8000) -> bytes:
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * i / rate)))
        for i in range(int(seconds * rate))
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return buffer.getvalue()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if CHROMIUM is None:
        missing_service("Chromium is not installed (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            yield browser
        finally:
            await browser.close()


def recorded_call(service: RunningService, org: str, number: str, audio: bytes) -> str:
    make_org(service, org, number, recording=True)
    call_sid, params = arrive(service, number)
    service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
    recording_sid = recording_sid_of(service, call_sid)
    service.standin.set_audio(recording_sid, audio, content_type="audio/wav")
    service.standin.complete_recording(recording_sid, duration=1)
    service.driver.call_status(call_status_payload(call_sid, "completed", duration=2))
    callback(service, call_sid, recording_sid, "completed", duration=1)
    archived(service, org, params["call_id"])
    wait_for(lambda: service.standin.delete_count(recording_sid) == 1, "the Twilio copy deleted")
    return params["call_id"]


async def sign_in(context: Any, service: RunningService, org: str, role: str) -> Any:
    page = await context.new_page()
    response = await page.goto(f"{service.base_url}/dashboard/calls")
    assert response.status == 401 and "/dashboard/sign-in" in page.url  # no session: the sign-in notice
    token = service.dashboard(org, role).headers["Authorization"].split(" ", 1)[1]
    await page.fill("input[name=token]", token)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{service.base_url}/dashboard/calls")
    return page


async def test_a_member_plays_and_downloads_a_recording_in_chromium(
    service: RunningService, browser: Any
) -> None:
    audio = sine_wav()
    call_id = recorded_call(service, "acme", "+15550200001", audio)
    context = await browser.new_context(accept_downloads=True)
    page = await sign_in(context, service, "acme", "member")
    cookies = await context.cookies()
    session = next(c for c in cookies if c["name"] == "callrec_session")
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"

    rows = page.locator("li.call")
    assert await rows.count() == 1
    await rows.first.locator("a").click()
    await page.wait_for_url(f"{service.base_url}/dashboard/calls/{call_id}")

    player = page.locator("#player")
    await player.wait_for()
    await page.wait_for_function("document.querySelector('#player').readyState === 4", timeout=10_000)
    played = await page.evaluate("document.querySelector('#player').play().then(() => 'playing')")
    assert played == "playing"
    duration = await page.evaluate("document.querySelector('#player').duration")
    assert 0.9 < duration < 1.1

    async with page.expect_download() as download_info:
        await page.click("#download")
    download = await download_info.value
    assert download.suggested_filename.endswith(f"-{call_id}.mp3")
    path = await download.path()
    assert path is not None and path.read_bytes() == audio
    await context.close()


async def test_an_admin_turns_recording_off_from_the_settings_page_and_signs_out(
    service: RunningService, browser: Any
) -> None:
    make_org(service, "globex", "+15550200002", recording=True)
    context = await browser.new_context()
    page = await sign_in(context, service, "globex", "admin")
    await page.goto(f"{service.base_url}/dashboard/settings")
    assert await page.text_content("#recording-state") == "on"
    await page.click("#toggle")
    await page.wait_for_url(f"{service.base_url}/dashboard/settings")
    assert await page.text_content("#recording-state") == "off"
    with service.dashboard("globex", "member") as api:
        assert api.get("/api/v1/settings/call-recording").json()["enabled"] is False
    await page.click("#sign-out")
    await page.wait_for_url(f"{service.base_url}/dashboard/sign-in")
    assert not [c for c in await context.cookies() if c["name"] == "callrec_session"]
    response = await page.goto(f"{service.base_url}/dashboard/settings")
    assert response.status == 401 and "/dashboard/sign-in" in page.url
    # signing in again returns to the page asked for
    token = service.dashboard("globex", "admin").headers["Authorization"].split(" ", 1)[1]
    await page.fill("input[name=token]", token)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{service.base_url}/dashboard/settings")
    assert await page.get_attribute('a[aria-current="page"]', "href") == "/dashboard/settings"
    await context.close()


async def test_an_admin_stops_keeping_filtered_calls_recordings_from_the_settings_page(
    service: RunningService, browser: Any
) -> None:
    make_org(service, "hooli", "+15550200005", recording=True)
    context = await browser.new_context()
    page = await sign_in(context, service, "hooli", "admin")
    await page.goto(f"{service.base_url}/dashboard/settings")
    assert await page.is_checked("#keep-non-engagement")
    await page.uncheck("#keep-non-engagement")
    await page.click("#save-filtered")
    await page.wait_for_url(f"{service.base_url}/dashboard/settings")
    assert await page.text_content("#filtered-state") == "deleted once the call settles"
    assert not await page.is_checked("#keep-non-engagement")
    with service.dashboard("hooli", "member") as api:
        assert api.get("/api/v1/settings/call-recording").json()["keep_non_engagement"] is False
    await context.close()


def test_pages_without_a_session_and_foreign_calls_show_nothing(service: RunningService) -> None:
    call_id = recorded_call(service, "initech", "+15550200003", sine_wav(0.2))
    make_org(service, "umbrella", "+15550200004", recording=True)
    with httpx.Client(base_url=service.base_url, follow_redirects=False) as client:
        assert client.get("/dashboard/calls").status_code == 303
        assert client.get(f"/dashboard/calls/{call_id}/audio").status_code == 401
        token = service.dashboard("umbrella", "admin").headers["Authorization"].split(" ", 1)[1]
        same_origin = {"Origin": service.base_url}
        r = client.post("/dashboard/session", data={"token": token}, headers=same_origin)
        assert r.status_code == 303
        assert client.get(f"/dashboard/calls/{call_id}").status_code == 404
        foreign_audio = client.get(f"/dashboard/calls/{call_id}/audio")
        assert foreign_audio.status_code == 404 and "location" not in foreign_audio.headers
        forged = client.post(
            "/dashboard/settings", data={"enabled": "false"}, headers={"Origin": "https://evil.example"}
        )
        assert forged.status_code == 403
        bad = client.post("/dashboard/session", data={"token": "not-a-token"}, headers=same_origin)
        assert bad.status_code == 401
