"""Small real fakes for the unit tier: a clock, an in-memory unit of work, and the glue to use them.

``FakeUnitOfWork`` keeps the semantics of ``SqlAlchemyUnitOfWork``: every unit of work reads
committed copies of the aggregates from one shared ``FakeDatabase`` (deep copies, so what one unit
of work changes is invisible to the others until it commits), a commit checks optimistic versions
and unique keys and raises ``ConcurrencyConflict`` when it lost a race, the aggregates' events go to
the outbox in the same commit, ``processed_by=(consumer, event id)`` is recorded with the effect, and
leaving the context without ``commit()`` throws everything away.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from application.errors import ConcurrencyConflict
from application.messagebus import EventDispatcher
from application.ports import CallQuery, OutboxMessage, Telephony
from application.services import Services, ServiceSettings
from domain import events as ev
from domain.model import Call, CallKind, Organization, Recording, RecordingStatus
from tests.fakes_store import InMemoryRecordingStore
from tests.fakes_telephony import FakeTelephony

__all__ = [
    "PUBLIC_URL",
    "DrainResult",
    "FakeClock",
    "FakeDatabase",
    "FakeTelephony",
    "FakeUnitOfWork",
    "FakeUnitOfWorkFactory",
    "InMemoryRecordingStore",
    "OutboxRow",
    "drain",
    "make_services",
]

PUBLIC_URL = "https://callrec.test"

A = TypeVar("A", Organization, Call, Recording)


# --- clock --------------------------------------------------------------------------------------


class FakeClock:
    """A clock that stands still until told otherwise. Always timezone-aware UTC."""

    def __init__(self, now: datetime | None = None) -> None:
        self._now = _utc(now or datetime(2026, 11, 2, 15, 0, tzinfo=UTC))

    def now(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        self._now = _utc(now)

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """``advance(timedelta(seconds=5))`` or ``advance(seconds=5)``; returns the new time."""
        self._now += (delta or timedelta()) + timedelta(**kwargs)
        return self._now


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("FakeClock needs a timezone-aware datetime")
    return moment.astimezone(UTC)


# --- the shared "database" ----------------------------------------------------------------------


@dataclass
class OutboxRow:
    message: OutboxMessage
    created_at: datetime
    next_attempt_at: datetime
    published_at: datetime | None = None
    last_error: str | None = None
    dead_at: datetime | None = None
    claimed_by: str | None = None  # a relay's lease, as the columns of that name
    claimed_until: datetime | None = None


@dataclass
class FakeDatabase:
    """What has been committed. Aggregates are stored as private copies, never handed out."""

    organizations: dict[str, Organization] = field(default_factory=dict)
    calls: dict[str, Call] = field(default_factory=dict)
    recordings: dict[str, Recording] = field(default_factory=dict)
    outbox: list[OutboxRow] = field(default_factory=list)
    processed: dict[tuple[str, str], datetime] = field(default_factory=dict)
    recording_updated_at: dict[str, datetime] = field(default_factory=dict)  # the column of that name
    webhook_endpoints: dict[str, Any] = field(default_factory=dict)
    webhook_deliveries: dict[str, Any] = field(default_factory=dict)
    webhook_attempts: dict[str, list[Any]] = field(default_factory=dict)  # delivery id → its tries
    audit_log: list[Any] = field(default_factory=list)
    audit_unwritable: bool = False  # a test's switch: the audit log refuses writes
    commits: int = 0
    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _before_commit: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def before_next_commit(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` just before the next commit (of any unit of work) writes anything.

        This is how a test makes another transaction win a race: the hook commits a competing
        change, and the interrupted commit then finds its aggregates' versions moved on.
        """
        self._before_commit.append(hook)

    # -- inspection helpers for tests --

    def unpublished(self) -> list[OutboxMessage]:
        return [row.message for row in self.outbox if row.published_at is None]

    def event_types(self) -> list[str]:
        return [row.message.type for row in self.outbox]

    def events_of(self, event_type: type[ev.Event]) -> list[Any]:
        """Every committed event of this type, decoded from its outbox payload."""
        name = event_type.type_name()
        return [ev.decode_event(name, row.message.payload) for row in self.outbox if row.message.type == name]

    def call_by_sid(self, call_sid: str) -> Call | None:
        found = [c for c in self.calls.values() if c.call_sid == call_sid]
        return copy.deepcopy(found[0]) if found else None

    def recording_for_call(self, call_id: str) -> Recording | None:
        """The call's own recording (``Call.recording_id``)."""
        call = self.calls.get(call_id)
        found = self.recordings.get(call.recording_id) if call and call.recording_id else None
        return copy.deepcopy(found)

    def recordings_of_call(self, call_id: str) -> list[Recording]:
        """Every recording of the call, its own and the additional ones, oldest first."""
        found = [r for r in self.recordings.values() if r.call_id == call_id]
        return copy.deepcopy(sorted(found, key=lambda r: (r.requested_at, r.id)))


