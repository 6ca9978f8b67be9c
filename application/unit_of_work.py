"""The unit of work and repository ports.

A unit of work is one transaction: every aggregate it loaded or added is saved on ``commit()``
(with an optimistic version check), together with the aggregates' new events in the outbox and, for
an event consumer, the ``(consumer, event id)`` marker that makes a redelivery a no-op. Leaving the
context without ``commit()`` rolls everything back. Use one unit of work per message, never a
shared one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

from domain.audit import AuditEntry
from domain.model import Call, CallKind, Organization, Recording, RecordingStatus
from domain.webhooks import DeliveryAttempt, WebhookDelivery, WebhookEndpoint


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
    # available | processing | not_recorded | failed, as ``application.views.recording_view`` says
    recording_status: str | None = None


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

    async def settling(self, *, ended_before: datetime, limit: int) -> list[Call]:
        """Ended calls not settled yet, ended before ``ended_before``, whose recording has settled
        (or that have none), oldest end first: those whose scorability wait is over."""
        ...


class RecordingRepository(Protocol):
    def add(self, recording: Recording) -> None: ...
    async def get(self, recording_id: str) -> Recording | None: ...
    async def get_by_sid(self, recording_sid: str) -> Recording | None: ...
    async def get_for_call(self, call_id: str) -> Recording | None:
        """The call's recording (``Call.recording_id``), never one of its additional recordings."""
        ...

    async def get_for_calls(self, call_ids: list[str]) -> dict[str, Recording]:
        """Each call's recording, as ``get_for_call``, by call id."""
        ...

    async def for_call(self, call_id: str) -> list[Recording]:
        """Every recording of the call, its own and the additional ones, oldest first."""
        ...

    async def stuck(
        self, *, statuses: Collection[RecordingStatus], updated_before: datetime, limit: int
    ) -> list[Recording]:
        """Recordings in one of ``statuses`` whose last write is older than ``updated_before``
        (least recently written first): the reconciliation sweep's work list."""
        ...


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

    async def claim(
        self,
        *,
        relay: str,
        now: datetime,
        lease: timedelta,
        limit: int,
        exclude_aggregates: set[str],
    ) -> list[OutboxMessage]:
        """Like ``due``, and lease the messages to ``relay`` until ``now + lease`` (on commit).

        Messages another relay holds an unexpired lease on are left out, so several relays can share
        one outbox without publishing a message twice in a row of work; one aggregate's messages
        still go out one after another, in order.
        """
        ...

    async def mark_published(self, message_id: str, now: datetime) -> None: ...

    async def defer(self, message_id: str, *, next_attempt_at: datetime, error: str) -> None: ...

    async def dead_letter(self, message_id: str, *, now: datetime, error: str) -> None:
        """Stop retrying a message that kept failing: it waits, listed, for ``callrec dlq replay``.

        A dead message no longer holds up its aggregate's later messages.
        """
        ...


@dataclass(frozen=True)
class DeliveryCursor:
    """Keyset position in an endpoint's deliveries: the last row of the previous page."""

    created_at: datetime
    id: str


class WebhookEndpointRepository(Protocol):
    def add(self, endpoint: WebhookEndpoint) -> None: ...
    async def get(self, endpoint_id: str) -> WebhookEndpoint | None: ...
    async def for_org(self, org_id: str) -> list[WebhookEndpoint]:
        """The org's endpoints that are not deleted, oldest first."""
        ...


class WebhookDeliveryRepository(Protocol):
    def add(self, delivery: WebhookDelivery) -> None: ...
    async def get(self, delivery_id: str) -> WebhookDelivery | None: ...
    async def due(self, *, now: datetime, limit: int) -> list[WebhookDelivery]:
        """Pending deliveries whose next try is due and that nobody holds a live claim on, the
        longest overdue first (locked for this transaction where the database can)."""
        ...

    async def for_endpoint(
        self, endpoint_id: str, *, limit: int, after: DeliveryCursor | None = None
    ) -> list[WebhookDelivery]:
        """Newest first by (created_at, id), strictly after ``after``."""
        ...

    async def pending_for_call(self, call_id: str) -> list[WebhookDelivery]: ...
    async def attempts(self, delivery_ids: list[str]) -> dict[str, list[DeliveryAttempt]]:
        """Every recorded try of these deliveries, in order."""
        ...


class ProcessedMessages(Protocol):
    async def contains(self, consumer: str, event_id: str) -> bool: ...


class AuditLog(Protocol):
    def add(self, entry: AuditEntry) -> None:
        """Append an entry; it is written (with its event) on commit, or the commit fails."""
        ...


class UnitOfWork(Protocol):
    # Read-only members: an adapter's own repository types satisfy them (a mutable protocol attribute
    # would demand exactly these types).
    @property
    def audit(self) -> AuditLog: ...
    @property
    def organizations(self) -> OrganizationRepository: ...
    @property
    def calls(self) -> CallRepository: ...
    @property
    def recordings(self) -> RecordingRepository: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def processed(self) -> ProcessedMessages: ...
    @property
    def webhook_endpoints(self) -> WebhookEndpointRepository: ...
    @property
    def webhook_deliveries(self) -> WebhookDeliveryRepository: ...

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
