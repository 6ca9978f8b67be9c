"""The audit log table (append-only, hash-chained) and the consumers' processed-message markers.

Appends are serialised so that concurrent writers (several API processes) never fork the chain: the
entries of a unit of work are sealed onto the chain head at commit time, inside the committing
transaction, and no other transaction can read the head until that one ends:

- PostgreSQL: ``pg_advisory_xact_lock(AUDIT_CHAIN_LOCK)`` first, held until commit or rollback; under
  READ COMMITTED the head read after the lock is the last committed entry.
- SQLite: the engine begins every transaction with ``BEGIN IMMEDIATE``, so the transaction already
  holds the database's single write lock (across processes) when it reads the head.

The unique ``seq`` is the backstop: were two writers ever to read the same head, the second insert
would fail (a ``ConcurrencyConflict``, retried from a fresh read) instead of forking the chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, bindparam, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.mapping import RowMapping
from adapters.sqlalchemy.repository import newest_first
from application.ports import AuditCursor
from domain import events as ev
from domain.audit import GENESIS_HASH, AuditEntry, ChainHead

# An arbitrary application-wide key for pg_advisory_xact_lock ("callrec audit" in ASCII, truncated).
AUDIT_CHAIN_LOCK = 0x63616C6C72656361


# Every field of an entry to its column and back (``events`` go to the outbox, not to a column).
ENTRIES = RowMapping(AuditEntry, t.audit_log, exclude=["events"])

# Built once, with bind parameters.
_a, _p = t.audit_log.c, t.processed_messages.c
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_HEAD = select(_a.seq, _a.hash).order_by(_a.seq.desc()).limit(1)
_ORG_PAGE, _ORG_PAGE_AFTER = newest_first(
    select(t.audit_log).where(_a.org_id == bindparam("org_id")), _a.occurred_at, _a.id
)
_CHAIN_BATCH = (
    select(t.audit_log)
    .where(_a.seq > bindparam("after", type_=_a.seq.type))
    .order_by(_a.seq)
    .limit(bindparam("batch", type_=Integer()))
)
_PROCESSED = select(_p.event_id).where(
    _p.consumer == bindparam("consumer"), _p.event_id == bindparam("event_id")
)
_PROCESSED_INSERT = insert(t.processed_messages)
_o = t.outbox.c
_PUBLISHED_HEAD = (
    select(_o.payload).where(_o.type == ev.AuditEntryAppended.type_name()).order_by(_o.seq.desc()).limit(1)
)


async def lock_chain(conn: AsyncConnection) -> None:
    """Hold the chain until this transaction ends (see the module docstring)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_LOCK, {"key": AUDIT_CHAIN_LOCK})


async def chain_head(conn: AsyncConnection) -> ChainHead | None:
    row = (await conn.execute(_HEAD)).first()
    return ChainHead(row.seq, row.hash) if row else None


class SqlAlchemyAuditLog:
    """Append-only: entries are chained and inserted on commit, with their events, never updated."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.pending: list[AuditEntry] = []

    def add(self, entry: AuditEntry) -> None:
        self.pending.append(entry)

    async def flush(self, now: datetime) -> list[ev.Event]:
        if not self.pending:
            return []
        self._unseal()  # a commit that failed and is tried again seals its entries anew
        await lock_chain(self.conn)
        head = await chain_head(self.conn)
        seq, prev_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
        for entry in self.pending:
            seq += 1
            entry.seal(seq=seq, prev_hash=prev_hash)
            assert entry.hash is not None
            prev_hash = entry.hash
        await self.conn.execute(ENTRIES.insert, [ENTRIES.dump(e) for e in self.pending])
        return [event for entry in self.pending for event in entry.events]

    def committed(self) -> None:
        for entry in self.pending:
            entry.events.clear()
        self.pending.clear()

    def _unseal(self) -> None:
        for entry in self.pending:
            entry.seq = entry.prev_hash = entry.hash = None
            entry.events[:] = [e for e in entry.events if not isinstance(e, ev.AuditEntryAppended)]

    async def page(self, *, org_id: str, limit: int, after: AuditCursor | None = None) -> list[AuditEntry]:
        """The org's entries, newest first by (occurred_at, id), strictly after ``after``."""
        params: dict[str, Any] = {"org_id": org_id, "limit": limit}
        if after is not None:
            params["after_at"], params["after_id"] = after.occurred_at, after.id
        stmt = _ORG_PAGE if after is None else _ORG_PAGE_AFTER
        return [ENTRIES.load(row._mapping) for row in await self.conn.execute(stmt, params)]


async def read_chain(conn: AsyncConnection, *, batch: int = 1000) -> AsyncIterator[AuditEntry]:
    """Every entry in ``seq`` order, a batch at a time."""
    after = 0
    while True:
        rows = (await conn.execute(_CHAIN_BATCH, {"after": after, "batch": batch})).all()
        for row in rows:
            yield ENTRIES.load(row._mapping)
        if len(rows) < batch:
            return
        after = rows[-1]._mapping["seq"]


async def published_head(conn: AsyncConnection) -> ChainHead | None:
    """The newest chain head handed to the outbox for ``callrec.audit.v1`` (what subscribers saw)."""
    payload = (await conn.execute(_PUBLISHED_HEAD)).scalar()
    if payload is None:
        return None
    event = ev.decode_event(ev.AuditEntryAppended.type_name(), payload)
    assert isinstance(event, ev.AuditEntryAppended)
    return ChainHead(event.seq, event.hash)


class SqlAlchemyProcessedMessages:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def contains(self, consumer: str, event_id: str) -> bool:
        result = await self.conn.execute(_PROCESSED, {"consumer": consumer, "event_id": event_id})
        return result.first() is not None

    async def add(self, consumer: str, event_id: str, now: datetime) -> None:
        await self.conn.execute(
            _PROCESSED_INSERT, {"consumer": consumer, "event_id": event_id, "processed_at": now}
        )
