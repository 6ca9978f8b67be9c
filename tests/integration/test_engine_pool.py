"""PostgreSQL connections: no ping on a busy pool, and a pooled connection the server dropped while
it sat idle is replaced before a unit of work sees it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy import engine as engine_module
from adapters.sqlalchemy.engine import create_engine, migrate
from tests.support.services import PostgresServer, create_database

pytestmark = pytest.mark.postgres


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


async def test_a_busy_pool_reuses_its_connection_without_a_ping(
    pinged_statements: tuple[AsyncEngine, list[str]],
) -> None:
    engine, statements = pinged_statements
    pids = {await _pid(engine) for _ in range(5)}
    assert len(pids) == 1  # one pooled connection, reused
    assert statements == ["SELECT pg_backend_pid()"] * 5  # and nothing else went to the server


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
