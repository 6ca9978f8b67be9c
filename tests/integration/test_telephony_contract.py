"""The ``Telephony`` port's contract, run against ``FakeTelephony`` and against the real
``TwilioTelephony`` talking to the Twilio stand-in; then what only the real adapter can show (wire
format, credentials, URL rewriting, error mapping, streaming) and self-checks of the stand-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Protocol

import httpx
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from adapters.twilio_telephony import (
    MEDIA_CHUNK_SIZE,
    TwilioMediaNotFound,
    TwilioTelephony,
    TwilioTelephonyError,
)
from application.ports import MediaNotFound, Telephony, TelephonyError
from tests.fakes_telephony import FakeTelephony
from tests.twilio_fixtures import StandinProcess, twilio_standin, twilio_standin_process  # noqa: F401
from tests.twilio_standin import (
    DEFAULT_AUTH_TOKEN,
    TwilioCallbackDriver,
    TwilioStandin,
    generate_audio,
    new_sid,
    recording_status_payload,
)

CALLBACK_URL = "https://callrec.example.com/twilio/recording-status"

# --- the two backends behind one test-side interface ----------------------------------------------

_STANDIN_ROUTE = {
    "start_recording": "create_recording",
    "stop_recording": "update_recording",
    "pause_recording": "update_recording",
    "resume_recording": "update_recording",
    "open_media": "fetch_media",
    "delete_recording": "delete_recording",
}


class Backend(Protocol):
    @property
    def telephony(self) -> Telephony: ...

    def add_recording(self, call_sid: str, status: str = "in-progress") -> str: ...
    def set_audio(self, recording_sid: str, data: bytes) -> None: ...
    def complete(self, recording_sid: str, size: int) -> bytes: ...
    def status(self, recording_sid: str) -> str | None: ...
    def callback_url(self, recording_sid: str) -> str | None: ...
    def delete_count(self, recording_sid: str) -> int: ...
    def fail_next(self, operation: str, times: int = 1) -> None: ...
    def forget_call(self, call_sid: str) -> None: ...
    def truncate_next_media(self) -> None: ...
    def corrupt_next_media(self) -> None: ...


@dataclass
class FakeBackend:
    fake: FakeTelephony = field(default_factory=FakeTelephony)

    @property
    def telephony(self) -> Telephony:
        return self.fake

    def add_recording(self, call_sid: str, status: str = "in-progress") -> str:
        return self.fake.add_recording(call_sid, status=status)

    def set_audio(self, recording_sid: str, data: bytes) -> None:
        self.fake.set_audio(recording_sid, data)

    def complete(self, recording_sid: str, size: int) -> bytes:
        return self.fake.complete_recording(recording_sid, duration=10, size=size)

    def status(self, recording_sid: str) -> str | None:
        return self.fake.status(recording_sid)

    def callback_url(self, recording_sid: str) -> str | None:
        return self.fake.callback_url(recording_sid)

    def delete_count(self, recording_sid: str) -> int:
        return self.fake.delete_count(recording_sid)

    def fail_next(self, operation: str, times: int = 1) -> None:
        self.fake.fail_next(operation, times)

    def forget_call(self, call_sid: str) -> None:
        self.fake.forget_call(call_sid)

    def truncate_next_media(self) -> None:
        self.fake.truncate_next_media()

    def corrupt_next_media(self) -> None:
        self.fake.corrupt_next_media()


@dataclass
class StandinBackend:
    standin: TwilioStandin
    real: TwilioTelephony

    @property
    def telephony(self) -> Telephony:
        return self.real

    def add_recording(self, call_sid: str, status: str = "in-progress") -> str:
        return self.standin.add_recording(call_sid, status=status)

    def set_audio(self, recording_sid: str, data: bytes) -> None:
        self.standin.set_audio(recording_sid, data)

    def complete(self, recording_sid: str, size: int) -> bytes:
        return self.standin.complete_recording(recording_sid, duration=10, size=size)

    def status(self, recording_sid: str) -> str | None:
        info = self.standin.recording_info(recording_sid)
        return None if info is None else str(info["status"])

    def callback_url(self, recording_sid: str) -> str | None:
        info = self.standin.recording_info(recording_sid)
        return None if info is None else info["status_callback"]

    def delete_count(self, recording_sid: str) -> int:
        return self.standin.delete_count(recording_sid)

    def fail_next(self, operation: str, times: int = 1) -> None:
        self.standin.inject_fault(_STANDIN_ROUTE[operation], status=500, times=times)

    def forget_call(self, call_sid: str) -> None:
        self.standin.forget_call(call_sid)

    def truncate_next_media(self) -> None:
        self.standin.truncate_next_media()

    def corrupt_next_media(self) -> None:
        self.standin.corrupt_next_media()


@pytest.fixture(params=["fake", "twilio"])
async def backend(request: pytest.FixtureRequest, twilio_standin: TwilioStandin) -> AsyncIterator[Backend]:  # noqa: F811
    if request.param == "fake":
        yield FakeBackend()
        return
    async with TwilioTelephony(
        twilio_standin.account_sid, twilio_standin.auth_token, api_base=twilio_standin.base_url
    ) as real:
        yield StandinBackend(twilio_standin, real)


@pytest.fixture
async def telephony(twilio_standin: TwilioStandin) -> AsyncIterator[TwilioTelephony]:  # noqa: F811
    async with TwilioTelephony(
        twilio_standin.account_sid, twilio_standin.auth_token, api_base=twilio_standin.base_url
    ) as real:
        yield real


def call_sid() -> str:
    return new_sid("CA")


async def download(telephony: Telephony, recording_sid: str, media_url: str | None = None) -> list[bytes]:
    async with telephony.open_media(recording_sid, media_url) as media:
        return [chunk async for chunk in media.chunks]


# --- the contract (fake and real) ------------------------------------------------------------------


async def test_starting_a_recording_returns_a_fresh_recording_sid_each_time(backend: Backend) -> None:
    call = call_sid()
    first = await backend.telephony.start_recording(call, CALLBACK_URL)
    second = await backend.telephony.start_recording(call, CALLBACK_URL)
    assert first != second
    for sid in (first, second):
        assert sid.startswith("RE") and len(sid) == 34
        assert backend.status(sid) == "in-progress"


async def test_a_started_recording_remembers_where_its_status_callbacks_go(backend: Backend) -> None:
    sid = await backend.telephony.start_recording(call_sid(), CALLBACK_URL)
    assert backend.callback_url(sid) == CALLBACK_URL


async def test_stopping_a_recording_marks_it_stopped(backend: Backend) -> None:
    call = call_sid()
    sid = await backend.telephony.start_recording(call, CALLBACK_URL)
    await backend.telephony.stop_recording(call, sid)
    assert backend.status(sid) == "stopped"


async def test_stopping_a_recording_that_does_not_exist_is_a_telephony_error(backend: Backend) -> None:
    with pytest.raises(TelephonyError):
        await backend.telephony.stop_recording(call_sid(), new_sid("RE"))


async def test_pausing_and_resuming_a_recording_sets_its_status_each_time_idempotently(
    backend: Backend,
) -> None:
    call = call_sid()
    sid = await backend.telephony.start_recording(call, CALLBACK_URL)
    for _ in range(2):
        assert await backend.telephony.pause_recording(call, sid, pause_behavior="silence")
        assert backend.status(sid) == "paused"
    for _ in range(2):
        assert await backend.telephony.resume_recording(call, sid)
        assert backend.status(sid) == "in-progress"


async def test_pausing_or_resuming_a_recording_the_provider_does_not_hold_reports_it_gone(
    backend: Backend,
) -> None:
    assert not await backend.telephony.pause_recording(call_sid(), new_sid("RE"), pause_behavior="silence")
    assert not await backend.telephony.resume_recording(call_sid(), new_sid("RE"))


async def test_a_transient_failure_on_pause_is_a_telephony_error_and_the_retry_succeeds(
    backend: Backend,
) -> None:
    call = call_sid()
    sid = await backend.telephony.start_recording(call, CALLBACK_URL)
    backend.fail_next("pause_recording")
    with pytest.raises(TelephonyError):
        await backend.telephony.pause_recording(call, sid, pause_behavior="silence")
    assert await backend.telephony.pause_recording(call, sid, pause_behavior="silence")
    assert backend.status(sid) == "paused"


async def test_the_media_of_a_completed_recording_streams_back_byte_for_byte(backend: Backend) -> None:
    sid = await backend.telephony.start_recording(call_sid(), CALLBACK_URL)
    audio = backend.complete(sid, size=100_000)
    async with backend.telephony.open_media(sid) as media:
        assert media.content_type == "audio/mpeg"
        assert media.content_length == len(audio)
        received = b"".join([chunk async for chunk in media.chunks])
    assert received == audio


async def test_media_set_by_the_test_is_what_is_downloaded(backend: Backend) -> None:
    sid = backend.add_recording(call_sid(), status="completed")
    backend.set_audio(sid, b"ID3 exactly these bytes")
    assert b"".join(await download(backend.telephony, sid)) == b"ID3 exactly these bytes"


async def test_media_comes_in_several_chunks_of_at_most_64_kib(backend: Backend) -> None:
    sid = backend.add_recording(call_sid(), status="completed")
    audio = backend.complete(sid, size=300_000)
    chunks = await download(backend.telephony, sid)
    assert len(chunks) >= 5
    assert max(len(c) for c in chunks) <= MEDIA_CHUNK_SIZE
    assert b"".join(chunks) == audio


async def test_the_media_of_an_unknown_recording_is_not_found(backend: Backend) -> None:
    with pytest.raises(MediaNotFound):
        await download(backend.telephony, new_sid("RE"))


async def test_the_media_of_a_recording_still_in_progress_is_not_found(backend: Backend) -> None:
    sid = await backend.telephony.start_recording(call_sid(), CALLBACK_URL)
    with pytest.raises(MediaNotFound):
        await download(backend.telephony, sid)


async def test_deleting_a_recording_reports_it_deleted_and_its_media_is_gone(backend: Backend) -> None:
    sid = backend.add_recording(call_sid(), status="completed")
    backend.complete(sid, size=1000)
    assert await backend.telephony.delete_recording(sid) is True
    with pytest.raises(MediaNotFound):
        await download(backend.telephony, sid)


async def test_deleting_an_already_deleted_recording_reports_it_gone(backend: Backend) -> None:
    sid = backend.add_recording(call_sid(), status="completed")
    assert await backend.telephony.delete_recording(sid) is True
    assert await backend.telephony.delete_recording(sid) is False
    assert backend.delete_count(sid) == 2


async def test_deleting_a_recording_that_never_existed_reports_it_gone(backend: Backend) -> None:
    assert await backend.telephony.delete_recording(new_sid("RE")) is False


async def test_a_transient_failure_on_delete_is_a_telephony_error_and_the_retry_succeeds(
    backend: Backend,
) -> None:
    sid = backend.add_recording(call_sid(), status="completed")
    backend.fail_next("delete_recording")
    with pytest.raises(TelephonyError) as raised:
        await backend.telephony.delete_recording(sid)
    assert not isinstance(raised.value, MediaNotFound)
    assert await backend.telephony.delete_recording(sid) is True


async def test_a_transient_failure_on_start_is_a_telephony_error_and_the_retry_succeeds(
    backend: Backend,
) -> None:
    backend.fail_next("start_recording")
    with pytest.raises(TelephonyError):
        await backend.telephony.start_recording(call_sid(), CALLBACK_URL)
    assert (await backend.telephony.start_recording(call_sid(), CALLBACK_URL)).startswith("RE")


async def test_a_transient_failure_on_opening_media_is_a_telephony_error_not_a_missing_one(
    backend: Backend,
) -> None:
    sid = backend.add_recording(call_sid(), status="completed")
    backend.complete(sid, size=1000)
    backend.fail_next("open_media")
    with pytest.raises(TelephonyError) as raised:
        await download(backend.telephony, sid)
    assert not isinstance(raised.value, MediaNotFound)
    assert len(b"".join(await download(backend.telephony, sid))) == 1000


async def test_a_download_that_breaks_off_raises_a_telephony_error_while_streaming(backend: Backend) -> None:
    sid = backend.add_recording(call_sid(), status="completed")
    backend.complete(sid, size=200_000)
    backend.truncate_next_media()
    received = 0
    with pytest.raises(TelephonyError):
        async with backend.telephony.open_media(sid) as media:
            async for chunk in media.chunks:
                received += len(chunk)
    assert received < 200_000
    assert len(b"".join(await download(backend.telephony, sid))) == 200_000  # the next try is whole


async def test_a_corrupted_download_arrives_whole_but_different_so_only_a_checksum_can_tell(
    backend: Backend,
) -> None:
    sid = backend.add_recording(call_sid(), status="completed")
    audio = backend.complete(sid, size=10_000)
    backend.corrupt_next_media()
    corrupted = b"".join(await download(backend.telephony, sid))
    assert len(corrupted) == len(audio) and corrupted != audio


async def test_leaving_a_download_early_does_not_spoil_the_next_one(backend: Backend) -> None:
    sid = backend.add_recording(call_sid(), status="completed")
    audio = backend.complete(sid, size=500_000)
    async with backend.telephony.open_media(sid) as media:
        async for _ in media.chunks:
            break
    assert b"".join(await download(backend.telephony, sid)) == audio


# --- what only the real adapter shows -------------------------------------------------------------


async def test_starting_a_recording_asks_twilio_for_dual_channels_and_all_three_callback_events(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    call = call_sid()
    sid = await telephony.start_recording(call, CALLBACK_URL)
    [request] = twilio_standin.requests("create_recording")
    assert request["method"] == "POST"
    assert (
        request["path"] == f"/2010-04-01/Accounts/{twilio_standin.account_sid}/Calls/{call}/Recordings.json"
    )
    form = request["form"]
    assert form["RecordingChannels"] == ["dual"]
    assert form["RecordingStatusCallback"] == [CALLBACK_URL]
    # The SDK sends a list as repeated fields; Twilio also takes one space-separated value.
    events = " ".join(form["RecordingStatusCallbackEvent"]).split()
    assert sorted(events) == ["absent", "completed", "in-progress"]
    info = twilio_standin.recording_info(sid)
    assert info is not None
    assert info["channels"] == 2 and sorted(info["status_callback_events"]) == sorted(events)


async def test_stopping_posts_status_stopped_to_the_calls_recording(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    call = call_sid()
    sid = await telephony.start_recording(call, CALLBACK_URL)
    await telephony.stop_recording(call, sid)
    [request] = twilio_standin.requests("update_recording")
    assert request["path"].endswith(f"/Calls/{call}/Recordings/{sid}.json")
    assert request["form"]["Status"] == ["stopped"]


@pytest.mark.parametrize("behavior", ["silence", "skip"])
async def test_pausing_posts_status_paused_with_the_pause_behavior_and_resuming_status_in_progress(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
    behavior: str,
) -> None:
    call = call_sid()
    sid = await telephony.start_recording(call, CALLBACK_URL)
    await telephony.pause_recording(call, sid, pause_behavior=behavior)
    await telephony.resume_recording(call, sid)
    paused, resumed = twilio_standin.requests("update_recording")
    for request in (paused, resumed):
        assert request["method"] == "POST" and request["auth_ok"]
        assert (
            request["path"]
            == f"/2010-04-01/Accounts/{twilio_standin.account_sid}/Calls/{call}/Recordings/{sid}.json"
        )
    assert paused["form"] == {"Status": ["paused"], "PauseBehavior": [behavior]}
    assert resumed["form"] == {"Status": ["in-progress"]}
    info = twilio_standin.recording_info(sid)
    assert info is not None and (info["status"], info["pause_behavior"]) == ("in-progress", behavior)


async def test_the_stand_in_refuses_a_pause_behavior_twilio_does_not_know(
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    call = call_sid()
    sid = twilio_standin.add_recording(call)
    account = twilio_standin.account_sid
    url = f"{twilio_standin.base_url}/2010-04-01/Accounts/{account}/Calls/{call}/Recordings/{sid}.json"
    async with httpx.AsyncClient(auth=(twilio_standin.account_sid, twilio_standin.auth_token)) as client:
        response = await client.post(url, data={"Status": "paused", "PauseBehavior": "mute"})
    assert response.status_code == 400
    info = twilio_standin.recording_info(sid)
    assert info is not None and info["status"] == "in-progress"


async def test_every_request_carries_the_account_credentials(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    call = call_sid()
    sid = await telephony.start_recording(call, CALLBACK_URL)
    await telephony.stop_recording(call, sid)
    twilio_standin.complete_recording(sid, size=1000)
    await download(telephony, sid)
    await telephony.delete_recording(sid)
    requests = twilio_standin.requests()
    assert [r["route"] for r in requests] == [
        "create_recording",
        "update_recording",
        "fetch_media",
        "delete_recording",
    ]
    assert all(r["auth_ok"] and r["auth_user"] == twilio_standin.account_sid for r in requests)


async def test_requests_go_to_the_api_base_instead_of_api_twilio_com(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    await telephony.start_recording(call_sid(), CALLBACK_URL)
    [request] = twilio_standin.requests()
    assert request["headers"]["Host"] == f"127.0.0.1:{twilio_standin.port}"


async def test_wrong_credentials_are_a_telephony_error_that_retrying_will_not_fix(
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    async with TwilioTelephony(twilio_standin.account_sid, "wrong", twilio_standin.base_url) as wrong:
        with pytest.raises(TwilioTelephonyError) as raised:
            await wrong.start_recording(call_sid(), CALLBACK_URL)
        assert raised.value.status == 401 and not raised.value.retryable
        with pytest.raises(TwilioTelephonyError) as raised_media:
            await download(wrong, twilio_standin.add_recording(call_sid(), status="completed"))
        assert raised_media.value.status == 401
        assert not isinstance(raised_media.value, MediaNotFound)


async def test_a_500_on_delete_is_a_telephony_error_not_a_recording_already_gone(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    sid = twilio_standin.add_recording(call_sid(), status="completed")
    twilio_standin.inject_fault("delete_recording", status=500)
    with pytest.raises(TwilioTelephonyError) as raised:
        await telephony.delete_recording(sid)
    assert raised.value.status == 500 and raised.value.code == 20500 and raised.value.retryable
    assert raised.value.retry_after is None
    assert twilio_standin.recording_info(sid)["deleted"] is False  # type: ignore[index]


async def test_a_404_on_delete_reports_the_recording_gone(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    sid = new_sid("RE")
    assert await telephony.delete_recording(sid) is False
    [request] = twilio_standin.requests("delete_recording")
    assert request["status"] == 404
    assert request["path"] == f"/2010-04-01/Accounts/{twilio_standin.account_sid}/Recordings/{sid}.json"


async def test_a_429_on_delete_surfaces_retry_after(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    sid = twilio_standin.add_recording(call_sid(), status="completed")
    twilio_standin.inject_fault("delete_recording", status=429, retry_after=7)
    with pytest.raises(TwilioTelephonyError) as raised:
        await telephony.delete_recording(sid)
    assert raised.value.status == 429 and raised.value.retry_after == 7.0 and raised.value.retryable


async def test_a_503_with_a_date_as_retry_after_surfaces_the_seconds_to_wait(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    twilio_standin.inject_fault("create_recording", status=503, retry_after=later)
    with pytest.raises(TwilioTelephonyError) as raised:
        await telephony.start_recording(call_sid(), CALLBACK_URL)
    assert raised.value.status == 503
    assert raised.value.retry_after is not None and 100 < raised.value.retry_after <= 120


async def test_a_429_on_media_surfaces_retry_after(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    sid = twilio_standin.add_recording(call_sid(), status="completed")
    twilio_standin.inject_fault("fetch_media", status=429, retry_after="2.5")
    with pytest.raises(TwilioTelephonyError) as raised:
        await download(telephony, sid)
    assert raised.value.status == 429 and raised.value.retry_after == 2.5


async def test_a_404_on_media_is_media_not_found_with_its_status(
    telephony: TwilioTelephony,
) -> None:
    with pytest.raises(TwilioMediaNotFound) as raised:
        await download(telephony, new_sid("RE"))
    assert raised.value.status == 404 and isinstance(raised.value, MediaNotFound)


async def test_a_five_megabyte_recording_streams_in_many_small_chunks(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    sid = twilio_standin.add_recording(call_sid(), status="completed")
    audio = twilio_standin.complete_recording(sid, size=5 * 1024 * 1024)
    digest = hashlib.sha256()
    sizes = []
    async with telephony.open_media(sid) as media:
        assert media.content_length == len(audio)
        async for chunk in media.chunks:
            sizes.append(len(chunk))
            digest.update(chunk)
    assert len(sizes) >= 80 and max(sizes) <= MEDIA_CHUNK_SIZE
    assert sum(sizes) == len(audio)
    assert digest.hexdigest() == hashlib.sha256(audio).hexdigest()


async def test_a_media_url_on_the_api_base_is_downloaded_with_mp3_appended(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    sid = twilio_standin.add_recording(call_sid(), status="completed")
    audio = twilio_standin.complete_recording(sid, size=2000)
    payload = twilio_standin.recording_status_payload(sid)
    assert not payload["RecordingUrl"].endswith(".mp3")
    assert b"".join(await download(telephony, sid, payload["RecordingUrl"])) == audio
    [request] = twilio_standin.requests("fetch_media")
    assert request["path"] == payload["RecordingUrl"].removeprefix(twilio_standin.base_url) + ".mp3"


class _Bystander:
    """A tiny server that notes every request it gets (and whether it carried credentials)."""

    def __init__(self, body: bytes = b"") -> None:
        self.body = body
        self.seen: list[dict[str, Any]] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def _any(self, request: web.Request) -> web.Response:
        self.seen.append({"path": request.path, "authorization": request.headers.get("Authorization")})
        return web.Response(body=self.body, content_type="audio/mpeg")

    async def __aenter__(self) -> _Bystander:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_a_media_url_on_another_host_is_ignored_and_never_gets_the_credentials(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    sid = twilio_standin.add_recording(call_sid(), status="completed")
    audio = twilio_standin.complete_recording(sid, size=3000)
    async with _Bystander(b"not the recording") as foreign:
        foreign_url = f"{foreign.base_url}/2010-04-01/Accounts/{twilio_standin.account_sid}/Recordings/{sid}"
        assert b"".join(await download(telephony, sid, foreign_url)) == audio
        assert foreign.seen == []
    assert len(twilio_standin.requests("fetch_media")) == 1


async def test_a_media_redirect_to_another_host_is_followed_without_the_credentials(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    sid = twilio_standin.add_recording(call_sid(), status="completed")
    async with _Bystander(b"ID3 from signed storage") as storage:
        twilio_standin.redirect_next_media(storage.base_url + "/signed/{sid}.mp3?Expires=1")
        assert b"".join(await download(telephony, sid)) == b"ID3 from signed storage"
        assert storage.seen == [{"path": f"/signed/{sid}.mp3", "authorization": None}]
    [request] = twilio_standin.requests("fetch_media")
    assert request["auth_ok"] and request["status"] == 302


def test_the_media_url_is_built_from_the_sid_unless_twilio_gave_one_on_the_api_base() -> None:
    t = TwilioTelephony("AC" + "1" * 32, "token", "http://127.0.0.1:8123")
    sid = "RE" + "a" * 32
    built = f"http://127.0.0.1:8123/2010-04-01/Accounts/{'AC' + '1' * 32}/Recordings/{sid}.mp3"
    assert t.media_url_for(sid) == built
    sub = f"http://127.0.0.1:8123/2010-04-01/Accounts/{'AC' + '2' * 32}/Recordings/{sid}"
    assert t.media_url_for(sid, sub) == sub + ".mp3"
    assert t.media_url_for(sid, sub + ".json") == sub + ".mp3"
    assert t.media_url_for(sid, sub.replace("http://", "https://")) == built  # other scheme
    assert t.media_url_for(sid, sub.replace("8123", "8124")) == built  # other port
    assert t.media_url_for(sid, sub.replace(sid, "RE" + "b" * 32)) == built  # another recording
    assert t.media_url_for(sid, "not a url") == built


def test_nothing_connects_and_no_event_loop_is_needed_when_the_adapter_is_constructed() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        TwilioTelephony("AC" + "1" * 32, "token", f"http://127.0.0.1:{port}")
        with pytest.raises(BlockingIOError):
            listener.accept()


async def test_an_unreachable_api_is_a_retryable_telephony_error_for_every_operation() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        async with TwilioTelephony("AC" + "1" * 32, "token", f"http://127.0.0.1:{port}") as t:
            sid = new_sid("RE")
            attempts = [
                t.start_recording(call_sid(), CALLBACK_URL),
                t.stop_recording(call_sid(), sid),
                t.pause_recording(call_sid(), sid, pause_behavior="silence"),
                t.resume_recording(call_sid(), sid),
                t.delete_recording(sid),
                download(t, sid),
            ]
            for attempt in attempts:
                with pytest.raises(TwilioTelephonyError) as raised:
                    await attempt
                assert raised.value.status is None and raised.value.retryable
                assert not isinstance(raised.value, MediaNotFound)


async def test_the_adapter_works_again_after_being_closed(
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    t = TwilioTelephony(twilio_standin.account_sid, twilio_standin.auth_token, twilio_standin.base_url)
    await t.start_recording(call_sid(), CALLBACK_URL)
    await t.aclose()
    await t.aclose()
    await t.start_recording(call_sid(), CALLBACK_URL)
    await t.aclose()
    assert len(twilio_standin.requests("create_recording")) == 2


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_one_adapter_serves_successive_event_loops(
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    t = TwilioTelephony(twilio_standin.account_sid, twilio_standin.auth_token, twilio_standin.base_url)
    asyncio.run(t.start_recording(call_sid(), CALLBACK_URL))
    # The first loop's session cannot be used (or closed) from the second loop: a new one is made.
    asyncio.run(t.start_recording(call_sid(), CALLBACK_URL))
    asyncio.run(t.aclose())
    assert len(twilio_standin.requests("create_recording")) == 2
    gc.collect()  # the abandoned session's warnings belong to this test


# --- the stand-in and the callback driver themselves ---------------------------------------------


async def test_the_sdk_reads_the_stand_ins_recording_list_across_pages(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    call = call_sid()
    sids = {await telephony.start_recording(call, CALLBACK_URL) for _ in range(3)}
    twilio_standin.add_recording(call_sid())  # another call's
    listed = await telephony._client.calls(call).recordings.list_async(page_size=2)
    assert {r.sid for r in listed} == sids
    assert all(r.status == "in-progress" and r.channels == 2 for r in listed)
    assert len(twilio_standin.requests("list_call_recordings")) == 2


def test_the_stand_in_runs_as_a_process_whose_state_tests_can_read_and_steer(
    twilio_standin_process: StandinProcess,  # noqa: F811
) -> None:
    standin = twilio_standin_process
    assert standin.health()["pid"] == standin.pid
    call = call_sid()

    async def scenario() -> bytes:
        async with TwilioTelephony(standin.account_sid, standin.auth_token, standin.base_url) as t:
            sid = await t.start_recording(call, CALLBACK_URL)
            standin.complete_recording(sid, duration=12, size=70_000)
            standin.inject_fault("delete_recording", status=429, retry_after=1)
            audio = b"".join(await download(t, sid, standin.recording_status_payload(sid)["RecordingUrl"]))
            with pytest.raises(TelephonyError):
                await t.delete_recording(sid)
            assert await t.delete_recording(sid) is True
            return audio

    audio = asyncio.run(scenario())
    state = standin.state()
    [(sid, info)] = state["recordings"].items()
    assert info["call_sid"] == call and info["deleted"] is True and info["delete_count"] == 2
    assert len(audio) == 70_000 and audio == generate_audio(sid, 70_000)
    assert [r["route"] for r in state["requests"]] == [
        "create_recording",
        "fetch_media",
        "delete_recording",
        "delete_recording",
    ]
    payload = standin.recording_status_payload(sid, "completed")
    assert payload["RecordingDuration"] == "12" and payload["RecordingChannels"] == "2"


def test_a_recording_status_payload_looks_like_twilios() -> None:
    payload = recording_status_payload(
        call_sid="CA1",
        recording_sid="RE1",
        status="completed",
        standin_base="http://127.0.0.1:9/",
        duration=5,
    )
    assert payload["RecordingUrl"].endswith("/Recordings/RE1")
    assert payload["RecordingUrl"].startswith("http://127.0.0.1:9/2010-04-01/Accounts/AC")
    assert payload["RecordingSource"] == "StartCallRecordingAPI" and payload["ErrorCode"] == "0"
    assert payload["RecordingDuration"] == "5" and payload["RecordingChannels"] == "2"


@contextlib.contextmanager
def serve_in_thread(app: web.Application) -> Iterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1 from a background thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def signature_checker() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A service stand-in that validates X-Twilio-Signature against its public URL, like the service."""
    seen: list[dict[str, Any]] = []
    validator = RequestValidator(DEFAULT_AUTH_TOKEN)

    async def handler(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        url = f"https://callrec.example.com{request.path}"
        signature = request.headers.get("X-Twilio-Signature")
        seen.append({"path": request.path, "form": form, "signature": signature})
        return web.Response(status=204 if validator.validate(url, form, signature or "") else 403)

    app = web.Application()
    app.router.add_post("/twilio/{kind}", handler)
    with serve_in_thread(app) as base_url:
        yield base_url, seen


async def test_the_callback_driver_signs_callbacks_the_way_twilio_does(
    signature_checker: tuple[str, list[dict[str, Any]]],
) -> None:
    sent_to, seen = signature_checker
    driver = TwilioCallbackDriver("https://callrec.example.com", send_base_url=sent_to)
    payload = recording_status_payload(
        call_sid=call_sid(), recording_sid=new_sid("RE"), status="completed", standin_base=sent_to
    )
    assert (await driver.arecording_status(payload)).status_code == 204
    assert driver.recording_status(payload).status_code == 204
    assert (await driver.arecording_status(payload, signature="forged")).status_code == 403
    assert driver.recording_status(payload, signature="missing").status_code == 403
    assert driver.recording_status(payload, sign_url="https://elsewhere.example.com/x").status_code == 403
    assert seen[0]["form"] == payload and seen[-2]["signature"] is None


def test_the_callback_driver_can_post_to_an_in_process_app() -> None:
    def app(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=request.headers.get("X-Twilio-Signature", ""))

    driver = TwilioCallbackDriver("http://127.0.0.1:8000", "token", transport=httpx.MockTransport(app))
    params = {"CallSid": "CA1", "CallStatus": "completed"}
    response = driver.call_status(params)
    expected = RequestValidator("token").compute_signature("http://127.0.0.1:8000/twilio/call-status", params)
    assert response.text == expected


# --- listing a call's recordings (the reconciliation sweep's question), fake and real ------------


async def test_a_calls_recordings_are_listed_with_their_status_and_nothing_of_other_calls(
    backend: Backend,
) -> None:
    call = call_sid()
    live = await backend.telephony.start_recording(call, CALLBACK_URL)
    done = await backend.telephony.start_recording(call, CALLBACK_URL)
    backend.complete(done, size=1000)
    await backend.telephony.start_recording(call_sid(), CALLBACK_URL)  # another call's

    listed = await backend.telephony.list_call_recordings(call)

    assert {r.sid: r.status for r in listed} == {live: "in-progress", done: "completed"}
    assert all(r.call_sid == call for r in listed)
    assert next(r for r in listed if r.sid == done).duration_s == 10


async def test_a_deleted_recording_is_no_longer_listed(backend: Backend) -> None:
    call = call_sid()
    sid = backend.add_recording(call, status="completed")
    await backend.telephony.delete_recording(sid)

    assert await backend.telephony.list_call_recordings(call) == []


async def test_a_transient_failure_on_listing_is_a_telephony_error(backend: Backend) -> None:
    if isinstance(backend, StandinBackend):
        backend.standin.inject_fault("list_recordings", status=503)
    else:
        assert isinstance(backend, FakeBackend)
        backend.fake.fail_next("list_call_recordings")
    with pytest.raises(TelephonyError):
        await backend.telephony.list_call_recordings(call_sid())


async def test_a_call_the_provider_does_not_know_has_no_recordings_and_cannot_be_recorded(
    backend: Backend,
) -> None:
    call = call_sid()
    backend.add_recording(call, status="completed")
    backend.forget_call(call)

    assert await backend.telephony.list_call_recordings(call) == []
    with pytest.raises(TelephonyError):
        await backend.telephony.start_recording(call, CALLBACK_URL)


async def test_listing_follows_twilios_pages(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,  # noqa: F811
) -> None:
    call = call_sid()
    sids = {twilio_standin.add_recording(call, status="completed") for _ in range(130)}

    listed = await telephony.list_call_recordings(call)

    assert {r.sid for r in listed} == sids
    pages = twilio_standin.requests("list_recordings")
    assert len(pages) == 2 and pages[0]["query"]["CallSid"] == [call]
    assert all(r.media_url and r.media_url.endswith(f"/Recordings/{r.sid}") for r in listed)
