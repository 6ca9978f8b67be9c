"""The SQLAlchemy unit of work, repositories and outbox on real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.repositories import RESTATE
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from application.errors import ConcurrencyConflict, IntegrityViolation
from application.ports import CallCursor, CallQuery
from application.views import recording_view
from domain import events
from domain.model import (
    Call,
    CallKind,
    CallStatus,
    Organization,
    ProviderRecordingStatus,
    Recording,
    RecordingStatus,
)

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
BACKFILL: str = importlib.import_module(
    "adapters.sqlalchemy.migrations.versions.0014_calls_recording_state"
)._BACKFILL


def new_org(org_id: str = "org-a", numbers: tuple[str, ...] = ("+15550000001",)) -> Organization:
    return Organization.create(id=org_id, name="Acme", phone_numbers=list(numbers), greeting="Hello.", now=T0)


def new_call(org: Organization, sid: str, at: datetime = T0) -> Call:
    return Call.start(
        call_sid=sid,
        account_sid="AC1",
        from_number="+15559999999",
        to_number=org.phone_numbers[0],
        now=at,
        org=org,
    )


async def save(engine: AsyncEngine, *aggregates: object) -> None:
    async with SqlAlchemyUnitOfWork(engine) as uow:
        for agg in aggregates:
            if isinstance(agg, Organization):
                uow.organizations.add(agg)
            elif isinstance(agg, Call):
                uow.calls.add(agg)
        await uow.commit()


async def outbox_types(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(t.outbox.c.type).order_by(t.outbox.c.seq))
        return [r for (r,) in rows]


async def test_a_duplicate_key_is_a_conflict_to_retry(engine: AsyncEngine) -> None:
    await save(engine, new_org())
    with pytest.raises(ConcurrencyConflict):
        await save(engine, new_org())  # a racer inserted the same organization first


async def test_a_missing_foreign_key_is_an_integrity_violation_not_a_conflict(engine: AsyncEngine) -> None:
    org = new_org()
    await save(engine, org)
    never_saved = new_call(org, "CA" + "0" * 32)
    async with SqlAlchemyUnitOfWork(engine) as uow:
        uow.recordings.add(Recording.request(call=never_saved, now=T0))  # recordings.call_id: no such call
        with pytest.raises(IntegrityViolation) as raised:
            await uow.commit()
    assert not isinstance(raised.value, ConcurrencyConflict)
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(t.recordings)) == 0


async def test_an_aggregate_round_trips_with_its_phone_numbers(engine: AsyncEngine) -> None:
    await save(engine, new_org(numbers=("+15550000001", "+15550000002")))
    async with SqlAlchemyUnitOfWork(engine) as uow:
        org = await uow.organizations.get_by_phone_number("+15550000002")
        assert org is not None
        assert org.id == "org-a"
        assert sorted(org.phone_numbers) == ["+15550000001", "+15550000002"]
        assert org.recording_enabled is False
        assert org.created_at == T0


async def test_events_are_written_to_the_outbox_in_the_same_transaction(engine: AsyncEngine) -> None:
    org = new_org()
    await save(engine, org)
    async with SqlAlchemyUnitOfWork(engine) as uow:
        loaded = await uow.organizations.get("org-a")
        assert loaded is not None
        loaded.set_recording(enabled=True, by="alice", now=T0)
        await uow.commit()
    assert await outbox_types(engine) == ["OrganizationCreated", "RecordingSettingChanged"]


async def test_leaving_without_commit_rolls_back_the_change_and_its_events(engine: AsyncEngine) -> None:
    await save(engine, new_org())
    async with SqlAlchemyUnitOfWork(engine) as uow:
        org = await uow.organizations.get("org-a")
        assert org is not None
        org.set_recording(enabled=True, by="alice", now=T0)
    async with SqlAlchemyUnitOfWork(engine) as uow:
        org = await uow.organizations.get("org-a")
        assert org is not None and org.recording_enabled is False
    assert await outbox_types(engine) == ["OrganizationCreated"]


async def test_a_failed_transaction_writes_neither_state_nor_events(engine: AsyncEngine) -> None:
    await save(engine, new_org())
    org_b = new_org("org-b", numbers=("+15550000001",))  # same number: violates the primary key
    with pytest.raises(ConcurrencyConflict):
        await save(engine, org_b)
    async with SqlAlchemyUnitOfWork(engine) as uow:
        assert await uow.organizations.get("org-b") is None
    assert await outbox_types(engine) == ["OrganizationCreated"]


async def test_a_stale_write_is_refused_instead_of_lost(engine: AsyncEngine) -> None:
    org = new_org()
    call = new_call(org, "CA1")
    await save(engine, org, call)
    async with SqlAlchemyUnitOfWork(engine) as first:
        a = await first.calls.get(call.id)
        assert a is not None
        a.answer(T0 + timedelta(seconds=1))
        await first.commit()
    # A unit of work that read the old version cannot overwrite the newer one.
    async with SqlAlchemyUnitOfWork(engine) as uow:
        b = await uow.calls.get(call.id)
        assert b is not None and b.version == 1
        b.version = 0  # as if loaded before the first commit
        b.record_scorability(scorable=False, reason="robocall", now=T0)
        with pytest.raises(ConcurrencyConflict):
            await uow.commit()


async def test_two_racing_callbacks_never_lose_an_update(engine: AsyncEngine, database_url: str) -> None:
    """Two units of work change the same call concurrently; with retry on conflict both changes land."""
    org = new_org()
    call = new_call(org, "CA1")
    await save(engine, org, call)

    async def change(apply: str) -> None:
        for _ in range(20):
            try:
                async with SqlAlchemyUnitOfWork(engine) as uow:
                    loaded = await uow.calls.get(call.id)
                    assert loaded is not None
                    await asyncio.sleep(0.01)
                    if apply == "score":
                        loaded.record_scorability(scorable=False, reason="robocall", now=T0)
                    else:
                        loaded.transfer(stage="started", now=T0)
                    await uow.commit()
                    return
            except ConcurrencyConflict:
                continue
        raise AssertionError("never committed")

    await asyncio.gather(change("score"), change("transfer"))
    async with SqlAlchemyUnitOfWork(engine) as uow:
        final = await uow.calls.get(call.id)
        assert final is not None
        assert final.scorable is False and final.transfer_stage == "started"
        assert final.version == 2


async def test_recordings_round_trip_through_every_state(engine: AsyncEngine) -> None:
    org = new_org()
    org.set_recording(enabled=True, by="alice", now=T0)
    call = new_call(org, "CA1")
    await save(engine, org, call)
    async with SqlAlchemyUnitOfWork(engine) as uow:
        loaded = await uow.calls.get(call.id)
        assert loaded is not None
        rec = loaded.answer(T0 + timedelta(seconds=2))
        assert rec is not None
        uow.recordings.add(rec)
        await uow.commit()
    async with SqlAlchemyUnitOfWork(engine) as uow:
        rec2 = await uow.recordings.get_for_call(call.id)
        assert rec2 is not None and rec2.status == RecordingStatus.REQUESTED
        rec2.provider_reported(
            status=ProviderRecordingStatus.COMPLETED,
            recording_sid="RE1",
            now=T0,
            media_url="http://x/RE1",
            duration_s=7,
        )
        rec2.archived(
            storage_key="orgs/org-a/k.mp3", size_bytes=10, sha256="ab" * 32, content_type="audio/mpeg", now=T0
        )
        rec2.deleted_at_twilio(T0)
        await uow.commit()
    async with SqlAlchemyUnitOfWork(engine) as uow:
        rec3 = await uow.recordings.get(rec2.id)
        assert rec3 is not None
        assert rec3.status == RecordingStatus.TWILIO_DELETED
        assert rec3.audio is not None and rec3.audio.size_bytes == 10 and rec3.audio.sha256 == "ab" * 32
        assert rec3.recording_sid == "RE1" and rec3.duration_s == 7
    types = await outbox_types(engine)
    assert types[-4:] == [
        "RecordingStarted",
        "RecordingCompletedAtTwilio",
        "RecordingArchived",
        "RecordingDeletedAtTwilio",
    ]


async def test_a_call_with_more_recordings_at_twilio_keeps_its_own_as_the_recording_everywhere(
    engine: AsyncEngine,
) -> None:
    org = new_org()
    org.set_recording(enabled=True, by="alice", now=T0)
    call = new_call(org, "CA1")
    await save(engine, org, call)
    async with SqlAlchemyUnitOfWork(engine) as uow:
        loaded = await uow.calls.get(call.id)
        assert loaded is not None
        own = loaded.answer(T0 + timedelta(seconds=1))
        assert own is not None
        own.provider_reported(
            status=ProviderRecordingStatus.COMPLETED, recording_sid="RE1", now=T0 + timedelta(seconds=9)
        )
        own.archived(storage_key="k1", size_bytes=10, sha256="ab" * 32, content_type="audio/mpeg", now=T0)
        live = Recording.found(call=loaded, recording_sid="RE2", now=T0 + timedelta(seconds=2))
        done = Recording.found(call=loaded, recording_sid="RE3", now=T0 + timedelta(seconds=3))
        done.provider_reported(
            status=ProviderRecordingStatus.COMPLETED, recording_sid="RE3", now=T0 + timedelta(seconds=8)
        )
        loaded.end(status=CallStatus.COMPLETED, duration_s=9, now=T0 + timedelta(seconds=10))
        for recording in (own, live, done):
            uow.recordings.add(recording)
        await uow.commit()

    async with SqlAlchemyUnitOfWork(engine) as uow:
        assert (await uow.recordings.get_for_call(call.id)).id == own.id  # type: ignore[union-attr]
        assert {k: r.id for k, r in (await uow.recordings.get_for_calls([call.id])).items()} == {
            call.id: own.id
        }
        assert [r.id for r in await uow.recordings.for_call(call.id)] == [own.id, live.id, done.id]
        assert (await uow.recordings.get_by_sid("RE3")).id == done.id  # type: ignore[union-attr]
        available = await uow.calls.page(CallQuery(org_id="org-a", recording_status="available"))
        processing = await uow.calls.page(CallQuery(org_id="org-a", recording_status="processing"))
        settling = await uow.calls.settling(ended_before=T0 + timedelta(minutes=1), limit=10)
    assert [c.id for c in available] == [call.id] and processing == []
    assert [c.id for c in settling] == [call.id]  # its other recordings do not hold it up


async def test_a_discarded_recording_round_trips_with_why(engine: AsyncEngine) -> None:
    org = new_org()
    call = new_call(org, "CA1")  # not recorded
    found = Recording.found(call=call, recording_sid="RE1", now=T0)
    await save(engine, org, call)
    async with SqlAlchemyUnitOfWork(engine) as uow:
        uow.recordings.add(found)
        await uow.commit()
    async with SqlAlchemyUnitOfWork(engine) as uow:
        stuck = await uow.recordings.stuck(
            statuses=[RecordingStatus.DISCARDING],
            updated_before=datetime.now(UTC) + timedelta(days=1),
            limit=5,
        )
        assert [r.id for r in stuck] == [found.id]
        stuck[0].discarded(reason="recording_off", now=T0 + timedelta(seconds=5))
        await uow.commit()
    async with SqlAlchemyUnitOfWork(engine) as uow:
        loaded = await uow.recordings.get_by_sid("RE1")
        assert await uow.recordings.get_for_call(call.id) is None  # not the call's recording
    assert loaded is not None and loaded.status == RecordingStatus.DISCARDED
    assert (loaded.discard_reason, loaded.twilio_deleted_at) == ("recording_off", T0 + timedelta(seconds=5))
    assert (await outbox_types(engine))[-1] == "RecordingDiscarded"


async def test_keyset_pages_are_newest_first_and_never_overlap(engine: AsyncEngine) -> None:
    org = new_org()
    other = new_org("org-b", numbers=("+15550000009",))
    calls = [new_call(org, f"CA{i}", T0 + timedelta(minutes=i // 2)) for i in range(7)]  # ties on started_at
    await save(engine, org, other, *calls, new_call(other, "CB1"))
    seen: list[str] = []
    after = None
    async with SqlAlchemyUnitOfWork(engine) as uow:
        while True:
            page = await uow.calls.page(CallQuery(org_id="org-a", limit=3, after=after))
            if not page:
                break
            seen.extend(c.id for c in page)
            after = CallCursor(page[-1].started_at, page[-1].id)
    expected = [c.id for c in sorted(calls, key=lambda c: (c.started_at, c.id), reverse=True)]
    assert seen == expected


async def test_platform_calls_are_kept_apart_from_every_org(engine: AsyncEngine) -> None:
    org = new_org()
    platform_call = Call.start(
        call_sid="CAP",
        account_sid="AC1",
        from_number="+1555",
        to_number="+15551110000",
        now=T0,
        org=None,
        platform_kind=CallKind.SUPPORT,
    )
    await save(engine, org, new_call(org, "CA1"), platform_call)
    async with SqlAlchemyUnitOfWork(engine) as uow:
        org_calls = await uow.calls.page(CallQuery(org_id="org-a", limit=10))
        platform = await uow.calls.page(CallQuery(org_id=None, kinds=(CallKind.SUPPORT,), limit=10))
    assert [c.call_sid for c in org_calls] == ["CA1"]
    assert [c.call_sid for c in platform] == ["CAP"]


async def test_due_outbox_messages_come_in_order_and_wait_behind_an_earlier_unpublished_one(
    engine: AsyncEngine,
) -> None:
    org = new_org()
    await save(engine, org)
    async with SqlAlchemyUnitOfWork(engine) as uow:
        loaded = await uow.organizations.get("org-a")
        assert loaded is not None
        loaded.set_recording(enabled=True, by="a", now=T0)
        await uow.commit()
    now = datetime.now(UTC)
    async with SqlAlchemyUnitOfWork(engine) as uow:
        due = await uow.outbox.due(now=now, limit=10, exclude_aggregates=set())
    assert [m.type for m in due] == ["OrganizationCreated"]  # the second waits behind the first
    async with SqlAlchemyUnitOfWork(engine) as uow:
        await uow.outbox.defer(due[0].id, next_attempt_at=now + timedelta(minutes=1), error="boom")
        await uow.commit()
    async with SqlAlchemyUnitOfWork(engine) as uow:
        assert await uow.outbox.due(now=now, limit=10, exclude_aggregates=set()) == []
        later = await uow.outbox.due(now=now + timedelta(minutes=2), limit=10, exclude_aggregates=set())
        assert [(m.type, m.attempts) for m in later] == [("OrganizationCreated", 1)]
        await uow.outbox.mark_published(later[0].id, now)
        await uow.commit()
    async with SqlAlchemyUnitOfWork(engine) as uow:
        rest = await uow.outbox.due(now=now + timedelta(minutes=2), limit=10, exclude_aggregates=set())
    assert [m.type for m in rest] == ["RecordingSettingChanged"]
    decoded = events.decode_event(rest[0].type, rest[0].payload)
    assert isinstance(decoded, events.RecordingSettingChanged) and decoded.changed_by == "a"


async def test_a_consumer_marker_is_committed_with_the_effect_and_only_once(engine: AsyncEngine) -> None:
    await save(engine, new_org())
    async with SqlAlchemyUnitOfWork(engine, processed_by=("archive", "ev-1")) as uow:
        org = await uow.organizations.get("org-a")
        assert org is not None
        org.set_recording(enabled=True, by="x", now=T0)
        await uow.commit()
    async with SqlAlchemyUnitOfWork(engine) as uow:
        assert await uow.processed.contains("archive", "ev-1")
        assert not await uow.processed.contains("delete", "ev-1")
    with pytest.raises(ConcurrencyConflict):
        async with SqlAlchemyUnitOfWork(engine, processed_by=("archive", "ev-1")) as uow:
            org = await uow.organizations.get("org-a")
            assert org is not None
            org.set_recording(enabled=False, by="x", now=T0)
            await uow.commit()
    async with SqlAlchemyUnitOfWork(engine) as uow:
        org = await uow.organizations.get("org-a")
        assert org is not None and org.recording_enabled is True  # the duplicate changed nothing
    async with engine.connect() as conn:
        count = await conn.execute(select(func.count()).select_from(t.processed_messages))
        assert count.scalar_one() == 1


async def _states(engine: AsyncEngine) -> dict[str, str]:
    """Each call's ``recording_state`` column, and that it is what ``recording_view`` says."""
    async with engine.connect() as conn:
        stored = dict((await conn.execute(select(t.calls.c.id, t.calls.c.recording_state))).all())
    async with SqlAlchemyUnitOfWork(engine) as uow:
        for call_id, state in stored.items():
            call = await uow.calls.get(call_id)
            assert call is not None
            assert state == recording_view(call, await uow.recordings.get_for_call(call_id)).status, call_id
    return stored


