"""The SQLAlchemy 2 async unit of work (SQLite and PostgreSQL): one connection, one transaction.

On commit every repository writes its changes (``repository.Repository``), the aggregates' events go
into the ``outbox`` table in the same transaction, then the transaction commits. A duplicate key
means a racer inserted first (``ConcurrencyConflict``: retry from a fresh read), while a foreign-key,
not-null or check violation is ``IntegrityViolation``: no retry can mend it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.sqlalchemy.audit import SqlAlchemyAuditLog, SqlAlchemyProcessedMessages
from adapters.sqlalchemy.engine import TURN_WAIT_S, transaction_turns
from adapters.sqlalchemy.erasure import SqlAlchemyErasureRequestRepository
from adapters.sqlalchemy.outbox import SqlAlchemyOutbox
from adapters.sqlalchemy.repositories import (
    SqlAlchemyCallRepository,
    SqlAlchemyOrganizationRepository,
    SqlAlchemyRecordingRepository,
)
from adapters.sqlalchemy.webhooks import (
    SqlAlchemyWebhookDeliveryRepository,
    SqlAlchemyWebhookEndpointRepository,
)
from application.errors import ConcurrencyConflict, IntegrityViolation
from domain import events as ev


def _utcnow() -> datetime:
    return datetime.now(UTC)


# SQLSTATE 23505 (PostgreSQL, asyncpg) and SQLite's extended result codes for a unique or primary
# key; other integrity errors (23503 foreign key, 23502 not null, 23514 check, ...) are no race.
_DUPLICATE_SQLSTATE = "23505"
_DUPLICATE_SQLITE = ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY")


def _is_duplicate_key(exc: IntegrityError) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate is not None:
        return bool(sqlstate == _DUPLICATE_SQLSTATE)
    name = getattr(orig, "sqlite_errorname", None)
    if name is not None:
        return name in _DUPLICATE_SQLITE
    return "UNIQUE constraint failed" in str(orig)  # a driver that says neither: SQLite's message


# How a read-only unit of work's connection is set up: on SQLite ``engine.create_engine``'s begin hook
# reads ``callrec_read_only`` (deferred BEGIN instead of BEGIN IMMEDIATE); PostgreSQL autocommits.
_READ_ONLY: dict[bool, dict[str, Any]] = {
    True: {"callrec_read_only": True},
    False: {"isolation_level": "AUTOCOMMIT"},
}


class SqlAlchemyUnitOfWork:
    organizations: SqlAlchemyOrganizationRepository
    calls: SqlAlchemyCallRepository
    recordings: SqlAlchemyRecordingRepository
    outbox: SqlAlchemyOutbox
    processed: SqlAlchemyProcessedMessages
    audit: SqlAlchemyAuditLog
    webhook_endpoints: SqlAlchemyWebhookEndpointRepository
    webhook_deliveries: SqlAlchemyWebhookDeliveryRepository
    erasure_requests: SqlAlchemyErasureRequestRepository

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        processed_by: tuple[str, str] | None = None,
        on_events_committed: Callable[[], None] | None = None,
        on_deliveries_committed: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = _utcnow,
        read_only: bool = False,
    ) -> None:
        """``on_events_committed`` is called after a commit that wrote events (the relay waits for
        them), ``on_deliveries_committed`` after one that wrote or re-timed webhook deliveries.

        ``read_only``: a unit of work that only reads and never commits. It takes no write lock on
        SQLite (a plain deferred ``BEGIN``: WAL readers do not queue behind writers) and no
        transaction on PostgreSQL (autocommit: each statement reads committed data, with no ``BEGIN``
        and ``ROLLBACK`` round trips).
        """
        self.read_only = read_only
        self.engine = engine
        self.processed_by = processed_by
        self.on_events_committed = on_events_committed
        self.on_deliveries_committed = on_deliveries_committed
        self.clock = clock
        self._conn: AsyncConnection | None = None
        self._committed = False
        self._turn: asyncio.Lock | None = None

    async def __aenter__(self) -> Self:
        # A read-only unit of work takes no write lock on SQLite: it needs no turn either.
        self._turn = None if self.read_only else transaction_turns(self.engine)
        if self._turn is not None:
            try:
                async with asyncio.timeout(TURN_WAIT_S):
                    await self._turn.acquire()
            except TimeoutError:
                raise ConcurrencyConflict("database busy: no turn for a transaction") from None
        try:
            self._conn = await self.engine.connect()
            if self.read_only:
                await self._conn.execution_options(**_READ_ONLY[self.engine.dialect.name == "sqlite"])
            try:
                if not (self.read_only and self.engine.dialect.name != "sqlite"):
                    await self._conn.begin()
            except OperationalError as exc:
                await self._conn.close()
                raise ConcurrencyConflict(f"database busy: {exc}") from exc
        except BaseException:
            self._release_turn()
            raise
        self.organizations = SqlAlchemyOrganizationRepository(self._conn)
        self.calls = SqlAlchemyCallRepository(self._conn)
        self.recordings = SqlAlchemyRecordingRepository(self._conn)
        self.calls.recordings, self.recordings.calls = self.recordings, self.calls  # recording_state
        self.outbox = SqlAlchemyOutbox(self._conn)
        self.processed = SqlAlchemyProcessedMessages(self._conn)
        self.audit = SqlAlchemyAuditLog(self._conn)
        self.webhook_endpoints = SqlAlchemyWebhookEndpointRepository(self._conn)
        self.webhook_deliveries = SqlAlchemyWebhookDeliveryRepository(self._conn)
        self.erasure_requests = SqlAlchemyErasureRequestRepository(self._conn)
        self._committed = False
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._conn is not None
        try:
            if self._conn.in_transaction():
                await self._conn.rollback()
        finally:
            try:
                await self._conn.close()
            finally:
                self._conn = None
                self._release_turn()

    def _release_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.release()

    @property
    def _repositories(self) -> list[Any]:
        webhooks = [self.webhook_endpoints, self.webhook_deliveries]  # deliveries refer to endpoints
        return [self.organizations, self.calls, self.recordings, *webhooks, self.audit, self.erasure_requests]

    async def commit(self) -> None:
        assert self._conn is not None, "commit() outside the unit of work's context"
        assert not self.read_only, "commit() of a read-only unit of work"
        now = self.clock()
        try:
            new_events: list[ev.Event] = []
            for repo in self._repositories:
                new_events.extend(await repo.flush(now))
            await self.outbox.add(new_events, now)
            if self.processed_by is not None:
                await self.processed.add(*self.processed_by, now)
            await self._conn.commit()
        except IntegrityError as exc:
            await self._conn.rollback()
            if _is_duplicate_key(exc):
                raise ConcurrencyConflict(f"conflicting write: {exc.orig}") from exc
            raise IntegrityViolation(f"write refused by the schema: {exc.orig}") from exc
        except ConcurrencyConflict:
            await self._conn.rollback()
            raise
        for repo in self._repositories:
            repo.committed()
        # Each loop is woken only by the writes it has work for: a wake-up is a transaction.
        if new_events and self.on_events_committed is not None:
            self.on_events_committed()
        if self.webhook_deliveries.wrote and self.on_deliveries_committed is not None:
            self.on_deliveries_committed()

    async def rollback(self) -> None:
        assert self._conn is not None
        await self._conn.rollback()
