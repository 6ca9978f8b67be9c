"""What an operator watches in the database: that it answers, the outbox's backlog and the
recordings by state (those stuck past the sweep's threshold apart). Read per scrape: every process
over one database reports the same values."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, func, or_, select, text
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


_o, _r = t.outbox.c, t.recordings.c
_PENDING = select(func.count(), func.min(_o.created_at)).where(
    _o.published_at.is_(None), _o.dead_at.is_(None)
)
_DEAD = select(func.count()).where(_o.dead_at.is_not(None), _o.published_at.is_(None))
_BY_STATUS = select(_r.status, func.count()).group_by(_r.status)
_STUCK = (
    select(_r.status, func.count())
    .where(
        _r.status.in_(bindparam("statuses", expanding=True)),
        or_(_r.updated_at < bindparam("before", type_=_r.updated_at.type), _r.updated_at.is_(None)),
    )
    .group_by(_r.status)
)


async def database_gauges(
    engine: AsyncEngine, *, now: datetime, stuck_before: datetime, stuck_statuses: Collection[str]
) -> DatabaseGauges:
    gauges = DatabaseGauges()
    async with engine.connect() as conn:
        pending = (await conn.execute(_PENDING)).one()
        gauges.outbox_backlog = int(pending[0])
        oldest: datetime | None = pending[1]
        if oldest is not None:
            gauges.outbox_oldest_age_s = max(0.0, (now - oldest).total_seconds())
        gauges.outbox_dead = int((await conn.execute(_DEAD)).scalar_one())
        for status, count in await conn.execute(_BY_STATUS):
            gauges.recordings[str(status)] = int(count)
        if stuck_statuses:
            params = {"statuses": list(stuck_statuses), "before": stuck_before}
            for status, count in await conn.execute(_STUCK, params):
                gauges.stuck[str(status)] = int(count)
    return gauges
