"""Ports: everything the application needs from the outside world, as Protocols.

Adapters in ``adapters/`` implement these; the composition root in ``entrypoints/`` picks which.
Nothing here imports an infrastructure library.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from domain.audit import AuditEntry
from domain.erasure import ErasureRequest
from domain.model import Call, CallKind, Organization, ProviderRecordingStatus, Recording, RecordingStatus
from domain.webhooks import DeliveryAttempt, SendResult, WebhookDelivery, WebhookEndpoint


class Clock(Protocol):
    """Tells the time. Always timezone-aware UTC."""

    def now(self) -> datetime: ...


# --- telephony (Twilio) -------------------------------------------------------------------------


class TelephonyError(Exception):
    """A telephony call failed in a way that may succeed if retried (network, 5xx, 429)."""


class MediaNotFound(TelephonyError):
    """The provider holds no media for this recording (404)."""


@dataclass(frozen=True)
class MediaStream:
    """An open download of a recording's audio; ``chunks`` yields it piece by piece."""

    content_type: str
    content_length: int | None
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class ProviderRecording:
    """A recording as the provider lists it.

    ``status`` is None for a state the service does not know (it looks again later); ``capturing`` is
    whether audio is still being captured (a stopped recording the provider is still finishing is
    ``CAPTURING`` but not capturing). ``duration_s`` is None until the provider knows it.
    """

    sid: str
    call_sid: str
    status: ProviderRecordingStatus | None
    capturing: bool = False
    duration_s: int | None = None
    media_url: str | None = None
    error_code: str | None = None


class Telephony(Protocol):
    """The telephony provider's REST API (Twilio in production)."""

    async def start_recording(self, call_sid: str, status_callback_url: str) -> str:
        """Start a dual-channel recording of a live call; returns the provider's recording id.

        Status callbacks go to ``status_callback_url`` for in-progress, completed and absent.
        """
        ...

    async def stop_recording(self, call_sid: str, recording_sid: str) -> None:
        """Stop an in-progress recording (the provider then reports it completed)."""
        ...

    async def pause_recording(self, call_sid: str, recording_sid: str, *, pause_behavior: str) -> bool:
        """Pause capture of a live recording (``pause_behavior``: ``silence`` keeps the gap as
        silence, ``skip`` leaves it out). Pausing a paused one changes nothing. Returns False when
        the provider no longer holds the recording (404), True otherwise."""
        ...

    async def resume_recording(self, call_sid: str, recording_sid: str) -> bool:
        """Resume capture of a paused recording (a live one stays so); False on 404."""
        ...

    def open_media(
        self, recording_sid: str, media_url: str | None = None
    ) -> AbstractAsyncContextManager[MediaStream]:
        """Open the recording's audio (mp3) as a stream, never holding it whole in memory.

        ``media_url`` is the provider's ``RecordingUrl`` when known; an adapter may ignore it and
        build the URL itself (it must never send credentials to a host it does not trust).
        Raises ``MediaNotFound`` when the provider has no such recording.
        """
        ...

    async def delete_recording(self, recording_sid: str) -> bool:
        """Delete the provider's copy. Returns False when it was already gone (404), True otherwise."""
        ...

    async def list_call_recordings(self, call_sid: str) -> list[ProviderRecording]:
        """The recordings the provider holds for a call (not those deleted), newest first.

        A call the provider does not know (404) has none: an empty list, not an error.
        How the reconciliation sweep finds what a lost status callback never told us.
        """
        ...


# --- recording store ----------------------------------------------------------------------------


class StorageError(Exception):
    """The recording store failed; the operation may be retried."""


@dataclass(frozen=True)
class StoredObject:
    """What the store holds under a key, as measured by the store."""

    key: str
    size: int
    sha256: str  # lowercase hex
    content_type: str
    # The checksum the storage service itself computed from the bytes it received and keeps with the
    # object (S3's composite SHA-256 of a multipart upload), when there is one; not compared.
    checksum: str | None = field(default=None, compare=False)


class RecordingStore(Protocol):
    """Durable storage for recording audio (a filesystem or an S3 bucket)."""

    max_url_lifetime: timedelta

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        metadata: Mapping[str, str],
    ) -> StoredObject:
        """Stream ``chunks`` into ``key`` (overwriting: writing a key twice is idempotent).

        The object becomes visible only once complete. Returns size and SHA-256 of what was written.
        """
        ...

    async def verify(self, key: str) -> StoredObject | None:
        """Measure what is stored under ``key`` right now (size and SHA-256), or None if absent."""
        ...

    async def confirm(self, written: StoredObject) -> bool:
        """Whether ``written.key`` holds what ``put`` returned as ``written``, by the cheapest proof
        that does not take the writer's word for it: a measuring read (``verify``), or, where the
        storage service computed ``written.checksum`` from the bytes it received, that checksum and
        the length as the service reports them now."""
        ...

    async def signed_url(
        self, key: str, *, expires_in: timedelta, download_filename: str | None = None
    ) -> str:
        """A short-lived URL that serves the object (with HTTP Range), optionally as an attachment.

        ``expires_in`` is capped at ``max_url_lifetime``.
        """
        ...

    async def delete(self, key: str) -> None:
        """Remove the object for good: on a versioned bucket every version and delete marker of
        ``key`` too, so nothing can restore it. Deleting a missing key is not an error."""
        ...


