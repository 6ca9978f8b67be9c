"""What an operator watches in the database: that it answers, the outbox's backlog and the
recordings by state (those stuck past the sweep's threshold apart). Read per scrape: every process
over one database reports the same values."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy import tables as t


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


@dataclass
class DatabaseGauges:
    outbox_backlog: int = 0  # committed events not yet handed on (dead letters apart)
    outbox_oldest_age_s: float = 0.0  # age of the oldest of them
    outbox_dead: int = 0  # dead-lettered outbox rows (the in-process bus's DLQ)
    recordings: dict[str, int] = field(default_factory=dict)  # status → count
    stuck: dict[str, int] = field(default_factory=dict)  # status → count unchanged past the threshold


async def database_gauges(
    engine: AsyncEngine, *, now: datetime, stuck_before: datetime, stuck_statuses: Collection[str]
) -> DatabaseGauges:
    o, r = t.outbox.c, t.recordings.c
    gauges = DatabaseGauges()
    async with engine.connect() as conn:
        pending = (
            await conn.execute(
                select(func.count(), func.min(o.created_at)).where(
                    o.published_at.is_(None), o.dead_at.is_(None)
                )
            )
        ).one()
        gauges.outbox_backlog = int(pending[0])
        oldest: datetime | None = pending[1]
        if oldest is not None:
            gauges.outbox_oldest_age_s = max(0.0, (now - oldest).total_seconds())
        gauges.outbox_dead = int(
            (
                await conn.execute(
                    select(func.count()).where(o.dead_at.is_not(None), o.published_at.is_(None))
                )
            ).scalar_one()
        )
        for status, count in await conn.execute(select(r.status, func.count()).group_by(r.status)):
            gauges.recordings[str(status)] = int(count)
        stuck = select(r.status, func.count()).where(
            r.status.in_(list(stuck_statuses)),
            or_(r.updated_at < stuck_before, r.updated_at.is_(None)),
        )
        for status, count in await conn.execute(stuck.group_by(r.status)):
            gauges.stuck[str(status)] = int(count)
    return gauges
