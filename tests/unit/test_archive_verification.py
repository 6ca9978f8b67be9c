"""A download that arrives whole but corrupted: only a second read of Twilio's copy can tell."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from application.commands import (
    RecordRecordingStatus,
    RecordStreamEvent,
    SetCallRecording,
    StartCall,
    UpsertOrganization,
)
from application.handlers import CallDecision
from application.messagebus import MessageBus
from application.ports import MediaStream
from application.services import Services
from domain import events
from domain.model import ProviderRecordingStatus, Recording, RecordingStatus, StreamEvent
from tests.fakes import FakeClock, FakeTelephony, InMemoryRecordingStore, drain, make_services
from tests.support.database import Database

ORG, NUMBER, CALL = "org-acme", "+15550001111", "CA" + "1" * 32
AUDIO = b"ID3" + random.Random(5).randbytes(150_000)


async def completed_recording(svc: Services, telephony: FakeTelephony) -> tuple[str, str]:
    """An archived-to-be recording: (call id, Twilio recording sid), completed callback delivered."""
    bus = MessageBus(svc)
    await bus.handle(UpsertOrganization(ORG, "Acme", [NUMBER], "Hi."))
    await bus.handle(SetCallRecording(ORG, True, "admin@acme"))
    decision: CallDecision = await bus.handle(StartCall(CALL, "AC" + "0" * 32, "+15557654321", NUMBER))
    await bus.handle(RecordStreamEvent(CALL, "MZ1", StreamEvent.STARTED))
    await drain(svc)
    [recording_sid] = list(telephony.recordings)
    telephony.set_audio(recording_sid, AUDIO)
    telephony.complete_recording(recording_sid, duration=12)
    await bus.handle(
        RecordRecordingStatus(CALL, recording_sid, ProviderRecordingStatus.COMPLETED, duration_s=12)
    )
    return decision.call_id, recording_sid


async def recording_of(db: Database, call_id: str) -> Recording:
    recording = await db.recording_for_call(call_id)
    assert recording is not None
    return recording


async def test_a_download_corrupted_on_the_way_is_caught_and_nothing_is_archived_until_a_retry(
    db: Database,
) -> None:
    telephony, clock = FakeTelephony(), FakeClock()
    store = InMemoryRecordingStore(clock=clock.now)
    svc = make_services(db=db, telephony=telephony, store=store, clock=clock)
    call_id, recording_sid = await completed_recording(svc, telephony)
    telephony.corrupt_next_media()  # same length, 16 bytes flipped: the store holds what it was given

    result = await drain(svc, check=False)

    assert "ArchiveVerificationFailed" in str(result.failures[0][1])
    assert "damaged on the way" in str(result.failures[0][1])
    assert (await recording_of(db, call_id)).status == RecordingStatus.COMPLETED
    assert await db.events_of(events.RecordingArchived) == []
    assert telephony.delete_count(recording_sid) == 0

    await drain(svc)  # the relay's retry

    recording = await recording_of(db, call_id)
    assert recording.status == RecordingStatus.TWILIO_DELETED
    assert recording.audio is not None and store.data(recording.audio.storage_key) == AUDIO
    assert recording.audio.sha256 == hashlib.sha256(AUDIO).hexdigest()
    assert telephony.delete_count(recording_sid) == 1


async def test_with_the_recheck_turned_off_the_download_is_trusted(db: Database) -> None:
    telephony, clock = FakeTelephony(), FakeClock()
    store = InMemoryRecordingStore(clock=clock.now)
    svc = make_services(db=db, telephony=telephony, store=store, clock=clock)
    svc = dataclasses.replace(svc, settings=dataclasses.replace(svc.settings, recheck_source_audio=False))
    call_id, _ = await completed_recording(svc, telephony)
    telephony.corrupt_next_media()

    await drain(svc)

    recording = await recording_of(db, call_id)
    assert recording.status == RecordingStatus.TWILIO_DELETED
    assert recording.audio is not None and store.data(recording.audio.storage_key) != AUDIO
    assert [op for op, _ in telephony.calls].count("open_media") == 1


class WatchedDownloads:
    """Records, whenever a download is opened, how far the downloads already open have got."""

    def __init__(self, inner: FakeTelephony) -> None:
        self.inner = inner
        self.progress: list[int] = []  # bytes yielded so far by the open downloads
        self.read_when_opened: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    @asynccontextmanager
    async def open_media(
        self, recording_sid: str, media_url: str | None = None
    ) -> AsyncIterator[MediaStream]:
        self.read_when_opened.append(sum(self.progress))
        index = len(self.progress)
        self.progress.append(0)
        async with self.inner.open_media(recording_sid, media_url) as media:

            async def watched() -> AsyncIterator[bytes]:
                async for chunk in media.chunks:
                    await asyncio.sleep(0)  # as a network read would, let other tasks run
                    self.progress[index] += len(chunk)
                    yield chunk

            yield MediaStream(media.content_type, media.content_length, watched())


async def test_twilios_copy_is_read_again_side_by_side_with_the_upload_not_after_it(db: Database) -> None:
    telephony, clock = FakeTelephony(), FakeClock()
    watched = WatchedDownloads(telephony)
    store = InMemoryRecordingStore(clock=clock.now)
    svc = make_services(db=db, telephony=watched, store=store, clock=clock)  # type: ignore[arg-type]
    call_id, _ = await completed_recording(svc, telephony)

    await drain(svc)

    assert (await recording_of(db, call_id)).status == RecordingStatus.TWILIO_DELETED
    first, second = watched.read_when_opened
    assert first == 0 and 0 <= second < len(AUDIO)  # the second read began before the first ended
    assert watched.progress == [len(AUDIO), len(AUDIO)]
