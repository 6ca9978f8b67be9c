"""The Calls page in a real Chromium: filters kept in the URL, newer and older pages, times in the
viewer's time zone, cards on a phone."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.e2e.conftest import RunningService
from tests.e2e.pages import PHONE, check_page
from tests.e2e.test_dashboard_browser import browser, recorded_call, sign_in, sine_wav
from tests.e2e.test_recording_lifecycle import make_org, stream_params
from tests.twilio_standin import call_status_payload, voice_payload

__all__ = ["browser"]  # the fixture

ORG, NUMBER = "listco", "+15550300001"
UK, ROBOCALLER = "+442079460958", "+15550109999"


def unanswered_call(service: RunningService, caller: str, status: str) -> str:
    call_sid = "CA" + secrets.token_hex(16)
    r = service.driver.voice(voice_payload(call_sid, from_=caller, to=NUMBER))
    assert r.status_code == 200, r.text
    service.driver.call_status(call_status_payload(call_sid, status, duration=0))
    return stream_params(r.text)["call_id"]


def three_calls(service: RunningService) -> list[str]:
    """Oldest first: a recorded call (available; an instant hangup), an unanswered one from the UK, a
    robocall (the scorability filter's verdict)."""
    recorded = recorded_call(service, ORG, NUMBER, sine_wav(0.3))
    uk = unanswered_call(service, UK, "no-answer")
    robocall = unanswered_call(service, ROBOCALLER, "busy")
    with service.internal() as internal:
        verdict = {"scorable": False, "reason": "robocall"}
        r = internal.post(f"/internal/v1/calls/{robocall}/scorability", json=verdict)
        assert r.status_code < 300, r.text
    return [recorded, uk, robocall]


async def shown(page: Any) -> list[str]:
    """The call ids of the cards on the page, top to bottom."""
    links = await page.locator("li.call a").evaluate_all("links => links.map(a => a.pathname)")
    return [str(href).rsplit("/", 1)[-1] for href in links]


async def filter_by(page: Any, **fields: str) -> None:
    for selector, value in fields.items():
        await page.fill(f"#f-{selector}", value)
    async with page.expect_navigation():
        await page.click("form.filters button[type=submit]")


async def test_filters_narrow_the_calls_survive_a_reload_and_say_what_is_wrong(
    service: RunningService, browser: Any
) -> None:
    recorded, uk, robocall = three_calls(service)
    context = await browser.new_context(timezone_id="Europe/Paris", locale="en-US")
    page = await sign_in(context, service, ORG, "member")
    assert await shown(page) == [robocall, uk, recorded]
    card = page.locator("li.call").nth(1)
    assert "+44 207 946 0958" in await card.inner_text() and "No answer" in await card.inner_text()
    assert await page.locator("li.call").first.locator("a").count() == 1  # the whole card is one link
    await check_page(page, "calls")

    await filter_by(page, caller="+44 20")
    assert page.url.endswith("/dashboard/calls?caller=%2B44+20&tz=Europe%2FParis")  # no empty fields
    assert await shown(page) == [uk]
    await page.reload()
    assert await shown(page) == [uk] and await page.input_value("#f-caller") == "+44 20"

    await page.goto(f"{service.base_url}/dashboard/calls")
    await page.select_option("#f-recording", "available")
    async with page.expect_navigation():
        await page.click("form.filters button[type=submit]")
    assert await shown(page) == [recorded]
    assert await page.locator("li.call .badge").inner_text() == "Available"
    await check_page(page, "calls-filtered")

    await page.goto(f"{service.base_url}/dashboard/calls")
    await page.check("#f-hide")
    async with page.expect_navigation():
        await page.click("form.filters button[type=submit]")
    # the robocall by the scorability verdict, the recorded call (answered, over in 2 s) as settled
    assert await shown(page) == [uk]
    await page.reload()
    assert await shown(page) == [uk] and await page.is_checked("#f-hide")

    tomorrow = (datetime.now(ZoneInfo("Europe/Paris")) + timedelta(days=1)).date().isoformat()
    await filter_by(page, **{"from": tomorrow})
    assert await shown(page) == []
    assert await page.locator(".empty").inner_text() == "No calls match these filters."
    await check_page(page, "calls-empty")

    response = await page.goto(f"{service.base_url}/dashboard/calls?caller=bob&to=2026-02-30")
    assert response.status == 400
    alert = await page.locator("[role=alert]").inner_text()
    assert "Caller:" in alert and "To:" in alert and await shown(page) == []
    assert await page.get_attribute("#f-caller", "aria-invalid") == "true"
    await check_page(page, "calls-bad-filter")

    response = await page.goto(f"{service.base_url}/dashboard/calls?tz=Mars%2FOlympus")
    assert response.status == 200 and len(await shown(page)) == 3
    assert "not known here; days are in UTC" in await page.locator("[role=status]").inner_text()
    await context.close()


async def test_pages_go_older_and_newer_keeping_the_filters(service: RunningService, browser: Any) -> None:
    recorded, uk, robocall = three_calls(service)
    context = await browser.new_context()
    page = await sign_in(context, service, ORG, "member")
    await page.goto(f"{service.base_url}/dashboard/calls?limit=1&caller=%2B1")
    assert await shown(page) == [robocall]
    assert await page.locator("a[rel=prev]").count() == 0
    for expected in ([recorded],):
        async with page.expect_navigation():
            await page.click("a[rel=next]")
        assert "caller=%2B1" in page.url and await shown(page) == expected
    assert await page.locator("a[rel=next]").count() == 0  # the UK call is not from +1: two pages
    async with page.expect_navigation():
        await page.click("a[rel=prev]")
    assert await shown(page) == [robocall] and await page.locator("a[rel=prev]").count() == 0

    await page.goto(f"{service.base_url}/dashboard/calls?limit=1")
    for expected in ([uk], [recorded]):
        async with page.expect_navigation():
            await page.click("a[rel=next]")
        assert await shown(page) == expected
    async with page.expect_navigation():
        await page.click("a[rel=prev]")
    assert await shown(page) == [uk]
    async with page.expect_navigation():
        await page.click("text=Newest")
    assert await shown(page) == [robocall]
    await context.close()


async def test_times_show_in_the_browsers_time_zone(service: RunningService, browser: Any) -> None:
    recorded = recorded_call(service, ORG, NUMBER, sine_wav(0.2))
    seen = set()
    for zone in ("America/New_York", "Asia/Tokyo"):
        context = await browser.new_context(timezone_id=zone, locale="en-US")
        page = await sign_in(context, service, ORG, "member")
        time = page.locator("li.call time")
        iso = await time.get_attribute("datetime")
        assert iso is not None and iso.endswith("Z")
        local = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(ZoneInfo(zone))
        text = " ".join((await time.inner_text()).replace("\u202f", " ").split())
        hour = f"{local.hour % 12 or 12}:{local:%M} {'AM' if local.hour < 12 else 'PM'}"
        assert text == f"{local:%b} {local.day}, {local.year}, {hour}", (zone, text)
        seen.add(text)
        assert await page.input_value("input[name=tz]") == zone
        # a day filter is that day in the viewer's zone
        day = local.date()
        for first, expected in ((day, [recorded]), (day + timedelta(days=1), [])):
            await page.goto(f"{service.base_url}/dashboard/calls?from={first}&to={first}&tz={zone}")
            assert await shown(page) == expected, (zone, first)
        await context.close()
    assert len(seen) == 2


async def test_the_shell_of_every_page_fits_a_phone_and_passes_axe(
    service: RunningService, browser: Any
) -> None:
    """The header wraps and every page's targets are big enough: sign-in, settings, access log, errors."""
    make_org(service, ORG, NUMBER, recording=False)
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{service.base_url}/dashboard/sign-in")
    await check_page(page, "sign-in")
    page = await sign_in(context, service, ORG, "admin")
    for path, name in [
        ("settings", "settings"),
        ("audit-log", "access-log"),
        ("calls/" + "0" * 32, "not-found"),
    ]:
        await page.goto(f"{service.base_url}/dashboard/{path}")
        await check_page(page, name)
    await page.set_viewport_size(PHONE)
    nav = await page.locator("header nav").bounding_box()
    sign_out = await page.locator("#sign-out").bounding_box()
    assert nav is not None and sign_out is not None and nav["x"] + nav["width"] <= PHONE["width"]
    assert sign_out["x"] + sign_out["width"] <= PHONE["width"]  # wrapped, not pushed off the screen
    await context.close()
