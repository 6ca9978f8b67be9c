"""``FakeTelephony``: an in-memory ``Telephony`` with the observable behaviour of ``TwilioTelephony``
against the Twilio stand-in (the contract suite in ``tests/integration/test_telephony_contract.py`` runs
both). For unit tests of the application: no network, no Mock.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from adapters.twilio_telephony import recording_status
from application.ports import MediaNotFound, MediaStream, ProviderRecording, TelephonyError

__all__ = ["FakeRecording", "FakeTelephony"]

_OPERATIONS = (
    "start_recording",
    "stop_recording",
    "pause_recording",
    "resume_recording",
    "open_media",
    "delete_recording",
    "list_call_recordings",
)


@dataclass
class FakeRecording:
    sid: str
    call_sid: str
    status_callback_url: str | None
    status: str = "in-progress"  # in-progress | paused | stopped | completed | absent
    pause_behavior: str | None = None  # of the last pause
    duration: int | None = None
    audio: bytes | None = None
    content_type: str = "audio/mpeg"
    deleted: bool = False


@dataclass
class _Failure:
    times: int
    error: BaseException


@dataclass
class _MediaSpoiler:
    kind: str  # truncate | corrupt
    times: int
    keep_bytes: int | None = None


@dataclass
class FakeTelephony:
    """Recordings in a dict. Failure injection: ``fail_next(operation, times, error=None)``,
    ``truncate_next_media()``, ``corrupt_next_media()``; races: ``after_next(operation, hook)``."""

    chunk_size: int = 64 * 1024
    audio_size: int = 48 * 1024
    recordings: dict[str, FakeRecording] = field(default_factory=dict)
    unknown_calls: set[str] = field(default_factory=set)  # calls the provider does not know (404)
    calls: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)  # journal of port calls
    delete_counts: Counter[str] = field(default_factory=Counter)
    media_urls_seen: list[str | None] = field(default_factory=list)
    _failures: dict[str, list[_Failure]] = field(default_factory=dict)
    _after: dict[str, list[Callable[[], Awaitable[None]]]] = field(default_factory=dict)
    _media_spoilers: list[_MediaSpoiler] = field(default_factory=list)

    # --- test-side API -----------------------------------------------------------------------------

    def fail_next(self, operation: str, times: int = 1, error: BaseException | None = None) -> None:
        """The next ``times`` calls of ``operation`` raise ``error`` (default: a ``TelephonyError``)."""
        if operation not in _OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {_OPERATIONS}")
        failure = _Failure(times, error or TelephonyError(f"injected failure of {operation}"))
        self._failures.setdefault(operation, []).append(failure)

    def after_next(self, operation: str, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` once the next ``operation`` (not ``open_media``) has done its work, before it
        returns: what happens at Twilio, or reaches the service, while the answer is on its way."""
        if operation not in _OPERATIONS or operation == "open_media":
            raise ValueError(f"after_next does not support {operation!r}")
        self._after.setdefault(operation, []).append(hook)

    def forget_call(self, call_sid: str) -> None:
        """The provider does not know this call: it lists no recordings of it, and cannot record it."""
        self.unknown_calls.add(call_sid)

    def truncate_next_media(self, times: int = 1, keep_bytes: int | None = None) -> None:
        """The next downloads break off (``TelephonyError`` while iterating) after ``keep_bytes``."""
        self._media_spoilers.append(_MediaSpoiler("truncate", times, keep_bytes))

    def corrupt_next_media(self, times: int = 1) -> None:
        """The next downloads deliver the full length with some bytes flipped."""
        self._media_spoilers.append(_MediaSpoiler("corrupt", times))

    def add_recording(
        self,
        call_sid: str,
        *,
        sid: str | None = None,
        status: str = "in-progress",
        audio: bytes | None = None,
        status_callback_url: str | None = None,
    ) -> str:
        sid = sid or "RE" + uuid.uuid4().hex
        self.recordings[sid] = FakeRecording(sid, call_sid, status_callback_url, status=status, audio=audio)
        return sid

    def set_audio(self, recording_sid: str, data: bytes, content_type: str = "audio/mpeg") -> None:
        recording = self.recordings.get(recording_sid)
        if recording is None:
            self.add_recording("CA" + "0" * 32, sid=recording_sid, status="completed", audio=data)
            recording = self.recordings[recording_sid]
        recording.audio = data
        recording.content_type = content_type

    def complete_recording(self, recording_sid: str, duration: int = 30, size: int | None = None) -> bytes:
        recording = self.recordings[recording_sid]
        recording.status = "completed"
        recording.duration = duration
        if recording.audio is None or size is not None:
            recording.audio = _generate_audio(recording_sid, size if size is not None else self.audio_size)
        return recording.audio

    def status(self, recording_sid: str) -> str | None:
        recording = self.recordings.get(recording_sid)
        return None if recording is None else recording.status

    def callback_url(self, recording_sid: str) -> str | None:
        recording = self.recordings.get(recording_sid)
        return None if recording is None else recording.status_callback_url

    def delete_count(self, recording_sid: str) -> int:
        return self.delete_counts[recording_sid]

    def is_deleted(self, recording_sid: str) -> bool:
        recording = self.recordings.get(recording_sid)
        return recording is not None and recording.deleted

    # --- the port ----------------------------------------------------------------------------------

    async def start_recording(self, call_sid: str, status_callback_url: str) -> str:
        self._enter("start_recording", call_sid, status_callback_url)
        if call_sid in self.unknown_calls:
            raise TelephonyError(f"start recording of call {call_sid}: 404")
        started = self.add_recording(call_sid, status_callback_url=status_callback_url)
        await self._done("start_recording")
        return started

    async def stop_recording(self, call_sid: str, recording_sid: str) -> None:
        self._enter("stop_recording", call_sid, recording_sid)
        recording = self.recordings.get(recording_sid)
        if recording is None or recording.deleted or recording.call_sid != call_sid:
            raise TelephonyError(f"stop recording {recording_sid} of call {call_sid}: 404")
        if recording.status == "in-progress":
            recording.status = "stopped"
        await self._done("stop_recording")

    async def pause_recording(self, call_sid: str, recording_sid: str, *, pause_behavior: str) -> bool:
        self._enter("pause_recording", call_sid, recording_sid, pause_behavior)
        return await self._set_capture("pause_recording", call_sid, recording_sid, "paused", pause_behavior)

    async def resume_recording(self, call_sid: str, recording_sid: str) -> bool:
        self._enter("resume_recording", call_sid, recording_sid)
        return await self._set_capture("resume_recording", call_sid, recording_sid, "in-progress")

    async def _set_capture(
        self,
        operation: str,
        call_sid: str,
        recording_sid: str,
        status: str,
        pause_behavior: str | None = None,
    ) -> bool:
        recording = self.recordings.get(recording_sid)
        if (
            recording is None
            or recording.deleted
            or recording.call_sid != call_sid
            or call_sid in self.unknown_calls
        ):
            return False
        if recording.status in ("in-progress", "paused"):
            recording.status = status
            if pause_behavior is not None:
                recording.pause_behavior = pause_behavior
        await self._done(operation)
        return True

    @asynccontextmanager
    async def open_media(
        self, recording_sid: str, media_url: str | None = None
    ) -> AsyncIterator[MediaStream]:
        self._enter("open_media", recording_sid, media_url)
        self.media_urls_seen.append(media_url)
        recording = self.recordings.get(recording_sid)
        if recording is None or recording.deleted or recording.audio is None:
            raise MediaNotFound(f"download recording {recording_sid}: no such media (404)")
        data = recording.audio
        spoiler = self._take_spoiler()
        chunks = self._chunks(data, spoiler)
        try:
            yield MediaStream(content_type=recording.content_type, content_length=len(data), chunks=chunks)
        finally:
            await chunks.aclose()

    async def delete_recording(self, recording_sid: str) -> bool:
        self._enter("delete_recording", recording_sid)
        self.delete_counts[recording_sid] += 1
        recording = self.recordings.get(recording_sid)
        existed = recording is not None and not recording.deleted
        if recording is not None:
            recording.deleted = True
            recording.audio = None
        await self._done("delete_recording")
        return existed

    async def list_call_recordings(self, call_sid: str) -> list[ProviderRecording]:
        self._enter("list_call_recordings", call_sid)
        found = [
            r
            for r in self.recordings.values()
            if r.call_sid == call_sid and not r.deleted and call_sid not in self.unknown_calls
        ]
        listed = [
            ProviderRecording(
                sid=r.sid,
                call_sid=r.call_sid,
                status=parsed[0] if (parsed := recording_status(r.status)) else None,
                capturing=parsed[1] if parsed else False,
                duration_s=r.duration,
            )
            for r in reversed(found)  # newest first, as Twilio lists them
        ]
        await self._done("list_call_recordings")
        return listed

    # --- internals ---------------------------------------------------------------------------------

    def _enter(self, operation: str, *args: object) -> None:
        self.calls.append((operation, args))
        pending = self._failures.get(operation)
        if pending:
            failure = pending[0]
            failure.times -= 1
            if failure.times <= 0:
                pending.pop(0)
            raise failure.error

    async def _done(self, operation: str) -> None:
        hooks = self._after.get(operation)
        if hooks:
            await hooks.pop(0)()

    def _take_spoiler(self) -> _MediaSpoiler | None:
        if not self._media_spoilers:
            return None
        spoiler = self._media_spoilers[0]
        spoiler.times -= 1
        if spoiler.times <= 0:
            self._media_spoilers.pop(0)
        return spoiler

    async def _chunks(self, data: bytes, spoiler: _MediaSpoiler | None) -> AsyncGenerator[bytes, None]:
        limit = len(data)
        if spoiler is not None and spoiler.kind == "truncate":
            keep = spoiler.keep_bytes if spoiler.keep_bytes is not None else len(data) // 2
            limit = max(0, min(keep, len(data) - 1))
        elif spoiler is not None and spoiler.kind == "corrupt":
            middle = len(data) // 2
            data = data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :]
        for offset in range(0, limit, self.chunk_size):
            yield data[offset : min(offset + self.chunk_size, limit)]
        if limit < len(data):
            raise TelephonyError(f"download broke off after {limit} of {len(data)} bytes")


def _generate_audio(sid: str, size: int) -> bytes:
    # The same bytes the stand-in generates for a sid (kept here so the fake needs no aiohttp/twilio).
    import random

    header = b"ID3\x04\x00\x00\x00\x00\x00\x00"
    if size <= len(header):
        return header[:size]
    return header + random.Random(sid).randbytes(size - len(header))
