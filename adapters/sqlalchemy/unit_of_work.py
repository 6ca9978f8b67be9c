"""SQLAlchemy 2 async repositories and unit of work (SQLite and PostgreSQL).

Aggregates are mapped explicitly to rows (no ORM classes as entities). Each repository remembers a
snapshot of every row it loaded; on commit, changed aggregates are written with
``UPDATE … WHERE id = :id AND version = :loaded_version`` — zero rows updated means someone else
won the race, and ``ConcurrencyConflict`` tells the bus to retry from a fresh read. New aggregates
are inserted; a duplicate key means a racer inserted first (``ConcurrencyConflict`` too), while a
foreign-key, not-null or check violation is ``IntegrityViolation``: no retry can mend it. The
aggregates' events go into the ``outbox`` table in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from sqlalchemy import ColumnElement, Row, Table, and_, delete, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.audit import SqlAlchemyAuditLog, SqlAlchemyProcessedMessages
from adapters.sqlalchemy.outbox import SqlAlchemyOutbox
from adapters.sqlalchemy.webhooks import (
    SqlAlchemyWebhookDeliveryRepository,
    SqlAlchemyWebhookEndpointRepository,
)
from application.errors import ConcurrencyConflict, IntegrityViolation
from application.ports import CallQuery
from domain import events as ev
from domain.model import (
    ENDED_STATUSES,
    SETTLED_STATUSES,
    ArchivedAudio,
    Call,
    CallKind,
    CallStatus,
    ConsentRecord,
    Organization,
    Recording,
    RecordingStatus,
)

A = TypeVar("A", Organization, Call, Recording)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Tracked(Generic[A]):
    aggregate: A
    snapshot: dict[str, Any] | None  # None: new, to be inserted
    extra: Any = None


@dataclass
class _Repository(Generic[A]):
    conn: AsyncConnection
    table: Table
    tracked: dict[str, _Tracked[A]] = field(default_factory=dict)

    def to_row(self, aggregate: A) -> dict[str, Any]:
        raise NotImplementedError

    def from_row(self, row: Row[Any]) -> A:
        raise NotImplementedError

    def add(self, aggregate: A) -> None:
        self.tracked[aggregate.id] = _Tracked(aggregate, None)

    def _remember(self, row: Row[Any] | None) -> A | None:
        if row is None:
            return None
        agg_id = row._mapping["id"]
        if agg_id in self.tracked:
            return self.tracked[agg_id].aggregate
        aggregate = self.from_row(row)
        self.tracked[agg_id] = _Tracked(aggregate, self.to_row(aggregate))
        return aggregate

    async def _one(self, *where: Any) -> A | None:
        result = await self.conn.execute(select(self.table).where(*where))
        return self._remember(result.first())

    async def flush(self, now: datetime) -> list[ev.Event]:
        stamp = {"updated_at": now} if "updated_at" in self.table.c else {}
        new_events: list[ev.Event] = []
        for tracked in self.tracked.values():
            aggregate = tracked.aggregate
            row = self.to_row(aggregate)
            if tracked.snapshot is None:
                await self.conn.execute(insert(self.table).values(**row, **stamp))
            elif row != tracked.snapshot:
                row["version"] = aggregate.version + 1
                row.update(stamp)
                result = await self.conn.execute(
                    update(self.table)
                    .where(self.table.c.id == aggregate.id, self.table.c.version == aggregate.version)
                    .values(**row)
                )
                if result.rowcount != 1:
                    raise ConcurrencyConflict(f"{self.table.name} {aggregate.id} changed concurrently")
            new_events.extend(aggregate.events)
        return new_events

    def committed(self) -> None:
        for tracked in self.tracked.values():
            aggregate = tracked.aggregate
            row = self.to_row(aggregate)
            if tracked.snapshot is not None and row != tracked.snapshot:
                aggregate.version += 1
            tracked.snapshot = self.to_row(aggregate)
            aggregate.events.clear()


class SqlAlchemyOrganizationRepository(_Repository[Organization]):
    def __init__(self, conn: AsyncConnection) -> None:
        super().__init__(conn, t.organizations)
        self._numbers: dict[str, list[str]] = {}

    def to_row(self, org: Organization) -> dict[str, Any]:
        return {
            "id": org.id,
            "name": org.name,
            "greeting": org.greeting,
            "recording_enabled": org.recording_enabled,
            "recording_changed_by": org.recording_changed_by,
            "recording_changed_at": org.recording_changed_at,
            "created_at": org.created_at,
            "version": org.version,
            # Not a column: compared so a change of numbers alone still bumps the version.
            "phone_numbers": sorted(org.phone_numbers),
        }

    def from_row(self, row: Row[Any]) -> Organization:
        m = row._mapping
        return Organization(
            id=m["id"],
            name=m["name"],
            phone_numbers=self._numbers.get(m["id"], []),
            greeting=m["greeting"],
            recording_enabled=m["recording_enabled"],
            recording_changed_by=m["recording_changed_by"],
            recording_changed_at=m["recording_changed_at"],
            created_at=m["created_at"],
            version=m["version"],
        )

    async def flush(self, now: datetime) -> list[ev.Event]:
        # phone_numbers lives in its own table; strip it from the column values written.
        new_events: list[ev.Event] = []
        for tracked in self.tracked.values():
            org = tracked.aggregate
            row = self.to_row(org)
            numbers = row.pop("phone_numbers")
            if tracked.snapshot is None:
                await self.conn.execute(insert(self.table).values(**row))
                await self._write_numbers(org.id, numbers)
            elif {**row, "phone_numbers": numbers} != tracked.snapshot:
                row["version"] = org.version + 1
                result = await self.conn.execute(
                    update(self.table)
                    .where(self.table.c.id == org.id, self.table.c.version == org.version)
                    .values(**row)
                )
                if result.rowcount != 1:
                    raise ConcurrencyConflict(f"organization {org.id} changed concurrently")
                if numbers != tracked.snapshot["phone_numbers"]:
                    await self.conn.execute(
                        delete(t.organization_phone_numbers).where(
                            t.organization_phone_numbers.c.org_id == org.id
                        )
                    )
                    await self._write_numbers(org.id, numbers)
            new_events.extend(org.events)
        return new_events

    async def _write_numbers(self, org_id: str, numbers: list[str]) -> None:
        if numbers:
            await self.conn.execute(
                insert(t.organization_phone_numbers), [{"number": n, "org_id": org_id} for n in numbers]
            )

    async def _load(self, where: Any) -> Organization | None:
        result = await self.conn.execute(select(t.organizations).where(where))
        row = result.first()
        if row is None:
            return None
        org_id = row._mapping["id"]
        if org_id not in self.tracked:
            numbers = await self.conn.execute(
                select(t.organization_phone_numbers.c.number).where(
                    t.organization_phone_numbers.c.org_id == org_id
                )
            )
            self._numbers[org_id] = sorted(n for (n,) in numbers)
        return self._remember(row)

    async def get(self, org_id: str) -> Organization | None:
        return await self._load(t.organizations.c.id == org_id)

    async def get_by_phone_number(self, number: str) -> Organization | None:
        owner = select(t.organization_phone_numbers.c.org_id).where(
            t.organization_phone_numbers.c.number == number
        )
        return await self._load(t.organizations.c.id.in_(owner.scalar_subquery()))


class SqlAlchemyCallRepository(_Repository[Call]):
    def __init__(self, conn: AsyncConnection) -> None:
        super().__init__(conn, t.calls)

    def to_row(self, call: Call) -> dict[str, Any]:
        return {
            "id": call.id,
            "org_id": call.org_id,
            "kind": call.kind.value,
            "call_sid": call.call_sid,
            "account_sid": call.account_sid,
            "from_number": call.from_number,
            "to_number": call.to_number,
            "status": call.status.value,
            "started_at": call.started_at,
            "answered_at": call.answered_at,
            "ended_at": call.ended_at,
            "duration_s": call.duration_s,
            "greeting": call.greeting,
            "recorded": call.consent.recorded,
            "disclosure_text": call.consent.disclosure_text,
            "disclosure_version": call.consent.disclosure_version,
            "disclosed_at": call.consent.disclosed_at,
            "recording_id": call.recording_id,
            "scorable": call.scorable,
            "scorability_reason": call.scorability_reason,
            "transfer_stage": call.transfer_stage,
            "settled_at": call.settled_at,
            "version": call.version,
        }

    def from_row(self, row: Row[Any]) -> Call:
        m = row._mapping
        return Call(
            id=m["id"],
            org_id=m["org_id"],
            kind=CallKind(m["kind"]),
            call_sid=m["call_sid"],
            account_sid=m["account_sid"],
            from_number=m["from_number"],
            to_number=m["to_number"],
            status=CallStatus(m["status"]),
            started_at=m["started_at"],
            answered_at=m["answered_at"],
            ended_at=m["ended_at"],
            duration_s=m["duration_s"],
            greeting=m["greeting"],
            consent=ConsentRecord(
                recorded=m["recorded"],
                disclosure_text=m["disclosure_text"],
                disclosure_version=m["disclosure_version"],
                disclosed_at=m["disclosed_at"],
            ),
            recording_id=m["recording_id"],
            scorable=m["scorable"],
            scorability_reason=m["scorability_reason"],
            transfer_stage=m["transfer_stage"],
            settled_at=m["settled_at"],
            version=m["version"],
        )

    async def get(self, call_id: str) -> Call | None:
        return await self._one(t.calls.c.id == call_id)

    async def get_by_sid(self, call_sid: str) -> Call | None:
        return await self._one(t.calls.c.call_sid == call_sid)

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
        result = await self.conn.execute(stmt)
        return [call for row in result if (call := self._remember(row)) is not None]

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
        result = await self.conn.execute(stmt)
        return [call for row in result if (call := self._remember(row)) is not None]


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


class SqlAlchemyRecordingRepository(_Repository[Recording]):
    def __init__(self, conn: AsyncConnection) -> None:
        super().__init__(conn, t.recordings)

    def to_row(self, rec: Recording) -> dict[str, Any]:
        audio = rec.audio
        return {
            "id": rec.id,
            "call_id": rec.call_id,
            "org_id": rec.org_id,
            "kind": rec.kind.value,
            "call_sid": rec.call_sid,
            "recording_sid": rec.recording_sid,
            "status": rec.status.value,
            "requested_at": rec.requested_at,
            "call_started_at": rec.call_started_at,
            "media_url": rec.media_url,
            "duration_s": rec.duration_s,
            "completed_at": rec.completed_at,
            "storage_key": audio.storage_key if audio else None,
            "size_bytes": audio.size_bytes if audio else None,
            "sha256": audio.sha256 if audio else None,
            "content_type": audio.content_type if audio else None,
            "archived_at": audio.archived_at if audio else None,
            "twilio_deleted_at": rec.twilio_deleted_at,
            "error_code": rec.error_code,
            "failure_reason": rec.failure_reason,
            "discard_reason": rec.discard_reason,
            "version": rec.version,
        }

    def from_row(self, row: Row[Any]) -> Recording:
        m = row._mapping
        audio = None
        if m["storage_key"] is not None:
            audio = ArchivedAudio(
                storage_key=m["storage_key"],
                size_bytes=m["size_bytes"],
                sha256=m["sha256"],
                content_type=m["content_type"],
                archived_at=m["archived_at"],
            )
        return Recording(
            id=m["id"],
            call_id=m["call_id"],
            org_id=m["org_id"],
            kind=CallKind(m["kind"]),
            call_sid=m["call_sid"],
            status=RecordingStatus(m["status"]),
            requested_at=m["requested_at"],
            call_started_at=m["call_started_at"],
            recording_sid=m["recording_sid"],
            media_url=m["media_url"],
            duration_s=m["duration_s"],
            completed_at=m["completed_at"],
            audio=audio,
            twilio_deleted_at=m["twilio_deleted_at"],
            error_code=m["error_code"],
            failure_reason=m["failure_reason"],
            discard_reason=m["discard_reason"],
            version=m["version"],
        )

    async def get(self, recording_id: str) -> Recording | None:
        return await self._one(t.recordings.c.id == recording_id)

    async def get_by_sid(self, recording_sid: str) -> Recording | None:
        return await self._one(t.recordings.c.recording_sid == recording_sid)

    def _of_calls(self, where: Any) -> Any:
        """The calls' own recordings (``calls.recording_id``), not their additional ones."""
        return select(t.recordings).join(t.calls, t.calls.c.recording_id == t.recordings.c.id).where(where)

    async def get_for_call(self, call_id: str) -> Recording | None:
        result = await self.conn.execute(self._of_calls(t.calls.c.id == call_id))
        return self._remember(result.first())

    async def get_for_calls(self, call_ids: list[str]) -> dict[str, Recording]:
        if not call_ids:
            return {}
        result = await self.conn.execute(self._of_calls(t.calls.c.id.in_(call_ids)))
        found = [rec for row in result if (rec := self._remember(row)) is not None]
        return {rec.call_id: rec for rec in found}

    async def for_call(self, call_id: str) -> list[Recording]:
        r = t.recordings.c
        stmt = select(t.recordings).where(r.call_id == call_id).order_by(r.requested_at, r.id)
        result = await self.conn.execute(stmt)
        return [rec for row in result if (rec := self._remember(row)) is not None]

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
        result = await self.conn.execute(stmt)
        return [rec for row in result if (rec := self._remember(row)) is not None]


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


