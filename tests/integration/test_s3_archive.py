"""Archiving with the real adapters: the Twilio stand-in, S3 on a local moto server (through the fault
proxy), SQLite, the outbox relay. The issue's failure cases, each ending with Twilio's bytes in the
bucket and Twilio's copy deleted exactly once, and never deleted before that.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.clock import SystemClock
from adapters.inprocess_bus import InProcessEventPublisher
from adapters.retry import RetryPolicy
from adapters.s3_store import S3RecordingStore
from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.engine import create_engine, migrate
from adapters.twilio_telephony import TwilioTelephony
from application.commands import (
    EndCall,
    RecordRecordingStatus,
    RecordStreamEvent,
    SetCallRecording,
    StartCall,
    UpsertOrganization,
)
from application.handlers import CallDecision
from application.messagebus import EventDispatcher, MessageBus
from application.outbox import OutboxRelay
from application.ports import RecordingStore, StoredObject, Telephony
from application.reconcile import RecordingReconciler
from application.services import Services, ServiceSettings
from domain import events
from domain.model import CallStatus, ProviderRecordingStatus, Recording, RecordingStatus, StreamEvent
from entrypoints.container import CommitSignal, UnitOfWorkFactory
from tests.fakes import drain
from tests.support.s3 import S3FaultProxy, s3_store_on
from tests.twilio_standin import TwilioStandin, new_sid

ORG, NUMBER = "acme", "+15550100001"
BIG = 2 * 5 * 1024 * 1024 + 4321  # three parts of S3's minimum size
SMALL = 300_000


class ProcessCrashed(BaseException):
    """The process died here: nothing after this point happens, nothing is cleaned up."""


@dataclass
class World:
    services: Services
    bus: MessageBus
    relay: OutboxRelay
    standin: TwilioStandin
    store: S3RecordingStore
    proxy: S3FaultProxy
    bucket: str
    waits: list[tuple[float, RecordingStatus | None]] = field(default_factory=list)

    async def recording(self, call_id: str) -> Recording:
        async with self.services.uow() as uow:
            recording = await uow.recordings.get_for_call(call_id)
        assert recording is not None
        return recording

    async def settle(self, until: Callable[[], Awaitable[bool]], within_s: float = 15) -> None:
        """Let the relay work (and retry) until ``until`` holds."""
        deadline = time.monotonic() + within_s
        while not await until():
            if time.monotonic() > deadline:
                raise AssertionError("the outbox did not settle in time")
            await self.relay.drain(max_wait_s=5)
            await asyncio.sleep(0.05)

    async def archived_and_deleted(self, call_id: str) -> None:
        async def done() -> bool:
            return (await self.recording(call_id)).status == RecordingStatus.TWILIO_DELETED

        await self.settle(done)


@asynccontextmanager
async def running(
    db_url: str,
    standin: TwilioStandin,
    proxy: S3FaultProxy,
    bucket: str,
    *,
    telephony: Callable[[Telephony], Telephony] = lambda t: t,
    store: Callable[[RecordingStore], RecordingStore] = lambda s: s,
) -> AsyncIterator[World]:
    """One "process": its own engine, adapters and relay over the shared database, bucket and Twilio."""
    async with AsyncExitStack() as stack:
        engine: AsyncEngine = create_engine(db_url)
        stack.push_async_callback(engine.dispose)
        waits: list[tuple[float, RecordingStatus | None]] = []
        services_box: list[Services] = []

        async def sleep(seconds: float) -> None:
            # While the adapter waits to retry, what does the database say about the recording (the
            # only one these tests have)?
            status = None
            if services_box:
                async with services_box[0].uow() as uow:
                    found = await uow.recordings.stuck(
                        statuses=list(RecordingStatus), updated_before=SystemClock().now(), limit=1
                    )
                status = found[0].status if found else None
            waits.append((seconds, status))
            await asyncio.sleep(seconds)

        twilio = await stack.enter_async_context(
            TwilioTelephony(
                standin.account_sid,
                standin.auth_token,
                api_base=standin.base_url,
                retry=RetryPolicy(max_attempts=4, base_s=0.05, cap_s=0.2, max_retry_after_s=5),
                sleep=sleep,
            )
        )
        s3 = await stack.enter_async_context(s3_store_on(proxy.endpoint_url, bucket))
        clock = SystemClock()
        services = Services(
            uow_factory=UnitOfWorkFactory(engine, CommitSignal(), clock),
            telephony=telephony(twilio),
            store=store(s3),
            clock=clock,
            settings=ServiceSettings(public_url="http://callrec.test"),
        )
        services_box.append(services)
        relay = OutboxRelay(
            services.uow_factory,
            InProcessEventPublisher(EventDispatcher(services)),
            clock,
            retry_base=timedelta(milliseconds=50),
            retry_cap=timedelta(milliseconds=400),
        )
        yield World(services, MessageBus(services), relay, standin, s3, proxy, bucket, waits)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path}/callrec.db"
    migrate(url)
    return url


@pytest.fixture
async def world(
    db_url: str, twilio_standin: TwilioStandin, s3_proxy: S3FaultProxy, s3_bucket: str
) -> AsyncIterator[World]:
    async with running(db_url, twilio_standin, s3_proxy, s3_bucket) as w:
        await w.bus.handle(UpsertOrganization(ORG, "Acme", [NUMBER], "Hi, Acme here."))
        await w.bus.handle(SetCallRecording(ORG, True, "admin@acme"))
        yield w


async def call_recording(w: World) -> tuple[str, str, str]:
    """A recorded call, answered, its recording started at Twilio: (call id, call sid, recording sid)."""
    call_sid = new_sid("CA")
    decision: CallDecision = await w.bus.handle(
        StartCall(call_sid, w.standin.account_sid, "+15558675309", NUMBER)
    )
    await w.bus.handle(RecordStreamEvent(call_sid, new_sid("MZ"), StreamEvent.STARTED))
    await w.relay.drain()
    [recording_sid] = [s for s, r in w.standin.recordings.items() if r.call_sid == call_sid]
    return decision.call_id, call_sid, recording_sid


async def completes(w: World, call_sid: str, recording_sid: str, size: int) -> bytes:
    """Twilio finishes the recording and says so (the status callback)."""
    audio = w.standin.complete_recording(recording_sid, duration=30, size=size)
    await w.bus.handle(EndCall(call_sid, CallStatus.COMPLETED, 31))
    media_url = f"{w.standin.base_url}/2010-04-01/Accounts/{w.standin.account_sid}/Recordings/{recording_sid}"
    await w.bus.handle(
        RecordRecordingStatus(
            call_sid, recording_sid, ProviderRecordingStatus.COMPLETED, media_url=media_url, duration_s=30
        )
    )
    return audio


def objects(w: World, s3_client: Any) -> dict[str, bytes]:
    listed = s3_client.list_objects_v2(Bucket=w.bucket).get("Contents", [])
    return {o["Key"]: s3_client.get_object(Bucket=w.bucket, Key=o["Key"])["Body"].read() for o in listed}


def s3_writes(w: World) -> int:
    """Objects written (single PUTs and multipart uploads begun), through the proxy."""
    return len(w.proxy.seen("PutObject")) + len(w.proxy.seen("CreateMultipartUpload"))


def successful_deletes(standin: TwilioStandin, recording_sid: str) -> int:
    return sum(
        1 for r in standin.requests("delete_recording") if r["status"] == 204 and recording_sid in r["path"]
    )


async def assert_kept_at_twilio(w: World, call_id: str, recording_sid: str) -> None:
    recording = await w.recording(call_id)
    assert recording.status == RecordingStatus.COMPLETED and recording.audio is None
    assert w.standin.delete_count(recording_sid) == 0
    assert w.standin.audio(recording_sid) is not None


async def assert_archived_once(
    w: World, s3_client: Any, call_id: str, recording_sid: str, audio: bytes
) -> None:
    recording = await w.recording(call_id)
    assert recording.status == RecordingStatus.TWILIO_DELETED and recording.audio is not None
    stored = objects(w, s3_client)
    assert stored == {recording.audio.storage_key: audio}
    assert recording.audio.storage_key.startswith(f"orgs/{ORG}/")
    head = s3_client.head_object(Bucket=w.bucket, Key=recording.audio.storage_key)
    assert head["ServerSideEncryption"] == "AES256"
    # The database holds the whole SHA-256; a single PUT's metadata carries it too (a multipart
    # object carries S3's composite checksum instead: docs/decisions/0014-archive-verification.md).
    assert recording.audio.sha256 == hashlib.sha256(audio).hexdigest()
    assert head["Metadata"].get("sha256", recording.audio.sha256) == recording.audio.sha256
    assert head["Metadata"]["recording-sid"] == recording_sid
    assert successful_deletes(w.standin, recording_sid) == 1
    async with w.services.uow() as uow:
        pending = await uow.outbox.due(now=SystemClock().now(), limit=1000, exclude_aggregates=set())
    assert pending == []


# --- the happy path, both ways up ----------------------------------------------------------------


@pytest.mark.parametrize("size", [SMALL, BIG], ids=["single-put", "multipart"])
async def test_a_completed_recording_lands_in_the_bucket_verbatim_and_twilio_deletes_it_once(
    world: World, s3_client: Any, size: int
) -> None:
    call_id, call_sid, recording_sid = await call_recording(world)

    audio = await completes(world, call_sid, recording_sid, size)
    await world.archived_and_deleted(call_id)

    await assert_archived_once(world, s3_client, call_id, recording_sid, audio)
    # Each byte crosses to S3 once: nothing is copied on the server, and only a single PUT (small)
    # is read back; a multipart object is checked by the SHA-256 checksum S3 computed on receipt.
    assert world.proxy.seen("CopyObject") == []
    assert len(world.proxy.seen("GetObject")) == (1 if size == SMALL else 0)


# --- S3 failing --------------------------------------------------------------------------------------


async def test_a_5xx_on_one_multipart_part_is_retried_and_the_archive_completes_verified(
    world: World, s3_client: Any
) -> None:
    call_id, call_sid, recording_sid = await call_recording(world)
    world.proxy.fail_next("UploadPart", 503, part_number=2, code="SlowDown")

    audio = await completes(world, call_sid, recording_sid, BIG)
    await world.archived_and_deleted(call_id)

    assert [r.status for r in world.proxy.seen("UploadPart") if r.part_number == 2] == [503, 200]
    assert s3_writes(world) == 1  # retried within the upload, not by redoing the archive
    await assert_archived_once(world, s3_client, call_id, recording_sid, audio)


@pytest.mark.parametrize(
    ("operation", "size"),
    [("PutObject", SMALL), ("UploadPart", BIG)],
    ids=["single-put", "multipart"],
)
async def test_a_transfer_corrupted_on_the_way_to_s3_is_caught_nothing_deleted_and_retried(
    world: World, s3_client: Any, operation: str, size: int
) -> None:
    call_id, call_sid, recording_sid = await call_recording(world)
    # Every transfer is damaged until healed (moto stores the damaged bytes without a word): however
    # often the relay retries while it drains, no damaged copy may let Twilio's be deleted.
    world.proxy.corrupt_next(operation, times=1000)

    audio = await completes(world, call_sid, recording_sid, size)
    await world.relay.drain()

    await assert_kept_at_twilio(world, call_id, recording_sid)
    assert world.proxy.seen(operation), "the damaged transfer reached the store"
    world.proxy.heal()
    await world.archived_and_deleted(call_id)
    await assert_archived_once(world, s3_client, call_id, recording_sid, audio)


# --- Twilio's download failing --------------------------------------------------------------------


@pytest.mark.parametrize("size", [SMALL, BIG], ids=["single-put", "multipart"])
@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
async def test_a_truncated_or_corrupted_download_archives_nothing_deletes_nothing_and_is_retried(
    world: World, s3_client: Any, size: int, damage: str
) -> None:
    call_id, call_sid, recording_sid = await call_recording(world)
    if damage == "truncate":  # every download is cut short until healed, however often it is retried
        world.standin.truncate_next_media(times=1000, sid=recording_sid)
    else:
        # One damaged download: the re-read from Twilio disagrees with it. (Damaged the same way every
        # time, the two reads would agree: nothing here can tell.) The retry waits long enough for the
        # drain below to end before it, so the state in between is there to be looked at.
        world.standin.corrupt_next_media(sid=recording_sid)
        world.relay.retry_base = world.relay.retry_cap = timedelta(seconds=3)

    audio = await completes(world, call_sid, recording_sid, size)
    await world.relay.drain()

    await assert_kept_at_twilio(world, call_id, recording_sid)
    if damage == "truncate":  # the upload was abandoned: nothing in the bucket, no parts left over
        assert objects(world, s3_client) == {}
        assert s3_client.list_multipart_uploads(Bucket=world.bucket).get("Uploads", []) == []
    async with world.services.uow() as uow:
        [pending] = await uow.outbox.due(
            now=SystemClock().now() + timedelta(seconds=5), limit=10, exclude_aggregates=set()
        )
    assert pending.type == "RecordingCompletedAtTwilio" and pending.attempts >= 1  # deferred, to retry

    world.standin.heal_media()
    await world.archived_and_deleted(call_id)
    await assert_archived_once(world, s3_client, call_id, recording_sid, audio)


# --- Twilio's DELETE failing ------------------------------------------------------------------------


async def test_a_delete_answering_5xx_then_429_waits_archived_until_twilio_accepts_it(
    world: World, s3_client: Any
) -> None:
    call_id, call_sid, recording_sid = await call_recording(world)
    world.standin.inject_fault("delete_recording", status=500, sid=recording_sid)
    world.standin.inject_fault("delete_recording", status=429, retry_after="1", sid=recording_sid)

    started = time.monotonic()
    audio = await completes(world, call_sid, recording_sid, SMALL)
    await world.archived_and_deleted(call_id)

    assert [r["status"] for r in world.standin.requests("delete_recording")] == [500, 429, 204]
    (backoff, first_state), (retry_after, second_state) = world.waits
    assert backoff < 0.2 and 1 <= retry_after < 1.3  # Retry-After honoured
    assert first_state == second_state == RecordingStatus.ARCHIVED  # archived, Twilio copy pending deletion
    assert time.monotonic() - started >= 1
    await assert_archived_once(world, s3_client, call_id, recording_sid, audio)


async def test_a_delete_refused_for_longer_than_the_adapter_waits_is_retried_by_the_outbox(
    world: World, s3_client: Any
) -> None:
    call_id, call_sid, recording_sid = await call_recording(world)
    world.standin.inject_fault("delete_recording", status=429, retry_after="60", sid=recording_sid)
    world.standin.inject_fault("delete_recording", status=503, times=4, sid=recording_sid)

    audio = await completes(world, call_sid, recording_sid, SMALL)
    await world.relay.drain()
    assert (await world.recording(call_id)).status == RecordingStatus.ARCHIVED

    await world.archived_and_deleted(call_id)

    assert [r["status"] for r in world.standin.requests("delete_recording")] == [429, 503, 503, 503, 503, 204]
    await assert_archived_once(world, s3_client, call_id, recording_sid, audio)


# --- a crash between verification and the DELETE ----------------------------------------------------


class CrashOnDelete:
    """The process dies as it is about to send Twilio's DELETE (after the archive was committed)."""

    def __init__(self, inner: Telephony) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def delete_recording(self, recording_sid: str) -> bool:
        raise ProcessCrashed()


