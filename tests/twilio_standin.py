"""A local Twilio stand-in: Twilio's REST paths and form fields for call recordings, on aiohttp.web.

Run it in a background thread of the test process (``TwilioStandin(...).start()``, or the
``twilio_standin`` fixture) or as its own process::

    python -m tests.twilio_standin --port 0 [--host 127.0.0.1] [--account-sid AC…] [--auth-token …]

The process prints one JSON line ``{"event": "ready", "base_url": …, "port": …, "pid": …, …}`` on stdout
once it listens, then nothing more; SIGTERM or SIGINT stop it. Its state and faults are reachable over
HTTP under ``/_standin/`` (no auth), which ``StandinHttpControl`` wraps with the same method names the
in-process ``TwilioStandin`` has.

Twilio side (HTTP basic auth with the account sid and auth token, else 401):

* ``POST /2010-04-01/Accounts/{AC}/Calls/{CA}/Recordings.json`` starts a recording (201, resource JSON)
* ``POST /2010-04-01/Accounts/{AC}/Calls/{CA}/Recordings/{RE}.json`` ``Status=stopped|paused|in-progress``
  (``PauseBehavior=skip|silence`` with ``paused``)
* ``GET  /2010-04-01/Accounts/{AC}/Calls/{CA}/Recordings.json`` and ``…/Accounts/{AC}/Recordings.json``
  (``CallSid``, ``PageSize``, ``Page``) list recordings in Twilio's paging shape
* ``GET  /2010-04-01/Accounts/{AC}/Recordings/{RE}.json`` fetches one
* ``GET  /2010-04-01/Accounts/{AC}/Recordings/{RE}.mp3`` serves the audio (404 when unknown, deleted, or
  not yet completed)
* ``DELETE /2010-04-01/Accounts/{AC}/Recordings/{RE}.json`` → 204, then 404; every DELETE is counted

Inspection and control (``/_standin/…``): ``GET health``, ``GET state``, ``POST reset``,
``POST recordings`` (JSON ``{"call_sid", "sid"?, "status"?, "duration"?, "audio_size"?}``),
``POST recordings/{RE}/audio`` (raw body), ``GET recordings/{RE}/audio``,
``POST recordings/{RE}/complete`` (JSON ``{"duration"?, "size"?}``), ``POST recordings/{RE}/status``
(JSON ``{"status"}``), ``GET recordings/{RE}/callback-payload?status=…&service_base=…``,
``POST calls/{CA}/end``, ``POST calls/{CA}/forget``, ``POST faults`` (JSON, see ``Fault``/``MediaFault``).

Also here: ``TwilioCallbackDriver`` (signed Twilio → service callbacks) and payload builders.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import os
import random
import signal
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from aiohttp import web
from twilio.request_validator import RequestValidator

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "ROUTES",
    "Fault",
    "MediaFault",
    "ReceivedRequest",
    "StandinHttpControl",
    "StandinRecording",
    "TwilioCallbackDriver",
    "TwilioStandin",
    "call_status_payload",
    "new_sid",
    "recording_status_payload",
    "stream_status_payload",
    "voice_payload",
]

DEFAULT_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
DEFAULT_AUTH_TOKEN = "5f4dcc3b5aa765d61d8327deb882cf99"
API = "/2010-04-01"
ROUTES = (
    "create_recording",
    "update_recording",
    "list_call_recordings",
    "list_recordings",
    "fetch_recording",
    "fetch_media",
    "delete_recording",
)
MEDIA_WRITE_CHUNK = 64 * 1024
_MP3_HEADER = b"ID3\x04\x00\x00\x00\x00\x00\x00"
_VALID_EVENTS = ("in-progress", "completed", "absent")


def new_sid(prefix: str) -> str:
    """A Twilio-shaped sid: two letters and 32 lowercase hex digits."""
    return prefix + uuid.uuid4().hex


def generate_audio(sid: str, size: int) -> bytes:
    """Deterministic pseudo-audio for a recording: an ID3-ish header then bytes seeded by the sid."""
    if size <= len(_MP3_HEADER):
        return _MP3_HEADER[:size]
    return _MP3_HEADER + random.Random(sid).randbytes(size - len(_MP3_HEADER))


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True).replace("GMT", "+0000")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# --- state ----------------------------------------------------------------------------------------


@dataclass
class StandinRecording:
    sid: str
    call_sid: str
    account_sid: str
    status: str = "in-progress"  # in-progress | paused | stopped | processing | completed | absent | failed
    pause_behavior: str | None = None  # of the last pause: skip | silence
    channels: int = 1
    source: str = "StartCallRecordingAPI"
    track: str = "both"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    status_callback_events: list[str] = field(default_factory=lambda: ["completed"])
    date_created: datetime = field(default_factory=_now)
    date_updated: datetime = field(default_factory=_now)
    duration: int | None = None
    error_code: int | None = None
    audio: bytes | None = None
    content_type: str = "audio/mpeg"
    deleted: bool = False

    def uri(self) -> str:
        return f"{API}/Accounts/{self.account_sid}/Recordings/{self.sid}.json"

    def call_uri(self) -> str:
        return f"{API}/Accounts/{self.account_sid}/Calls/{self.call_sid}/Recordings/{self.sid}.json"

    def resource(self, *, call_scoped: bool, base_url: str = "https://api.twilio.com") -> dict[str, Any]:
        """The recording as Twilio's JSON renders it."""
        body: dict[str, Any] = {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "call_sid": self.call_sid,
            "conference_sid": None,
            "channels": self.channels,
            "date_created": _rfc2822(self.date_created),
            "date_updated": _rfc2822(self.date_updated),
            "start_time": _rfc2822(self.date_created),
            "duration": str(self.duration) if self.duration is not None else "-1",
            "sid": self.sid,
            "price": None,
            "price_unit": "USD",
            "status": self.status,
            "source": self.source,
            "error_code": self.error_code,
            "encryption_details": None,
            "track": self.track,
            "uri": self.call_uri() if call_scoped else self.uri(),
        }
        if not call_scoped:
            base = f"{API}/Accounts/{self.account_sid}/Recordings/{self.sid}"
            body["media_url"] = base_url + base
            body["subresource_uris"] = {
                "add_on_results": f"{base}/AddOnResults.json",
                "transcriptions": f"{base}/Transcriptions.json",
            }
        return body

    def info(self, delete_count: int) -> dict[str, Any]:
        """What tests look at (JSON-able)."""
        return {
            "sid": self.sid,
            "call_sid": self.call_sid,
            "account_sid": self.account_sid,
            "status": self.status,
            "pause_behavior": self.pause_behavior,
            "channels": self.channels,
            "source": self.source,
            "status_callback": self.status_callback,
            "status_callback_method": self.status_callback_method,
            "status_callback_events": list(self.status_callback_events),
            "duration": self.duration,
            "deleted": self.deleted,
            "delete_count": delete_count,
            "audio_size": len(self.audio) if self.audio is not None else None,
            "audio_sha256": hashlib.sha256(self.audio).hexdigest() if self.audio is not None else None,
            "content_type": self.content_type,
        }


