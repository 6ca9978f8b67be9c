"""``callrec serve`` with ``CALLREC_STORAGE=s3`` (a local moto server) and the Twilio stand-in."""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.conftest import RunningService, start_service
from tests.support.s3 import S3_CREDENTIALS, S3_REGION, MotoServer
from tests.support.services import stop_pid
from tests.support.waiting import wait_for
from tests.twilio_standin import (
    TwilioStandin,
    call_status_payload,
    new_sid,
    recording_status_payload,
    stream_status_payload,
    voice_payload,
)

T = TypeVar("T")
S3_PATIENCE_S = 20.0  # waits here cross S3 (moto) and Twilio (the stand-in)
TWO_MB = 2 * 1024 * 1024


def s3_env(moto: MotoServer, bucket: str, **extra: str) -> dict[str, str]:
    return {
        "CALLREC_STORAGE": "s3",
        "CALLREC_S3_BUCKET": bucket,
        "CALLREC_S3_REGION": S3_REGION,
        "CALLREC_S3_ENDPOINT_URL": moto.endpoint_url,
        "AWS_ACCESS_KEY_ID": S3_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS["aws_secret_access_key"],
        **extra,
    }


@pytest.fixture
def s3_service(
    tmp_path: Path, twilio_standin: TwilioStandin, moto_server: MotoServer, s3_bucket: str
) -> Iterator[RunningService]:
    env = s3_env(
        moto_server, s3_bucket, CALLREC_RECONCILE_INTERVAL_S="0.5", CALLREC_RECONCILE_STUCK_AFTER_S="2"
    )
    running = start_service(tmp_path, twilio_standin, env)
    try:
        yield running
    finally:
        stop_pid(running.pid)


def make_org(service: RunningService, org_id: str, number: str) -> None:
    with service.internal() as internal:
        r = internal.put(
            f"/internal/v1/organizations/{org_id}",
            json={"name": org_id.title(), "phone_numbers": [number], "greeting": f"Hi, {org_id} here."},
        )
        assert r.status_code == 200, r.text
    with service.dashboard(org_id) as dash:
        assert dash.put("/api/v1/settings/call-recording", json={"enabled": True}).status_code == 200


def answered_call(service: RunningService, number: str) -> tuple[str, str, str]:
    """A recorded call the agent answered: (call id, call sid, Twilio recording sid)."""
    call_sid = new_sid("CA")
    r = service.driver.voice(voice_payload(call_sid, from_="+15558675309", to=number))
    assert r.status_code == 200, r.text
    call_id = r.text.split('name="call_id" value="', 1)[1].split('"', 1)[0]
    assert service.driver.stream_status(stream_status_payload(call_sid, "stream-started")).status_code == 204

    def recording_sid() -> str | None:
        for sid, info in service.standin.state()["recordings"].items():
            if info["call_sid"] == call_sid:
                return str(sid)
        return None

    return call_id, call_sid, wait_for(recording_sid, f"the recording of {call_sid}", timeout=S3_PATIENCE_S)


def complete(service: RunningService, call_sid: str, recording_sid: str, *, callback: bool = True) -> bytes:
    audio = service.standin.complete_recording(recording_sid, duration=20, size=TWO_MB)
    service.driver.call_status(call_status_payload(call_sid, "completed", duration=21))
    if callback:
        payload = recording_status_payload(
            call_sid=call_sid,
            recording_sid=recording_sid,
            status="completed",
            standin_base=service.standin.base_url,
            duration=20,
        )
        assert service.driver.recording_status(payload).status_code == 204
    return audio


def available(service: RunningService, org_id: str, call_id: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        with service.dashboard(org_id, "member") as dash:
            body: dict[str, Any] = dash.get(f"/api/v1/calls/{call_id}").json()
        return body if body["recording"]["status"] == "available" else None

    return wait_for(probe, "the recording to be archived", timeout=S3_PATIENCE_S)


def bucket_objects(s3_client: Any, bucket: str) -> dict[str, bytes]:
    listed = s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3_client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def presigned_lifetime_s(url: str) -> int:
    query = parse_qs(urlsplit(url).query)
    signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed).total_seconds()) < 60
    return int(query["X-Amz-Expires"][0])


