"""The settings page in a real Chromium: an admin sets one number to "never record" and the next call
to it is neither recorded nor disclosed; a member reads the same page without controls. Both pass axe-core
and fit a phone (``tests/e2e/pages.py``'s checks, on the page's own content)."""

from __future__ import annotations

from typing import Any

from domain.model import DISCLOSURE_TEXT
from tests.e2e.conftest import RunningService
from tests.e2e.pages import PHONE, check_page
from tests.e2e.test_dashboard_browser import browser, sign_in
from tests.e2e.test_recording_lifecycle import arrive

__all__ = ["browser"]  # the Chromium fixture, shared

OFF_NUMBER, INHERITING_NUMBER = "+15550200011", "+15550200012"


def org_with_two_numbers(service: RunningService, org_id: str) -> None:
    with service.internal() as internal:
        r = internal.put(
            f"/internal/v1/organizations/{org_id}",
            json={"name": "Hooli", "phone_numbers": [OFF_NUMBER, INHERITING_NUMBER], "greeting": "Hi."},
        )
        assert r.status_code == 200, r.text
    with service.dashboard(org_id) as dash:
        assert dash.put("/api/v1/settings/call-recording", json={"enabled": True}).status_code == 200


async def test_an_admin_sets_a_number_to_never_record_and_its_next_call_is_not_recorded(
    service: RunningService, browser: Any
) -> None:
    org_with_two_numbers(service, "hooli")
    context = await browser.new_context(viewport=PHONE)
    page = await sign_in(context, service, "hooli", "admin")
    await page.goto(f"{service.base_url}/dashboard/settings")
    assert "applies from the next call" in await page.text_content("#applies-next-call")
    await check_page(page, "settings-admin")

    number = page.get_by_role("group", name=OFF_NUMBER)  # a fieldset named by its legend
    assert await number.get_by_role("radio", name="Follow the organization's setting").is_checked()
    await number.get_by_role("radio", name="Never record").check()
    await number.get_by_role("button", name=f"Save {OFF_NUMBER}").click()
    await page.wait_for_url(f"{service.base_url}/dashboard/settings#number-{OFF_NUMBER[1:]}")

    number = page.get_by_role("group", name=OFF_NUMBER)
    assert await number.get_by_role("radio", name="Never record").is_checked()
    assert await number.locator(".effective").text_content() == "not recorded"
    assert "Last changed by admin@hooli on" in (await number.locator(".changed").text_content() or "")
    inheriting = page.get_by_role("group", name=INHERITING_NUMBER)
    assert await inheriting.locator(".effective").text_content() == "recorded"

    _, off = arrive(service, OFF_NUMBER)
    _, on = arrive(service, INHERITING_NUMBER)
    assert (off["recording"], off["greeting"]) == ("off", "Hi.")
    assert (on["recording"], on["greeting"]) == ("on", f"{DISCLOSURE_TEXT} Hi.")
    await context.close()

    member_context = await browser.new_context(viewport=PHONE)
    member = await sign_in(member_context, service, "hooli", "member")
    await member.goto(f"{service.base_url}/dashboard/settings")
    assert await member.get_by_role("radio").count() == 0
    assert await member.locator("#read-only").is_visible()
    assert await member.locator(f"#number-{OFF_NUMBER[1:]} .mode").text_content() == "Never record"
    await check_page(member, "settings-member")
    await member_context.close()
