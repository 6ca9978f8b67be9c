"""The audio-deletion primitive: a purged recording's every copy is gone and nothing brings it back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime

import pytest

from application import views
from application.deletion import delete_purged_audio, purge_call_audio, purge_recording
from application.errors import RecordingGone
from application.handlers import archive_recording
from application.messagebus import EventDispatcher, MessageBus
from application.ports import CallQuery, StoredObject
from application.reconcile import RecordingReconciler
from application.services import Services
from application.webhook_delivery import WebhookDeliveryScheduler
from domain import events
from domain.audit import AuditActor
from domain.errors import InvalidTransition, InvalidValue
from domain.model import (
    PURGE_ERASURE,
    PURGE_FILTERED,
    PURGE_RETENTION,
    CallKind,
    Recording,
    RecordingStatus,
)
from domain.webhooks import SendResult
from tests.fakes import FakeClock, FakeTelephony, InMemoryRecordingStore, drain
from tests.fakes_webhooks import RecordingWebhookSender
from tests.support.database import Database
from tests.unit.test_handlers import (
    ACME,
    archived_call,
    given_org,
    recorded_call_in_progress,
    recording_status,
    sid,
    twilio_completes,
)
from tests.unit.test_webhook_handlers import services, subscribed

MEMBER = AuditActor("member@acme", "member")
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def sender() -> RecordingWebhookSender:
    return RecordingWebhookSender()


@pytest.fixture
def svc(
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    clock: FakeClock,
    sender: RecordingWebhookSender,
) -> Services:
    return services(db, telephony, store, clock, sender)


async def purge(svc: Services, call_id: str, reason: str = PURGE_RETENTION) -> list[Recording]:
    async with svc.uow() as uow:
        call = await uow.calls.get(call_id)
        assert call is not None
        purged = await purge_call_audio(uow, call, reason=reason, now=svc.clock.now())
        await uow.commit()
    return purged


def recording_in(status: RecordingStatus) -> Recording:
    return Recording(
        id="rec-1",
        call_id="call-1",
        org_id=ACME,
        kind=CallKind.CUSTOMER,
        call_sid=sid(1),
        status=status,
        requested_at=T0,
        call_started_at=T0,
        recording_sid="RE1",
    )


# --- the domain ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status", [RecordingStatus.ARCHIVED, RecordingStatus.TWILIO_DELETED, RecordingStatus.COMPLETED]
)
def test_audio_in_our_store_or_at_twilio_can_be_purged_once(status: RecordingStatus) -> None:
    recording = recording_in(status)
    recording.purge(reason=PURGE_ERASURE, now=T0)
    recording.purge(reason=PURGE_RETENTION, now=T0)  # a second purge changes nothing
    assert (recording.status, recording.purge_reason, recording.purged_at) == (
        RecordingStatus.PURGED,
        PURGE_ERASURE,
        T0,
    )
    [event] = recording.events
    assert isinstance(event, events.RecordingPurged)
    assert (event.recording_sid, event.storage_key, event.reason) == ("RE1", None, PURGE_ERASURE)


@pytest.mark.parametrize(
    "status",
    [
        RecordingStatus.REQUESTED,
        RecordingStatus.IN_PROGRESS,
        RecordingStatus.ABSENT,
        RecordingStatus.DISCARDED,
    ],
)
def test_a_recording_without_audio_to_delete_cannot_be_purged(status: RecordingStatus) -> None:
    with pytest.raises(InvalidTransition):
        recording_in(status).purge(reason=PURGE_RETENTION, now=T0)


def test_an_unknown_purge_reason_is_refused() -> None:
    with pytest.raises(InvalidValue):
        recording_in(RecordingStatus.ARCHIVED).purge(reason="because", now=T0)


def test_a_purged_recording_is_never_archived_again() -> None:
    recording = recording_in(RecordingStatus.COMPLETED)
    recording.purge(reason=PURGE_RETENTION, now=T0)
    recording.archived(storage_key="k", size_bytes=1, sha256="0" * 64, content_type="audio/mpeg", now=T0)
    assert recording.status == RecordingStatus.PURGED and recording.audio is None


# --- deleting every copy --------------------------------------------------------------------------


async def test_a_purge_deletes_the_stored_object_and_keeps_the_calls_metadata(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    decision = await archived_call(bus, svc, telephony, sid(1))
    before = await db.recording_for_call(decision.call_id)
    assert before is not None and before.audio is not None
    key = before.audio.storage_key

    [purged] = await purge(svc, decision.call_id)
    await drain(svc)

    assert purged.id == before.id and store.data(key) is None and key in store.deleted_keys
    after = await db.recording_for_call(decision.call_id)
    assert after is not None and after.status == RecordingStatus.PURGED
    assert after.audio_deleted_at is not None and after.purged_at == svc.clock.now()
    call = await db.call(decision.call_id)
    assert (call.from_number, call.duration_s) == ("+15557654321", 42)
    view = await views.get_call(svc, org_id=ACME, call_id=decision.call_id, kinds=(CallKind.CUSTOMER,))
    assert (view.recording.status, view.recording.reason) == ("purged", "retention")
    assert view.recording.purged_at == after.purged_at


async def test_purged_audio_is_refused_with_the_reason_and_no_url_is_signed(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    decision = await archived_call(bus, svc, telephony, sid(1))
    await purge(svc, decision.call_id, PURGE_ERASURE)
    await drain(svc)
    issued = len(store.issued_urls)
    with pytest.raises(RecordingGone, match="caller's request") as gone:
        await views.recording_url(
            svc,
            actor=MEMBER,
            org_id=ACME,
            call_id=decision.call_id,
            kinds=(CallKind.CUSTOMER,),
            download=False,
        )
    assert gone.value.reason == PURGE_ERASURE and len(store.issued_urls) == issued


async def test_audio_still_at_twilio_is_deleted_there_when_purged(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    telephony.fail_next("open_media")  # the archive fails: the audio is only at Twilio
    recording_sid = await twilio_completes(bus, telephony, sid(1))
    await drain(svc, check=False)
    assert await recording_status(db, sid(1)) == RecordingStatus.COMPLETED

    await purge(svc, decision.call_id)
    await drain(svc)  # the archive's retry finds it purged; the purge deletes Twilio's copy

    assert telephony.is_deleted(recording_sid) and store.objects == {}
    recording = await db.recording_for_call(decision.call_id)
    assert recording is not None and recording.audio_deleted_at is not None
    assert recording.twilio_deleted_at is not None


async def test_a_late_archive_of_a_purged_recording_uploads_nothing(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    await twilio_completes(bus, telephony, sid(1))  # RecordingCompletedAtTwilio waits in the outbox
    await purge(svc, decision.call_id)
    await drain(svc)
    assert store.put_count == 0 and store.objects == {}
    [completed] = await db.events_of(events.RecordingCompletedAtTwilio)
    await archive_recording(completed, svc)  # redelivered once more: still nothing
    assert store.put_count == 0


class StoreThatPurgesMidUpload(InMemoryRecordingStore):
    """Runs ``during_put`` once an upload has begun, before the object is written."""

    during_put: Callable[[], Awaitable[None]] | None = None

    async def put(
        self, key: str, chunks: AsyncIterator[bytes], *, content_type: str, metadata: Mapping[str, str]
    ) -> StoredObject:
        hook, self.during_put = self.during_put, None
        if hook is not None:
            await hook()
        return await super().put(key, chunks, content_type=content_type, metadata=metadata)


async def test_a_recording_purged_while_its_upload_runs_leaves_nothing_in_the_store(
    bus: MessageBus,
    db: Database,
    telephony: FakeTelephony,
    clock: FakeClock,
    sender: RecordingWebhookSender,
) -> None:
    store = StoreThatPurgesMidUpload(clock=clock.now)
    svc = services(db, telephony, store, clock, sender)
    bus = MessageBus(svc)
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    await twilio_completes(bus, telephony, sid(1))
    [completed] = await db.events_of(events.RecordingCompletedAtTwilio)

    async def purge_mid_upload() -> None:
        await purge(svc, decision.call_id)
        await drain(svc)  # the purge's deletion runs before the upload has written anything

    store.during_put = purge_mid_upload
    await archive_recording(completed, svc)

    assert store.put_count == 1 and store.objects == {}
    recording = await db.recording_for_call(decision.call_id)
    assert recording is not None and recording.status == RecordingStatus.PURGED and recording.audio is None


async def test_a_redelivered_recording_purged_changes_nothing(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    decision = await archived_call(bus, svc, telephony, sid(1))
    await purge(svc, decision.call_id)
    await drain(svc)
    [purged] = await db.events_of(events.RecordingPurged)
    first = await db.recording_for_call(decision.call_id)
    deletes, twilio_calls = len(store.deleted_keys), len(telephony.calls)

    await EventDispatcher(svc).dispatch(purged)  # the same event id: every consumer skips it
    await delete_purged_audio(purged, svc)  # and the handler itself, run again, only deletes again

    again = await db.recording_for_call(decision.call_id)
    assert first is not None and again is not None and again.audio_deleted_at == first.audio_deleted_at
    assert len(store.deleted_keys) == deletes + 1 and len(telephony.calls) == twilio_calls
    assert len(await db.events_of(events.RecordingPurged)) == 1
    assert len(await db.events_of(events.CallSettled)) == 1


async def test_purging_twice_emits_one_event(
    bus: MessageBus, svc: Services, db: Database, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    decision = await archived_call(bus, svc, telephony, sid(1))
    assert len(await purge(svc, decision.call_id)) == 1
    assert await purge(svc, decision.call_id) == []
    async with svc.uow() as uow:
        recording = await uow.recordings.get_for_call(decision.call_id)
        assert recording is not None
        assert purge_recording(uow, recording, reason=PURGE_RETENTION, now=svc.clock.now()) is False
    assert len(await db.events_of(events.RecordingPurged)) == 1


async def test_the_sweep_leaves_a_purged_recording_alone(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, store: InMemoryRecordingStore
) -> None:
    await given_org(bus, recording=True)
    decision = await recorded_call_in_progress(bus, svc, sid(1))
    await twilio_completes(bus, telephony, sid(1))
    await purge(svc, decision.call_id)
    svc.clock.advance(seconds=3600)  # type: ignore[attr-defined]
    report = await RecordingReconciler(svc).sweep()
    assert report.examined == 0 and store.put_count == 0


async def test_a_retried_call_ended_carries_no_url_of_purged_audio(
    bus: MessageBus, svc: Services, telephony: FakeTelephony, sender: RecordingWebhookSender
) -> None:
    sender.answers = [SendResult(500, 3, error="HTTP 500")]
    scheduler = WebhookDeliveryScheduler(svc, jitter=lambda: 1.0)
    await given_org(bus, recording=True)
    await subscribed(bus)
    decision = await archived_call(bus, svc, telephony, sid(1))
    await scheduler.drain()  # first try fails, with a recording_url
    await purge(svc, decision.call_id)
    await drain(svc)
    svc.clock.advance(seconds=3600)  # type: ignore[attr-defined]
    await scheduler.drain()
    first, retry = (json.loads(m.body)["data"] for m in sender.sent)
    assert "recording_url" in first and "recording_url" not in retry


async def test_a_filtered_purge_reads_as_not_recorded_and_the_list_filters_purged_calls(
    bus: MessageBus, svc: Services, telephony: FakeTelephony
) -> None:
    await given_org(bus, recording=True)
    kept = await archived_call(bus, svc, telephony, sid(1))
    filtered = await archived_call(bus, svc, telephony, sid(2))
    retained = await archived_call(bus, svc, telephony, sid(3))
    await purge(svc, filtered.call_id, PURGE_FILTERED)
    await purge(svc, retained.call_id, PURGE_RETENTION)
    await drain(svc)
    kinds = (CallKind.CUSTOMER,)
    view = await views.get_call(svc, org_id=ACME, call_id=filtered.call_id, kinds=kinds)
    assert (view.recording.status, view.recording.reason) == ("not_recorded", "filtered")
    async with svc.reader() as uow:
        purged = await uow.calls.page(CallQuery(org_id=ACME, recording_status="purged"))
        available = await uow.calls.page(CallQuery(org_id=ACME, recording_status="available"))
    assert [c.id for c in purged] == [retained.call_id] and [c.id for c in available] == [kept.call_id]
