"""The built-in Twilio stand-in of ``callrec demo``: just enough of Twilio to play one realistic call.

Twilio's side of a call, both ways: it posts the signed voice, stream-status, call-status and
recording-status callbacks to the service, and answers the REST requests the service makes while it
records (start, stop, list, fetch, media, delete) on Twilio's own paths, behind HTTP basic auth.
The audio is a few seconds of generated speech-like sound (``speech_like_wav``). Not for tests: the
test suite has its own, fuller stand-in with fault injection.
"""

from __future__ import annotations

import asyncio
import io
import math
import random
import secrets
import struct
import wave
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
from aiohttp import BasicAuth, web
from twilio.request_validator import RequestValidator

API = "/2010-04-01"
SAMPLE_RATE = 8000

# Formants (Hz) of five vowels, roughly an adult voice's.
_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))


def _resonate(signal: list[float], frequency: float, bandwidth: float) -> list[float]:
    """A two-pole resonator: one formant."""
    r = math.exp(-math.pi * bandwidth / SAMPLE_RATE)
    b1, b2, gain = 2 * r * math.cos(2 * math.pi * frequency / SAMPLE_RATE), -r * r, 1 - r
    out, y1, y2 = [], 0.0, 0.0
    for x in signal:
        y = gain * x + b1 * y1 + b2 * y2
        out.append(y)
        y1, y2 = y, y1
    return out


def _speaker(rng: random.Random, seconds: float, pitch: float) -> list[float]:
    """Words of two or three syllables with pauses between: a pulse train at a wandering pitch through
    the formants of a vowel per syllable, under a rise-and-fall envelope."""
    samples: list[float] = []
    total = int(seconds * SAMPLE_RATE)
    while len(samples) < total:
        for _ in range(rng.choice((2, 3))):
            length = int(rng.uniform(0.14, 0.26) * SAMPLE_RATE)
            f0 = pitch * rng.uniform(0.85, 1.2)
            source, phase = [], 0.0
            for n in range(length):
                phase += f0 * (1 + 0.05 * math.sin(2 * math.pi * 3 * n / SAMPLE_RATE)) / SAMPLE_RATE
                pulse = 1.0 if phase >= 1.0 else 0.0
                phase -= math.floor(phase)
                source.append(pulse + rng.gauss(0, 0.02))
            voiced = source
            for formant, bandwidth in zip(rng.choice(_VOWELS), (80, 100, 140), strict=True):
                voiced = _resonate(voiced, formant, bandwidth)
            samples += [v * math.sin(math.pi * n / length) ** 2 for n, v in enumerate(voiced)]
        samples += [0.0] * int(rng.uniform(0.08, 0.3) * SAMPLE_RATE)
    return samples[:total]


def speech_like_wav(seconds: float = 6.0, seed: int = 7) -> bytes:
    """A dual-channel 8 kHz 16-bit WAV, as Twilio records a call: the agent speaks on the first
    channel, then the caller answers on the second."""
    rng = random.Random(seed)
    half = seconds / 2
    agent = _speaker(rng, half, 190.0) + [0.0] * int(half * SAMPLE_RATE)
    caller = [0.0] * int(half * SAMPLE_RATE) + _speaker(rng, half, 115.0)
    peak = max(max(abs(s) for s in agent), max(abs(s) for s in caller), 1e-9)
    frames = bytearray()
    for a, c in zip(agent, caller, strict=False):
        frames += struct.pack("<hh", int(a / peak * 12000), int(c / peak * 12000))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(bytes(frames))
    return buffer.getvalue()


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True).replace("GMT", "+0000")


@dataclass
class _Recording:
    sid: str
    call_sid: str
    callback: str
    status: str = "in-progress"
    duration: int | None = None
    audio: bytes | None = None
    deleted: bool = False
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


