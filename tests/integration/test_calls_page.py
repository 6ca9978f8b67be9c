"""The Calls page's and GET /api/v1/calls's filters over HTTP on a real database."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.integration.test_dashboard_api import ACME, ACME_NUMBER, harness, sign_in, sqlite_harness
from tests.support.app import ApiHarness, error_code

__all__ = ["harness", "sqlite_harness"]  # the fixtures


async def test_the_api_filters_by_caller_prefix_and_by_days_in_a_time_zone(harness: ApiHarness) -> None:
    h = harness
    call_id = await h.unrecorded_call(ACME_NUMBER)  # from +15550001111, started now
    auth = h.auth(ACME)

    async def ids(**params: str) -> list[str]:
        r = await h.client.get("/api/v1/calls", params=params, headers=auth)
        assert r.status_code == 200, r.text
        return [item["id"] for item in r.json()["items"]]

    assert await ids(caller="+1 (555) 000") == [call_id]
    assert await ids(caller="1555000111") == [call_id]
    assert await ids(caller="+44") == []
    assert await ids(hide_non_engagement="true") == [call_id]  # not judged yet
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):  # UTC+14 and UTC-11: always a day apart
        day = datetime.now(UTC).astimezone(ZoneInfo(zone)).date()
        assert await ids(**{"from": str(day), "to": str(day), "tz": zone}) == [call_id], zone
        before = str(day - timedelta(days=1))
        assert await ids(**{"from": before, "to": before, "tz": zone}) == [], zone
    for bad in ({"caller": "bob"}, {"tz": "Mars/Olympus"}, {"caller": ""}):
        r = await h.client.get("/api/v1/calls", params=bad, headers=auth)
        assert r.status_code == 400 and error_code(r) == "invalid_request", (bad, r.text)


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("limit=0", "Page: a page holds 1 to 200 calls"),
        ("limit=x", "Page: a page holds 1 to 200 calls"),
        ("cursor=1.a&before=1.a", "Page: a page is either older"),
        ("before=nope", "Page: malformed cursor"),
        ("recording=purple", "Recording: choose one of"),
    ],
)
async def test_a_bad_calls_page_query_is_a_400_page_that_says_what_is_wrong(
    sqlite_harness: ApiHarness, query: str, says: str
) -> None:
    h = sqlite_harness
    await h.archived_call(ACME_NUMBER)
    await sign_in(h, "member")
    r = await h.client.get(f"/dashboard/calls?{query}")
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert says in r.text and 'role="alert"' in r.text and 'class="call"' not in r.text


async def test_the_calls_page_keeps_its_filters_in_its_paging_links(sqlite_harness: ApiHarness) -> None:
    h = sqlite_harness
    for _ in range(3):
        await h.unrecorded_call(ACME_NUMBER)
    await sign_in(h, "member")
    r = await h.client.get("/dashboard/calls?limit=1&caller=%2B1555&tz=Asia%2FTokyo&from=2020-01-01")
    assert r.status_code == 200 and r.text.count('class="call"') == 1
    [older] = re.findall(r'rel="next" href="([^"]+)"', r.text)
    assert "caller=%2B1555" in older and "from=2020-01-01" in older and "limit=1" in older
    assert "tz=Asia%2FTokyo" in older and "cursor=" in older
    r = await h.client.get(older.replace("&amp;", "&"))
    [newer] = re.findall(r'rel="prev" href="([^"]+)"', r.text)
    assert "caller=%2B1555" in newer and "before=" in newer


async def test_a_calls_row_links_to_its_call_and_the_call_page_leads_back_to_the_same_list(
    sqlite_harness: ApiHarness,
) -> None:
    h = sqlite_harness
    await h.unrecorded_call(ACME_NUMBER)
    await sign_in(h, "member")
    plain = await h.client.get("/dashboard/calls")
    [plain_link] = re.findall(r'class="call-link" href="([^"]+)"', plain.text)
    assert "?" not in plain_link  # no filters: nothing to come back to but the list itself
    r = await h.client.get("/dashboard/calls?caller=%2B1555&tz=Asia%2FTokyo")
    [link] = re.findall(r'class="call-link" href="([^"]+)"', r.text)
    call_page = await h.client.get(link.replace("&amp;", "&"))
    assert call_page.status_code == 200
    [back] = re.findall(r'<a id="back"[^>]*href="([^"]+)"', call_page.text)
    assert back.startswith("/dashboard/calls?") and "caller=%2B1555" in back and "tz=Asia%2FTokyo" in back


async def test_the_api_pages_both_ways_with_next_and_prev_cursors(sqlite_harness: ApiHarness) -> None:
    h = sqlite_harness
    for _ in range(5):
        await h.unrecorded_call(ACME_NUMBER)
    member = h.auth(ACME, "member")

    async def page(**params: object) -> dict[str, object]:
        query = {"limit": "2"} | {k: str(v) for k, v in params.items()}
        r = await h.client.get("/api/v1/calls", params=query, headers=member)
        assert r.status_code == 200, r.text
        body: dict[str, object] = r.json()
        return body

    def ids(body: dict[str, object]) -> list[str]:
        items = body["items"]
        assert isinstance(items, list)
        return [item["id"] for item in items]

    first = await page()
    assert first["prev_cursor"] is None and isinstance(first["next_cursor"], str)
    second = await page(cursor=first["next_cursor"])
    assert isinstance(second["prev_cursor"], str) and not set(ids(first)) & set(ids(second))
    back = await page(before=second["prev_cursor"])
    assert ids(back) == ids(first) and back["prev_cursor"] is None
    third = await page(cursor=second["next_cursor"])
    assert len(ids(third)) == 1 and third["next_cursor"] is None
    assert ids(await page(before=third["prev_cursor"])) == ids(second)
    both = await h.client.get(
        "/api/v1/calls",
        params={"cursor": first["next_cursor"], "before": second["prev_cursor"]},
        headers=member,
    )
    assert both.status_code == 400 and error_code(both) == "invalid_request"
