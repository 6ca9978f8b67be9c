"""The Alembic migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy.engine import MIGRATIONS_DIR, alembic_config, create_engine, migrate
from adapters.sqlalchemy.tables import metadata
from tests.support.services import PostgresServer, create_database


def test_the_migrations_have_a_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    assert len(script.get_heads()) == 1, script.get_heads()
    assert MIGRATIONS_DIR.is_dir()


async def test_the_migrated_schema_matches_the_declared_tables(engine: AsyncEngine) -> None:
    def diff(sync_conn: object) -> list[object]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": False})  # type: ignore[arg-type]
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/callrec.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return create_database(server, f"m_{uuid.uuid4().hex[:12]}")


async def test_0014_fills_each_existing_calls_recording_state_as_the_list_showed_it(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    await asyncio.to_thread(migrate, url, "0013")
    calls = {  # call id: (recorded, call status, own recording's status and storage key, expected)
        "unrecorded": (False, "completed", None, "not_recorded"),
        "live": (True, "in-progress", None, "processing"),
        "hung-up": (True, "completed", None, "not_recorded"),
        "capturing": (True, "in-progress", ("in_progress", None), "processing"),
        "archived": (True, "completed", ("twilio_deleted", "k"), "available"),
        "absent": (True, "completed", ("absent", None), "not_recorded"),
        "failed": (True, "completed", ("failed", None), "failed"),
    }
    at = datetime(2026, 11, 1, tzinfo=UTC)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for call_id, (recorded, status, recording, _) in calls.items():
                await conn.execute(
                    text(
                        "INSERT INTO calls (id, org_id, kind, call_sid, account_sid, from_number, to_number,"
                        " status, started_at, greeting, recorded, recording_id, version) VALUES (:id, 'o',"
                        " 'customer', :id, 'AC', '+1', '+2', :status, :at, 'Hi', :recorded, :rec, 1)"
                    ),
                    {
                        "id": call_id,
                        "status": status,
                        "at": at,
                        "recorded": recorded,
                        "rec": f"r-{call_id}" if recording else None,
                    },
                )
                if recording:
                    await conn.execute(
                        text(
                            "INSERT INTO recordings (id, call_id, kind, call_sid, status, requested_at,"
                            " call_started_at, storage_key, version) VALUES (:rec, :id, 'customer', :id,"
                            " :status, :at, :at, :key, 1)"
                        ),
                        {
                            "rec": f"r-{call_id}",
                            "id": call_id,
                            "status": recording[0],
                            "key": recording[1],
                            "at": at,
                        },
                    )
        await asyncio.to_thread(migrate, url)
        async with engine.connect() as conn:
            found: dict[str, str] = dict(
                (await conn.execute(text("SELECT id, recording_state FROM calls"))).all()
            )
    finally:
        await engine.dispose()
    assert found == {call_id: expected for call_id, (*_, expected) in calls.items()}