class CrashAfterVerify:
    """The process dies right after the store's verification (``confirm``), before the commit."""

    def __init__(self, inner: RecordingStore) -> None:
        self.inner = inner
        self.max_url_lifetime = inner.max_url_lifetime

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def confirm(self, written: StoredObject) -> bool:
        assert await self.inner.confirm(written)
        raise ProcessCrashed()


@pytest.mark.parametrize("crash", ["before-the-delete", "before-the-archive-commit"])
async def test_after_a_crash_between_verification_and_the_delete_the_delete_happens_once_and_nothing_twice(
    db_url: str, world: World, s3_client: Any, crash: str
) -> None:
    call_id, call_sid, recording_sid = await call_recording(world)
    audio = world.standin.complete_recording(recording_sid, duration=30, size=BIG)
    wrappers: dict[str, Any] = (
        {"telephony": CrashOnDelete} if crash == "before-the-delete" else {"store": CrashAfterVerify}
    )
    async with running(db_url, world.standin, world.proxy, world.bucket, **wrappers) as doomed:
        await completes(doomed, call_sid, recording_sid, BIG)
        with pytest.raises(ProcessCrashed):
            await drain(doomed.services, check=False)
    writes_before_restart = s3_writes(world)
    assert writes_before_restart == 1 and successful_deletes(world.standin, recording_sid) == 0
    expected_status = RecordingStatus.ARCHIVED if crash == "before-the-delete" else RecordingStatus.COMPLETED
    assert (await world.recording(call_id)).status == expected_status

    async with running(db_url, world.standin, world.proxy, world.bucket) as restarted:
        await restarted.archived_and_deleted(call_id)
        await asyncio.sleep(0.2)
        await restarted.relay.drain()

        await assert_archived_once(restarted, s3_client, call_id, recording_sid, audio)
    # Committed as archived before the crash: not uploaded again. Not committed: uploaded again to
    # the same key (the one object above), and archived once all the same.
    assert s3_writes(world) == (1 if crash == "before-the-delete" else 2)
    async with world.services.uow() as uow:
        rows = await uow.outbox.due(
            now=SystemClock().now() + timedelta(days=1), limit=1000, exclude_aggregates=set()
        )
    assert rows == []
    assert len(await archived_events(world)) == 1


