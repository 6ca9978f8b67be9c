"""The unit of work and repository ports.

A unit of work is one transaction: every aggregate it loaded or added is saved on ``commit()``
(with an optimistic version check), together with the aggregates' new events in the outbox and, for
an event consumer, the ``(consumer, event id)`` marker that makes a redelivery a no-op. Leaving the
context without ``commit()`` rolls everything back. Use one unit of work per message, never a
shared one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from domain.model import Call, CallKind, Organization, Recording


@dataclass(frozen=True)
class CallCursor:
    """Keyset position: the last row of the previous page."""

    started_at: datetime
    id: str


@dataclass(frozen=True)
class CallQuery:
    org_id: str | None
    kinds: tuple[CallKind, ...] = (CallKind.CUSTOMER,)
    limit: int = 50
    after: CallCursor | None = None
    started_from: datetime | None = None
    started_to: datetime | None = None


class OrganizationRepository(Protocol):
    def add(self, org: Organization) -> None: ...
    async def get(self, org_id: str) -> Organization | None: ...
    async def get_by_phone_number(self, number: str) -> Organization | None: ...


class CallRepository(Protocol):
    def add(self, call: Call) -> None: ...
    async def get(self, call_id: str) -> Call | None: ...
    async def get_by_sid(self, call_sid: str) -> Call | None: ...
    async def page(self, query: CallQuery) -> list[Call]:
        """Newest first by (started_at, id), strictly after ``query.after``."""
        ...


class RecordingRepository(Protocol):
    def add(self, recording: Recording) -> None: ...
    async def get(self, recording_id: str) -> Recording | None: ...
    async def get_for_call(self, call_id: str) -> Recording | None: ...
    async def get_for_calls(self, call_ids: list[str]) -> dict[str, Recording]: ...


@dataclass(frozen=True)
class OutboxMessage:
    """A committed event waiting to be published."""

    id: str  # the event id
    seq: int
    type: str
    aggregate_type: str
    aggregate_id: str
    org_id: str | None
    occurred_at: datetime
    payload: bytes  # the event as JSON
    attempts: int


class Outbox(Protocol):
    async def due(self, *, now: datetime, limit: int, exclude_aggregates: set[str]) -> list[OutboxMessage]:
        """Unpublished messages whose next attempt is due, oldest first."""
        ...

    async def mark_published(self, message_id: str, now: datetime) -> None: ...

    async def defer(self, message_id: str, *, next_attempt_at: datetime, error: str) -> None: ...


class ProcessedMessages(Protocol):
    async def contains(self, consumer: str, event_id: str) -> bool: ...


class UnitOfWork(Protocol):
    organizations: OrganizationRepository
    calls: CallRepository
    recordings: RecordingRepository
    outbox: Outbox
    processed: ProcessedMessages

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None:
        """Save every touched aggregate, its events and the consumer marker, atomically.

        Raises ``ConcurrencyConflict`` when an aggregate changed since it was read.
        """
        ...

    async def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, processed_by: tuple[str, str] | None = None) -> UnitOfWork:
        """A fresh unit of work; ``processed_by=(consumer, event_id)`` is recorded on commit."""
        ...


CommitListener = Callable[[], None]