# --- repositories -------------------------------------------------------------------------------


def _state(aggregate: Any) -> dict[str, Any]:
    state = {k: v for k, v in vars(aggregate).items() if k not in ("events", "version")}
    if isinstance(aggregate, Organization):
        state["phone_numbers"] = sorted(aggregate.phone_numbers)
    return copy.deepcopy(state)


def _stored_copy(aggregate: A) -> A:
    stored = copy.copy(aggregate)
    stored.events = []
    return copy.deepcopy(stored)


@dataclass
class _Tracked(Generic[A]):
    aggregate: A
    snapshot: dict[str, Any] | None  # None: new, to be inserted


class _FakeRepository(Generic[A]):
    def __init__(self, table: dict[str, A]) -> None:
        self._table: dict[str, A] = table
        self.tracked: dict[str, _Tracked[A]] = {}

    def add(self, aggregate: A) -> None:
        self.tracked[aggregate.id] = _Tracked(aggregate, None)

    def _remember(self, stored: A | None) -> A | None:
        if stored is None:
            return None
        if stored.id in self.tracked:
            return self.tracked[stored.id].aggregate
        aggregate = copy.deepcopy(stored)
        self.tracked[aggregate.id] = _Tracked(aggregate, _state(aggregate))
        return aggregate

    def _first(self, predicate: Callable[[A], bool]) -> A | None:
        return self._remember(next((a for a in self._table.values() if predicate(a)), None))

    async def get(self, aggregate_id: str) -> A | None:
        return self._remember(self._table.get(aggregate_id))

    def changes(self) -> list[tuple[_Tracked[A], bool]]:
        """(tracked, is_new) for every aggregate that must be written."""
        return [
            (t, t.snapshot is None)
            for t in self.tracked.values()
            if t.snapshot is None or _state(t.aggregate) != t.snapshot
        ]

    def check(self) -> None:
        """Raise ConcurrencyConflict if writing would lose someone else's committed change."""
        for tracked, is_new in self.changes():
            aggregate = tracked.aggregate
            stored = self._table.get(aggregate.id)
            if is_new and stored is not None:
                raise ConcurrencyConflict(f"{type(aggregate).__name__} {aggregate.id} already exists")
            if not is_new and (stored is None or stored.version != aggregate.version):
                raise ConcurrencyConflict(f"{type(aggregate).__name__} {aggregate.id} changed concurrently")

    def write(self) -> None:
        for tracked, is_new in self.changes():
            aggregate = tracked.aggregate
            stored = _stored_copy(aggregate)
            if not is_new:
                stored.version = aggregate.version + 1
            self._table[aggregate.id] = stored

    def new_events(self) -> list[ev.Event]:
        return [e for t in self.tracked.values() for e in t.aggregate.events]

    def committed(self) -> None:
        for tracked, is_new in self.changes():
            if not is_new:
                tracked.aggregate.version += 1
        for tracked in self.tracked.values():
            tracked.snapshot = _state(tracked.aggregate)
            tracked.aggregate.events.clear()


