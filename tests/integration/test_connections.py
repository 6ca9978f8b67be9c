"""Connections: no ping on a busy pool, a pooled connection the server dropped while it sat idle is
replaced before a unit of work sees it, and a read-only unit of work neither waits for a writer nor
opens a transaction it does not need."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy import engine as engine_module
from adapters.sqlalchemy.engine import create_engine, migrate
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from tests.support.services import PostgresServer, create_database


@pytest.fixture
def url(postgres_server: PostgresServer) -> str:
    url = create_database(postgres_server, f"t_{uuid.uuid4().hex[:12]}")
    migrate(url)
    return url


@pytest.fixture
async def pinged_statements(url: str) -> AsyncIterator[tuple[AsyncEngine, list[str]]]:
    engine = create_engine(url, pool_size=1, max_overflow=0)
    statements: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    yield engine, statements
    await engine.dispose()


async def _pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one())


@pytest.mark.postgres
async def test_a_busy_pool_reuses_its_connection_without_a_ping(
    pinged_statements: tuple[AsyncEngine, list[str]],
) -> None:
    engine, statements = pinged_statements
    pids = {await _pid(engine) for _ in range(5)}
    assert len(pids) == 1  # one pooled connection, reused
    assert statements == ["SELECT pg_backend_pid()"] * 5  # and nothing else went to the server


@pytest.mark.postgres
async def test_a_connection_dropped_while_idle_is_replaced_before_use(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "IDLE_PING_AFTER_S", 0.0)  # every reuse counts as idle
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        first = await _pid(engine)
        admin = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
        finally:
            await admin.close()
        second = await _pid(engine)  # no error reaches the caller
        assert second != first
    finally:
        await engine.dispose()


async def test_a_reader_does_not_wait_for_a_writer(engine: AsyncEngine) -> None:
    async with SqlAlchemyUnitOfWork(engine) as writer:
        await writer.processed.contains("consumer", "other")  # in its transaction (SQLite: write lock)
        async with SqlAlchemyUnitOfWork(engine, read_only=True) as reader:
            # Deadlock detection, not a timing: a reader queued behind the writer would wait here
            # until the writer ends, which it never does.
            seen = await asyncio.wait_for(reader.processed.contains("consumer", "event"), timeout=10)
        assert seen is False
        await writer.commit()


async def test_a_reader_never_commits(engine: AsyncEngine) -> None:
    async with SqlAlchemyUnitOfWork(engine, read_only=True) as reader:
        with pytest.raises(AssertionError, match="read-only"):
            await reader.commit()


@pytest.mark.postgres
async def test_a_postgresql_reader_opens_no_transaction(url: str) -> None:
    engine = create_engine(url)
    try:
        async with SqlAlchemyUnitOfWork(engine, read_only=True) as reader:
            await reader.processed.contains("consumer", "event")
            assert reader._conn is not None
            raw = await reader._conn.get_raw_connection()
            assert raw.driver_connection is not None
            assert not raw.driver_connection.is_in_transaction()
        async with SqlAlchemyUnitOfWork(engine) as writer:  # a writing one does, on the same pool
            await writer.processed.contains("consumer", "event")
            assert writer._conn is not None
            raw = await writer._conn.get_raw_connection()
            assert raw.driver_connection is not None
            assert raw.driver_connection.is_in_transaction()
    finally:
        await engine.dispose()
