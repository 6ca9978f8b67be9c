"""Whole calls against ``callrec serve`` on the embedded default, driven as Twilio drives it."""

from __future__ import annotations

import hashlib
import os
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, TypeVar

import httpx

from domain.model import DISCLOSURE_TEXT
from tests.e2e.conftest import PLATFORM_SUPPORT, RunningService
from tests.support.waiting import wait_for
from tests.twilio_standin import (
    call_status_payload,
    new_sid,
    recording_status_payload,
    stream_status_payload,
    voice_payload,
)

T = TypeVar("T")
CALLER = "+15558675309"


def make_org(service: RunningService, org_id: str, number: str, *, recording: bool) -> None:
    with service.internal() as internal:
        r = internal.put(
            f"/internal/v1/organizations/{org_id}",
            json={"name": org_id.title(), "phone_numbers": [number], "greeting": f"Hi, {org_id} here."},
        )
        assert r.status_code == 200, r.text
        assert r.json()["recording_enabled"] is False
    if recording:
        with service.dashboard(org_id) as dash:
            r = dash.put("/api/v1/settings/call-recording", json={"enabled": True})
            assert r.status_code == 200 and r.json()["enabled"] is True


def stream_params(twiml: str) -> dict[str, str]:
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    assert stream is not None, twiml
    return {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


def arrive(service: RunningService, to: str, call_sid: str | None = None) -> tuple[str, dict[str, str]]:
    call_sid = call_sid or new_sid("CA")
    r = service.driver.voice(voice_payload(call_sid, from_=CALLER, to=to))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/xml")
    return call_sid, stream_params(r.text)


def start_recordings(service: RunningService, call_sid: str) -> list[dict[str, Any]]:
    return [
        req
        for req in service.standin.requests("create_recording")
        if f"/Calls/{call_sid}/" in req["path"] and req["status"] < 300
    ]


def recording_sid_of(service: RunningService, call_sid: str) -> str:
    def probe() -> str | None:
        for sid, info in service.standin.state()["recordings"].items():
            if info["call_sid"] == call_sid:
                return str(sid)
        return None

    return wait_for(probe, f"Twilio recording of {call_sid}")


def callback(service: RunningService, call_sid: str, recording_sid: str, status: str, **kw: Any) -> None:
    payload = recording_status_payload(
        call_sid=call_sid,
        recording_sid=recording_sid,
        status=status,
        standin_base=service.standin.base_url,
        **kw,
    )
    r = service.driver.recording_status(payload)
    assert r.status_code == 204, r.text


def call_detail(service: RunningService, org_id: str, call_id: str) -> dict[str, Any]:
    with service.dashboard(org_id, "member") as dash:
        r = dash.get(f"/api/v1/calls/{call_id}")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def archived(service: RunningService, org_id: str, call_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (d := call_detail(service, org_id, call_id))["recording"]["status"] == "available" and d,
        "the recording to be archived",
    )


def fetch_recording(service: RunningService, org_id: str, call_id: str, **params: str) -> httpx.Response:
    with service.dashboard(org_id, "member") as dash:
        r = dash.get(f"/api/v1/calls/{call_id}/recording", params=params)
    assert r.status_code == 307, r.text
    location = r.headers["location"]
    assert location.startswith(service.base_url + "/media/")
    return httpx.get(location, timeout=10)


def test_a_recorded_call_is_disclosed_captured_after_answer_archived_verbatim_and_deleted_once(
    service: RunningService,
) -> None:
    make_org(service, "acme", "+15550100001", recording=True)
    call_sid, params = arrive(service, "+15550100001")
    assert params["recording"] == "on"
    assert DISCLOSURE_TEXT in params["greeting"] and "Hi, acme here." in params["greeting"]
    call_id = params["call_id"]

    time.sleep(0.3)
    assert start_recordings(service, call_sid) == [], "nothing may be recorded before the agent answers"

    r = service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
    assert r.status_code == 204
    wait_for(lambda: start_recordings(service, call_sid), "the start-recording request")
    request = start_recordings(service, call_sid)[0]
    assert request["form"]["RecordingChannels"] == ["dual"]
    assert request["form"]["RecordingStatusCallback"] == [f"{service.base_url}/twilio/recording-status"]
    recording_sid = recording_sid_of(service, call_sid)

    callback(service, call_sid, recording_sid, "in-progress")
    audio = service.standin.complete_recording(recording_sid, duration=42, size=300_000)
    service.driver.stream_status(stream_status_payload(call_sid, "stream-stopped"))
    assert (
        service.driver.call_status(call_status_payload(call_sid, "completed", duration=44)).status_code == 204
    )
    callback(service, call_sid, recording_sid, "completed", duration=42)
    callback(service, call_sid, recording_sid, "completed", duration=42)  # Twilio retried
    callback(service, call_sid, recording_sid, "in-progress")  # late and out of order

    detail = archived(service, "acme", call_id)
    assert detail["recording"]["size_bytes"] == len(audio)
    assert detail["recording"]["duration_s"] == 42
    assert detail["status"] == "completed" and detail["duration_s"] == 44
    assert detail["answered_at"] is not None and detail["ended_at"] is not None
    wait_for(lambda: service.standin.delete_count(recording_sid) == 1, "the Twilio copy to be deleted")

    played = fetch_recording(service, "acme", call_id)
    assert played.status_code == 200
    assert hashlib.sha256(played.content).hexdigest() == hashlib.sha256(audio).hexdigest()
    stored = list((service.var_dir / "recordings").rglob("*.mp3"))
    assert [p.read_bytes() == audio for p in stored] == [True]
    assert "/orgs/acme/" in stored[0].as_posix()

    with service.dashboard("acme", "member") as dash:
        location = dash.get(f"/api/v1/calls/{call_id}/recording").headers["location"]
    ranged = httpx.get(location, headers={"Range": "bytes=100-199"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == audio[100:200]

    download = fetch_recording(service, "acme", call_id, download="true")
    assert "attachment" in download.headers["content-disposition"]
    assert f"-{call_id}.mp3" in download.headers["content-disposition"]

    time.sleep(0.5)  # any stray retries would show up as a second DELETE
    assert service.standin.delete_count(recording_sid) == 1


def test_call_ending_before_the_completed_callback_still_archives_once(service: RunningService) -> None:
    make_org(service, "beta", "+15550100002", recording=True)
    call_sid, params = arrive(service, "+15550100002")
    service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
    recording_sid = recording_sid_of(service, call_sid)
    service.driver.call_status(call_status_payload(call_sid, "completed", duration=9))
    audio = service.standin.complete_recording(recording_sid, duration=8)
    callback(service, call_sid, recording_sid, "completed", duration=8)  # before any in-progress
    callback(service, call_sid, recording_sid, "in-progress")
    archived(service, "beta", params["call_id"])
    assert fetch_recording(service, "beta", params["call_id"]).content == audio
    wait_for(lambda: service.standin.delete_count(recording_sid) == 1, "one DELETE")


def test_an_unrecorded_call_has_no_disclosure_no_capture_and_says_recording_off(
    service: RunningService,
) -> None:
    make_org(service, "gamma", "+15550100003", recording=False)
    call_sid, params = arrive(service, "+15550100003")
    assert params["recording"] == "off"
    assert DISCLOSURE_TEXT not in params["greeting"]
    service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
    service.driver.call_status(call_status_payload(call_sid, "completed", duration=30))
    time.sleep(0.3)
    assert start_recordings(service, call_sid) == []
    recording = call_detail(service, "gamma", params["call_id"])["recording"]
    assert recording["status"] == "not_recorded" and recording["reason"] == "recording_off"
    assert recording["playback_url"] is None
    with service.dashboard("gamma") as dash:
        assert dash.get(f"/api/v1/calls/{params['call_id']}/recording").status_code == 404


def test_the_toggle_at_arrival_decides_and_a_later_flip_changes_only_the_next_call(
    service: RunningService,
) -> None:
    make_org(service, "delta", "+15550100004", recording=True)
    first_sid, first = arrive(service, "+15550100004")
    with service.dashboard("delta") as dash:
        assert dash.put("/api/v1/settings/call-recording", json={"enabled": False}).json()["enabled"] is False
    service.driver.stream_status(stream_status_payload(first_sid, "stream-started"))
    wait_for(lambda: start_recordings(service, first_sid), "the first call to be recorded anyway")
    _, again = arrive(service, "+15550100004", call_sid=first_sid)
    assert again == first  # a repeated CallSid gets the same answer, nothing new
    second_sid, second = arrive(service, "+15550100004")
    assert first["recording"] == "on" and second["recording"] == "off"
    assert DISCLOSURE_TEXT in first["greeting"] and DISCLOSURE_TEXT not in second["greeting"]
    service.driver.stream_status(stream_status_payload(second_sid, "stream-started"))
    time.sleep(0.3)
    assert start_recordings(service, second_sid) == []
    with service.dashboard("delta") as dash:
        assert len(dash.get("/api/v1/calls").json()["items"]) == 2


def test_missing_audio_is_explained_as_no_audio(service: RunningService) -> None:
    make_org(service, "eps", "+15550100005", recording=True)
    hangup_sid, hangup = arrive(service, "+15550100005")  # instant hangup: never answered
    service.driver.call_status(call_status_payload(hangup_sid, "canceled"))
    silent_sid, silent = arrive(service, "+15550100005")
    service.driver.stream_status(stream_status_payload(silent_sid, "stream-started"))
    recording_sid = recording_sid_of(service, silent_sid)
    service.standin.set_status(recording_sid, "absent")
    callback(service, silent_sid, recording_sid, "absent", error_code="16102")
    service.driver.call_status(call_status_payload(silent_sid, "completed", duration=3))
    for call_id in (hangup["call_id"], silent["call_id"]):
        recording = call_detail(service, "eps", call_id)["recording"]
        assert (recording["status"], recording["reason"]) == ("not_recorded", "no_audio")
    assert service.standin.delete_count(recording_sid) == 0


def test_a_second_recording_of_a_recorded_call_is_archived_verbatim_and_deleted_at_twilio_too(
    service: RunningService,
) -> None:
    make_org(service, "omicron", "+15550100014", recording=True)
    call_sid, params = arrive(service, "+15550100014")
    service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
    first = recording_sid_of(service, call_sid)
    callback(service, call_sid, first, "in-progress")
    # A second start reached Twilio (a retry whose first answer was lost), and it calls back too.
    second = service.standin.add_recording(
        call_sid, status="in-progress", status_callback=f"{service.base_url}/twilio/recording-status"
    )
    callback(service, call_sid, second, "in-progress")
    own_audio = service.standin.complete_recording(first, duration=30, size=200_000)
    other_audio = service.standin.complete_recording(second, duration=12, size=90_000)
    service.driver.call_status(call_status_payload(call_sid, "completed", duration=31))
    callback(service, call_sid, second, "completed", duration=12)
    callback(service, call_sid, first, "completed", duration=30)
    callback(service, call_sid, second, "completed", duration=12)  # Twilio retried

    def both_archived() -> dict[str, Any] | None:
        detail = call_detail(service, "omicron", params["call_id"])
        extra = detail["additional_recordings"]
        done = detail["recording"]["status"] == "available" and [r["status"] for r in extra] == ["archived"]
        return detail if done else None

    detail = wait_for(both_archived, "both recordings to be archived")
    assert detail["recording"]["size_bytes"] == len(own_audio) and detail["recording"]["duration_s"] == 30
    assert detail["additional_recordings"] == [
        {"status": "archived", "reason": None, "duration_s": 12, "size_bytes": len(other_audio),
         "content_type": "audio/mpeg"}
    ]  # fmt: skip
    wait_for(
        lambda: service.standin.delete_count(first) == service.standin.delete_count(second) == 1,
        "both Twilio copies to be deleted",
    )
    stored = sorted(p.read_bytes() for p in (service.var_dir / "recordings").rglob("*.mp3"))
    assert stored == sorted([own_audio, other_audio])
    assert fetch_recording(service, "omicron", params["call_id"]).content == own_audio
    time.sleep(0.5)  # any stray retries would show up as a second DELETE
    assert service.standin.delete_count(first) == service.standin.delete_count(second) == 1


def test_recordings_of_an_unrecorded_call_are_deleted_at_twilio_and_never_archived(
    service: RunningService,
) -> None:
    make_org(service, "pi", "+15550100015", recording=False)
    call_sid, params = arrive(service, "+15550100015")
    service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
    live = service.standin.add_recording(call_sid, status="in-progress")
    finished = service.standin.add_recording(call_sid, status="completed")
    callback(service, call_sid, live, "in-progress")
    callback(service, call_sid, finished, "completed", duration=5)
    wait_for(
        lambda: any(live in r["path"] for r in service.standin.requests("update_recording")),
        "the live one to be stopped",
    )
    service.standin.complete_recording(live, duration=9)
    callback(service, call_sid, live, "completed", duration=9)
    service.driver.call_status(call_status_payload(call_sid, "completed", duration=10))

    def both_discarded() -> list[dict[str, Any]] | None:
        extra = call_detail(service, "pi", params["call_id"])["additional_recordings"]
        return extra if [r["status"] for r in extra] == ["discarded", "discarded"] else None

    extra = wait_for(both_discarded, "both recordings to be discarded")
    assert all(r["reason"] == "recording_off" and r["size_bytes"] is None for r in extra)
    assert service.standin.delete_count(live) == service.standin.delete_count(finished) == 1
    assert service.standin.recording_info(live)["deleted"] is True  # type: ignore[index]
    assert list((service.var_dir / "recordings").rglob("*.mp3")) == []
    recording = call_detail(service, "pi", params["call_id"])["recording"]
    assert (recording["status"], recording["reason"]) == ("not_recorded", "recording_off")


def test_forged_or_missing_signatures_are_refused_and_change_nothing(service: RunningService) -> None:
    make_org(service, "zeta", "+15550100006", recording=True)
    for signature in ("forged", "missing"):
        r = service.driver.voice(
            voice_payload(new_sid("CA"), from_=CALLER, to="+15550100006"), signature=signature
        )
        assert r.status_code == 403
    call_sid, params = arrive(service, "+15550100006")
    r = service.driver.stream_status(stream_status_payload(call_sid, "stream-started"), signature="forged")
    assert r.status_code == 403
    time.sleep(0.3)
    assert start_recordings(service, call_sid) == []
    with service.dashboard("zeta") as dash:
        items = dash.get("/api/v1/calls").json()["items"]
    assert [c["id"] for c in items] == [params["call_id"]]
    assert items[0]["answered_at"] is None


def test_an_unknown_number_is_rejected_and_nothing_is_created(service: RunningService) -> None:
    r = service.driver.voice(voice_payload(new_sid("CA"), from_=CALLER, to="+15559990000"))
    assert r.status_code == 200
    root = ET.fromstring(r.text)
    assert root.tag == "Response" and [child.tag for child in root] == ["Reject"]


def test_platform_lines_are_always_recorded_and_hidden_from_orgs(service: RunningService) -> None:
    make_org(service, "eta", "+15550100007", recording=False)
    call_sid, params = arrive(service, PLATFORM_SUPPORT)
    assert params["recording"] == "on" and DISCLOSURE_TEXT in params["greeting"]
    service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
    recording_sid = recording_sid_of(service, call_sid)
    audio = service.standin.complete_recording(recording_sid, duration=5)
    callback(service, call_sid, recording_sid, "completed", duration=5)
    wait_for(lambda: service.standin.delete_count(recording_sid) == 1, "the platform recording archived")
    stored = [p for p in (service.var_dir / "recordings").rglob("*.mp3")]
    assert len(stored) == 1 and "/platform/support/" in stored[0].as_posix()
    assert stored[0].read_bytes() == audio
    with service.dashboard("eta") as dash:
        assert dash.get("/api/v1/calls").json()["items"] == []
        assert dash.get(f"/api/v1/calls/{params['call_id']}").status_code == 404
        assert dash.get(f"/api/v1/calls/{params['call_id']}/recording").status_code == 404


def test_a_completed_warm_transfer_stops_the_recording_at_twilio(service: RunningService) -> None:
    make_org(service, "theta", "+15550100008", recording=True)
    call_sid, params = arrive(service, "+15550100008")
    service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
    recording_sid = recording_sid_of(service, call_sid)
    wait_for(lambda: call_detail(service, "theta", params["call_id"])["status"] == "in-progress", "answered")
    with service.internal() as internal:
        url = f"/internal/v1/calls/{params['call_id']}/transfer"
        assert internal.post(url, json={"stage": "started"}).status_code == 204
        time.sleep(0.3)
        assert service.standin.requests("update_recording") == []  # hold time stays recorded
        assert internal.post(url, json={"stage": "completed"}).status_code == 204

    def stopped() -> list[dict[str, Any]]:
        return [r for r in service.standin.requests("update_recording") if recording_sid in r["path"]]

    stop = wait_for(stopped, "Status=stopped at Twilio")
    assert stop[0]["form"]["Status"] == ["stopped"]


def test_a_non_engagement_call_keeps_its_recording(service: RunningService) -> None:
    make_org(service, "iota", "+15550100009", recording=True)
    call_sid, params = arrive(service, "+15550100009")
    service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
    recording_sid = recording_sid_of(service, call_sid)
    with service.internal() as internal:
        r = internal.post(
            f"/internal/v1/calls/{params['call_id']}/scorability",
            json={"scorable": False, "reason": "robocall"},
        )
        assert r.status_code == 204
    audio = service.standin.complete_recording(recording_sid, duration=4)
    callback(service, call_sid, recording_sid, "completed", duration=4)
    detail = archived(service, "iota", params["call_id"])
    assert detail["non_engagement"] is True
    assert fetch_recording(service, "iota", params["call_id"]).content == audio


def test_orgs_never_see_each_others_calls(service: RunningService) -> None:
    make_org(service, "kappa", "+15550100010", recording=True)
    make_org(service, "lambda", "+15550100011", recording=True)
    _, params = arrive(service, "+15550100010")
    with service.dashboard("lambda") as other:
        assert other.get("/api/v1/calls").json()["items"] == []
        assert other.get(f"/api/v1/calls/{params['call_id']}").status_code == 404
        assert other.get(f"/api/v1/calls/{params['call_id']}/recording").status_code == 404
    with service.internal() as internal:
        taken = internal.put(
            "/internal/v1/organizations/lambda",
            json={"name": "L", "phone_numbers": ["+15550100010"], "greeting": "x"},
        )
        assert taken.status_code == 409


def test_calls_page_newest_first_with_a_cursor_and_refuse_a_bad_limit(service: RunningService) -> None:
    make_org(service, "mu", "+15550100012", recording=False)
    ids = [arrive(service, "+15550100012")[1]["call_id"] for _ in range(5)]
    with service.dashboard("mu", "member") as dash:
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = dash.get("/api/v1/calls", params=params).json()
            seen.extend(item["id"] for item in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))
        for bad in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"cursor": "not-a-cursor"}):
            r = dash.get("/api/v1/calls", params=bad)
            assert r.status_code == 400, (bad, r.text)
            assert "error" in r.json()


