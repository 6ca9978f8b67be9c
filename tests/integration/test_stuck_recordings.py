"""``recordings.stuck``: the reconciliation sweep's query, on SQLite and PostgreSQL; ``callrec reconcile``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.engine import migrate
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from domain.model import Call, Organization, Recording, RecordingStatus
from entrypoints.cli import main

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


async def a_recording(engine: AsyncEngine, n: int, *, written_at: datetime, status: RecordingStatus) -> str:
    """A recording in ``status`` whose row was last written at ``written_at``."""
    async with SqlAlchemyUnitOfWork(engine, clock=lambda: written_at) as uow:
        org = await uow.organizations.get("org-1")
        if org is None:
            org = Organization.create(
                id="org-1", name="Org", phone_numbers=["+15550000001"], greeting="Hi", now=T0
            )
            org.set_recording(enabled=True, by="admin", now=T0)
            uow.organizations.add(org)
        call = Call.start(
            call_sid=f"CA{n:032x}",
            account_sid="AC" + "0" * 32,
            from_number="+15557654321",
            to_number="+15550000001",
            now=T0,
            org=org,
        )
        recording = call.answer(T0)
        assert recording is not None
        recording.status = status
        uow.calls.add(call)
        uow.recordings.add(recording)
        await uow.commit()
        return recording.id


async def stuck(engine: AsyncEngine, before: datetime, statuses: list[RecordingStatus]) -> list[Recording]:
    async with SqlAlchemyUnitOfWork(engine) as uow:
        return await uow.recordings.stuck(statuses=statuses, updated_before=before, limit=10)


async def test_only_recordings_in_the_asked_states_and_unchanged_long_enough_are_stuck_oldest_first(
    engine: AsyncEngine,
) -> None:
    old = await a_recording(engine, 1, written_at=T0, status=RecordingStatus.COMPLETED)
    older = await a_recording(engine, 2, written_at=T0 - timedelta(hours=1), status=RecordingStatus.ARCHIVED)
    await a_recording(engine, 3, written_at=T0 + timedelta(minutes=20), status=RecordingStatus.COMPLETED)
    await a_recording(engine, 4, written_at=T0 - timedelta(days=1), status=RecordingStatus.TWILIO_DELETED)

    found = await stuck(
        engine, T0 + timedelta(minutes=10), [RecordingStatus.COMPLETED, RecordingStatus.ARCHIVED]
    )

    assert [r.id for r in found] == [older, old]


async def test_a_row_written_before_updated_at_existed_counts_as_stuck(engine: AsyncEngine) -> None:
    legacy = await a_recording(engine, 1, written_at=T0, status=RecordingStatus.IN_PROGRESS)
    async with engine.begin() as conn:
        await conn.execute(update(t.recordings).where(t.recordings.c.id == legacy).values(updated_at=None))

    found = await stuck(engine, T0 - timedelta(days=365), [RecordingStatus.IN_PROGRESS])

    assert [r.id for r in found] == [legacy]


def test_callrec_reconcile_runs_one_pass_and_says_what_it_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLREC_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("CALLREC_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/callrec.db")
    migrate(f"sqlite+aiosqlite:///{tmp_path}/callrec.db")

    assert main(["reconcile", "--stuck-after", "60", "--drain-s", "0"]) == 0

    assert "examined 0 stuck recordings; resumed nothing; 0 failed" in capsys.readouterr().out
