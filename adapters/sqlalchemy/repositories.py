"""Repositories of organizations, calls and recordings: their mappings and their queries."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, tuple_

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.mapping import AggregateMapping, Children, Embedded
from adapters.sqlalchemy.repository import Repository
from application.ports import CallQuery
from domain.model import ENDED_STATUSES, SETTLED_STATUSES, Call, Organization, Recording, RecordingStatus


class SqlAlchemyOrganizationRepository(Repository[Organization]):
    mapping = AggregateMapping(
        Organization,
        t.organizations,
        fields={"phone_numbers": Children(t.organization_phone_numbers, key="org_id", value="number")},
    )

    async def get_by_phone_number(self, number: str) -> Organization | None:
        owner = select(t.organization_phone_numbers.c.org_id).where(
            t.organization_phone_numbers.c.number == number
        )
        return await self._first(
            select(t.organizations).where(t.organizations.c.id.in_(owner.scalar_subquery()))
        )


class SqlAlchemyCallRepository(Repository[Call]):
    mapping = AggregateMapping(Call, t.calls, fields={"consent": Embedded()})

    async def get_by_sid(self, call_sid: str) -> Call | None:
        return await self._first(select(t.calls).where(t.calls.c.call_sid == call_sid))

    async def page(self, query: CallQuery) -> list[Call]:
        c = t.calls.c
        where: list[ColumnElement[bool]] = [c.kind.in_([k.value for k in query.kinds])]
        where.append(c.org_id == query.org_id if query.org_id is not None else c.org_id.is_(None))
        if query.started_from is not None:
            where.append(c.started_at >= query.started_from)
        if query.started_to is not None:
            where.append(c.started_at < query.started_to)
        if query.after is not None:
            where.append(tuple_(c.started_at, c.id) < tuple_(query.after.started_at, query.after.id))
        source: Any = t.calls
        if query.recording_status is not None:
            source = t.calls.outerjoin(t.recordings, t.recordings.c.id == c.recording_id)
            where.append(_recording_status_is(query.recording_status))
        stmt = (
            select(t.calls)
            .select_from(source)
            .where(and_(*where))
            .order_by(c.started_at.desc(), c.id.desc())
            .limit(query.limit)
        )
        return await self._all(stmt)

    async def settling(self, *, ended_before: datetime, limit: int) -> list[Call]:
        c, r = t.calls.c, t.recordings.c
        stmt = (
            select(t.calls)
            .select_from(t.calls.outerjoin(t.recordings, r.id == c.recording_id))
            .where(
                c.settled_at.is_(None),  # ix_calls_settling
                c.ended_at.is_not(None),
                c.ended_at <= ended_before,
                or_(r.id.is_(None), r.status.in_([s.value for s in SETTLED_STATUSES])),
            )
            .order_by(c.ended_at, c.id)
            .limit(limit)
        )
        return await self._all(stmt)


_ENDED = [s.value for s in ENDED_STATUSES]
_LIVE = [RecordingStatus.REQUESTED.value, RecordingStatus.IN_PROGRESS.value, RecordingStatus.COMPLETED.value]
_ARCHIVED = [RecordingStatus.ARCHIVED.value, RecordingStatus.TWILIO_DELETED.value]


def _recording_status_is(status: str) -> Any:
    """SQL twin of ``application.views.recording_view``'s status (an integration test keeps them equal)."""
    c, r = t.calls.c, t.recordings.c
    no_recording = r.id.is_(None)
    if status == "available":
        return and_(c.recorded.is_(True), r.status.in_(_ARCHIVED), r.storage_key.is_not(None))
    if status == "failed":
        return and_(c.recorded.is_(True), r.status == RecordingStatus.FAILED.value)
    if status == "processing":
        return and_(
            c.recorded.is_(True),
            or_(and_(no_recording, c.status.not_in(_ENDED)), r.status.in_(_LIVE)),
        )
    if status == "not_recorded":
        return or_(
            c.recorded.is_(False),
            r.status == RecordingStatus.ABSENT.value,
            and_(no_recording, c.status.in_(_ENDED)),
        )
    raise ValueError(f"unknown recording status filter {status!r}")


class SqlAlchemyRecordingRepository(Repository[Recording]):
    mapping = AggregateMapping(Recording, t.recordings, fields={"audio": Embedded()})

    async def get_by_sid(self, recording_sid: str) -> Recording | None:
        return await self._first(select(t.recordings).where(t.recordings.c.recording_sid == recording_sid))

    def _of_calls(self, where: Any) -> Any:
        """The calls' own recordings (``calls.recording_id``), not their additional ones."""
        return select(t.recordings).join(t.calls, t.calls.c.recording_id == t.recordings.c.id).where(where)

    async def get_for_call(self, call_id: str) -> Recording | None:
        return await self._first(self._of_calls(t.calls.c.id == call_id))

    async def get_for_calls(self, call_ids: list[str]) -> dict[str, Recording]:
        if not call_ids:
            return {}
        found = await self._all(self._of_calls(t.calls.c.id.in_(call_ids)))
        return {rec.call_id: rec for rec in found}

    async def for_call(self, call_id: str) -> list[Recording]:
        r = t.recordings.c
        stmt = select(t.recordings).where(r.call_id == call_id).order_by(r.requested_at, r.id)
        return await self._all(stmt)

    async def stuck(
        self, *, statuses: Collection[RecordingStatus], updated_before: datetime, limit: int
    ) -> list[Recording]:
        r = t.recordings.c
        stmt = (
            select(t.recordings)
            .where(
                r.status.in_([status.value for status in statuses]),
                # ix_recordings_status_updated; rows written before migration 0002 have no updated_at
                or_(r.updated_at < updated_before, r.updated_at.is_(None)),
            )
            .order_by(r.updated_at, r.id)
            .limit(limit)
        )
        return await self._all(stmt)