# --- webhooks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookMessage:
    """One try of one webhook: the exact body to sign and send, and the secrets that sign it."""

    url: str
    message_id: str  # the ``webhook-id`` header: the same on every try
    body: bytes
    secrets: tuple[str, ...]  # ``whsec_…``; each adds a signature (two during a rotation)


class WebhookSender(Protocol):
    """Sends Standard Webhooks v1 messages to subscriber URLs, never to our own networks."""

    async def check_target(self, url: str) -> None:
        """Raise ``WebhookTargetRefused`` for a URL that must not be used (scheme, or a host that
        resolves to a loopback, private, link-local, metadata or otherwise non-public address)."""
        ...

    async def send(self, message: WebhookMessage) -> SendResult:
        """Sign and POST ``message.body`` byte for byte; the target is checked again first.

        Never raises for what the receiver or the network did: a refused target, a timeout or a
        connection error comes back as a result without a status code.
        """
        ...


class SecretBox(Protocol):
    """Keeps webhook signing secrets unreadable at rest (a database dump does not hand them out)."""

    def seal(self, secret: str) -> str: ...

    def open(self, sealed: str) -> str: ...


# --- persistence: the unit of work and its repositories -----------------------------------------
# The unit of work and repository ports.
#
# A unit of work is one transaction: every aggregate it loaded or added is saved on ``commit()``
# (with an optimistic version check), together with the aggregates' new events in the outbox and, for
# an event consumer, the ``(consumer, event id)`` marker that makes a redelivery a no-op. Leaving the
# context without ``commit()`` rolls everything back. Use one unit of work per message, never a
# shared one.


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
    # Newer than this position instead (oldest first, then; ``after`` must be None).
    before: CallCursor | None = None
    # Callers whose number starts with this (E.164: "+" and digits, as ``normalize_caller`` gives).
    caller_prefix: str | None = None
    # Leave out calls settled as non-engagement, or judged so by the scorability filter.
    hide_non_engagement: bool = False


class OrganizationRepository(Protocol):
    def add(self, org: Organization) -> None: ...
    async def get(self, org_id: str) -> Organization | None: ...
    async def get_by_phone_number(self, number: str) -> Organization | None: ...
    async def with_retention(self) -> list[Organization]:
        """The organizations whose recordings are kept a limited time (``retention_days`` set)."""
        ...


class CallRepository(Protocol):
    def add(self, call: Call) -> None: ...
    async def get(self, call_id: str) -> Call | None: ...
    async def get_by_sid(self, call_sid: str) -> Call | None: ...
    async def page(self, query: CallQuery) -> list[Call]:
        """Newest first by (started_at, id), strictly after ``query.after``; with ``query.before``,
        oldest first, strictly before it (the page of newer calls, to be shown reversed)."""
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

    async def paused_too_long(self, *, paused_before: datetime, limit: int) -> list[Recording]:
        """Recordings paused since before ``paused_before``, or paused while their call has ended,
        longest paused first: the automatic resume's work list."""
        ...

    async def past_retention(
        self, *, org_id: str, started_before: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[Recording]:
        """The org's recordings holding audio (archived, or completed at Twilio) of calls started
        before ``started_before`` and not under legal hold, by (call start, id) after ``after``."""
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

    async def mark_all_published(self, message_ids: Sequence[str], now: datetime) -> None:
        """``mark_published`` for several messages, in one statement."""
        ...

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


@dataclass(frozen=True)
class AuditCursor:
    """Keyset position in an org's audit log: the last entry of the previous page."""

    occurred_at: datetime
    id: str


class AuditLog(Protocol):
    def add(self, entry: AuditEntry) -> None:
        """Append an entry; it is chained and written (with its events) on commit, or the commit fails.

        Appends are serialised: concurrent commits never give two entries the same place in the chain.
        """
        ...

    async def page(self, *, org_id: str, limit: int, after: AuditCursor | None = None) -> list[AuditEntry]:
        """The org's entries, newest first by (occurred_at, id), strictly after ``after``."""
        ...


class ErasureRequestRepository(Protocol):
    def add(self, request: ErasureRequest) -> None: ...
    async def get(self, request_id: str) -> ErasureRequest | None: ...
    async def calls_of_caller(self, org_id: str, numbers: list[str]) -> list[str]:
        """Ids of the org's calls whose caller (``from``) is one of ``numbers``, oldest first."""
        ...

    async def redact_stored_copies(self, call_id: str, original: str, redacted: str) -> None:
        """Replace the caller number in what is stored of the call besides the call itself: its events
        in the outbox and its webhook deliveries' payloads."""
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
    @property
    def erasure_requests(self) -> ErasureRequestRepository: ...

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
    def __call__(self, *, processed_by: tuple[str, str] | None = None, read_only: bool = False) -> UnitOfWork:
        """A fresh unit of work; ``processed_by=(consumer, event_id)`` is recorded on commit.
        ``read_only``: it only reads (no commit), and takes no lock or transaction it need not."""
        ...


CommitListener = Callable[[], None]


class EventPublisher(Protocol):
    async def publish(self, message: OutboxMessage) -> None:
        """Deliver one committed event; raise if it was not delivered."""
        ...


@runtime_checkable
class BatchEventPublisher(EventPublisher, Protocol):
    """A publisher that delivers many events at once cheaper than one by one (Kafka batches them)."""

    async def publish_all(self, messages: Sequence[OutboxMessage]) -> list[Exception | None]:
        """Deliver the messages (of different aggregates); for each, None or why it was not delivered."""
        ...
