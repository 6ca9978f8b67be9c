"""The Alembic migrations build exactly the schema the code declares, on SQLite and PostgreSQL; a new
SQLite file built from the declared tables (``migrate``'s shortcut) is the schema the migrations build."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy.engine import (
    HEAD_REVISION,
    MIGRATIONS_DIR,
    alembic_config,
    create_engine,
    migrate,
    upgrade,
)
from adapters.sqlalchemy.tables import metadata
from tests.support.services import PostgresServer, create_database


def test_the_migrations_have_a_single_head_which_is_the_code_s_head_revision() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    assert script.get_heads() == [HEAD_REVISION], "set HEAD_REVISION in adapters/sqlalchemy/engine.py"
    assert MIGRATIONS_DIR.is_dir()


@pytest.fixture
async def migrated(database_url: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The database after every migration: on SQLite through Alembic, not ``migrate``'s shortcut."""
    if database_url.startswith("sqlite"):
        database_url = f"sqlite+aiosqlite:///{tmp_path}/by-alembic.db"
        await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_the_migrated_schema_matches_the_declared_tables(migrated: AsyncEngine) -> None:
    def diff(sync_conn: object) -> list[object]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": False})  # type: ignore[arg-type]
        return list(compare_metadata(context, metadata))

    async with migrated.connect() as conn:
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
    await asyncio.to_thread(upgrade, url, "0013")
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


def _definitions(create_table: str) -> frozenset[str]:
    """A ``CREATE TABLE``'s column and constraint definitions (split at top-level commas)."""
    body = create_table[create_table.index("(") + 1 : create_table.rindex(")")]
    parts, depth, start = [], 0, 0
    for i, char in enumerate(body):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    return frozenset(re.sub(r"\s+", " ", part).strip() for part in parts)


def _schema(path: Path) -> dict[str, object]:
    """Everything SQLite keeps of a schema, plus every table's rows; up to the order of a table's
    columns and constraints (an added column comes last after a migration, in place when created)."""
    with sqlite3.connect(path) as conn:
        objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()
        schema: dict[str, object] = {}
        for kind, name, table, sql in objects:
            if kind == "table":
                columns = conn.execute(f'PRAGMA table_info("{name}")').fetchall()
                schema[name] = (
                    _definitions(sql),
                    sorted(column[1:] for column in columns),
                    sorted(conn.execute(f'PRAGMA foreign_key_list("{name}")').fetchall()),
                    conn.execute(f'SELECT * FROM "{name}"').fetchall(),
                )
            else:
                schema[name] = (kind, table, sql)
    return schema


def test_a_new_sqlite_file_gets_the_schema_every_migration_builds(tmp_path: Path) -> None:
    upgrade(f"sqlite+aiosqlite:///{tmp_path}/by-alembic.db")
    migrate(f"sqlite+aiosqlite:///{tmp_path}/declared.db")
    by_alembic, declared = _schema(tmp_path / "by-alembic.db"), _schema(tmp_path / "declared.db")
    assert "recordings" in declared and "alembic_version" in declared
    assert declared == by_alembic


def test_an_older_sqlite_file_is_migrated_to_head(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/old.db"
    upgrade(url, "0012")
    migrate(url)
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
        assert {"seq", "prev_hash", "hash"} <= {c[1] for c in conn.execute("PRAGMA table_info(audit_log)")}


def test_neither_a_new_sqlite_file_nor_one_at_head_loads_alembic(tmp_path: Path) -> None:
    probe = (
        "import sys; from adapters.sqlalchemy.engine import migrate; "
        f"migrate('sqlite+aiosqlite:///{tmp_path}/callrec.db'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))"
    )
    for _ in ("new", "at head"):
        run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
        assert run.stdout.strip() == "[]", run.stdout
    with sqlite3.connect(tmp_path / "callrec.db") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