class DemoTwilio:
    """One Twilio account on ``127.0.0.1``: REST for the service, callbacks to it."""

    def __init__(self) -> None:
        self.account_sid = _sid("AC")
        self.auth_token = secrets.token_hex(16)
        self.recordings: dict[str, _Recording] = {}
        self.deletes: dict[str, int] = {}
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._recording_started = asyncio.Event()

    # --- the REST side ------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(middlewares=[self._auth])
        account = f"{API}/Accounts/{{account}}"
        app.add_routes(
            [
                web.post(f"{account}/Calls/{{call}}/Recordings.json", self._create),
                web.get(f"{account}/Calls/{{call}}/Recordings.json", self._list),
                web.post(f"{account}/Calls/{{call}}/Recordings/{{sid}}.json", self._update),
                web.get(f"{account}/Recordings/{{sid}}.json", self._fetch),
                web.get(f"{account}/Recordings/{{sid}}.mp3", self._media),
                web.delete(f"{account}/Recordings/{{sid}}.json", self._delete),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            auth = BasicAuth.decode(request.headers.get("Authorization", ""))
        except ValueError:
            auth = None
        if auth is None or (auth.login, auth.password) != (self.account_sid, self.auth_token):
            return web.json_response({"code": 20003, "message": "Authenticate", "status": 401}, status=401)
        if request.match_info.get("account") != self.account_sid:
            return self._not_found()
        response: web.StreamResponse = await handler(request)
        return response

    def _resource(self, recording: _Recording) -> dict[str, Any]:
        base = f"{API}/Accounts/{self.account_sid}/Recordings/{recording.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "call_sid": recording.call_sid,
            "channels": 2,
            "date_created": _rfc2822(recording.created),
            "date_updated": _rfc2822(recording.created),
            "start_time": _rfc2822(recording.created),
            "duration": str(recording.duration) if recording.duration is not None else "-1",
            "sid": recording.sid,
            "status": recording.status,
            "source": "StartCallRecordingAPI",
            "track": "both",
            "error_code": None,
            "uri": f"{base}.json",
            "media_url": self.base_url + base,
        }

    def _not_found(self) -> web.Response:
        return web.json_response(
            {"code": 20404, "message": "The requested resource was not found", "status": 404}, status=404
        )

    def _live(self, sid: str) -> _Recording | None:
        recording = self.recordings.get(sid)
        return None if recording is None or recording.deleted else recording

    async def _create(self, request: web.Request) -> web.Response:
        form = await request.post()
        recording = _Recording(
            _sid("RE"), request.match_info["call"], str(form.get("RecordingStatusCallback", ""))
        )
        self.recordings[recording.sid] = recording
        self._recording_started.set()
        return web.json_response(self._resource(recording), status=201)

    async def _list(self, request: web.Request) -> web.Response:
        found = [
            self._resource(r)
            for r in self.recordings.values()
            if r.call_sid == request.match_info["call"] and not r.deleted
        ]
        return web.json_response(
            {"recordings": found, "page": 0, "page_size": 50, "start": 0, "end": max(len(found) - 1, 0)}
            | {"first_page_uri": request.path, "next_page_uri": None, "previous_page_uri": None}
            | {"uri": request.path}
        )

    async def _update(self, request: web.Request) -> web.Response:
        recording = self._live(request.match_info["sid"])
        if recording is None:
            return self._not_found()
        status = str((await request.post()).get("Status", ""))
        if recording.status in ("in-progress", "paused") and status in ("stopped", "paused", "in-progress"):
            recording.status = status
        return web.json_response(self._resource(recording))

    async def _fetch(self, request: web.Request) -> web.Response:
        recording = self._live(request.match_info["sid"])
        return self._not_found() if recording is None else web.json_response(self._resource(recording))

    async def _media(self, request: web.Request) -> web.Response:
        recording = self._live(request.match_info["sid"])
        if recording is None or recording.audio is None:
            return self._not_found()
        return web.Response(body=recording.audio, content_type="audio/wav")

    async def _delete(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        self.deletes[sid] = self.deletes.get(sid, 0) + 1
        recording = self._live(sid)
        if recording is None:
            return self._not_found()
        recording.deleted, recording.audio = True, None
        return web.Response(status=204)

    # --- the callbacks side ------------------------------------------------------------------------

    async def play_call(
        self, service_url: str, *, caller: str, number: str, audio: bytes, seconds: int
    ) -> tuple[str, str]:
        """One answered, recorded call from ``caller`` to ``number``; returns (call id, recording sid)."""
        call_sid = _sid("CA")
        async with httpx.AsyncClient(base_url=service_url, timeout=30) as client:

            async def post(path: str, params: dict[str, str]) -> httpx.Response:
                params = {"AccountSid": self.account_sid, "CallSid": call_sid, **params}
                signature = RequestValidator(self.auth_token).compute_signature(service_url + path, params)
                response = await client.post(path, data=params, headers={"X-Twilio-Signature": signature})
                if response.status_code >= 300:
                    raise RuntimeError(f"{path} answered {response.status_code}: {response.text}")
                return response

            twiml = await post(
                "/twilio/voice",
                {"From": caller, "To": number, "CallStatus": "ringing", "Direction": "inbound"},
            )
            stream = ET.fromstring(twiml.text).find("./Connect/Stream")
            if stream is None:
                raise RuntimeError(f"the service did not connect the call: {twiml.text}")
            parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
            if parameters.get("recording") != "on":
                raise RuntimeError("the service did not turn recording on for the demo call")
            stream_sid = _sid("MZ")
            await post("/twilio/stream-status", {"StreamSid": stream_sid, "StreamEvent": "stream-started"})
            async with asyncio.timeout(30):  # the agent answered: the service starts the recording
                await self._recording_started.wait()
            recording = next(r for r in self.recordings.values() if r.call_sid == call_sid)
            recording_form = {"RecordingSid": recording.sid, "RecordingChannels": "2", "ErrorCode": "0"}
            recording_form["RecordingUrl"] = self._resource(recording)["media_url"]
            recording_form["RecordingStartTime"] = _rfc2822(recording.created)
            callback_path = recording.callback.removeprefix(service_url) or "/twilio/recording-status"
            await post(callback_path, {**recording_form, "RecordingStatus": "in-progress"})
            await post("/twilio/stream-status", {"StreamSid": stream_sid, "StreamEvent": "stream-stopped"})
            await post(
                "/twilio/call-status",
                {"CallStatus": "completed", "CallDuration": str(seconds + 1), "From": caller, "To": number},
            )
            recording.status, recording.duration, recording.audio = "completed", seconds, audio
            await post(
                callback_path,
                {**recording_form, "RecordingStatus": "completed", "RecordingDuration": str(seconds)},
            )
        return parameters["call_id"], recording.sid
