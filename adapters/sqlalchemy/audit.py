"""The audit log table (append-only) and the consumers' processed-message markers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.sqlalchemy import tables as t
from domain import events as ev
from domain.audit import AuditEntry


class SqlAlchemyAuditLog:
    """Append-only: entries are inserted on commit, with their events, and never updated."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.pending: list[AuditEntry] = []

    def add(self, entry: AuditEntry) -> None:
        self.pending.append(entry)

    async def flush(self, now: datetime) -> list[ev.Event]:
        if not self.pending:
            return []
        await self.conn.execute(
            insert(t.audit_log),
            [
                {
                    "id": e.id,
                    "occurred_at": e.occurred_at,
                    "actor": e.actor,
                    "actor_role": e.actor_role,
                    "action": e.action,
                    "reason": e.reason,
                    "org_id": e.org_id,
                    "call_id": e.call_id,
                    "call_kind": e.call_kind,
                }
                for e in self.pending
            ],
        )
        return [event for entry in self.pending for event in entry.events]

    def committed(self) -> None:
        for entry in self.pending:
            entry.events.clear()
        self.pending.clear()


class SqlAlchemyProcessedMessages:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def contains(self, consumer: str, event_id: str) -> bool:
        p = t.processed_messages.c
        result = await self.conn.execute(
            select(p.event_id).where(p.consumer == consumer, p.event_id == event_id)
        )
        return result.first() is not None

    async def add(self, consumer: str, event_id: str, now: datetime) -> None:
        await self.conn.execute(
            insert(t.processed_messages).values(consumer=consumer, event_id=event_id, processed_at=now)
        )
