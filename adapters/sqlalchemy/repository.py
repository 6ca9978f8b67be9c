"""The one repository base: load through a mapping, remember a snapshot, write changes on commit.

Each repository remembers the state (row and child values) of every aggregate it loaded. On commit,
new aggregates are inserted; changed ones are written with ``UPDATE … WHERE id = :id AND version =
:loaded`` and their version bumps — zero rows updated means someone else won the race, and
``ConcurrencyConflict`` tells the bus to retry from a fresh read. ``updated_at`` is stamped where the
table has it. The aggregates' events are returned for the outbox. Concrete repositories add queries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from sqlalchemy import ColumnElement, Executable, Integer, Select, bindparam, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.sqlalchemy.mapping import AggregateMapping, Row, State
from application.errors import ConcurrencyConflict
from domain import events as ev


class Aggregate(Protocol):
    id: str
    version: int
    events: list[ev.Event]


A = TypeVar("A", bound=Aggregate)

_NO_COLUMNS: Mapping[str, Any] = {}


@dataclass
class _Tracked(Generic[A]):
    aggregate: A
    new: bool  # to be inserted
    source: tuple[Row, dict[str, Any] | None] | None = None  # the row (and child values) it was loaded from
    snapshot: State | None = None  # as loaded or last committed

    def loaded(self, mapping: AggregateMapping[Any]) -> State:
        """Built from the source when first needed: a read-only request never pays for it."""
        if self.snapshot is None:
            assert self.source is not None
            self.snapshot = mapping.state(mapping.load(*self.source))
            self.source = None
        return self.snapshot


class Repository(Generic[A]):
    mapping: ClassVar[AggregateMapping[Any]]

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.tracked: dict[str, _Tracked[A]] = {}
        self.wrote = False  # some row inserted or updated (the webhook scheduler wakes on deliveries')
        self.written: list[tuple[A, State | None]] = []  # by the last flush, with its state as loaded

    def derived(self, aggregate: A) -> Mapping[str, Any]:
        """Columns of no field written with the aggregate's row (``AggregateMapping(derived=…)``)."""
        return _NO_COLUMNS

    def changing(self, aggregate_id: str) -> A | None:
        """The aggregate if this unit of work tracks it and will insert or update it on commit."""
        tracked = self.tracked.get(aggregate_id)
        if tracked is None or not (
            tracked.new or self.mapping.state(tracked.aggregate) != tracked.loaded(self.mapping)
        ):
            return None
        return tracked.aggregate

    def add(self, aggregate: A) -> None:
        self.tracked[aggregate.id] = _Tracked(aggregate, new=True)

    async def get(self, aggregate_id: str) -> A | None:
        return await self._first(self.mapping.by_id, {"id": aggregate_id})

    async def _first(self, stmt: Executable, params: dict[str, Any] | None = None) -> A | None:
        found = await self._all(stmt, params)
        return found[0] if found else None

    async def _all(self, stmt: Executable, params: dict[str, Any] | None = None) -> list[A]:
        rows = [row._mapping for row in await self.conn.execute(stmt, params)]
        fresh = [row for row in rows if row["id"] not in self.tracked]
        children = await self.mapping.load_children(self.conn, [row["id"] for row in fresh])
        for row in fresh:
            owned = self.mapping.owned(row["id"], children)
            aggregate: A = self.mapping.load(row, owned)
            self.tracked[aggregate.id] = _Tracked(aggregate, new=False, source=(row, owned))
        return [self.tracked[row["id"]].aggregate for row in rows]

    async def flush(self, now: datetime) -> list[ev.Event]:
        m, conn = self.mapping, self.conn
        stamp = {"updated_at": now} if m.stamped else {}
        new_events: list[ev.Event] = []
        self.written.clear()
        for tracked in self.tracked.values():
            aggregate, state = tracked.aggregate, m.state(tracked.aggregate)
            if tracked.new:
                await conn.execute(m.insert, {**state.row, **stamp, **self.derived(aggregate)})
                self.written.append((aggregate, None))
                for child in m.children:
                    await child.write(conn, aggregate.id, state.owned[child.attr], replace=False)
                self.wrote = True
            elif state != (loaded := tracked.loaded(m)):
                params = {**state.row, **stamp, **self.derived(aggregate), "version": aggregate.version + 1}
                result = await conn.execute(
                    m.update, {**params, "loaded_id": aggregate.id, "loaded_version": aggregate.version}
                )
                if result.rowcount != 1:
                    raise ConcurrencyConflict(f"{m.table.name} {aggregate.id} changed concurrently")
                self.written.append((aggregate, loaded))
                for child in m.children:
                    if state.owned[child.attr] != loaded.owned[child.attr]:
                        await child.write(conn, aggregate.id, state.owned[child.attr], replace=True)
                self.wrote = True
            for appended in m.appended:
                await appended.write(conn, getattr(aggregate, appended.attr))
            new_events.extend(aggregate.events)
        return new_events

    def committed(self) -> None:
        m = self.mapping
        for tracked in self.tracked.values():
            aggregate = tracked.aggregate
            if not tracked.new and m.state(aggregate) != tracked.loaded(m):
                aggregate.version += 1
            aggregate.events.clear()
            for appended in m.appended:
                getattr(aggregate, appended.attr).clear()
            tracked.new, tracked.snapshot = False, m.state(aggregate)


def newest_first(
    stmt: Select[Any], at: ColumnElement[Any], id_: ColumnElement[Any]
) -> tuple[Select[Any], Select[Any]]:
    """Keyset pages of ``stmt``, newest first, built once: the first page (bound ``limit``) and the
    page after a cursor (bound ``after_at`` and ``after_id``)."""
    first = stmt.order_by(at.desc(), id_.desc()).limit(bindparam("limit", type_=Integer()))
    after = first.where(
        tuple_(at, id_) < tuple_(bindparam("after_at", type_=at.type), bindparam("after_id", type_=id_.type))
    )
    return first, after