@dataclass
class ReceivedRequest:
    method: str
    path: str
    route: str | None
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    auth_user: str | None
    auth_ok: bool
    headers: dict[str, str]
    status: int = 0


@dataclass
class Fault:
    """The next ``times`` requests to ``route`` (one of ``ROUTES`` or ``"*"``), optionally only those about
    recording ``sid``, answer ``status`` with a Twilio error body (and ``Retry-After`` if given)."""

    route: str
    status: int = 500
    times: int = 1
    retry_after: str | None = None
    sid: str | None = None
    code: int | None = None
    message: str | None = None


@dataclass
class MediaFault:
    """The next ``times`` media downloads (optionally of ``sid`` only) are spoiled:

    * ``truncate``: Content-Length says the full size, only ``keep_bytes`` (default: half) are sent,
      then the connection is closed;
    * ``corrupt``: the full length is sent, with bytes flipped;
    * ``redirect``: a 302 to ``location`` (``{sid}`` in it is replaced), as Twilio may do to a signed
      storage URL.
    """

    kind: Literal["truncate", "corrupt", "redirect"]
    times: int = 1
    sid: str | None = None
    keep_bytes: int | None = None
    location: str | None = None


_ERROR_CODES = {400: 21220, 401: 20003, 403: 20403, 404: 20404, 429: 20429, 500: 20500, 503: 20503}
_ERROR_MESSAGES = {
    401: "Authenticate",
    404: "The requested resource was not found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _twilio_error(
    status: int,
    message: str | None = None,
    *,
    code: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    code = code or _ERROR_CODES.get(status, status)
    body = {
        "code": code,
        "message": message or _ERROR_MESSAGES.get(status, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status, headers=dict(headers or {}))


# --- the server -----------------------------------------------------------------------------------


class TwilioStandin:
    """The stand-in's state and HTTP server. Thread-safe: the server thread and tests share the state."""

    def __init__(
        self,
        *,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        audio_size: int = 48 * 1024,
        media_auth_required: bool = True,
        auto_complete_on_stop: bool = False,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self.port = port
        self.audio_size = audio_size
        self.media_auth_required = media_auth_required
        self.auto_complete_on_stop = auto_complete_on_stop
        self.recordings: dict[str, StandinRecording] = {}
        self.received: list[ReceivedRequest] = []
        self.delete_counts: Counter[str] = Counter()
        self.faults: list[Fault] = []
        self.media_faults: list[MediaFault] = []
        self.ended_calls: set[str] = set()
        self.unknown_calls: set[str] = set()
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._stopped: asyncio.Event | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        acct = API + "/Accounts/{account}"
        r = app.router
        r.add_post(acct + "/Calls/{call}/Recordings.json", self._create_recording, name="create_recording")
        r.add_get(
            acct + "/Calls/{call}/Recordings.json", self._list_call_recordings, name="list_call_recordings"
        )
        r.add_post(
            acct + "/Calls/{call}/Recordings/{sid}.json", self._update_recording, name="update_recording"
        )
        r.add_get(acct + "/Recordings.json", self._list_recordings, name="list_recordings")
        r.add_get(acct + "/Recordings/{sid}.json", self._fetch_recording, name="fetch_recording")
        r.add_delete(acct + "/Recordings/{sid}.json", self._delete_recording, name="delete_recording")
        r.add_get(acct + "/Recordings/{sid}.mp3", self._fetch_media, name="fetch_media")
        c = "/_standin"
        r.add_get(c + "/health", self._c_health)
        r.add_get(c + "/state", self._c_state)
        r.add_post(c + "/reset", self._c_reset)
        r.add_post(c + "/recordings", self._c_add_recording)
        r.add_post(c + "/recordings/{sid}/audio", self._c_set_audio)
        r.add_get(c + "/recordings/{sid}/audio", self._c_get_audio)
        r.add_post(c + "/recordings/{sid}/complete", self._c_complete)
        r.add_post(c + "/recordings/{sid}/status", self._c_set_status)
        r.add_get(c + "/recordings/{sid}/callback-payload", self._c_callback_payload)
        r.add_post(c + "/calls/{call}/end", self._c_end_call)
        r.add_post(c + "/calls/{call}/forget", self._c_forget_call)
        r.add_post(c + "/faults", self._c_faults)
        return app

    async def start_async(self) -> str:
        """Serve on the running loop; returns the base URL."""
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])
        return self.base_url

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self, timeout: float = 10.0) -> str:
        """Serve in a background thread with its own loop; returns the base URL once listening."""
        if self._thread is not None:
            return self.base_url
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            self._stopped = asyncio.Event()
            try:
                await self.start_async()
            except BaseException as error:
                failure.append(error)
                ready.set()
                raise
            ready.set()
            await self._stopped.wait()
            await self.stop_async()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(serve())
            except BaseException:
                pass
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="twilio-standin", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("Twilio stand-in did not start")
        if failure:
            self._thread = None
            raise RuntimeError("Twilio stand-in failed to start") from failure[0]
        return self.base_url

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop, stopped = self._thread, self._loop, self._stopped
        if thread is None or loop is None or stopped is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(stopped.set)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> TwilioStandin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test-side API (same names on StandinHttpControl) ------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.recordings.clear()
            self.received.clear()
            self.delete_counts.clear()
            self.faults.clear()
            self.media_faults.clear()
            self.ended_calls.clear()
            self.unknown_calls.clear()

    def add_recording(
        self,
        call_sid: str,
        *,
        sid: str | None = None,
        status: str = "in-progress",
        duration: int | None = None,
        audio: bytes | None = None,
        audio_size: int | None = None,
        channels: int = 2,
        status_callback: str | None = None,
    ) -> str:
        """Create a recording without the REST call (e.g. one Twilio holds that the service never saw)."""
        sid = sid or new_sid("RE")
        if duration is None and status == "completed":
            duration = 30
        recording = StandinRecording(
            sid=sid,
            call_sid=call_sid,
            account_sid=self.account_sid,
            status=status,
            channels=channels,
            duration=duration,
            status_callback=status_callback,
        )
        if audio is not None:
            recording.audio = audio
        elif status == "completed":
            recording.audio = generate_audio(sid, audio_size if audio_size is not None else self.audio_size)
        with self._lock:
            self.recordings[sid] = recording
        return sid

    def set_audio(self, recording_sid: str, data: bytes, content_type: str = "audio/mpeg") -> None:
        """Make the recording's media these bytes (creates an unknown recording, completed, for CA0…)."""
        with self._lock:
            recording = self.recordings.get(recording_sid)
            if recording is None:
                self.add_recording("CA" + "0" * 32, sid=recording_sid, status="completed", audio=data)
                recording = self.recordings[recording_sid]
            recording.audio = data
            recording.content_type = content_type

    def audio(self, recording_sid: str) -> bytes | None:
        with self._lock:
            recording = self.recordings.get(recording_sid)
            return recording.audio if recording is not None else None

    def complete_recording(self, recording_sid: str, duration: int = 30, size: int | None = None) -> bytes:
        """Mark the recording completed and give it audio (kept if already set, else generated)."""
        with self._lock:
            recording = self._get(recording_sid)
            recording.status = "completed"
            recording.duration = duration
            recording.date_updated = _now()
            if recording.audio is None or size is not None:
                recording.audio = generate_audio(recording_sid, size if size is not None else self.audio_size)
            return recording.audio

    def set_status(self, recording_sid: str, status: str) -> None:
        with self._lock:
            recording = self._get(recording_sid)
            recording.status = status
            recording.date_updated = _now()
            if status == "absent":
                recording.duration = 0
                recording.audio = None

    def end_call(self, call_sid: str) -> None:
        """Later attempts to start a recording of this call fail as Twilio does for a finished call."""
        with self._lock:
            self.ended_calls.add(call_sid)

    def forget_call(self, call_sid: str) -> None:
        """Twilio does not know this call (another account's, or older than Twilio keeps calls): every
        request naming it, listing its recordings included, answers 404."""
        with self._lock:
            self.unknown_calls.add(call_sid)

    def inject_fault(
        self,
        route: str,
        status: int = 500,
        times: int = 1,
        retry_after: str | float | None = None,
        sid: str | None = None,
        code: int | None = None,
        message: str | None = None,
    ) -> None:
        if route != "*" and route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; one of {ROUTES} or '*'")
        with self._lock:
            self.faults.append(
                Fault(
                    route=route,
                    status=status,
                    times=times,
                    retry_after=None if retry_after is None else str(retry_after),
                    sid=sid,
                    code=code,
                    message=message,
                )
            )

    def truncate_next_media(
        self, times: int = 1, keep_bytes: int | None = None, sid: str | None = None
    ) -> None:
        with self._lock:
            self.media_faults.append(MediaFault("truncate", times=times, sid=sid, keep_bytes=keep_bytes))

    def heal_media(self) -> None:
        """Forget every media fault still waiting for its download."""
        with self._lock:
            self.media_faults.clear()

    def corrupt_next_media(self, times: int = 1, sid: str | None = None) -> None:
        with self._lock:
            self.media_faults.append(MediaFault("corrupt", times=times, sid=sid))

    def redirect_next_media(self, location: str, times: int = 1, sid: str | None = None) -> None:
        with self._lock:
            self.media_faults.append(MediaFault("redirect", times=times, sid=sid, location=location))

    def recording_info(self, recording_sid: str) -> dict[str, Any] | None:
        with self._lock:
            recording = self.recordings.get(recording_sid)
            return None if recording is None else recording.info(self.delete_counts[recording_sid])

    def delete_count(self, recording_sid: str) -> int:
        with self._lock:
            return self.delete_counts[recording_sid]

    def requests(self, route: str | None = None) -> list[dict[str, Any]]:
        """Requests received on Twilio's paths (not ``/_standin``), oldest first, optionally of one route."""
        with self._lock:
            return [asdict(r) for r in self.received if route is None or r.route == route]

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "account_sid": self.account_sid,
                "base_url": self.base_url,
                "recordings": {
                    sid: rec.info(self.delete_counts[sid]) for sid, rec in self.recordings.items()
                },
                "delete_counts": dict(self.delete_counts),
                "requests": [asdict(r) for r in self.received],
                "faults": [asdict(f) for f in self.faults],
                "media_faults": [asdict(f) for f in self.media_faults],
                "ended_calls": sorted(self.ended_calls),
                "unknown_calls": sorted(self.unknown_calls),
            }

    def recording_status_payload(
        self,
        recording_sid: str,
        status: str | None = None,
        *,
        error_code: str = "0",
    ) -> dict[str, str]:
        """The form Twilio posts to ``RecordingStatusCallback`` for this recording (status: its current)."""
        with self._lock:
            recording = self._get(recording_sid)
            return recording_status_payload(
                call_sid=recording.call_sid,
                recording_sid=recording.sid,
                status=status or recording.status,
                standin_base=self.base_url,
                account_sid=recording.account_sid,
                duration=recording.duration,
                channels=recording.channels,
                error_code=error_code,
                start_time=recording.date_created,
            )

    # --- internals ---------------------------------------------------------------------------------

    def _get(self, recording_sid: str) -> StandinRecording:
        recording = self.recordings.get(recording_sid)
        if recording is None:
            raise KeyError(f"no recording {recording_sid}")
        return recording

    def _check_auth(self, request: web.Request) -> tuple[str | None, bool]:
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None, False
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, False
        return user, (user == self.account_sid and password == self.auth_token)

    def _take_fault(self, route: str, sid: str | None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.route in (route, "*") and (fault.sid is None or fault.sid == sid):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def _take_media_fault(self, sid: str) -> MediaFault | None:
        with self._lock:
            for fault in self.media_faults:
                if fault.sid is None or fault.sid == sid:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.media_faults.remove(fault)
                    return fault
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_standin/"):
            response: web.StreamResponse = await handler(request)
            return response
        route = request.match_info.route.name
        form: dict[str, list[str]] = {}
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            posted = await request.post()
            for key in posted:
                form[key] = [str(v) for v in posted.getall(key)]
        query: dict[str, list[str]] = {k: request.query.getall(k) for k in request.query}
        user, auth_ok = self._check_auth(request)
        record = ReceivedRequest(
            method=request.method,
            path=request.path,
            route=route,
            query=query,
            form=form,
            auth_user=user,
            auth_ok=auth_ok,
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
        )
        with self._lock:
            self.received.append(record)
            if route == "delete_recording":  # every DELETE counts, whatever it is answered
                self.delete_counts[request.match_info.get("sid", "")] += 1
        try:
            response = await self._answer(request, handler, route, auth_ok)
        except web.HTTPException as error:
            record.status = error.status
            raise
        record.status = response.status
        return response

    async def _answer(
        self, request: web.Request, handler: Any, route: str | None, auth_ok: bool
    ) -> web.StreamResponse:
        if route is None:
            return _twilio_error(404, f"The requested resource {request.path} was not found")
        if not auth_ok and (route != "fetch_media" or self.media_auth_required):
            return _twilio_error(401, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if request.match_info.get("account") != self.account_sid:
            return _twilio_error(404, f"The requested resource {request.path} was not found")
        fault = self._take_fault(route, request.match_info.get("sid"))
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return _twilio_error(fault.status, fault.message, code=fault.code, headers=headers)
        named_call = request.match_info.get("call") or request.query.get("CallSid")
        if named_call is not None and named_call in self.unknown_calls:
            return self._not_found(request)
        response: web.StreamResponse = await handler(request)
        return response

    def _not_found(self, request: web.Request) -> web.Response:
        return _twilio_error(404, f"The requested resource {request.path} was not found")

    async def _create_recording(self, request: web.Request) -> web.Response:
        call_sid = request.match_info["call"]
        form = await request.post()
        channels = str(form.get("RecordingChannels", "mono"))
        if channels not in ("mono", "dual"):
            return _twilio_error(400, f"RecordingChannels must be mono or dual, not {channels}", code=21626)
        events: list[str] = []
        for value in form.getall("RecordingStatusCallbackEvent", []):
            events.extend(str(value).replace(",", " ").split())
        unknown = [e for e in events if e not in _VALID_EVENTS]
        if unknown:
            return _twilio_error(400, f"Invalid RecordingStatusCallbackEvent {unknown}", code=21626)
        method = str(form.get("RecordingStatusCallbackMethod", "POST")).upper()
        with self._lock:
            if call_sid in self.ended_calls:
                return _twilio_error(
                    400, "Requested resource is not eligible for recording: the call is not in progress"
                )
            recording = StandinRecording(
                sid=new_sid("RE"),
                call_sid=call_sid,
                account_sid=self.account_sid,
                channels=2 if channels == "dual" else 1,
                track=str(form.get("RecordingTrack", "both")),
                status_callback=str(form["RecordingStatusCallback"])
                if "RecordingStatusCallback" in form
                else None,
                status_callback_method=method,
                status_callback_events=events or ["completed"],
            )
            self.recordings[recording.sid] = recording
            return web.json_response(recording.resource(call_scoped=True, base_url=self.base_url), status=201)

    async def _update_recording(self, request: web.Request) -> web.Response:
        form = await request.post()
        status = str(form.get("Status", ""))
        if status not in ("stopped", "paused", "in-progress"):
            return _twilio_error(400, f"Invalid Status {status!r}", code=21626)
        pause_behavior = form.get("PauseBehavior")
        if pause_behavior is not None and str(pause_behavior) not in ("skip", "silence"):
            return _twilio_error(400, f"Invalid PauseBehavior {pause_behavior!r}", code=21626)
        with self._lock:
            recording = self.recordings.get(request.match_info["sid"])
            if recording is None or recording.deleted or recording.call_sid != request.match_info["call"]:
                return self._not_found(request)
            if recording.status in ("in-progress", "paused"):
                recording.status = status
                recording.date_updated = _now()
                if status == "paused":  # Twilio's default is silence
                    recording.pause_behavior = str(pause_behavior or "silence")
                if status == "stopped" and self.auto_complete_on_stop:
                    self.complete_recording(recording.sid)
            return web.json_response(recording.resource(call_scoped=True, base_url=self.base_url))

    def _page(
        self, request: web.Request, recordings: list[StandinRecording], call_scoped: bool
    ) -> web.Response:
        try:
            page_size = max(1, min(1000, int(request.query.get("PageSize", "50"))))
            page = max(0, int(request.query.get("Page", "0")))
        except ValueError:
            return _twilio_error(400, "Invalid paging parameters", code=20001)
        recordings.sort(key=lambda r: r.date_created, reverse=True)
        start = page * page_size
        items = recordings[start : start + page_size]

        def uri(p: int) -> str:
            params = {k: v for k, v in request.query.items() if k not in ("Page", "PageSize", "PageToken")}
            params.update({"PageSize": str(page_size), "Page": str(p)})
            return f"{request.path}?{urlencode(params)}"

        has_next = start + page_size < len(recordings)
        return web.json_response(
            {
                "recordings": [r.resource(call_scoped=call_scoped, base_url=self.base_url) for r in items],
                "end": start + max(len(items), 1) - 1,
                "first_page_uri": uri(0),
                "next_page_uri": uri(page + 1) if has_next else None,
                "previous_page_uri": uri(page - 1) if page > 0 else None,
                "page": page,
                "page_size": page_size,
                "start": start,
                "uri": uri(page),
            }
        )

    async def _list_call_recordings(self, request: web.Request) -> web.Response:
        call_sid = request.match_info["call"]
        with self._lock:
            found = [r for r in self.recordings.values() if r.call_sid == call_sid and not r.deleted]
        return self._page(request, found, call_scoped=True)

    async def _list_recordings(self, request: web.Request) -> web.Response:
        call_sid = request.query.get("CallSid")
        with self._lock:
            found = [
                r
                for r in self.recordings.values()
                if not r.deleted and (call_sid is None or r.call_sid == call_sid)
            ]
        return self._page(request, found, call_scoped=False)

    async def _fetch_recording(self, request: web.Request) -> web.Response:
        with self._lock:
            recording = self.recordings.get(request.match_info["sid"])
            if recording is None or recording.deleted:
                return self._not_found(request)
            return web.json_response(recording.resource(call_scoped=False, base_url=self.base_url))

    async def _delete_recording(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        with self._lock:
            recording = self.recordings.get(sid)
            if recording is None or recording.deleted:
                return self._not_found(request)
            recording.deleted = True
            recording.audio = None
        return web.Response(status=204)

    async def _fetch_media(self, request: web.Request) -> web.StreamResponse:
        sid = request.match_info["sid"]
        with self._lock:
            recording = self.recordings.get(sid)
            audio = None if recording is None or recording.deleted else recording.audio
            content_type = recording.content_type if recording is not None else "audio/mpeg"
        if audio is None:
            return self._not_found(request)
        fault = self._take_media_fault(sid)
        if fault is not None and fault.kind == "redirect" and fault.location:
            return web.Response(status=302, headers={"Location": fault.location.replace("{sid}", sid)})
        response = web.StreamResponse(status=200, headers={"Content-Type": content_type})
        response.content_length = len(audio)
        if fault is not None and fault.kind == "truncate":
            keep = fault.keep_bytes if fault.keep_bytes is not None else len(audio) // 2
            audio = audio[: max(0, min(keep, len(audio) - 1))]
            response.force_close()
        elif fault is not None and fault.kind == "corrupt":
            middle = len(audio) // 2
            audio = (
                audio[:middle] + bytes(b ^ 0xFF for b in audio[middle : middle + 16]) + audio[middle + 16 :]
            )
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        for offset in range(0, len(audio), MEDIA_WRITE_CHUNK):
            await response.write(audio[offset : offset + MEDIA_WRITE_CHUNK])
        # A truncated answer ends here too: force_close() makes the server drop the connection short of
        # Content-Length, as a broken download does.
        await response.write_eof()
        return response

    # --- /_standin control endpoints -----------------------------------------------------------------

    async def _c_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "base_url": self.base_url, "pid": os.getpid()})

    async def _c_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def _c_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _c_add_recording(self, request: web.Request) -> web.Response:
        body = await request.json()
        sid = self.add_recording(
            str(body["call_sid"]),
            sid=body.get("sid"),
            status=body.get("status", "in-progress"),
            duration=body.get("duration"),
            audio_size=body.get("audio_size"),
            channels=int(body.get("channels", 2)),
            status_callback=body.get("status_callback"),
        )
        return web.json_response({"sid": sid}, status=201)

    async def _c_set_audio(self, request: web.Request) -> web.Response:
        data = await request.read()
        self.set_audio(request.match_info["sid"], data, request.content_type or "audio/mpeg")
        return web.json_response(self.recording_info(request.match_info["sid"]))

    async def _c_get_audio(self, request: web.Request) -> web.Response:
        data = self.audio(request.match_info["sid"])
        if data is None:
            return web.json_response({"error": "no audio"}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _c_complete(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        sid = request.match_info["sid"]
        try:
            self.complete_recording(sid, int(body.get("duration", 30)), body.get("size"))
        except KeyError:
            return web.json_response({"error": f"no recording {sid}"}, status=404)
        return web.json_response(self.recording_info(sid))

    async def _c_set_status(self, request: web.Request) -> web.Response:
        body = await request.json()
        sid = request.match_info["sid"]
        try:
            self.set_status(sid, str(body["status"]))
        except KeyError:
            return web.json_response({"error": f"no recording {sid}"}, status=404)
        return web.json_response(self.recording_info(sid))

    async def _c_callback_payload(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        try:
            payload = self.recording_status_payload(sid, request.query.get("status"))
        except KeyError:
            return web.json_response({"error": f"no recording {sid}"}, status=404)
        return web.json_response(payload)

    async def _c_end_call(self, request: web.Request) -> web.Response:
        self.end_call(request.match_info["call"])
        return web.json_response({"ok": True})

    async def _c_forget_call(self, request: web.Request) -> web.Response:
        self.forget_call(request.match_info["call"])
        return web.json_response({"ok": True})

    async def _c_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        kind = body.pop("kind", "status")
        try:
            if kind == "status":
                self.inject_fault(**body)
            elif kind == "truncate":
                self.truncate_next_media(**body)
            elif kind == "corrupt":
                self.corrupt_next_media(**body)
            elif kind == "redirect":
                self.redirect_next_media(**body)
            else:
                raise ValueError(f"unknown fault kind {kind!r}")
        except (TypeError, ValueError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response({"ok": True}, status=201)


# --- control of a stand-in in another process -----------------------------------------------------


class StandinHttpControl:
    """The test-side API of ``TwilioStandin``, over HTTP, for a stand-in running as a subprocess."""

    def __init__(
        self,
        base_url: str,
        *,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        pid: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.pid = pid
        self._http = httpx.Client(base_url=self.base_url + "/_standin", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _json(self, response: httpx.Response) -> Any:
        response.raise_for_status()
        return response.json()

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self._http.get("/health"))
        return result

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self._http.get("/state"))
        return result

    def reset(self) -> None:
        self._json(self._http.post("/reset"))

    def add_recording(
        self,
        call_sid: str,
        *,
        sid: str | None = None,
        status: str = "in-progress",
        duration: int | None = None,
        audio: bytes | None = None,
        audio_size: int | None = None,
        channels: int = 2,
        status_callback: str | None = None,
    ) -> str:
        body = {
            "call_sid": call_sid,
            "sid": sid,
            "status": status,
            "duration": duration,
            "audio_size": audio_size,
            "channels": channels,
            "status_callback": status_callback,
        }
        new: str = self._json(self._http.post("/recordings", json=body))["sid"]
        if audio is not None:
            self.set_audio(new, audio)
        return new

    def set_audio(self, recording_sid: str, data: bytes, content_type: str = "audio/mpeg") -> None:
        self._json(
            self._http.post(
                f"/recordings/{recording_sid}/audio", content=data, headers={"Content-Type": content_type}
            )
        )

    def audio(self, recording_sid: str) -> bytes | None:
        response = self._http.get(f"/recordings/{recording_sid}/audio")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.content

    def complete_recording(self, recording_sid: str, duration: int = 30, size: int | None = None) -> bytes:
        self._json(
            self._http.post(
                f"/recordings/{recording_sid}/complete", json={"duration": duration, "size": size}
            )
        )
        data = self.audio(recording_sid)
        assert data is not None
        return data

    def set_status(self, recording_sid: str, status: str) -> None:
        self._json(self._http.post(f"/recordings/{recording_sid}/status", json={"status": status}))

    def end_call(self, call_sid: str) -> None:
        self._json(self._http.post(f"/calls/{call_sid}/end"))

    def forget_call(self, call_sid: str) -> None:
        self._json(self._http.post(f"/calls/{call_sid}/forget"))

    def inject_fault(
        self,
        route: str,
        status: int = 500,
        times: int = 1,
        retry_after: str | float | None = None,
        sid: str | None = None,
        code: int | None = None,
        message: str | None = None,
    ) -> None:
        body = {
            "kind": "status",
            "route": route,
            "status": status,
            "times": times,
            "retry_after": retry_after,
            "sid": sid,
            "code": code,
            "message": message,
        }
        self._json(self._http.post("/faults", json=body))

    def truncate_next_media(
        self, times: int = 1, keep_bytes: int | None = None, sid: str | None = None
    ) -> None:
        body = {"kind": "truncate", "times": times, "keep_bytes": keep_bytes, "sid": sid}
        self._json(self._http.post("/faults", json=body))

    def corrupt_next_media(self, times: int = 1, sid: str | None = None) -> None:
        self._json(self._http.post("/faults", json={"kind": "corrupt", "times": times, "sid": sid}))

    def redirect_next_media(self, location: str, times: int = 1, sid: str | None = None) -> None:
        body = {"kind": "redirect", "location": location, "times": times, "sid": sid}
        self._json(self._http.post("/faults", json=body))

    def recording_info(self, recording_sid: str) -> dict[str, Any] | None:
        info: dict[str, Any] | None = self.state()["recordings"].get(recording_sid)
        return info

    def delete_count(self, recording_sid: str) -> int:
        return int(self.state()["delete_counts"].get(recording_sid, 0))

    def requests(self, route: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.state()["requests"] if route is None or r["route"] == route]

    def recording_status_payload(
        self, recording_sid: str, status: str | None = None, *, error_code: str = "0"
    ) -> dict[str, str]:
        params = {"status": status} if status else {}
        payload: dict[str, str] = self._json(
            self._http.get(f"/recordings/{recording_sid}/callback-payload", params=params)
        )
        payload["ErrorCode"] = error_code
        return payload


# --- Twilio → service callbacks -------------------------------------------------------------------


def voice_payload(
    call_sid: str,
    *,
    from_: str,
    to: str,
    account_sid: str = DEFAULT_ACCOUNT_SID,
    call_status: str = "ringing",
    direction: str = "inbound",
) -> dict[str, str]:
    """The form Twilio posts to the number's voice URL when a call arrives."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": call_status,
        "CallToken": "",
        "Called": to,
        "CalledCountry": "US",
        "Caller": from_,
        "CallerCountry": "US",
        "Direction": direction,
        "From": from_,
        "FromCountry": "US",
        "To": to,
        "ToCountry": "US",
    }


def stream_status_payload(
    call_sid: str,
    event: str,
    *,
    stream_sid: str | None = None,
    account_sid: str = DEFAULT_ACCOUNT_SID,
    error: str | None = None,
) -> dict[str, str]:
    """The form of a ``<Stream statusCallback>``: ``stream-started``, ``stream-stopped``, ``stream-error``."""
    payload = {
        "AccountSid": account_sid,
        "CallSid": call_sid,
        "StreamSid": stream_sid or new_sid("MZ"),
        "StreamName": stream_sid or "stream",
        "StreamEvent": event,
        "Timestamp": _now().isoformat().replace("+00:00", "Z"),
    }
    if error is not None:
        payload["StreamError"] = error
    return payload


def recording_status_payload(
    *,
    call_sid: str,
    recording_sid: str,
    status: str,
    standin_base: str,
    account_sid: str = DEFAULT_ACCOUNT_SID,
    duration: int | None = None,
    channels: int = 2,
    error_code: str = "0",
    start_time: datetime | None = None,
    source: str = "StartCallRecordingAPI",
) -> dict[str, str]:
    """The form Twilio posts to ``RecordingStatusCallback``; ``RecordingUrl`` has no extension."""
    payload = {
        "AccountSid": account_sid,
        "CallSid": call_sid,
        "RecordingSid": recording_sid,
        "RecordingUrl": f"{standin_base.rstrip('/')}{API}/Accounts/{account_sid}/Recordings/{recording_sid}",
        "RecordingStatus": status,
        "RecordingChannels": str(channels),
        "RecordingSource": source,
        "RecordingStartTime": _rfc2822(start_time or _now()),
        "RecordingTrack": "both",
        "ErrorCode": error_code,
    }
    if status != "in-progress":
        payload["RecordingDuration"] = str(duration if duration is not None else 0)
    return payload


def call_status_payload(
    call_sid: str,
    status: str,
    *,
    duration: int = 0,
    from_: str = "+15550000001",
    to: str = "+15550000002",
    account_sid: str = DEFAULT_ACCOUNT_SID,
    sequence_number: int = 0,
) -> dict[str, str]:
    """A call status callback's form: ``completed``, ``busy``, ``failed``, ``no-answer``, ``canceled``."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": status,
        "CallDuration": str(duration),
        "Duration": str((duration + 59) // 60),
        "CallbackSource": "call-progress-events",
        "Direction": "inbound",
        "From": from_,
        "To": to,
        "SequenceNumber": str(sequence_number),
        "Timestamp": _rfc2822(_now()),
    }


Signature = Literal["valid", "forged", "missing"]


class TwilioCallbackDriver:
    """Posts Twilio's callbacks to the service, signed as Twilio signs them.

    ``service_base_url`` is the URL the service believes it is reached at (``CALLREC_PUBLIC_URL``): the
    signature covers ``{service_base_url}{path}`` and the form. ``send_base_url`` (default: the same) is
    where the request actually goes; ``transport``/``async_transport`` let it go to an in-process app
    (``httpx.ASGITransport``). ``signature="forged"`` signs with a wrong token, ``"missing"`` sends no
    header, and ``sign_url`` signs another URL than the one posted to.
    """

    def __init__(
        self,
        service_base_url: str,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        send_base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.service_base_url = service_base_url.rstrip("/")
        self.send_base_url = (send_base_url or service_base_url).rstrip("/")
        self.auth_token = auth_token
        self._validator = RequestValidator(auth_token)
        self._transport = transport
        self._async_transport = async_transport
        self._timeout = timeout

    def sign(self, url: str, params: Mapping[str, str]) -> str:
        signature: str = self._validator.compute_signature(url, dict(params))
        return signature

    def _prepare(
        self, path: str, params: Mapping[str, str], signature: Signature | str, sign_url: str | None
    ) -> tuple[str, dict[str, str]]:
        url = self.service_base_url + path
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        if signature == "valid":
            headers["X-Twilio-Signature"] = self.sign(sign_url or url, params)
        elif signature == "forged":
            forged = RequestValidator(self.auth_token + "-forged").compute_signature(
                sign_url or url, dict(params)
            )
            headers["X-Twilio-Signature"] = forged
        elif signature != "missing":
            headers["X-Twilio-Signature"] = signature  # an explicit value
        return self.send_base_url + path, headers

    def post(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        signature: Signature | str = "valid",
        sign_url: str | None = None,
    ) -> httpx.Response:
        url, headers = self._prepare(path, params, signature, sign_url)
        with httpx.Client(transport=self._transport, timeout=self._timeout) as client:
            return client.post(url, content=urlencode(dict(params)), headers=headers)

    async def apost(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        signature: Signature | str = "valid",
        sign_url: str | None = None,
    ) -> httpx.Response:
        url, headers = self._prepare(path, params, signature, sign_url)
        async with httpx.AsyncClient(transport=self._async_transport, timeout=self._timeout) as client:
            return await client.post(url, content=urlencode(dict(params)), headers=headers)

    # conveniences, sync and async
    def voice(self, params: Mapping[str, str], **kw: Any) -> httpx.Response:
        return self.post("/twilio/voice", params, **kw)

    async def avoice(self, params: Mapping[str, str], **kw: Any) -> httpx.Response:
        return await self.apost("/twilio/voice", params, **kw)

    def stream_status(self, params: Mapping[str, str], **kw: Any) -> httpx.Response:
        return self.post("/twilio/stream-status", params, **kw)

    async def astream_status(self, params: Mapping[str, str], **kw: Any) -> httpx.Response:
        return await self.apost("/twilio/stream-status", params, **kw)

    def recording_status(self, params: Mapping[str, str], **kw: Any) -> httpx.Response:
        return self.post("/twilio/recording-status", params, **kw)

    async def arecording_status(self, params: Mapping[str, str], **kw: Any) -> httpx.Response:
        return await self.apost("/twilio/recording-status", params, **kw)

    def call_status(self, params: Mapping[str, str], **kw: Any) -> httpx.Response:
        return self.post("/twilio/call-status", params, **kw)

    async def acall_status(self, params: Mapping[str, str], **kw: Any) -> httpx.Response:
        return await self.apost("/twilio/call-status", params, **kw)


# --- running as a process -------------------------------------------------------------------------


async def _serve_forever(standin: TwilioStandin) -> None:
    await standin.start_async()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ready = {
        "event": "ready",
        "base_url": standin.base_url,
        "host": standin.host,
        "port": standin.port,
        "pid": os.getpid(),
        "account_sid": standin.account_sid,
    }
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await standin.stop_async()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.twilio_standin", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed when ready)")
    parser.add_argument("--account-sid", default=os.environ.get("TWILIO_ACCOUNT_SID", DEFAULT_ACCOUNT_SID))
    parser.add_argument("--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN", DEFAULT_AUTH_TOKEN))
    parser.add_argument("--audio-size", type=int, default=48 * 1024, help="bytes of generated audio")
    parser.add_argument("--media-without-auth", action="store_true", help="serve media without basic auth")
    parser.add_argument("--auto-complete-on-stop", action="store_true")
    args = parser.parse_args(argv)
    standin = TwilioStandin(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        host=args.host,
        port=args.port,
        audio_size=args.audio_size,
        media_auth_required=not args.media_without_auth,
        auto_complete_on_stop=args.auto_complete_on_stop,
    )
    asyncio.run(_serve_forever(standin))


if __name__ == "__main__":
    main()