def test_work_committed_before_a_crash_is_done_after_restart(tmp_path: Path, twilio_standin: Any) -> None:
    from tests.e2e.conftest import start_service
    from tests.support.services import stop_pid

    service = start_service(tmp_path, twilio_standin)
    try:
        make_org(service, "nu", "+15550100013", recording=True)
        call_sid, params = arrive(service, "+15550100013")
        service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
        recording_sid = recording_sid_of(service, call_sid)
        audio = twilio_standin.complete_recording(recording_sid, duration=6)
        twilio_standin.inject_fault("fetch_media", status=500, times=1000)  # archiving keeps failing
        callback(service, call_sid, recording_sid, "completed", duration=6)
        time.sleep(0.5)
        assert call_detail(service, "nu", params["call_id"])["recording"]["status"] == "processing"
        os.killpg(service.pid, signal.SIGKILL)  # a crash: no graceful shutdown
    finally:
        stop_pid(service.pid)
    assert twilio_standin.delete_count(recording_sid) == 0  # never deleted what we do not hold
    twilio_standin.faults.clear()
    restarted = start_service(tmp_path, twilio_standin)
    try:
        archived(restarted, "nu", params["call_id"])
        assert fetch_recording(restarted, "nu", params["call_id"]).content == audio
        wait_for(
            lambda: twilio_standin.delete_count(recording_sid) == 1, "one DELETE after restart", timeout=20
        )
    finally:
        stop_pid(restarted.pid)
