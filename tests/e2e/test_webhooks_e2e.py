"""call.ended against ``callrec serve``, driven as Twilio drives it, received by a subscriber on
loopback that verifies every delivery with the ``standardwebhooks`` library and fails first tries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningService, start_service
from tests.e2e.test_recording_lifecycle import arrive, callback, make_org, recording_sid_of
from tests.support.services import stop_pid
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Received, WebhookReceiver, webhook_receiver
from tests.twilio_standin import TwilioStandin, call_status_payload, stream_status_payload

CONTRACT_FIELDS = {
    "call_id",
    "org_id",
    "call_sid",
    "from",
    "to",
    "started_at",
    "answered_at",
    "ended_at",
    "duration_s",
}


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver(fail_first=True) as running:
        yield running


@pytest.fixture
def permissive(tmp_path: Path, twilio_standin: TwilioStandin) -> Iterator[RunningService]:
    running = start_service(tmp_path, twilio_standin, {"CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true"})
    try:
        yield running
    finally:
        stop_pid(running.pid)


def subscribe(service: RunningService, org_id: str, receiver: WebhookReceiver) -> None:
    with service.dashboard(org_id) as dash:
        r = dash.post(
            "/api/v1/webhook-endpoints", json={"url": receiver.url(f"/{org_id}"), "events": ["call.ended"]}
        )
    assert r.status_code == 201, r.text
    receiver.secrets.append(r.json()["secret"])


def tries_for(receiver: WebhookReceiver, call_id: str) -> list[Received]:
    return [r for r in list(receiver.received) if r.json()["data"]["call_id"] == call_id]


def test_each_call_gets_exactly_one_call_ended_after_a_failed_first_try_and_a_robocall_none(
    permissive: RunningService, receiver: WebhookReceiver
) -> None:
    service = permissive
    assert "CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true" in service.log_path.read_text()  # announced
    make_org(service, "acme", "+15550200001", recording=True)
    make_org(service, "plain", "+15550200002", recording=False)
    subscribe(service, "acme", receiver)
    subscribe(service, "plain", receiver)

    # A recorded call, answered, archived.
    rec_sid, rec = arrive(service, "+15550200001")
    service.driver.stream_status(stream_status_payload(rec_sid, "stream-started"))
    recording_sid = recording_sid_of(service, rec_sid)
    callback(service, rec_sid, recording_sid, "in-progress")
    audio = service.standin.complete_recording(recording_sid, duration=42, size=120_000)
    service.driver.call_status(call_status_payload(rec_sid, "completed", duration=44))
    callback(service, rec_sid, recording_sid, "completed", duration=42)

    # A call while recording is off.
    plain_sid, plain = arrive(service, "+15550200002")
    service.driver.stream_status(stream_status_payload(plain_sid, "stream-started"))
    service.driver.call_status(call_status_payload(plain_sid, "completed", duration=30))

    # A robocall, as the platform's scorability filter says: recorded and kept, never announced.
    robo_sid, robo = arrive(service, "+15550200001")
    service.driver.stream_status(stream_status_payload(robo_sid, "stream-started"))
    robo_recording = recording_sid_of(service, robo_sid)
    with service.internal() as internal:
        r = internal.post(
            f"/internal/v1/calls/{robo['call_id']}/scorability",
            json={"scorable": False, "reason": "robocall"},
        )
        assert r.status_code == 204
    service.standin.complete_recording(robo_recording, duration=20)
    service.driver.call_status(call_status_payload(robo_sid, "completed", duration=21))
    callback(service, robo_sid, robo_recording, "completed", duration=20)

    def delivered(call_id: str) -> list[Received] | None:
        tries = tries_for(receiver, call_id)
        return tries if any(200 <= t.answered < 300 for t in tries) else None

    wait_for(lambda: delivered(rec["call_id"]), "the recorded call's call.ended", timeout=30)
    wait_for(lambda: delivered(plain["call_id"]), "the unrecorded call's call.ended", timeout=30)
    time.sleep(1.0)  # anything extra (a second success, a robocall) would arrive by now

    for call_id in (rec["call_id"], plain["call_id"]):
        tries = tries_for(receiver, call_id)
        assert [t.answered for t in tries] == [500, 204], [t.answered for t in tries]
        assert all(t.verified for t in tries)
        assert len({t.webhook_id for t in tries}) == 1
    assert tries_for(receiver, robo["call_id"]) == []

    recorded = tries_for(receiver, rec["call_id"])[-1].json()
    assert recorded["type"] == "call.ended" and set(recorded) == {"type", "timestamp", "data"}
    assert set(recorded["data"]) == CONTRACT_FIELDS | {"recording_url"}
    data: dict[str, Any] = recorded["data"]
    assert (data["org_id"], data["call_sid"], data["duration_s"]) == ("acme", rec_sid, 44)
    assert data["answered_at"] is not None and data["ended_at"] is not None
    fetched = httpx.get(data["recording_url"], timeout=10)
    assert fetched.status_code == 200 and fetched.content == audio

    unrecorded = tries_for(receiver, plain["call_id"])[-1].json()
    assert set(unrecorded["data"]) == CONTRACT_FIELDS and unrecorded["data"]["org_id"] == "plain"

    with service.dashboard("acme", "member") as dash:
        robocall = dash.get(f"/api/v1/calls/{robo['call_id']}").json()
    assert robocall["non_engagement"] is True and robocall["recording"]["status"] == "available"


def test_a_strict_instance_refuses_loopback_private_metadata_and_plain_http_targets(
    service: RunningService,
) -> None:
    make_org(service, "strict", "+15550200003", recording=False)
    with service.dashboard("strict") as dash:
        for url in (
            "https://127.0.0.1/hook",
            "https://localhost/hook",
            "https://[::1]/hook",
            "https://10.0.0.5/hook",
            "https://192.168.1.20/hook",
            "https://169.254.169.254/latest/meta-data/",
            "https://2130706433/hook",
            "http://hooks.example.com/hook",
        ):
            r = dash.post("/api/v1/webhook-endpoints", json={"url": url, "events": ["call.ended"]})
            assert r.status_code == 422, (url, r.text)
        assert dash.get("/api/v1/webhook-endpoints").json()["items"] == []
