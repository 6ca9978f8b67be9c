"""Pausing a recording for card details, against ``callrec serve`` and the Twilio stand-in."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import RunningService
from tests.e2e.pages import check_page
from tests.e2e.test_dashboard_browser import browser, sign_in  # noqa: F401
from tests.e2e.test_recording_lifecycle import (
    arrive,
    call_detail,
    make_org,
    recording_sid_of,
)
from tests.support.waiting import wait_for
from tests.twilio_standin import call_status_payload, stream_status_payload


def updates(service: RunningService, recording_sid: str) -> list[dict[str, list[str]]]:
    return [
        req["form"]
        for req in service.standin.requests("update_recording")
        if req["path"].endswith(f"/Recordings/{recording_sid}.json") and req["status"] < 300
    ]


def post(service: RunningService, path: str) -> Any:
    with service.internal() as internal:
        return internal.post(path)


def paused_call(service: RunningService, number: str) -> tuple[str, str]:
    """A recorded call, answered, whose recording Twilio has named: (call id, call sid)."""
    call_sid, params = arrive(service, number)
    service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
    recording_sid_of(service, call_sid)
    url = f"/internal/v1/calls/{params['call_id']}/recording/pause"
    wait_for(lambda: post(service, url).status_code == 200, "the pause")
    return params["call_id"], call_sid


def test_an_agent_pauses_for_card_details_and_twilio_pauses_with_silence_then_resumes(
    service: RunningService,
) -> None:
    make_org(service, "acme", "+15550100001", recording=True)
    call_sid, params = arrive(service, "+15550100001")
    call_id = params["call_id"]
    url = f"/internal/v1/calls/{call_id}/recording"
    assert post(service, f"{url}/pause").status_code == 409  # not answered yet: nothing to pause

    service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
    recording_sid = recording_sid_of(service, call_sid)
    # 409 until the service has recorded the RecordingSid Twilio gave it
    paused = wait_for(lambda: (r := post(service, f"{url}/pause")).status_code == 200 and r, "the pause")
    assert paused.json()["paused"] is True
    wait_for(lambda: updates(service, recording_sid), "Twilio to be asked to pause")
    assert updates(service, recording_sid) == [{"Status": ["paused"], "PauseBehavior": ["silence"]}]
    assert service.standin.recording_info(recording_sid)["status"] == "paused"  # type: ignore[index]

    resumed = post(service, f"{url}/resume")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    wait_for(lambda: len(updates(service, recording_sid)) == 2, "Twilio to be asked to resume")
    assert updates(service, recording_sid)[1] == {"Status": ["in-progress"]}

    post(service, f"{url}/pause")
    service.driver.call_status(call_status_payload(call_sid, "completed", duration=60))
    assert post(service, f"{url}/resume").status_code == 409  # ended: the pause closed with the call
    pauses = call_detail(service, "acme", call_id)["pauses"]
    assert [p["resume_reason"] for p in pauses] == ["requested", "call_ended"]


async def test_the_call_page_lists_the_pauses_accessibly(
    service: RunningService,
    browser: Any,  # noqa: F811
) -> None:
    make_org(service, "acme", "+15550100002", recording=True)
    call_id, call_sid = paused_call(service, "+15550100002")
    assert post(service, f"/internal/v1/calls/{call_id}/recording/resume").status_code == 200
    assert post(service, f"/internal/v1/calls/{call_id}/recording/pause").status_code == 200
    service.driver.call_status(call_status_payload(call_sid, "completed", duration=60))
    context = await browser.new_context()
    page = await sign_in(context, service, "acme", "member")

    await page.goto(f"{service.base_url}/dashboard/calls/{call_id}")

    items = await page.locator("#pauses li").all_inner_texts()
    assert len(items) == 2 and "until the call ended" in items[1]
    await check_page(page, "call-with-pauses")
