"""The unit tier's database: the real unit of work over a migrated SQLite file, read back like a spec.

``migrated_template`` runs the Alembic migrations once; each test gets a copy (``Database.copy_of``).
``Database`` opens units of work for the services (``Database.unit_of_work``) and answers the tests'
questions with async reads of the committed state: ``await db.call(id)``, ``await db.events_of(…)``.

Races: the engine takes SQLite's write lock at ``BEGIN IMMEDIATE``, so on one file no transaction can
read, lose a race and then write. ``before_next_commit(hook)`` stages the race as PostgreSQL's READ
COMMITTED lets it happen: the next unit of work opened runs on an engine whose transaction reads the
latest committed rows and takes the write lock at its first write; when it commits, ``hook`` first
commits a competing change through an ordinary unit of work, so the versions and unique keys it
read are stale when it writes.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.engine import create_engine, migrate
from adapters.sqlalchemy.outbox import outbox_message
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from application.errors import ConcurrencyConflict
from application.ports import OutboxMessage
from domain import events as ev
from domain.model import Call, Organization, Recording
from domain.webhooks import DeliveryAttempt, WebhookDelivery, WebhookEndpoint

T = TypeVar("T")
Hook = Callable[[], Awaitable[None]]


def migrated_template(path: Path) -> Path:
    """A new SQLite database at ``path`` with the schema at head, in one self-contained file."""
    migrate(f"sqlite+aiosqlite:///{path}")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")  # no -wal file to copy along
    return path


def _write_locking_at_first_write(url: str) -> AsyncEngine:
    """SQLite without ``BEGIN IMMEDIATE``: reads see the latest commit, the first write takes the lock."""
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # statements autocommit until we say BEGIN
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _lock_on_first_write(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        writing = statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE")
        if writing and not conn.info.get("writing"):
            cursor.execute("BEGIN IMMEDIATE")
            conn.info["writing"] = True

    @event.listens_for(engine.sync_engine, "commit")
    @event.listens_for(engine.sync_engine, "rollback")
    def _done(conn: Any) -> None:
        conn.info.pop("writing", None)

    return engine


@dataclass
class OutboxRow:
    message: OutboxMessage
    created_at: datetime
    next_attempt_at: datetime
    published_at: datetime | None
    last_error: str | None
    dead_at: datetime | None
    claimed_by: str | None
    claimed_until: datetime | None


def _now() -> datetime:
    return datetime.now(UTC)


class Database:
    """One test's migrated SQLite database. ``commits`` counts the transactions committed on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite+aiosqlite:///{path}"
        self.engine = create_engine(self.url)
        self.commits = 0
        self.lost_races = 0  # commits of racing units of work refused with ConcurrencyConflict
        self._racing: AsyncEngine | None = None
        self._before_commit: list[Hook] = []
        event.listen(self.engine.sync_engine, "commit", self._count)

    def _count(self, conn: Any) -> None:
        if not conn.get_execution_options().get("staging"):
            self.commits += 1

    def _staging(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction of the test's own, not counted in ``commits``."""
        return self.engine.execution_options(staging=True).begin()

    @classmethod
    def copy_of(cls, template: Path, path: Path) -> Database:
        shutil.copyfile(template, path)
        return cls(path)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._racing is not None:
            await self._racing.dispose()

    def delete(self) -> None:
        """Remove the database's files (after ``dispose``)."""
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    # -- units of work --

    def unit_of_work(
        self,
        *,
        processed_by: tuple[str, str] | None = None,
        on_events_committed: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = _now,
        racing: bool = False,
        read_only: bool = False,
    ) -> SqlAlchemyUnitOfWork:
        """A unit of work on this database. ``racing``: one that can read, lose a race, then write
        (see the module's docstring); the next writing one opened after ``before_next_commit`` is one
        too (a ``read_only`` one never commits, so it never races)."""
        kwargs: dict[str, Any] = {"processed_by": processed_by, "on_events_committed": on_events_committed}
        if read_only:
            return SqlAlchemyUnitOfWork(self.engine, clock=clock, read_only=True, **kwargs)
        if not (racing or self._before_commit):
            return SqlAlchemyUnitOfWork(self.engine, clock=clock, **kwargs)
        if self._racing is None:
            self._racing = _write_locking_at_first_write(self.url)
            event.listen(self._racing.sync_engine, "commit", self._count)
        hooks, self._before_commit = self._before_commit, []
        return _Overtaken(self, self._racing, hooks, clock=clock, **kwargs)

    def before_next_commit(self, hook: Hook) -> None:
        """Run ``hook`` when the next unit of work opened commits, before it writes anything.

        This is how a test makes another transaction win a race: the hook commits a competing change,
        and the interrupted commit then finds the versions it read moved on, or its keys taken.
        """
        self._before_commit.append(hook)

    async def _read(self, read: Callable[[SqlAlchemyUnitOfWork], Awaitable[T]]) -> T:
        async with SqlAlchemyUnitOfWork(self.engine) as uow:
            return await read(uow)

    async def _column(self, column: Any, *order_by: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(select(column).order_by(*order_by))).scalars())

    # -- what has been committed --

    async def organization(self, org_id: str) -> Organization:
        org = await self._read(lambda uow: uow.organizations.get(org_id))
        assert org is not None, f"no organization {org_id}"
        return org

    async def organization_ids(self) -> list[str]:
        return await self._column(t.organizations.c.id, t.organizations.c.created_at, t.organizations.c.id)

    async def call(self, call_id: str) -> Call:
        call = await self._read(lambda uow: uow.calls.get(call_id))
        assert call is not None, f"no call {call_id}"
        return call

    async def call_by_sid(self, call_sid: str) -> Call | None:
        return await self._read(lambda uow: uow.calls.get_by_sid(call_sid))

    async def call_ids(self) -> list[str]:
        return await self._column(t.calls.c.id, t.calls.c.started_at, t.calls.c.id)

    async def recording(self, recording_id: str) -> Recording:
        recording = await self._read(lambda uow: uow.recordings.get(recording_id))
        assert recording is not None, f"no recording {recording_id}"
        return recording

    async def recording_ids(self) -> list[str]:
        return await self._column(t.recordings.c.id, t.recordings.c.requested_at, t.recordings.c.id)

    async def recording_for_call(self, call_id: str) -> Recording | None:
        """The call's own recording (``Call.recording_id``)."""
        return await self._read(lambda uow: uow.recordings.get_for_call(call_id))

    async def recordings_of_call(self, call_id: str) -> list[Recording]:
        """Every recording of the call, its own and the additional ones, oldest first."""
        return await self._read(lambda uow: uow.recordings.for_call(call_id))

    async def webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        endpoint = await self._read(lambda uow: uow.webhook_endpoints.get(endpoint_id))
        assert endpoint is not None, f"no webhook endpoint {endpoint_id}"
        return endpoint

    async def webhook_endpoint_ids(self) -> list[str]:
        return await self._column(t.webhook_endpoints.c.id, t.webhook_endpoints.c.created_at)

    async def webhook_delivery(self, delivery_id: str) -> WebhookDelivery:
        delivery = await self._read(lambda uow: uow.webhook_deliveries.get(delivery_id))
        assert delivery is not None, f"no webhook delivery {delivery_id}"
        return delivery

    async def webhook_deliveries(self) -> list[WebhookDelivery]:
        """Every delivery, oldest first."""
        ids = await self._column(
            t.webhook_deliveries.c.id, t.webhook_deliveries.c.created_at, t.webhook_deliveries.c.id
        )

        async def read(uow: SqlAlchemyUnitOfWork) -> list[WebhookDelivery]:
            return [d for i in ids if (d := await uow.webhook_deliveries.get(i)) is not None]

        return await self._read(read)

    async def webhook_attempts(self, delivery_id: str) -> list[DeliveryAttempt]:
        found = await self._read(lambda uow: uow.webhook_deliveries.attempts([delivery_id]))
        return found.get(delivery_id, [])

    # -- the outbox --

    async def outbox(self) -> list[OutboxRow]:
        """Every outbox row, in commit order."""
        async with self.engine.connect() as conn:
            result = await conn.execute(select(t.outbox).order_by(t.outbox.c.seq))
        return [
            OutboxRow(
                outbox_message(m),
                created_at=m["created_at"],
                next_attempt_at=m["next_attempt_at"],
                published_at=m["published_at"],
                last_error=m["last_error"],
                dead_at=m["dead_at"],
                claimed_by=m["claimed_by"],
                claimed_until=m["claimed_until"],
            )
            for m in (row._mapping for row in result)
        ]

    async def unpublished(self) -> list[OutboxMessage]:
        return [row.message for row in await self.outbox() if row.published_at is None]

    async def event_types(self) -> list[str]:
        return [row.message.type for row in await self.outbox()]

    async def events_of(self, event_type: type[ev.Event]) -> list[Any]:
        """Every committed event of this type, decoded from its outbox payload."""
        name = event_type.type_name()
        return [
            ev.decode_event(name, row.message.payload)
            for row in await self.outbox()
            if row.message.type == name
        ]

    # -- staging what the service cannot do itself --

    async def mark_outbox(self, *, published_at: datetime | None) -> None:
        """As if the relay had crashed before marking anything published (None), or as if every
        pending event had gone to a dead-letter topic and nobody will deliver it (a time)."""
        rows = update(t.outbox)
        if published_at is not None:
            rows = rows.where(t.outbox.c.published_at.is_(None))
        async with self._staging() as conn:
            await conn.execute(rows.values(published_at=published_at))

    async def make_audit_log_unwritable(self) -> None:
        """Every later write to the audit log fails, as a full disk or a revoked grant would."""
        async with self._staging() as conn:
            await conn.execute(
                text(
                    "CREATE TRIGGER audit_log_unwritable BEFORE INSERT ON audit_log "
                    "BEGIN SELECT RAISE(ABORT, 'audit log unavailable'); END"
                )
            )


class _Overtaken(SqlAlchemyUnitOfWork):
    """A unit of work whose commit first lets the hooks commit what overtakes it."""

    def __init__(self, db: Database, engine: AsyncEngine, hooks: list[Hook], **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self._db, self._hooks = db, hooks

    async def commit(self) -> None:
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            await hook()
        try:
            await super().commit()
        except ConcurrencyConflict:
            self._db.lost_races += 1
            raise


class UnitOfWorkFactory:
    """Implements ``UnitOfWorkFactory`` over a test's ``Database`` and clock."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime],
        on_events_committed: Callable[[], None] | None = None,
    ) -> None:
        self.db, self.clock, self.on_events_committed = db, clock, on_events_committed

    def __call__(
        self, *, processed_by: tuple[str, str] | None = None, read_only: bool = False
    ) -> SqlAlchemyUnitOfWork:
        return self.db.unit_of_work(
            processed_by=processed_by,
            on_events_committed=self.on_events_committed,
            clock=self.clock,
            read_only=read_only,
        )