async def test_a_calls_recording_state_follows_its_own_recording_whoever_loads_what(
    engine: AsyncEngine,
) -> None:
    """``calls.recording_state`` (the list's ``recording=`` filter) is kept in step in the same
    transaction whether the call, its recording or both change, and is the database's own answer
    too (migration 0014's backfill and the repository's restatement compute the same)."""
    org, off = new_org(), new_org("org-b", numbers=("+15550000002",))
    org.set_recording(enabled=True, by="alice", now=T0)
    recorded, silent, failing = (new_call(org, f"CA{i}") for i in range(3))
    unrecorded = new_call(off, "CB1")
    await save(engine, org, off, recorded, unrecorded, silent, failing)
    assert set((await _states(engine)).values()) == {"processing", "not_recorded"}

    async with SqlAlchemyUnitOfWork(engine) as uow:  # answered: the call and its new recording
        for call_id in (recorded.id, failing.id):
            call = await uow.calls.get(call_id)
            assert call is not None
            own = call.answer(T0)
            assert own is not None
            uow.recordings.add(own)
        silent_call = await uow.calls.get(silent.id)
        assert silent_call is not None
        silent_call.end(status=CallStatus.COMPLETED, duration_s=1, now=T0)  # before any audio
        await uow.commit()
    assert (await _states(engine))[silent.id] == "not_recorded"

    async with SqlAlchemyUnitOfWork(engine) as uow:  # the recordings alone change
        own = await uow.recordings.get_for_call(recorded.id)
        doomed = await uow.recordings.get_for_call(failing.id)
        assert own is not None and doomed is not None
        own.provider_reported(status=ProviderRecordingStatus.COMPLETED, recording_sid="RE1", now=T0)
        own.archived(storage_key="k1", size_bytes=10, sha256="ab" * 32, content_type="audio/mpeg", now=T0)
        doomed.provider_reported(status=ProviderRecordingStatus.FAILED, recording_sid="RE2", now=T0)
        await uow.commit()
    async with SqlAlchemyUnitOfWork(engine) as uow:  # the call alone changes: its state stays
        call = await uow.calls.get(recorded.id)
        assert call is not None
        call.end(status=CallStatus.COMPLETED, duration_s=9, now=T0 + timedelta(seconds=9))
        await uow.commit()
    states = await _states(engine)
    assert [states[c.id] for c in (recorded, unrecorded, silent, failing)] == [
        "available",
        "not_recorded",
        "not_recorded",
        "failed",
    ]
    async with SqlAlchemyUnitOfWork(engine) as uow:
        for state in ("available", "failed", "not_recorded", "processing"):
            page = await uow.calls.page(CallQuery(org_id="org-a", recording_status=state))
            assert {c.id for c in page} == {k for k, v in states.items() if v == state} - {unrecorded.id}

    # The database's own answer: the migration's backfill and the repository's restatement.
    async with engine.begin() as conn:
        await conn.execute(update(t.calls).values(recording_state="?"))
        await conn.execute(text(BACKFILL))
    assert await _states(engine) == states
    async with engine.begin() as conn:
        await conn.execute(update(t.calls).values(recording_state="?"))
        await conn.execute(RESTATE, {"b_ids": list(states)})
    assert await _states(engine) == states