class FakeOrganizationRepository(_FakeRepository[Organization]):
    async def get_by_phone_number(self, number: str) -> Organization | None:
        return self._first(lambda org: number in org.phone_numbers)


class FakeCallRepository(_FakeRepository[Call]):
    def __init__(self, table: dict[str, Call], recordings: dict[str, Recording] | None = None) -> None:
        super().__init__(table)
        self._recordings = recordings if recordings is not None else {}

    def _recording_of(self, call: Call) -> Recording | None:
        return self._recordings.get(call.recording_id) if call.recording_id else None

    def _recording_status(self, call: Call) -> str:
        from application.views import recording_view

        return recording_view(call, self._recording_of(call)).status

    async def get_by_sid(self, call_sid: str) -> Call | None:
        return self._first(lambda call: call.call_sid == call_sid)

    async def page(self, query: CallQuery) -> list[Call]:
        """Newest first by (started_at, id), strictly after ``query.after``."""
        selected = [
            call
            for call in self._table.values()
            if call.kind in query.kinds
            and call.org_id == query.org_id
            and (query.started_from is None or call.started_at >= query.started_from)
            and (query.started_to is None or call.started_at < query.started_to)
            and (query.after is None or (call.started_at, call.id) < (query.after.started_at, query.after.id))
            and (query.recording_status is None or self._recording_status(call) == query.recording_status)
        ]
        selected.sort(key=lambda call: (call.started_at, call.id), reverse=True)
        return [c for call in selected[: query.limit] if (c := self._remember(call)) is not None]

    async def settling(self, *, ended_before: datetime, limit: int) -> list[Call]:
        from domain.model import SETTLED_STATUSES

        def recording_settled(call: Call) -> bool:
            found = self._recording_of(call)
            return found is None or found.status in SETTLED_STATUSES

        selected = sorted(
            (
                call
                for call in self._table.values()
                if call.settled_at is None
                and call.ended_at is not None
                and call.ended_at <= ended_before
                and recording_settled(call)
            ),
            key=lambda call: (call.ended_at, call.id),
        )
        return [c for call in selected[:limit] if (c := self._remember(call)) is not None]


class FakeRecordingRepository(_FakeRepository[Recording]):
    def __init__(
        self,
        table: dict[str, Recording],
        updated_at: dict[str, datetime] | None = None,
        calls: dict[str, Call] | None = None,
    ) -> None:
        super().__init__(table)
        self._updated_at = updated_at if updated_at is not None else {}
        self._calls = calls if calls is not None else {}

    async def stuck(
        self, *, statuses: Collection[RecordingStatus], updated_before: datetime, limit: int
    ) -> list[Recording]:
        never = datetime.min.replace(tzinfo=UTC)
        found = [
            rec
            for rec in self._table.values()
            if rec.status in statuses and self._updated_at.get(rec.id, never) < updated_before
        ]
        found.sort(key=lambda rec: (self._updated_at.get(rec.id, never), rec.id))
        return [r for rec in found[:limit] if (r := self._remember(rec)) is not None]

    async def get_by_sid(self, recording_sid: str) -> Recording | None:
        return self._first(lambda rec: rec.recording_sid == recording_sid)

    async def get_for_call(self, call_id: str) -> Recording | None:
        """The call's own recording, as committed (``calls.recording_id``)."""
        call = self._calls.get(call_id)
        return self._remember(self._table.get(call.recording_id) if call and call.recording_id else None)

    async def get_for_calls(self, call_ids: list[str]) -> dict[str, Recording]:
        found = [await self.get_for_call(call_id) for call_id in call_ids]
        return {rec.call_id: rec for rec in found if rec is not None}

    async def for_call(self, call_id: str) -> list[Recording]:
        found = sorted(
            (rec for rec in self._table.values() if rec.call_id == call_id),
            key=lambda rec: (rec.requested_at, rec.id),
        )
        return [r for rec in found if (r := self._remember(rec)) is not None]