async def archived_events(w: World) -> list[str]:
    engine: AsyncEngine = w.services.uow_factory.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        result = await conn.execute(
            select(t.outbox.c.id).where(t.outbox.c.type == events.RecordingArchived.type_name())
        )
        return [row[0] for row in result]


# --- a lost completed callback ------------------------------------------------------------------------


async def test_a_lost_completed_callback_is_found_by_the_sweep_and_the_recording_archived(
    world: World, s3_client: Any
) -> None:
    call_id, call_sid, recording_sid = await call_recording(world)
    audio = world.standin.complete_recording(recording_sid, duration=30, size=BIG)  # no callback comes
    await world.bus.handle(EndCall(call_sid, CallStatus.COMPLETED, 31))
    reconciler = RecordingReconciler(world.services, stuck_after=timedelta(milliseconds=300))

    assert (await reconciler.sweep()).examined == 0  # not stuck yet
    listed_before = len(world.standin.requests("list_recordings"))  # the start looked first
    await asyncio.sleep(0.4)
    report = await reconciler.sweep()
    await world.archived_and_deleted(call_id)

    assert report.resumed == {"twilio-said-completed": 1}
    assert len(world.standin.requests("list_recordings")) == listed_before + 1  # the sweep asked Twilio
    await assert_archived_once(world, s3_client, call_id, recording_sid, audio)
    assert (await world.recording(call_id)).duration_s == 30
