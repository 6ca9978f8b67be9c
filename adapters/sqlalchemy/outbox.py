"""The transactional outbox table: events written with their aggregates, read by the relay."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.sqlalchemy import tables as t
from application.ports import OutboxMessage
from domain import events as ev

_INSERT = insert(t.outbox)  # built once: every unit of work with events runs it


class SqlAlchemyOutbox:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, events: list[ev.Event], now: datetime) -> None:
        if not events:
            return
        await self.conn.execute(
            _INSERT,
            [
                {
                    "id": e.id,
                    "type": e.type_name(),
                    "aggregate_type": e.aggregate_type,
                    "aggregate_id": e.aggregate_id,
                    "org_id": e.org_id,
                    "occurred_at": e.occurred_at,
                    "payload": ev.encode_event(e).decode(),
                    "created_at": now,
                    "next_attempt_at": now,
                    "attempts": 0,
                }
                for e in events
            ],
        )

    @staticmethod
    def _due_query(now: datetime, exclude_aggregates: set[str]) -> Any:
        o = t.outbox.c
        stmt = select(t.outbox).where(o.published_at.is_(None), o.dead_at.is_(None), o.next_attempt_at <= now)
        if exclude_aggregates:
            stmt = stmt.where(o.aggregate_id.not_in(exclude_aggregates))
        # An aggregate's later event waits while an earlier one is still unpublished (kept in order):
        # only its first pending event is due, one probe of ix_outbox_pending_by_aggregate.
        earlier = t.outbox.alias("earlier")
        first_pending = (
            select(func.min(earlier.c.seq))
            .where(
                earlier.c.aggregate_id == o.aggregate_id,
                earlier.c.published_at.is_(None),
                earlier.c.dead_at.is_(None),
            )
            .scalar_subquery()
        )
        return stmt.where(o.seq == first_pending)

    async def due(self, *, now: datetime, limit: int, exclude_aggregates: set[str]) -> list[OutboxMessage]:
        stmt = self._due_query(now, exclude_aggregates).order_by(t.outbox.c.seq).limit(limit)
        return self._messages(await self.conn.execute(stmt))

    async def claim(
        self, *, relay: str, now: datetime, lease: timedelta, limit: int, exclude_aggregates: set[str]
    ) -> list[OutboxMessage]:
        """Due messages no other relay holds a live lease on, leased to ``relay`` (several relays).

        On PostgreSQL the rows are locked ``FOR UPDATE SKIP LOCKED`` until the claim commits, so two
        relays claiming at the same moment take different rows; SQLite serializes writers anyway
        (and is meant for a single relay).
        """
        o = t.outbox.c
        stmt = (
            self._due_query(now, exclude_aggregates)
            .where(or_(o.claimed_until.is_(None), o.claimed_until <= now, o.claimed_by == relay))
            .order_by(o.seq)
            .limit(limit)
        )
        if self.conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True, of=t.outbox)
        messages = self._messages(await self.conn.execute(stmt))
        if messages:
            await self.conn.execute(
                update(t.outbox)
                .where(o.id.in_([m.id for m in messages]))
                .values(claimed_by=relay, claimed_until=now + lease)
            )
        return messages

    @staticmethod
    def _messages(result: Any) -> list[OutboxMessage]:
        return [outbox_message(row._mapping) for row in result]

    async def mark_published(self, message_id: str, now: datetime) -> None:
        await self.conn.execute(update(t.outbox).where(t.outbox.c.id == message_id).values(published_at=now))

    async def mark_all_published(self, message_ids: Sequence[str], now: datetime) -> None:
        if message_ids:
            await self.conn.execute(
                update(t.outbox).where(t.outbox.c.id.in_(list(message_ids))).values(published_at=now)
            )

    async def defer(self, message_id: str, *, next_attempt_at: datetime, error: str) -> None:
        await self._failed(message_id, error, next_attempt_at=next_attempt_at)

    async def dead_letter(self, message_id: str, *, now: datetime, error: str) -> None:
        await self._failed(message_id, error, dead_at=now)

    async def _failed(self, message_id: str, error: str, **values: datetime) -> None:
        """One more failed attempt; the lease goes (the backoff or a replay decides what comes next)."""
        await self.conn.execute(
            update(t.outbox)
            .where(t.outbox.c.id == message_id)
            .values(
                **values,
                last_error=error,
                attempts=t.outbox.c.attempts + 1,
                claimed_by=None,
                claimed_until=None,
            )
        )

    async def dead_letters(self) -> list[DeadOutboxMessage]:
        """The messages the relay gave up on, oldest first (``callrec dlq list``)."""
        o = t.outbox.c
        result = await self.conn.execute(select(t.outbox).where(o.dead_at.is_not(None)).order_by(o.seq))
        rows = list(result)
        messages = self._messages(rows)
        return [
            DeadOutboxMessage(
                message, dead_at=row._mapping["dead_at"], error=row._mapping["last_error"] or ""
            )
            for message, row in zip(messages, rows, strict=True)
        ]

    async def revive(self, message_ids: Sequence[str], *, now: datetime) -> list[str]:
        """Hand dead messages (all of them when ``message_ids`` is empty) back to the relay, due now,
        with a fresh count of attempts; returns the ids revived."""
        o = t.outbox.c
        stmt = select(o.id).where(o.dead_at.is_not(None))
        if message_ids:
            stmt = stmt.where(o.id.in_(list(message_ids)))
        ids = [row[0] for row in await self.conn.execute(stmt.order_by(o.seq))]
        if ids:
            await self.conn.execute(
                update(t.outbox).where(o.id.in_(ids)).values(dead_at=None, attempts=0, next_attempt_at=now)
            )
        return ids


@dataclass(frozen=True)
class DeadOutboxMessage:
    """A message the in-process relay gave up on, with when and the last error."""

    message: OutboxMessage
    dead_at: datetime
    error: str


def outbox_message(m: Mapping[Any, Any]) -> OutboxMessage:
    """An ``outbox`` row as the message the relay publishes."""
    return OutboxMessage(
        id=m["id"],
        seq=m["seq"],
        type=m["type"],
        aggregate_type=m["aggregate_type"],
        aggregate_id=m["aggregate_id"],
        org_id=m["org_id"],
        occurred_at=m["occurred_at"],
        payload=m["payload"].encode(),
        attempts=m["attempts"],
    )