class FakeAuditLog:
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self.pending: list[Any] = []

    def add(self, entry: Any) -> None:
        self.pending.append(entry)

    async def page(self, *, org_id: str, limit: int, after: Any = None) -> list[Any]:
        return [e for e in reversed(self._db.audit_log) if e.org_id == org_id][:limit]


class FakeOutbox:
    """Reads see what is committed; writes (publish, defer) wait for the unit of work's commit."""

    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self.pending_writes: list[Callable[[], None]] = []

    async def due(self, *, now: datetime, limit: int, exclude_aggregates: set[str]) -> list[OutboxMessage]:
        """Unpublished messages whose next attempt is due, oldest first, one aggregate's in order."""
        rows = sorted(
            (r for r in self._db.outbox if r.published_at is None and r.dead_at is None),
            key=lambda r: r.message.seq,
        )
        waiting: set[str] = set()
        due: list[OutboxMessage] = []
        for row in rows:
            aggregate_id = row.message.aggregate_id
            if aggregate_id in waiting:
                continue  # an earlier message of this aggregate is still unpublished
            waiting.add(aggregate_id)
            if row.next_attempt_at <= now and aggregate_id not in exclude_aggregates:
                due.append(row.message)
        return due[:limit]

    async def mark_published(self, message_id: str, now: datetime) -> None:
        def write() -> None:
            self._row(message_id).published_at = now

        self.pending_writes.append(write)

    async def defer(self, message_id: str, *, next_attempt_at: datetime, error: str) -> None:
        self._failed(message_id, error, next_attempt_at=next_attempt_at)

    async def dead_letter(self, message_id: str, *, now: datetime, error: str) -> None:
        self._failed(message_id, error, dead_at=now)

    def _failed(self, message_id: str, error: str, **values: datetime) -> None:
        def write() -> None:
            row = self._row(message_id)
            for name, value in values.items():
                setattr(row, name, value)
            row.last_error = error
            row.message = dataclasses.replace(row.message, attempts=row.message.attempts + 1)
            row.claimed_by = row.claimed_until = None

        self.pending_writes.append(write)

    async def claim(
        self, *, relay: str, now: datetime, lease: timedelta, limit: int, exclude_aggregates: set[str]
    ) -> list[OutboxMessage]:
        """``due`` without what another relay holds a live lease on; the lease is taken on commit."""
        free = {
            r.message.id
            for r in self._db.outbox
            if r.claimed_until is None or r.claimed_until <= now or r.claimed_by == relay
        }
        due = await self.due(now=now, limit=len(self._db.outbox), exclude_aggregates=exclude_aggregates)
        claimed = [m for m in due if m.id in free][:limit]

        def write() -> None:
            for message in claimed:
                row = self._row(message.id)
                row.claimed_by, row.claimed_until = relay, now + lease

        self.pending_writes.append(write)
        return claimed

    def _row(self, message_id: str) -> OutboxRow:
        return next(r for r in self._db.outbox if r.message.id == message_id)


class FakeProcessedMessages:
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db

    async def contains(self, consumer: str, event_id: str) -> bool:
        return (consumer, event_id) in self._db.processed


# --- unit of work -------------------------------------------------------------------------------