class SqlAlchemyUnitOfWork:
    organizations: SqlAlchemyOrganizationRepository
    calls: SqlAlchemyCallRepository
    recordings: SqlAlchemyRecordingRepository
    outbox: SqlAlchemyOutbox
    processed: SqlAlchemyProcessedMessages
    audit: SqlAlchemyAuditLog
    webhook_endpoints: SqlAlchemyWebhookEndpointRepository
    webhook_deliveries: SqlAlchemyWebhookDeliveryRepository

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        processed_by: tuple[str, str] | None = None,
        on_events_committed: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.engine = engine
        self.processed_by = processed_by
        self.on_events_committed = on_events_committed
        self.clock = clock
        self._conn: AsyncConnection | None = None
        self._committed = False

    async def __aenter__(self) -> Self:
        self._conn = await self.engine.connect()
        try:
            await self._conn.begin()
        except OperationalError as exc:
            await self._conn.close()
            raise ConcurrencyConflict(f"database busy: {exc}") from exc
        self.organizations = SqlAlchemyOrganizationRepository(self._conn)
        self.calls = SqlAlchemyCallRepository(self._conn)
        self.recordings = SqlAlchemyRecordingRepository(self._conn)
        self.outbox = SqlAlchemyOutbox(self._conn)
        self.processed = SqlAlchemyProcessedMessages(self._conn)
        self.audit = SqlAlchemyAuditLog(self._conn)
        self.webhook_endpoints = SqlAlchemyWebhookEndpointRepository(self._conn)
        self.webhook_deliveries = SqlAlchemyWebhookDeliveryRepository(self._conn)
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
            await self._conn.close()
            self._conn = None

    @property
    def _repositories(self) -> list[Any]:
        webhooks = [self.webhook_endpoints, self.webhook_deliveries]  # deliveries refer to endpoints
        return [self.organizations, self.calls, self.recordings, *webhooks, self.audit]

    async def commit(self) -> None:
        assert self._conn is not None, "commit() outside the unit of work's context"
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
        # New or re-timed webhook deliveries wake the delivery scheduler like new events wake the relay.
        if (new_events or self.webhook_deliveries.wrote) and self.on_events_committed is not None:
            self.on_events_committed()

    async def rollback(self) -> None:
        assert self._conn is not None
        await self._conn.rollback()
