"""The application's behaviour through its bus, on the real database with fakes for the outside world.

Commands go through ``MessageBus``; the events they commit reach their handlers by draining the
outbox through ``EventDispatcher`` (``tests.fakes.drain``), or through the real ``OutboxRelay`` with
the in-process publisher.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from adapters.inprocess_bus import InProcessEventPublisher
from application import views
from application.commands import (
    EndCall,
    RecordRecordingStatus,
    RecordScorability,
    RecordStreamEvent,
    SetCallRecording,
    StartCall,
    TransferCall,
    UpsertOrganization,
)
from application.errors import ConcurrencyConflict, NotFound, PhoneNumberTaken, UnknownNumber
from application.handlers import CallDecision
from application.messagebus import EventDispatcher, HandlerFailed, MessageBus
from application.outbox import OutboxRelay
from application.ports import MediaStream, StoredObject
from application.services import Services, ServiceSettings
from domain import events
from domain.audit import AuditActor
from domain.model import (
    DISCLOSURE_TEXT,
    CallKind,
    CallStatus,
    ProviderRecordingStatus,
    Recording,
    RecordingStatus,
    StreamEvent,
)
from tests.fakes import (
    PUBLIC_URL,
    FakeClock,
    FakeTelephony,
    InMemoryRecordingStore,
    drain,
    make_services,
)
from tests.support.database import Database

MEMBER = AuditActor("member@acme", "member")
ACME, ACME_NUMBER, ACME_GREETING = "org-acme", "+15550001111", "Hi, Acme Plumbing here. How can I help?"
GLOBEX, GLOBEX_NUMBER = "org-globex", "+15550002222"
DISCOVERY_LINE, SUPPORT_LINE = "+15559990001", "+15559990002"
ACCOUNT_SID = "AC" + "0" * 32
CALLBACK_URL = f"{PUBLIC_URL}/twilio/recording-status"


def sid(n: int) -> str:
    return f"CA{n:032x}"


def audio_of(size: int = 200 * 1024, seed: int = 7) -> bytes:
    return b"ID3" + random.Random(seed).randbytes(size - 3)


# --- fixtures and steps -------------------------------------------------------------------------


@pytest.fixture
def svc(db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore, clock: FakeClock) -> Services:
    return make_services(
        db=db,
        telephony=telephony,
        store=store,
        clock=clock,
        platform_lines={DISCOVERY_LINE: CallKind.DISCOVERY, SUPPORT_LINE: CallKind.SUPPORT},
    )


async def given_org(
    bus: MessageBus, *, recording: bool, org_id: str = ACME, number: str = ACME_NUMBER
) -> None:
    await bus.handle(UpsertOrganization(org_id, org_id.title(), [number], ACME_GREETING))
    if recording:
        await bus.handle(SetCallRecording(org_id, True, f"admin@{org_id}"))


async def incoming(bus: MessageBus, call_sid: str, to: str = ACME_NUMBER) -> CallDecision:
    decision: CallDecision = await bus.handle(StartCall(call_sid, ACCOUNT_SID, "+15557654321", to))
    return decision


async def agent_answers(bus: MessageBus, call_sid: str) -> None:
    await bus.handle(RecordStreamEvent(call_sid, "MZ" + call_sid[2:], StreamEvent.STARTED))


def twilio_recording_of(telephony: FakeTelephony, call_sid: str) -> str:
    [recording_sid] = [r.sid for r in telephony.recordings.values() if r.call_sid == call_sid]
    return recording_sid


def operations(telephony: FakeTelephony, name: str) -> list[tuple[object, ...]]:
    return [args for op, args in telephony.calls if op == name]


async def twilio_completes(
    bus: MessageBus, telephony: FakeTelephony, call_sid: str, audio: bytes | None = None
) -> str:
    """Twilio finished the recording and calls back with ``completed``; returns the recording sid."""
    recording_sid = twilio_recording_of(telephony, call_sid)
    telephony.set_audio(recording_sid, audio if audio is not None else audio_of())
    telephony.complete_recording(recording_sid, duration=42)
    await bus.handle(
        RecordRecordingStatus(
            call_sid,
            recording_sid,
            ProviderRecordingStatus.COMPLETED,
            media_url=f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording_sid}",
            duration_s=42,
        )
    )
    return recording_sid


async def recorded_call_in_progress(
    bus: MessageBus, svc: Services, call_sid: str, to: str = ACME_NUMBER
) -> CallDecision:
    decision = await incoming(bus, call_sid, to)
    await agent_answers(bus, call_sid)
    await drain(svc)
    return decision


async def archived_call(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, call_sid: str, to: str = ACME_NUMBER
) -> CallDecision:
    decision = await recorded_call_in_progress(bus, svc, call_sid, to)
    await twilio_completes(bus, telephony, call_sid)
    await bus.handle(EndCall(call_sid, CallStatus.COMPLETED, 42))
    await drain(svc)
    return decision


async def recording_status(db: Database, call_sid: str) -> RecordingStatus | None:
    call = await db.call_by_sid(call_sid)
    recording = (await db.recording_for_call(call.id)) if call is not None else None
    return recording.status if recording is not None else None


async def recording_of(db: Database, call_id: str) -> Recording | None:
    return await db.recording_for_call(call_id)


# --- organizations ------------------------------------------------------------------------------


async def test_a_new_organization_records_nothing(bus: MessageBus, db: Database) -> None:
    org = await bus.handle(UpsertOrganization(ACME, "Acme", [ACME_NUMBER], ACME_GREETING))

    assert org.recording_enabled is False
    assert (await db.organization(ACME)).recording_enabled is False
    assert await db.event_types() == ["OrganizationCreated"]


async def test_a_number_owned_by_another_org_is_taken(bus: MessageBus, db: Database) -> None:
    await given_org(bus, recording=False)

    with pytest.raises(PhoneNumberTaken):
        await bus.handle(UpsertOrganization(GLOBEX, "Globex", [GLOBEX_NUMBER, ACME_NUMBER], "Hello"))

    assert GLOBEX not in await db.organization_ids()
    assert (await db.organization(ACME)).phone_numbers == [ACME_NUMBER]


async def test_a_platform_line_cannot_be_claimed_by_an_org(bus: MessageBus, db: Database) -> None:
    with pytest.raises(PhoneNumberTaken):
        await bus.handle(UpsertOrganization(ACME, "Acme", [DISCOVERY_LINE], "Hello"))

    assert await db.organization_ids() == []


async def test_a_number_listed_twice_is_one_number(bus: MessageBus, db: Database) -> None:
    await bus.handle(UpsertOrganization(ACME, "Acme", [ACME_NUMBER, ACME_NUMBER], ACME_GREETING))

    assert (await db.organization(ACME)).phone_numbers == [ACME_NUMBER]


async def test_an_org_keeps_its_toggle_when_its_profile_is_updated(bus: MessageBus, db: Database) -> None:
    await given_org(bus, recording=True)

    await bus.handle(UpsertOrganization(ACME, "Acme Inc", [ACME_NUMBER, "+15550003333"], "New greeting"))

    org = await db.organization(ACME)
    assert (org.name, org.greeting, org.recording_enabled) == ("Acme Inc", "New greeting", True)
    assert await db.event_types() == [
        "OrganizationCreated",
        "RecordingSettingChanged",
        "AuditEntryAppended",  # the toggle's change, audited with it
        "OrganizationUpdated",
    ]


async def test_toggle_change_is_recorded_with_who_changed_it(
    bus: MessageBus, db: Database, clock: FakeClock
) -> None:
    await given_org(bus, recording=False)

    await bus.handle(SetCallRecording(ACME, True, "jane@acme"))

    [change] = await db.events_of(events.RecordingSettingChanged)
    assert (change.enabled, change.changed_by, change.occurred_at) == (True, "jane@acme", clock.now())


async def test_toggling_an_unknown_org_is_not_found(bus: MessageBus) -> None:
    with pytest.raises(NotFound):
        await bus.handle(SetCallRecording("nobody", True, "jane@acme"))


# --- calls: the decision ------------------------------------------------------------------------


async def test_a_call_to_an_unknown_number_is_refused_and_creates_nothing(
    bus: MessageBus, db: Database
) -> None:
    await given_org(bus, recording=True)
    outbox_before = len(await db.outbox())

    with pytest.raises(UnknownNumber):
        await incoming(bus, sid(1), to="+15550009999")

    assert await db.call_ids() == []
    assert len(await db.outbox()) == outbox_before


async def test_a_repeated_call_sid_returns_the_same_decision_and_creates_nothing(
    bus: MessageBus, db: Database
) -> None:
    await given_org(bus, recording=True)
    first = await incoming(bus, sid(1))
    outbox_before, commits_before = len(await db.outbox()), db.commits

    again = await incoming(bus, sid(1))

    assert again == first
    assert len(await db.call_ids()) == 1
    assert (len(await db.outbox()), db.commits) == (outbox_before, commits_before)


async def test_flipping_the_toggle_mid_call_changes_the_next_call_not_this_one(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    during = await incoming(bus, sid(1))

    await bus.handle(SetCallRecording(ACME, False, "jane@acme"))
    repeated = await incoming(bus, sid(1))
    await agent_answers(bus, sid(1))
    await drain(svc)
    after = await incoming(bus, sid(2))
    await agent_answers(bus, sid(2))
    await drain(svc)

    assert during.recorded and repeated == during
    assert during.greeting == f"{DISCLOSURE_TEXT} {ACME_GREETING}"
    assert not after.recorded
    assert after.greeting == ACME_GREETING
    assert [args[0] for args in operations(telephony, "start_recording")] == [sid(1)]
    assert await db.recording_for_call(after.call_id) is None


async def test_turning_the_toggle_on_takes_effect_on_the_next_call(bus: MessageBus) -> None:
    await given_org(bus, recording=False)
    before = await incoming(bus, sid(1))

    await bus.handle(SetCallRecording(ACME, True, "jane@acme"))
    after = await incoming(bus, sid(2))

    assert (before.recorded, after.recorded) == (False, True)
    assert DISCLOSURE_TEXT not in before.greeting
    assert after.greeting.startswith(DISCLOSURE_TEXT)


async def test_a_call_on_a_platform_line_is_recorded_with_no_org_at_all(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    decision = await recorded_call_in_progress(bus, svc, sid(1), to=SUPPORT_LINE)

    assert decision.recorded is True
    call = await db.call(decision.call_id)
    assert (call.kind, call.org_id) == (CallKind.SUPPORT, None)
    assert len(operations(telephony, "start_recording")) == 1


# --- calls: capture starts when the agent answers -----------------------------------------------


async def test_answer_on_a_recorded_call_starts_exactly_one_recording_with_our_status_callback(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await incoming(bus, sid(1))
    await drain(svc)
    assert operations(telephony, "start_recording") == []

    await agent_answers(bus, sid(1))
    await agent_answers(bus, sid(1))  # Twilio retried the webhook
    await drain(svc)

    assert operations(telephony, "start_recording") == [(sid(1), CALLBACK_URL)]
    recording = await recording_of(db, decision.call_id)
    assert recording is not None
    assert recording.status == RecordingStatus.IN_PROGRESS
    assert recording.recording_sid == twilio_recording_of(telephony, sid(1))
    assert (await db.call(decision.call_id)).recording_id == recording.id


async def test_the_status_callback_url_does_not_double_a_trailing_slash() -> None:
    settings = ServiceSettings(public_url="https://rec.example.com/")

    assert settings.recording_status_callback == "https://rec.example.com/twilio/recording-status"


@pytest.mark.parametrize("event", [StreamEvent.STOPPED, StreamEvent.ERROR])
async def test_nothing_is_recorded_before_the_agent_answers(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, event: StreamEvent
) -> None:
    await given_org(bus, recording=True)
    decision = await incoming(bus, sid(1))

    await bus.handle(RecordStreamEvent(sid(1), "MZ1", event))
    await drain(svc)

    assert telephony.calls == []
    assert await recording_of(db, decision.call_id) is None
    assert (await db.call(decision.call_id)).answered_at is None


async def test_an_unrecorded_call_asks_twilio_for_nothing(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=False)
    decision = await incoming(bus, sid(1))

    await agent_answers(bus, sid(1))
    await bus.handle(TransferCall(decision.call_id, "completed"))
    await bus.handle(EndCall(sid(1), CallStatus.COMPLETED, 30))
    await drain(svc)

    assert telephony.calls == []
    assert await db.recording_ids() == []


async def test_a_caller_who_hangs_up_before_capture_starts_leaves_no_audio(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await incoming(bus, sid(1))

    await agent_answers(bus, sid(1))
    await bus.handle(EndCall(sid(1), CallStatus.COMPLETED, 1))
    await drain(svc)

    assert operations(telephony, "start_recording") == []
    recording = await recording_of(db, decision.call_id)
    assert recording is not None and recording.status == RecordingStatus.ABSENT
    view = await views.get_call(svc, org_id=ACME, call_id=decision.call_id, kinds=(CallKind.CUSTOMER,))
    assert (view.recording.status, view.recording.reason) == ("not_recorded", "no_audio")


async def test_stream_events_of_an_unknown_call_are_not_found(bus: MessageBus) -> None:
    with pytest.raises(NotFound):
        await agent_answers(bus, sid(99))


# --- the archive: copy, verify, only then delete at Twilio --------------------------------------


async def test_completed_recording_is_archived_verified_and_only_then_deleted_at_twilio(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    audio = audio_of(300 * 1024)  # several chunks

    recording_sid = await twilio_completes(bus, telephony, sid(1), audio)
    await drain(svc)

    recording = await recording_of(db, decision.call_id)
    assert recording is not None and recording.audio is not None
    assert store.data(recording.audio.storage_key) == audio
    assert recording.audio.sha256 == hashlib.sha256(audio).hexdigest()
    assert (recording.audio.size_bytes, recording.audio.content_type) == (len(audio), "audio/mpeg")
    assert (recording.status, recording.duration_s) == (RecordingStatus.TWILIO_DELETED, 42)
    assert telephony.is_deleted(recording_sid)
    assert telephony.delete_count(recording_sid) == 1
    journal = [op for op, _ in telephony.calls]
    # Downloaded once into the store, read once more to prove Twilio's copy is what was stored.
    assert journal == [
        "list_call_recordings",  # nothing to adopt: Twilio holds no recording of this call yet
        "start_recording",
        "open_media",
        "open_media",
        "delete_recording",
    ]
    assert telephony.media_urls_seen == [recording.media_url, recording.media_url]
    metadata = store.objects[recording.audio.storage_key].metadata
    assert metadata["call-id"] == decision.call_id
    assert metadata["recording-sid"] == recording_sid
    assert [e.type_name() for e in await db.events_of(events.RecordingArchived)] == ["RecordingArchived"]


async def test_a_download_that_breaks_off_keeps_the_twilio_copy_until_a_retry_succeeds(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    audio = audio_of()
    telephony.truncate_next_media(keep_bytes=1000)

    recording_sid = await twilio_completes(bus, telephony, sid(1), audio)
    result = await drain(svc, check=False)

    assert [m.type for m, _ in result.failures] == ["RecordingCompletedAtTwilio"]
    await assert_kept_at_twilio(db, telephony, decision.call_id, recording_sid)

    await drain(svc)

    await assert_archived_and_deleted(db, telephony, store, decision.call_id, recording_sid, audio)


class ShortDownloads:
    """Wraps a telephony so its downloads end early without an error, as a dropped connection can."""

    def __init__(self, inner: FakeTelephony, missing: int) -> None:
        self.inner, self.missing = inner, missing

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    @asynccontextmanager
    async def open_media(
        self, recording_sid: str, media_url: str | None = None
    ) -> AsyncIterator[MediaStream]:
        async with self.inner.open_media(recording_sid, media_url) as media:
            data = b"".join([chunk async for chunk in media.chunks])

            async def short() -> AsyncIterator[bytes]:
                yield data[: len(data) - self.missing]

            yield MediaStream(media.content_type, media.content_length, short())


async def test_a_download_shorter_than_announced_is_not_archived_and_twilio_keeps_its_copy(
    db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore, clock: FakeClock
) -> None:
    short_svc = make_services(db=db, telephony=ShortDownloads(telephony, 10), store=store, clock=clock)  # type: ignore[arg-type]
    bus = MessageBus(short_svc)
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, short_svc, sid(1))
    audio = audio_of()

    recording_sid = await twilio_completes(bus, telephony, sid(1), audio)
    result = await drain(short_svc, check=False)

    assert [type(e).__name__ for _, e in result.failures] == ["HandlerFailed"]
    assert "ArchiveVerificationFailed" in str(result.failures[0][1])
    await assert_kept_at_twilio(db, telephony, decision.call_id, recording_sid)

    healthy = make_services(db=db, telephony=telephony, store=store, clock=clock)
    await drain(healthy)

    await assert_archived_and_deleted(db, telephony, store, decision.call_id, recording_sid, audio)


class DamagingStore(InMemoryRecordingStore):
    """A store that damages what it just wrote (after measuring it), like a faulty disk or bucket."""

    damage_next: str | None = None

    async def put(self, key: str, chunks: AsyncIterator[bytes], **kwargs: object) -> StoredObject:
        written = await super().put(key, chunks, **kwargs)  # type: ignore[arg-type]
        damage, self.damage_next = self.damage_next, None
        if damage == "corrupt":
            self.corrupt(key)
        elif damage == "truncate":
            self.truncate(key)
        return written


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
async def test_a_store_that_damages_the_audio_is_caught_by_verify_and_twilio_keeps_its_copy(
    db: Database, telephony: FakeTelephony, clock: FakeClock, damage: str
) -> None:
    store = DamagingStore(clock=clock.now)
    svc = make_services(db=db, telephony=telephony, store=store, clock=clock)
    bus = MessageBus(svc)
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    audio = audio_of()
    store.damage_next = damage

    recording_sid = await twilio_completes(bus, telephony, sid(1), audio)
    result = await drain(svc, check=False)

    assert "ArchiveVerificationFailed" in str(result.failures[0][1])
    await assert_kept_at_twilio(db, telephony, decision.call_id, recording_sid)

    await drain(svc)

    await assert_archived_and_deleted(db, telephony, store, decision.call_id, recording_sid, audio)


@pytest.mark.parametrize("operation", ["put", "verify"])
async def test_a_failing_store_keeps_the_twilio_copy_until_a_retry_succeeds(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    operation: str,
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    audio = audio_of()
    store.fail_next(operation)  # type: ignore[arg-type]

    recording_sid = await twilio_completes(bus, telephony, sid(1), audio)
    result = await drain(svc, check=False)

    assert "StorageError" in str(result.failures[0][1])
    await assert_kept_at_twilio(db, telephony, decision.call_id, recording_sid)

    await drain(svc)

    await assert_archived_and_deleted(db, telephony, store, decision.call_id, recording_sid, audio)


async def test_a_failing_delete_leaves_the_recording_archived_until_a_retry_deletes_it(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    audio = audio_of()
    telephony.fail_next("delete_recording")

    recording_sid = await twilio_completes(bus, telephony, sid(1), audio)
    result = await drain(svc, check=False)

    assert [m.type for m, _ in result.failures] == ["RecordingArchived"]
    recording = await recording_of(db, decision.call_id)
    assert recording is not None and recording.status == RecordingStatus.ARCHIVED
    assert recording.twilio_deleted_at is None
    assert not telephony.is_deleted(recording_sid)

    await drain(svc)

    await assert_archived_and_deleted(db, telephony, store, decision.call_id, recording_sid, audio)
    assert len(operations(telephony, "delete_recording")) == 2  # one failed, one done


async def test_a_recording_already_gone_at_twilio_counts_as_deleted(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    telephony.fail_next("delete_recording")
    recording_sid = await twilio_completes(bus, telephony, sid(1))
    await drain(svc, check=False)
    telephony.recordings[recording_sid].deleted = True  # someone removed it in Twilio's console

    await drain(svc)

    recording = await recording_of(db, decision.call_id)
    assert recording is not None and recording.status == RecordingStatus.TWILIO_DELETED


async def assert_kept_at_twilio(
    db: Database, telephony: FakeTelephony, call_id: str, recording_sid: str
) -> None:
    recording = await recording_of(db, call_id)
    assert recording is not None
    assert recording.status == RecordingStatus.COMPLETED
    assert recording.audio is None
    assert operations(telephony, "delete_recording") == []
    assert not telephony.is_deleted(recording_sid)
    assert await db.events_of(events.RecordingArchived) == []


async def assert_archived_and_deleted(
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    call_id: str,
    recording_sid: str,
    audio: bytes,
) -> None:
    recording = await recording_of(db, call_id)
    assert recording is not None and recording.audio is not None
    assert recording.status == RecordingStatus.TWILIO_DELETED
    assert store.data(recording.audio.storage_key) == audio
    assert recording.audio.size_bytes == len(audio)
    assert recording.audio.sha256 == hashlib.sha256(audio).hexdigest()
    assert telephony.is_deleted(recording_sid)
    assert telephony.delete_count(recording_sid) == 1
    assert len(await db.events_of(events.RecordingArchived)) == 1


# --- at least once in, exactly once in effect ---------------------------------------------------


def a_call_started_event(clock: FakeClock) -> events.CallStarted:
    return events.CallStarted(
        occurred_at=clock.now(),
        org_id=ACME,
        call_id="call-1",
        call_sid=sid(1),
        kind="customer",
        from_number="+15557654321",
        to_number=ACME_NUMBER,
        recorded=False,
        disclosure_version=None,
    )


async def test_the_dispatcher_skips_a_consumer_that_already_recorded_the_event(
    svc: Services, clock: FakeClock
) -> None:
    effects: list[str] = []

    async def count(event: events.Event, services: Services) -> None:
        async with services.uow() as uow:
            effects.append(event.id)
            await uow.commit()

    dispatcher = EventDispatcher(svc, {events.CallStarted: [("counter", count)]})
    event = a_call_started_event(clock)

    await dispatcher.dispatch(event)
    await dispatcher.dispatch(event)

    assert effects == [event.id]


async def test_one_consumers_failure_does_not_stop_the_others_and_only_it_is_retried(
    svc: Services, clock: FakeClock
) -> None:
    runs: list[str] = []

    def consumer(name: str, failures: int) -> Callable[[events.Event, Services], Awaitable[None]]:
        async def handle(event: events.Event, services: Services) -> None:
            runs.append(name)
            if runs.count(name) <= failures:
                raise RuntimeError(f"{name} is down")
            async with services.uow() as uow:
                await uow.commit()

        return handle

    dispatcher = EventDispatcher(
        svc, {events.CallStarted: [("flaky", consumer("flaky", 1)), ("steady", consumer("steady", 0))]}
    )
    event = a_call_started_event(clock)

    with pytest.raises(HandlerFailed) as failed:
        await dispatcher.dispatch(event)
    assert [name for name, _ in failed.value.failures] == ["flaky"]
    await dispatcher.dispatch(event)
    await dispatcher.dispatch(event)

    assert runs == ["flaky", "steady", "flaky"]


async def test_a_redelivered_event_changes_nothing_and_deletes_once(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    decision = await archived_call(bus, svc, telephony, sid(1))
    recording_sid = twilio_recording_of(telephony, sid(1))
    before = await recording_of(db, decision.call_id)
    dispatcher = EventDispatcher(svc)

    handled = (events.RecordingRequested, events.RecordingCompletedAtTwilio, events.RecordingArchived)
    for event_type in handled:
        [event] = await db.events_of(event_type)
        await dispatcher.dispatch(event)
        await dispatcher.dispatch(event)

    assert await recording_of(db, decision.call_id) == before
    assert len(operations(telephony, "start_recording")) == 1
    assert store.put_count == 1
    assert telephony.delete_count(recording_sid) == 1


async def test_redelivering_the_whole_outbox_changes_nothing(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    await archived_call(bus, svc, telephony, sid(1))
    journal_before, commits_before = list(telephony.calls), db.commits
    await db.mark_outbox(published_at=None)  # the relay crashed before marking anything published

    result = await drain(svc)

    assert len(result.delivered) == len(await db.outbox())
    assert telephony.calls == journal_before
    assert store.put_count == 1
    assert db.commits == commits_before + len(await db.outbox())  # only the "published" marks


async def test_a_duplicate_completed_callback_archives_once(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    await recorded_call_in_progress(bus, svc, sid(1))

    recording_sid = await twilio_completes(bus, telephony, sid(1))
    await twilio_completes(bus, telephony, sid(1))
    await drain(svc)
    await twilio_completes(bus, telephony, sid(1))  # a late duplicate after the Twilio copy is gone
    await drain(svc)

    assert len(await db.events_of(events.RecordingCompletedAtTwilio)) == 1
    assert store.put_count == 1
    assert telephony.delete_count(recording_sid) == 1


async def test_out_of_order_callbacks_are_harmless(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    recording_sid = await twilio_completes(bus, telephony, sid(1))
    await drain(svc)

    for status in (
        ProviderRecordingStatus.CAPTURING,
        ProviderRecordingStatus.ABSENT,
        ProviderRecordingStatus.COMPLETED,
    ):
        await bus.handle(RecordRecordingStatus(sid(1), recording_sid, status))
    await drain(svc)

    recording = await recording_of(db, decision.call_id)
    assert recording is not None and recording.status == RecordingStatus.TWILIO_DELETED
    assert await db.events_of(events.RecordingAbsent) == []


async def test_completed_callback_arriving_before_in_progress_still_archives(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))

    recording_sid = await twilio_completes(bus, telephony, sid(1))
    await bus.handle(RecordRecordingStatus(sid(1), recording_sid, ProviderRecordingStatus.CAPTURING))
    await drain(svc)

    recording = await recording_of(db, decision.call_id)
    assert recording is not None and recording.status == RecordingStatus.TWILIO_DELETED


async def test_a_redelivered_transfer_completed_stops_the_recording_once(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    """The stop is an external effect too, so a redelivery must not repeat it."""
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    await bus.handle(TransferCall(decision.call_id, "completed"))
    await drain(svc)
    [event] = await db.events_of(events.TransferCompleted)

    await EventDispatcher(svc).dispatch(event)

    assert len(operations(telephony, "stop_recording")) == 1


# --- transfer and scorability -------------------------------------------------------------------


async def test_transfer_completed_stops_the_recording_at_twilio(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    recording_sid = twilio_recording_of(telephony, sid(1))

    await bus.handle(TransferCall(decision.call_id, "started"))
    await drain(svc)
    assert operations(telephony, "stop_recording") == []  # hold time stays recorded

    await bus.handle(TransferCall(decision.call_id, "completed"))
    await drain(svc)

    assert operations(telephony, "stop_recording") == [(sid(1), recording_sid)]
    assert telephony.status(recording_sid) == "stopped"
    assert (await db.call(decision.call_id)).ended is False


async def test_transfer_after_the_recording_completed_asks_twilio_for_nothing(
    bus: MessageBus, svc: Services, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await archived_call(bus, svc, telephony, sid(1))

    await bus.handle(TransferCall(decision.call_id, "completed"))
    await drain(svc)

    assert operations(telephony, "stop_recording") == []


async def test_transfer_of_an_unknown_call_is_not_found(bus: MessageBus) -> None:
    with pytest.raises(NotFound):
        await bus.handle(TransferCall("no-such-call", "completed"))


async def test_non_engagement_verdict_keeps_the_recording(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    early = await recorded_call_in_progress(bus, svc, sid(1))
    await bus.handle(RecordScorability(early.call_id, False, "robocall"))  # verdict before the audio
    await twilio_completes(bus, telephony, sid(1))
    await drain(svc)
    late = await archived_call(bus, svc, telephony, sid(2))

    await bus.handle(RecordScorability(late.call_id, False, "silent_dialer"))  # verdict after the archive
    await drain(svc)

    for call_id in (early.call_id, late.call_id):
        assert (await db.call(call_id)).non_engagement
        recording = await recording_of(db, call_id)
        assert recording is not None and recording.audio is not None
        assert recording.status == RecordingStatus.TWILIO_DELETED
        assert store.data(recording.audio.storage_key) is not None
        view = await views.get_call(svc, org_id=ACME, call_id=call_id, kinds=(CallKind.CUSTOMER,))
        assert view.recording.status == "available"


async def test_scorability_of_an_unknown_call_is_not_found(bus: MessageBus) -> None:
    with pytest.raises(NotFound):
        await bus.handle(RecordScorability("no-such-call", False, "robocall"))


# --- Twilio audio we never asked for ------------------------------------------------------------


async def test_audio_twilio_holds_for_a_recorded_call_without_our_request_is_adopted_and_archived(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await incoming(bus, sid(1))  # never answered, so we never asked
    recording_sid = telephony.add_recording(sid(1), status="completed", audio=audio_of())

    await bus.handle(
        RecordRecordingStatus(sid(1), recording_sid, ProviderRecordingStatus.COMPLETED, duration_s=3)
    )
    await drain(svc)

    recording = await recording_of(db, decision.call_id)
    assert recording is not None and recording.status == RecordingStatus.TWILIO_DELETED
    assert telephony.is_deleted(recording_sid)
    assert operations(telephony, "start_recording") == []


async def test_the_agent_answering_after_twilios_audio_was_adopted_starts_no_second_recording(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await incoming(bus, sid(1))
    recording_sid = telephony.add_recording(sid(1), status="in-progress")
    await bus.handle(RecordRecordingStatus(sid(1), recording_sid, ProviderRecordingStatus.CAPTURING))

    await agent_answers(bus, sid(1))
    await drain(svc)

    assert operations(telephony, "start_recording") == []
    [recording] = await db.recordings_of_call(decision.call_id)
    assert recording.recording_sid == recording_sid and recording.status == RecordingStatus.IN_PROGRESS
    assert (await db.call(decision.call_id)).answered_at is not None


async def test_audio_of_a_call_that_was_not_recorded_is_never_kept(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=False)
    decision = await incoming(bus, sid(1))
    await agent_answers(bus, sid(1))
    recording_sid = telephony.add_recording(sid(1), status="completed", audio=audio_of())

    await bus.handle(
        RecordRecordingStatus(sid(1), recording_sid, ProviderRecordingStatus.COMPLETED, duration_s=3)
    )
    await drain(svc)

    assert telephony.is_deleted(recording_sid)  # never left behind at Twilio
    assert store.objects == {}
    with pytest.raises(NotFound):
        await views.recording_url(
            svc,
            actor=MEMBER,
            org_id=ACME,
            call_id=decision.call_id,
            kinds=(CallKind.CUSTOMER,),
            download=False,
        )


# --- more than one recording of a call: nothing is left behind at Twilio -------------------------


async def second_recording_completes(
    bus: MessageBus, telephony: FakeTelephony, call_sid: str, audio: bytes, *, callbacks: int = 1
) -> str:
    """A recording of the call the service did not start (a retried start, someone else's) completes
    at Twilio and calls back; returns its sid."""
    other = telephony.add_recording(call_sid, status="in-progress")
    await bus.handle(RecordRecordingStatus(call_sid, other, ProviderRecordingStatus.CAPTURING))
    telephony.set_audio(other, audio)
    telephony.complete_recording(other, duration=17)
    for _ in range(callbacks):
        await bus.handle(
            RecordRecordingStatus(call_sid, other, ProviderRecordingStatus.COMPLETED, duration_s=17)
        )
    return other


async def test_a_second_recording_of_a_recorded_call_is_archived_verified_and_deleted_at_twilio(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    first_audio, second_audio = audio_of(seed=1), audio_of(100 * 1024, seed=2)
    first = twilio_recording_of(telephony, sid(1))

    second = await second_recording_completes(bus, telephony, sid(1), second_audio, callbacks=2)
    telephony.set_audio(first, first_audio)
    telephony.complete_recording(first, duration=42)
    await bus.handle(RecordRecordingStatus(sid(1), first, ProviderRecordingStatus.COMPLETED, duration_s=42))
    await bus.handle(EndCall(sid(1), CallStatus.COMPLETED, 42))
    await drain(svc)

    own = await recording_of(db, decision.call_id)
    assert own is not None and own.recording_sid == first
    [extra] = [r for r in await db.recordings_of_call(decision.call_id) if r.id != own.id]
    assert extra.recording_sid == second and extra.status == RecordingStatus.TWILIO_DELETED
    assert extra.audio is not None and store.data(extra.audio.storage_key) == second_audio
    assert extra.audio.sha256 == hashlib.sha256(second_audio).hexdigest()
    assert own.audio is not None and store.data(own.audio.storage_key) == first_audio
    assert telephony.delete_count(first) == telephony.delete_count(second) == 1  # archived once each
    assert len(await db.events_of(events.RecordingCompletedAtTwilio)) == 2
    view = await views.get_call(svc, org_id=ACME, call_id=decision.call_id, kinds=(CallKind.CUSTOMER,))
    assert (view.recording.status, view.recording.size_bytes) == ("available", len(first_audio))
    assert view.additional_recordings == (
        views.AdditionalRecordingView("archived", None, 17, len(second_audio), "audio/mpeg"),
    )
    [settled] = await db.events_of(events.CallSettled)
    assert (settled.recording_id, settled.storage_key) == (own.id, own.audio.storage_key)


async def test_a_second_recording_never_holds_up_settling_the_call(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await archived_call(bus, svc, telephony, sid(1))
    other = telephony.add_recording(sid(1), status="in-progress")
    await bus.handle(
        RecordRecordingStatus(sid(1), other, ProviderRecordingStatus.CAPTURING)
    )  # and it never completes
    await drain(svc)

    assert (await db.call(decision.call_id)).settled_at is not None
    [settled] = await db.events_of(events.CallSettled)
    assert settled.recording_id == (await db.call(decision.call_id)).recording_id
    view = await views.get_call(svc, org_id=ACME, call_id=decision.call_id, kinds=(CallKind.CUSTOMER,))
    assert view.recording.status == "available"
    assert [r.status for r in view.additional_recordings] == ["processing"]


@pytest.mark.parametrize("overtaken", ["before the start reached Twilio", "while its answer is recorded"])
async def test_a_start_that_a_callback_for_another_recording_overtook_keeps_both(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, overtaken: str
) -> None:
    """Twilio calls back about a recording its list did not show yet, while our start is on its way:
    the call's recording is whichever Twilio named first, and the other one is archived as well."""
    await given_org(bus, recording=True)
    decision = await incoming(bus, sid(1))
    await agent_answers(bus, sid(1))
    early = "RE" + "e" * 32

    async def another_recording_calls_back() -> None:
        telephony.add_recording(sid(1), sid=early, status="in-progress")
        await bus.handle(RecordRecordingStatus(sid(1), early, ProviderRecordingStatus.CAPTURING))

    async def calls_back_just_before_the_answer_is_committed() -> None:
        db.before_next_commit(another_recording_calls_back)

    if overtaken == "before the start reached Twilio":
        telephony.after_next("list_call_recordings", another_recording_calls_back)
    else:
        telephony.after_next("start_recording", calls_back_just_before_the_answer_is_committed)
    await drain(svc)
    [started] = [args for op, args in telephony.calls if op == "start_recording"]
    ours = next(sid_ for sid_ in telephony.recordings if sid_ != early)
    # Both are known before either calls back again (only ours' callback could tell us otherwise).
    assert {r.recording_sid for r in await db.recordings_of_call(decision.call_id)} == {early, ours}
    for recording_sid in (early, ours):
        telephony.complete_recording(recording_sid, duration=20)
        await bus.handle(
            RecordRecordingStatus(sid(1), recording_sid, ProviderRecordingStatus.COMPLETED, duration_s=20)
        )
    await drain(svc)

    recordings = await db.recordings_of_call(decision.call_id)
    assert {r.recording_sid for r in recordings} == {early, ours} and started
    first_named = next(r.id for r in recordings if r.recording_sid == early)
    assert (await db.call(decision.call_id)).recording_id == first_named
    assert all(r.status == RecordingStatus.TWILIO_DELETED for r in recordings)
    assert telephony.is_deleted(early) and telephony.is_deleted(ours)
    assert db.lost_races == (overtaken == "while its answer is recorded")


async def test_a_start_adopts_the_oldest_recording_twilio_holds_and_archives_the_others_too(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await incoming(bus, sid(1))
    oldest = telephony.add_recording(sid(1), status="in-progress")
    newer = telephony.add_recording(sid(1), status="completed", audio=audio_of(seed=3))
    telephony.complete_recording(newer, duration=9)

    await agent_answers(bus, sid(1))
    await drain(svc)

    assert operations(telephony, "start_recording") == []
    own = await recording_of(db, decision.call_id)
    assert own is not None and own.recording_sid == oldest and own.status == RecordingStatus.IN_PROGRESS
    [extra] = [r for r in await db.recordings_of_call(decision.call_id) if r.id != own.id]
    assert extra.recording_sid == newer and extra.status == RecordingStatus.TWILIO_DELETED
    assert telephony.is_deleted(newer) and not telephony.is_deleted(oldest)


async def test_a_start_never_takes_a_recording_that_is_already_another_one_of_the_call(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await incoming(bus, sid(1))
    await agent_answers(bus, sid(1))  # its start request is still queued
    theirs = telephony.add_recording(sid(1), status="in-progress")
    async with svc.uow() as uow:
        call = await uow.calls.get(decision.call_id)
        assert call is not None
        uow.recordings.add(Recording.found(call=call, recording_sid=theirs, now=svc.clock.now()))
        await uow.commit()

    await drain(svc)

    [started] = operations(telephony, "start_recording")
    own = await recording_of(db, decision.call_id)
    assert own is not None and own.recording_sid not in (None, theirs)
    assert own.status == RecordingStatus.IN_PROGRESS and started == (sid(1), CALLBACK_URL)


async def test_transfer_completed_stops_every_live_recording_of_the_call(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    first = twilio_recording_of(telephony, sid(1))
    other = telephony.add_recording(sid(1), status="in-progress")
    await bus.handle(RecordRecordingStatus(sid(1), other, ProviderRecordingStatus.CAPTURING))

    await bus.handle(TransferCall(decision.call_id, "completed"))
    await drain(svc)

    assert sorted(operations(telephony, "stop_recording")) == sorted([(sid(1), first), (sid(1), other)])
    assert telephony.status(first) == telephony.status(other) == "stopped"


async def test_every_recording_of_an_unrecorded_call_is_discarded_and_the_call_says_so(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    clock: FakeClock,
) -> None:
    await given_org(bus, recording=False)
    decision = await incoming(bus, sid(1))
    await agent_answers(bus, sid(1))
    live = telephony.add_recording(sid(1), status="in-progress")
    done = telephony.add_recording(sid(1), status="completed", audio=audio_of())

    await bus.handle(RecordRecordingStatus(sid(1), live, ProviderRecordingStatus.CAPTURING))
    clock.advance(seconds=1)
    await bus.handle(RecordRecordingStatus(sid(1), done, ProviderRecordingStatus.COMPLETED, duration_s=3))
    await bus.handle(
        RecordRecordingStatus(sid(1), done, ProviderRecordingStatus.COMPLETED, duration_s=3)
    )  # Twilio retried
    await drain(svc)
    assert telephony.status(live) == "stopped"  # its completed callback brings it back
    telephony.complete_recording(live, duration=8)
    await bus.handle(RecordRecordingStatus(sid(1), live, ProviderRecordingStatus.COMPLETED, duration_s=8))
    await bus.handle(
        RecordRecordingStatus(sid(1), live, ProviderRecordingStatus.CAPTURING)
    )  # late and out of order
    await drain(svc)

    assert telephony.is_deleted(live) and telephony.is_deleted(done)
    assert operations(telephony, "stop_recording") == [(sid(1), live)]
    assert store.objects == {}
    assert (await db.call(decision.call_id)).recording_id is None
    assert [(r.status, r.discard_reason) for r in await db.recordings_of_call(decision.call_id)] == [
        (RecordingStatus.DISCARDED, "recording_off"),
        (RecordingStatus.DISCARDED, "recording_off"),
    ]
    assert len(await db.events_of(events.RecordingDiscarded)) == 2
    view = await views.get_call(svc, org_id=ACME, call_id=decision.call_id, kinds=(CallKind.CUSTOMER,))
    assert (view.recording.status, view.recording.reason) == ("not_recorded", "recording_off")
    assert [(r.status, r.reason, r.duration_s) for r in view.additional_recordings] == [
        ("discarded", "recording_off", 8),
        ("discarded", "recording_off", 3),
    ]


async def test_a_recording_callback_for_an_unknown_call_is_not_found(bus: MessageBus) -> None:
    with pytest.raises(NotFound):
        await bus.handle(RecordRecordingStatus(sid(9), "RE" + "9" * 32, ProviderRecordingStatus.COMPLETED))


# --- views --------------------------------------------------------------------------------------


async def test_view_of_a_call_taken_with_the_toggle_off_says_recording_off(
    bus: MessageBus, svc: Services
) -> None:
    await given_org(bus, recording=False)
    decision = await incoming(bus, sid(1))
    await agent_answers(bus, sid(1))
    await bus.handle(EndCall(sid(1), CallStatus.COMPLETED, 30))

    view = await views.get_call(svc, org_id=ACME, call_id=decision.call_id, kinds=(CallKind.CUSTOMER,))

    assert (view.recording.status, view.recording.reason) == ("not_recorded", "recording_off")


async def test_view_of_a_recorded_call_that_captured_nothing_says_no_audio(
    bus: MessageBus, svc: Services, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    absent = await recorded_call_in_progress(bus, svc, sid(1))
    await bus.handle(
        RecordRecordingStatus(sid(1), twilio_recording_of(telephony, sid(1)), ProviderRecordingStatus.ABSENT)
    )
    unanswered = await incoming(bus, sid(2))
    await bus.handle(EndCall(sid(2), CallStatus.NO_ANSWER, 0))
    await drain(svc)

    for call_id in (absent.call_id, unanswered.call_id):
        view = await views.get_call(svc, org_id=ACME, call_id=call_id, kinds=(CallKind.CUSTOMER,))
        assert (view.recording.status, view.recording.reason) == ("not_recorded", "no_audio")


async def test_view_follows_the_recording_from_processing_to_available(
    bus: MessageBus, svc: Services, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await incoming(bus, sid(1))

    async def status() -> tuple[str, int | None]:
        view = await views.get_call(svc, org_id=ACME, call_id=decision.call_id, kinds=(CallKind.CUSTOMER,))
        return view.recording.status, view.recording.size_bytes

    assert await status() == ("processing", None)
    await agent_answers(bus, sid(1))
    await drain(svc)
    assert await status() == ("processing", None)
    await twilio_completes(bus, telephony, sid(1), audio_of(5000))
    assert await status() == ("processing", None)
    await drain(svc)
    assert await status() == ("available", 5000)


async def test_view_of_a_recording_twilio_failed_says_failed(
    bus: MessageBus, svc: Services, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))

    await bus.handle(
        RecordRecordingStatus(
            sid(1), twilio_recording_of(telephony, sid(1)), ProviderRecordingStatus.FAILED, error_code="13610"
        )
    )

    view = await views.get_call(svc, org_id=ACME, call_id=decision.call_id, kinds=(CallKind.CUSTOMER,))
    assert view.recording.status == "failed"


async def test_another_orgs_call_and_its_recording_are_not_found(
    bus: MessageBus, svc: Services, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    await given_org(bus, recording=True, org_id=GLOBEX, number=GLOBEX_NUMBER)
    decision = await archived_call(bus, svc, telephony, sid(1))

    with pytest.raises(NotFound):
        await views.get_call(svc, org_id=GLOBEX, call_id=decision.call_id, kinds=(CallKind.CUSTOMER,))
    with pytest.raises(NotFound):
        await views.recording_url(
            svc,
            actor=MEMBER,
            org_id=GLOBEX,
            call_id=decision.call_id,
            kinds=(CallKind.CUSTOMER,),
            download=False,
        )


async def test_platform_line_calls_are_invisible_to_every_org(
    bus: MessageBus, svc: Services, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await archived_call(bus, svc, telephony, sid(1), to=DISCOVERY_LINE)

    for kinds in ((CallKind.CUSTOMER,), (CallKind.DISCOVERY,)):
        with pytest.raises(NotFound):
            await views.get_call(svc, org_id=ACME, call_id=decision.call_id, kinds=kinds)
    listed, _ = await views.list_calls(svc, org_id=ACME, limit=50)
    assert listed == []
    admin = await views.get_call(svc, org_id=None, call_id=decision.call_id, kinds=(CallKind.DISCOVERY,))
    assert admin.recording.status == "available"


async def test_recording_url_is_short_lived_and_names_the_download(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    decision = await archived_call(bus, svc, telephony, sid(1))

    url = await views.recording_url(
        svc, actor=MEMBER, org_id=ACME, call_id=decision.call_id, kinds=(CallKind.CUSTOMER,), download=True
    )

    [issued] = store.issued_urls
    assert issued.url == url
    assert issued.expires_in == timedelta(minutes=15)
    assert issued.download_filename is not None and decision.call_id in issued.download_filename


async def test_calls_are_listed_newest_first_one_page_at_a_time(
    bus: MessageBus, svc: Services, clock: FakeClock
) -> None:
    await given_org(bus, recording=False)
    await given_org(bus, recording=False, org_id=GLOBEX, number=GLOBEX_NUMBER)
    acme_ids = []
    for n in range(5):
        acme_ids.append((await incoming(bus, sid(n))).call_id)
        if n == 2:  # two calls in the same second: the id breaks the tie
            acme_ids.append((await incoming(bus, sid(50))).call_id)
        await incoming(bus, sid(100 + n), to=GLOBEX_NUMBER)
        await incoming(bus, sid(200 + n), to=DISCOVERY_LINE)
        clock.advance(seconds=1)

    first, cursor = await views.list_calls(svc, org_id=ACME, limit=4)
    assert cursor is not None
    second, last = await views.list_calls(svc, org_id=ACME, limit=4, after=cursor)

    listed = [v.call.id for v in first + second]
    assert last is None
    assert sorted(listed) == sorted(acme_ids)
    keys = [(v.call.started_at, v.call.id) for v in first + second]
    assert keys == sorted(keys, reverse=True)
    assert all(v.recording.reason == "recording_off" for v in first + second)
    platform, _ = await views.list_calls(svc, org_id=None, kinds=(CallKind.DISCOVERY,), limit=50)
    assert len(platform) == 5


# --- storage keys -------------------------------------------------------------------------------


async def test_storage_keys_separate_orgs_and_platform_lines(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    await given_org(bus, recording=True, org_id=GLOBEX, number=GLOBEX_NUMBER)
    calls = {
        "acme": await archived_call(bus, svc, telephony, sid(1)),
        "globex": await archived_call(bus, svc, telephony, sid(2), to=GLOBEX_NUMBER),
        "discovery": await archived_call(bus, svc, telephony, sid(3), to=DISCOVERY_LINE),
        "support": await archived_call(bus, svc, telephony, sid(4), to=SUPPORT_LINE),
    }
    day = svc.clock.now().strftime("%Y/%m/%d")

    keys = {}
    for name, decision in calls.items():
        recording = await recording_of(db, decision.call_id)
        assert recording is not None and recording.audio is not None
        keys[name] = recording.audio.storage_key
        assert keys[name].endswith(f"/{day}/{decision.call_id}/{recording.id}.mp3")

    assert keys["acme"].startswith(f"orgs/{ACME}/")
    assert keys["globex"].startswith(f"orgs/{GLOBEX}/")
    assert keys["discovery"].startswith("platform/discovery/")
    assert keys["support"].startswith("platform/support/")
    assert store.objects[keys["discovery"]].metadata["org-id"] == "platform-discovery"


# --- concurrency: units of work racing ----------------------------------------------------------


async def test_a_unit_of_work_that_lost_a_race_cannot_commit(
    bus: MessageBus, db: Database, clock: FakeClock
) -> None:
    await given_org(bus, recording=False)
    decision = await incoming(bus, sid(1))

    async with db.unit_of_work(racing=True) as first, db.unit_of_work(racing=True) as second:
        mine = await first.calls.get(decision.call_id)
        theirs = await second.calls.get(decision.call_id)
        assert mine is not None and theirs is not None and mine is not theirs
        mine.record_scorability(scorable=False, reason="robocall", now=clock.now())
        theirs.transfer(stage="started", now=clock.now())
        await first.commit()
        with pytest.raises(ConcurrencyConflict):
            await second.commit()

    call = await db.call(decision.call_id)
    assert (call.scorable, call.transfer_stage, call.version) == (False, None, 1)


async def test_what_a_unit_of_work_did_not_commit_is_invisible_and_forgotten(
    bus: MessageBus, db: Database, clock: FakeClock
) -> None:
    await given_org(bus, recording=False)
    decision = await incoming(bus, sid(1))
    outbox_before = len(await db.outbox())

    async with db.unit_of_work(racing=True) as uow:
        call = await uow.calls.get(decision.call_id)
        assert call is not None
        call.end(status=CallStatus.COMPLETED, duration_s=5, now=clock.now())
        async with db.unit_of_work(racing=True) as other:
            seen = await other.calls.get(decision.call_id)
            assert seen is not None and not seen.ended
        # no commit

    assert not (await db.call(decision.call_id)).ended
    assert len(await db.outbox()) == outbox_before


async def test_concurrent_updates_of_one_call_are_retried_so_none_is_lost(
    bus: MessageBus, db: Database
) -> None:
    await given_org(bus, recording=False)
    decision = await incoming(bus, sid(1))

    async def transfer_wins_the_race() -> None:
        await bus.handle(TransferCall(decision.call_id, "started"))

    db.before_next_commit(transfer_wins_the_race)
    await bus.handle(RecordScorability(decision.call_id, False, "robocall"))

    call = await db.call(decision.call_id)
    assert (call.scorable, call.scorability_reason, call.transfer_stage) == (False, "robocall", "started")
    assert call.version == 2
    assert (await db.event_types())[-2:] == ["TransferStarted", "CallScorabilityRecorded"]
    assert db.lost_races == 1


async def test_two_simultaneous_deliveries_of_a_new_call_create_it_once(
    bus: MessageBus, db: Database
) -> None:
    await given_org(bus, recording=True)
    decisions: list[CallDecision] = []

    async def twilio_retried_meanwhile() -> None:
        decisions.append(await incoming(bus, sid(1)))

    db.before_next_commit(twilio_retried_meanwhile)
    decisions.append(await incoming(bus, sid(1)))

    assert decisions[0] == decisions[1]
    assert len(await db.call_ids()) == 1
    assert (await db.event_types()).count("CallStarted") == 1
    assert db.lost_races == 1


async def test_two_orgs_claiming_one_number_at_once_end_with_one_owner(bus: MessageBus, db: Database) -> None:
    async def globex_claims_it_meanwhile() -> None:
        await bus.handle(UpsertOrganization(GLOBEX, "Globex", [ACME_NUMBER], "Hello"))

    db.before_next_commit(globex_claims_it_meanwhile)
    with pytest.raises(PhoneNumberTaken):
        await bus.handle(UpsertOrganization(ACME, "Acme", [ACME_NUMBER], "Hello"))

    assert await db.organization_ids() == [GLOBEX]
    assert db.lost_races == 1


async def test_a_consumer_marker_is_recorded_once(db: Database) -> None:
    async with db.unit_of_work(processed_by=("archive", "event-1")) as uow:
        await uow.commit()

    async with db.unit_of_work(processed_by=("archive", "event-1")) as uow:
        assert await uow.processed.contains("archive", "event-1")
        with pytest.raises(ConcurrencyConflict):
            await uow.commit()
    async with db.unit_of_work() as uow:
        assert not await uow.processed.contains("delete", "event-1")


# --- the outbox relay with the in-process publisher ---------------------------------------------


@pytest.fixture
def relay(svc: Services, clock: FakeClock) -> OutboxRelay:
    publisher = InProcessEventPublisher(EventDispatcher(svc))
    return OutboxRelay(svc.uow_factory, publisher, clock, retry_base=timedelta(seconds=1))


async def test_relay_defers_a_failing_event_and_delivers_it_later_without_blocking_others(
    bus: MessageBus, db: Database, telephony: FakeTelephony, clock: FakeClock, relay: OutboxRelay
) -> None:
    await given_org(bus, recording=True)
    for n in (1, 2):
        await incoming(bus, sid(n))
        await agent_answers(bus, sid(n))
    telephony.fail_next("start_recording")

    await relay.drain()

    [(failed_sid, _), (served_sid, _)] = operations(telephony, "start_recording")
    [row] = [r for r in await db.outbox() if r.published_at is None]
    assert row.message.type == "RecordingRequested"
    assert (row.message.attempts, row.next_attempt_at > clock.now()) == (1, True)
    assert row.last_error is not None and "start_recording" in row.last_error
    assert await recording_status(db, str(served_sid)) == RecordingStatus.IN_PROGRESS
    assert await recording_status(db, str(failed_sid)) == RecordingStatus.REQUESTED

    await relay.drain()  # not due yet
    assert len(operations(telephony, "start_recording")) == 2

    clock.advance(seconds=2)
    await relay.drain()

    assert await db.unpublished() == []
    assert await recording_status(db, str(failed_sid)) == RecordingStatus.IN_PROGRESS
    assert len(operations(telephony, "start_recording")) == 3
    assert len(telephony.recordings) == 2


async def test_relay_keeps_one_aggregates_events_in_order_behind_a_failure(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    clock: FakeClock,
    relay: OutboxRelay,
) -> None:
    await given_org(bus, recording=True)
    await incoming(bus, sid(1))
    await agent_answers(bus, sid(1))
    await relay.drain()
    store.fail_next("put")
    await twilio_completes(bus, telephony, sid(1))

    await relay.drain()

    assert [m.type for m in await db.unpublished()] == ["RecordingCompletedAtTwilio"]
    assert operations(telephony, "delete_recording") == []

    clock.advance(seconds=2)
    await relay.drain()

    assert await db.unpublished() == []
    assert len(operations(telephony, "delete_recording")) == 1


async def test_a_retried_start_adopts_the_recording_twilio_already_made_instead_of_starting_another(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    """The start succeeded at Twilio but its answer was never committed (a crash): no second recording."""
    await given_org(bus, recording=True)
    decision = await incoming(bus, sid(1))
    existing = telephony.add_recording(sid(1), status="in-progress")
    await agent_answers(bus, sid(1))
    await drain(svc)

    assert operations(telephony, "start_recording") == []
    recording = await recording_of(db, decision.call_id)
    assert recording is not None and recording.recording_sid == existing