class FakeUnitOfWork:
    organizations: FakeOrganizationRepository
    calls: FakeCallRepository
    recordings: FakeRecordingRepository
    outbox: FakeOutbox
    processed: FakeProcessedMessages
    webhook_endpoints: Any
    webhook_deliveries: Any

    def __init__(
        self,
        db: FakeDatabase,
        clock: Callable[[], datetime],
        *,
        processed_by: tuple[str, str] | None = None,
        on_events_committed: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.processed_by = processed_by
        self.on_events_committed = on_events_committed
        self.committed = False
        self._open = False

    async def __aenter__(self) -> Self:
        self._begin()
        self._open = True
        self.committed = False
        return self

    def _begin(self) -> None:
        self.organizations = FakeOrganizationRepository(self.db.organizations)
        self.calls = FakeCallRepository(self.db.calls, self.db.recordings)
        self.recordings = FakeRecordingRepository(
            self.db.recordings, self.db.recording_updated_at, self.db.calls
        )
        self.outbox = FakeOutbox(self.db)
        self.processed = FakeProcessedMessages(self.db)
        self.audit = FakeAuditLog(self.db)
        from tests.fakes_webhooks import FakeWebhookDeliveryRepository, FakeWebhookEndpointRepository

        self.webhook_endpoints = FakeWebhookEndpointRepository(self.db.webhook_endpoints)
        self.webhook_deliveries = FakeWebhookDeliveryRepository(
            self.db.webhook_deliveries, self.db.webhook_attempts
        )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._open = False  # whatever was not committed is simply forgotten

    @property
    def _repositories(self) -> list[_FakeRepository[Any]]:
        webhooks = [self.webhook_endpoints, self.webhook_deliveries]
        return [self.organizations, self.calls, self.recordings, *webhooks]

    async def commit(self) -> None:
        assert self._open, "commit() outside the unit of work's context"
        while self.db._before_commit:
            await self.db._before_commit.pop(0)()
        now = self.clock()
        self._check_constraints()
        if self.audit.pending and self.db.audit_unwritable:
            raise RuntimeError("audit log unavailable")
        new_events = [e for repo in self._repositories for e in repo.new_events()]
        new_events += [e for entry in self.audit.pending for e in entry.events]
        known_ids = {row.message.id for row in self.db.outbox}
        if any(e.id in known_ids for e in new_events):
            raise ConcurrencyConflict("an event with this id is already in the outbox")
        if self.processed_by is not None and self.processed_by in self.db.processed:
            raise ConcurrencyConflict(f"{self.processed_by} was already processed")
        deliveries_written = bool(self.webhook_deliveries.changes())
        # Nothing below can fail: the commit is all or nothing.
        for tracked, _ in self.recordings.changes():
            self.db.recording_updated_at[tracked.aggregate.id] = now
        for repo in self._repositories:
            repo.write()
        for event in new_events:
            message = OutboxMessage(
                id=event.id,
                seq=next(self.db._seq),
                type=event.type_name(),
                aggregate_type=event.aggregate_type,
                aggregate_id=event.aggregate_id,
                org_id=event.org_id,
                occurred_at=event.occurred_at,
                payload=ev.encode_event(event),
                attempts=0,
            )
            self.db.outbox.append(OutboxRow(message, created_at=now, next_attempt_at=now))
        for write in self.outbox.pending_writes:
            write()
        self.outbox.pending_writes.clear()
        if self.processed_by is not None:
            self.db.processed[self.processed_by] = now
        for repo in self._repositories:
            repo.committed()
        self.db.audit_log.extend(copy.deepcopy(self.audit.pending))
        for entry in self.audit.pending:
            entry.events.clear()
        self.audit.pending.clear()
        self.db.commits += 1
        self.committed = True
        if (new_events or deliveries_written) and self.on_events_committed is not None:
            self.on_events_committed()

    def _check_constraints(self) -> None:
        for repo in self._repositories:
            repo.check()
        self._check_unique(
            self.organizations,
            self.db.organizations,
            lambda org: list(org.phone_numbers),
            "phone number",
        )
        self._check_unique(self.calls, self.db.calls, lambda call: [call.call_sid], "call_sid")
        self._check_unique(
            self.recordings,
            self.db.recordings,
            lambda rec: [rec.recording_sid] if rec.recording_sid else [],
            "recording_sid",
        )

    @staticmethod
    def _check_unique(
        repo: _FakeRepository[A], table: dict[str, A], keys: Callable[[A], list[Any]], what: str
    ) -> None:
        """Emulates a unique index (as the SQL unit of work turns an IntegrityError into a conflict):
        after the commit no key may appear twice, not even twice in one aggregate."""
        after = dict(table)
        for tracked, _ in repo.changes():
            after[tracked.aggregate.id] = tracked.aggregate
        seen: set[Any] = set()
        for aggregate in after.values():
            for key in keys(aggregate):
                if key in seen:
                    raise ConcurrencyConflict(f"duplicate {what} {key!r}")
                seen.add(key)

    async def rollback(self) -> None:
        self._begin()


class FakeUnitOfWorkFactory:
    """Implements ``UnitOfWorkFactory``: every call opens a fresh unit of work on the shared database."""

    def __init__(
        self,
        db: FakeDatabase | None = None,
        clock: FakeClock | None = None,
        on_events_committed: Callable[[], None] | None = None,
    ) -> None:
        self.db = db if db is not None else FakeDatabase()
        self.clock = clock if clock is not None else FakeClock()
        self.on_events_committed = on_events_committed
        self.opened = 0

    def __call__(self, *, processed_by: tuple[str, str] | None = None) -> FakeUnitOfWork:
        self.opened += 1
        return FakeUnitOfWork(
            self.db, self.clock.now, processed_by=processed_by, on_events_committed=self.on_events_committed
        )


# --- wiring -------------------------------------------------------------------------------------


def make_services(
    *,
    db: FakeDatabase | None = None,
    telephony: Telephony | None = None,
    store: InMemoryRecordingStore | None = None,
    clock: FakeClock | None = None,
    public_url: str = PUBLIC_URL,
    platform_lines: dict[str, CallKind] | None = None,
    webhook_sender: Any = None,
    settings: ServiceSettings | None = None,
) -> Services:
    """``Services`` wired to fakes. Pass the fakes you want to look at afterwards; the rest are made."""
    from tests.fakes_webhooks import PlainSecretBox, RecordingWebhookSender

    clock = clock if clock is not None else FakeClock()
    return Services(
        uow_factory=FakeUnitOfWorkFactory(db, clock),
        telephony=telephony if telephony is not None else FakeTelephony(),
        store=store if store is not None else InMemoryRecordingStore(clock=clock.now),
        clock=clock,
        settings=settings
        or ServiceSettings(public_url=public_url, platform_lines=dict(platform_lines or {})),
        webhook_sender=webhook_sender if webhook_sender is not None else RecordingWebhookSender(),
        secret_box=PlainSecretBox(),
    )


@dataclass
class DrainResult:
    delivered: list[OutboxMessage] = field(default_factory=list)
    failures: list[tuple[OutboxMessage, Exception]] = field(default_factory=list)

    @property
    def delivered_types(self) -> list[str]:
        return [m.type for m in self.delivered]


async def drain(
    services: Services,
    *,
    dispatcher: EventDispatcher | None = None,
    max_rounds: int = 100,
    check: bool = True,
) -> DrainResult:
    """Deliver every due outbox message through ``EventDispatcher`` until none is left.

    A message whose handler fails is deferred (it stays in the outbox, due again on the next call)
    and its aggregate is held back for the rest of this call, as the relay would. With ``check``
    (the default) any failure is an error of the test.
    """
    dispatcher = dispatcher if dispatcher is not None else EventDispatcher(services)
    result = DrainResult()
    held_back: set[str] = set()
    for _ in range(max_rounds):
        async with services.uow_factory() as uow:
            due = await uow.outbox.due(now=services.clock.now(), limit=1000, exclude_aggregates=held_back)
        if not due:
            break
        for message in due:
            try:
                await dispatcher.dispatch(ev.decode_event(message.type, message.payload))
            except Exception as exc:
                held_back.add(message.aggregate_id)
                result.failures.append((message, exc))
                async with services.uow_factory() as uow:
                    await uow.outbox.defer(message.id, next_attempt_at=services.clock.now(), error=str(exc))
                    await uow.commit()
                continue
            async with services.uow_factory() as uow:
                await uow.outbox.mark_published(message.id, services.clock.now())
                await uow.commit()
            result.delivered.append(message)
    else:
        raise RuntimeError(f"the outbox did not drain in {max_rounds} rounds")
    if check and result.failures:
        detail = "; ".join(f"{m.type}: {type(e).__name__}: {e}" for m, e in result.failures)
        raise AssertionError(f"event handlers failed while draining: {detail}")
    return result