def test_a_call_on_s3_is_archived_verbatim_encrypted_under_its_org_and_played_from_a_presigned_url(
    s3_service: RunningService, s3_client: Any, s3_bucket: str, moto_server: MotoServer
) -> None:
    make_org(s3_service, "acme", "+15550200001")
    call_id, call_sid, recording_sid = answered_call(s3_service, "+15550200001")
    audio = complete(s3_service, call_sid, recording_sid)

    detail = available(s3_service, "acme", call_id)
    wait_for(
        lambda: s3_service.standin.delete_count(recording_sid) == 1,
        "the Twilio copy to be deleted",
        timeout=S3_PATIENCE_S,
    )

    assert detail["recording"]["size_bytes"] == len(audio)
    [(key, stored)] = bucket_objects(s3_client, s3_bucket).items()
    assert stored == audio
    assert key.startswith("orgs/acme/") and key.endswith(".mp3") and call_id in key
    head = s3_client.head_object(Bucket=s3_bucket, Key=key)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"]["sha256"] == hashlib.sha256(audio).hexdigest()
    assert head["Metadata"]["org-id"] == "acme" and head["Metadata"]["call-id"] == call_id

    with s3_service.dashboard("acme", "member") as dash:
        play = dash.get(f"/api/v1/calls/{call_id}/recording")
        download = dash.get(f"/api/v1/calls/{call_id}/recording", params={"download": "true"})
    assert play.status_code == download.status_code == 307
    location = play.headers["location"]
    assert location.startswith(f"{moto_server.endpoint_url}/{s3_bucket}/{key}?")
    assert presigned_lifetime_s(location) <= 3600
    assert httpx.get(location, timeout=10).content == audio
    ranged = httpx.get(location, headers={"Range": "bytes=100-199"}, timeout=10)
    assert (ranged.status_code, ranged.content) == (206, audio[100:200])
    attachment = httpx.get(download.headers["location"], timeout=10)
    assert attachment.headers["content-disposition"].startswith("attachment; filename=")
    assert f"-{call_id}.mp3" in attachment.headers["content-disposition"]

    time.sleep(0.5)  # a stray retry would show up as a second DELETE
    assert s3_service.standin.delete_count(recording_sid) == 1


def test_five_concurrent_calls_of_two_megabytes_are_each_archived_once(
    s3_service: RunningService, s3_client: Any, s3_bucket: str
) -> None:
    make_org(s3_service, "busy", "+15550200002")
    calls = [answered_call(s3_service, "+15550200002") for _ in range(5)]

    with ThreadPoolExecutor(5) as pool:
        audios = list(pool.map(lambda c: complete(s3_service, c[1], c[2]), calls))
    for call_id, _, _ in calls:
        available(s3_service, "busy", call_id)
    for _, _, recording_sid in calls:
        wait_for(
            functools.partial(deleted_once, s3_service, recording_sid),
            "each Twilio copy deleted",
            timeout=S3_PATIENCE_S,
        )

    stored = bucket_objects(s3_client, s3_bucket)
    assert sorted(hashlib.sha256(b).hexdigest() for b in stored.values()) == sorted(
        hashlib.sha256(a).hexdigest() for a in audios
    )
    for (call_id, _, _), audio in zip(calls, audios, strict=True):
        [key] = [k for k in stored if f"/{call_id}/" in k]
        assert key.startswith("orgs/busy/") and stored[key] == audio
        assert s3_client.head_object(Bucket=s3_bucket, Key=key)["ServerSideEncryption"] == "AES256"
    time.sleep(0.5)
    assert [s3_service.standin.delete_count(sid) for _, _, sid in calls] == [1] * 5


def test_a_lost_completed_callback_is_archived_by_the_periodic_sweep_of_serve(
    s3_service: RunningService, s3_client: Any, s3_bucket: str
) -> None:
    make_org(s3_service, "quiet", "+15550200003")
    call_id, call_sid, recording_sid = answered_call(s3_service, "+15550200003")

    audio = complete(s3_service, call_sid, recording_sid, callback=False)  # Twilio's callback is lost

    available(s3_service, "quiet", call_id)
    wait_for(
        lambda: s3_service.standin.delete_count(recording_sid) == 1,
        "the Twilio copy to be deleted",
        timeout=S3_PATIENCE_S,
    )
    assert list(bucket_objects(s3_client, s3_bucket).values()) == [audio]
    assert s3_service.standin.requests("list_recordings"), "the sweep asked Twilio for the call's recordings"


def test_serve_refuses_to_start_on_s3_without_a_bucket(tmp_path: Path, twilio_standin: TwilioStandin) -> None:
    with pytest.raises(RuntimeError, match="CALLREC_S3_BUCKET"):
        start_service(tmp_path, twilio_standin, {"CALLREC_STORAGE": "s3"})


def deleted_once(service: Any, recording_sid: str) -> bool:
    return bool(service.standin.delete_count(recording_sid) == 1)
