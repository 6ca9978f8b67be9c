"""Webhook endpoints and deliveries: who is told what, when, and what to do when they do not answer.

``WebhookEndpoint`` is an org's subscriber URL with its signing secrets (kept sealed: the domain
never sees them in the clear) and its health: an endpoint that answers 410 Gone, or fails for five
days straight, is disabled with a reason its org's admins can read. ``WebhookDelivery`` is one
message to one endpoint, with the Standard Webhooks retry schedule; each try is a
``DeliveryAttempt``. No I/O here: the application sends, the domain decides what happens next.
"""

from __future__ import annotations

import base64
import enum
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain import events
from domain.errors import InvalidTransition, InvalidValue

CALL_ENDED = "call.ended"
EVENT_TYPES = frozenset({CALL_ENDED})

SECRET_PREFIX = "whsec_"
# After a rotation the previous secret still signs (alongside the new one) for this long.
SECRET_OVERLAP = timedelta(hours=24)
# An endpoint whose every delivery failed for this long is disabled.
DISABLE_AFTER_FAILING_FOR = timedelta(days=5)

# The wait before each try: immediately, then after each failure 5 s, 5 min, 30 min, 2 h, 5 h, 10 h
# and 10 h (Standard Webhooks' reference schedule). After the last one the delivery is exhausted.
RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(0),
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_SCHEDULE)
JITTER = 0.1  # each wait is stretched or shrunk by up to 10 %
# A receiver's Retry-After is honoured, up to this long (a hostile header must not park a delivery).
MAX_RETRY_AFTER = timedelta(hours=10)


def new_webhook_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes, as Standard Webhooks libraries expect."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def retry_delay(
    attempts_made: int, *, jitter: float = 1.0, retry_after: timedelta | None = None
) -> timedelta:
    """How long to wait after ``attempts_made`` tries have failed (``jitter`` in [1-JITTER, 1+JITTER]).

    A receiver's ``Retry-After`` (429 or 5xx) is honoured: never sooner than it asked, up to
    ``MAX_RETRY_AFTER``.
    """
    if not 1 <= attempts_made < MAX_ATTEMPTS:
        raise InvalidTransition(f"no retry after {attempts_made} attempts")
    if not 1 - JITTER <= jitter <= 1 + JITTER:
        raise InvalidValue(f"jitter {jitter} is out of bounds")
    delay = RETRY_SCHEDULE[attempts_made] * jitter
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


# --- endpoints ----------------------------------------------------------------------------------


class EndpointStatus(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    DELETED = "deleted"


@dataclass(frozen=True)
class SealedSecret:
    """A signing secret as stored: encrypted by the application's ``SecretBox``."""

    sealed: str
    created_at: datetime
    expires_at: datetime | None = None  # set when a rotation retires it

    def valid_at(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


class WebhookEndpoint:
    def __init__(
        self,
        *,
        id: str,
        org_id: str,
        url: str,
        event_types: list[str],
        secrets: list[SealedSecret],
        status: EndpointStatus,
        created_at: datetime,
        disabled_reason: str | None = None,
        disabled_at: datetime | None = None,
        failing_since: datetime | None = None,
        deleted_at: datetime | None = None,
        version: int = 0,
    ) -> None:
        self.id = id
        self.org_id = org_id
        self.url = url
        self.event_types = list(event_types)
        self.secrets = list(secrets)  # newest first
        self.status = status
        self.created_at = created_at
        self.disabled_reason = disabled_reason
        self.disabled_at = disabled_at
        self.failing_since = failing_since
        self.deleted_at = deleted_at
        self.version = version
        self.events: list[events.Event] = []

    @classmethod
    def register(
        cls, *, id: str, org_id: str, url: str, event_types: list[str], sealed_secret: str, now: datetime
    ) -> WebhookEndpoint:
        wanted = list(dict.fromkeys(event_types))
        unknown = set(wanted) - EVENT_TYPES
        if not wanted or unknown:
            raise InvalidTransition(f"events must be among {sorted(EVENT_TYPES)}")
        return cls(
            id=id,
            org_id=org_id,
            url=url,
            event_types=wanted,
            secrets=[SealedSecret(sealed_secret, now)],
            status=EndpointStatus.ACTIVE,
            created_at=now,
        )

    @property
    def active(self) -> bool:
        return self.status == EndpointStatus.ACTIVE

    def wants(self, event_type: str) -> bool:
        return self.active and event_type in self.event_types

    def signing_secrets(self, now: datetime) -> list[str]:
        """The sealed secrets that sign a message sent now (two during a rotation's overlap)."""
        return [s.sealed for s in self.secrets if s.valid_at(now)]

    def rotate_secret(self, sealed_secret: str, now: datetime) -> None:
        """A new secret signs from now on; the current one keeps signing for ``SECRET_OVERLAP``."""
        if self.status == EndpointStatus.DELETED:
            raise InvalidTransition("the endpoint is deleted")
        retiring = [
            SealedSecret(s.sealed, s.created_at, s.expires_at or now + SECRET_OVERLAP)
            for s in self.secrets
            if s.valid_at(now)
        ]
        self.secrets = [SealedSecret(sealed_secret, now), *retiring]

    def delete(self, now: datetime) -> None:
        if self.status != EndpointStatus.DELETED:
            self.status = EndpointStatus.DELETED
            self.deleted_at = now

    def delivered(self, outcome: AttemptOutcome, now: datetime) -> None:
        """Learn from one delivery attempt: a success clears the failure streak; 410 Gone or five
        days of nothing but failures disable the endpoint."""
        if not self.active:
            return
        if outcome == AttemptOutcome.SUCCEEDED:
            self.failing_since = None
            return
        if outcome == AttemptOutcome.GONE:
            self._disable("the endpoint answered 410 Gone", now)
            return
        if self.failing_since is None:
            self.failing_since = now
        elif now - self.failing_since >= DISABLE_AFTER_FAILING_FOR:
            self._disable(
                f"every delivery failed since {self.failing_since.isoformat()} "
                f"({DISABLE_AFTER_FAILING_FOR.days} days)",
                now,
            )

    def _disable(self, reason: str, now: datetime) -> None:
        self.status = EndpointStatus.DISABLED
        self.disabled_reason = reason
        self.disabled_at = now
        self.events.append(
            events.WebhookEndpointDisabled(
                occurred_at=now, org_id=self.org_id, endpoint_id=self.id, url=self.url, reason=reason
            )
        )


# --- deliveries ---------------------------------------------------------------------------------


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its next try
    SUCCEEDED = "succeeded"
    EXHAUSTED = "exhausted"  # every try of the schedule failed
    FAILED = "failed"  # the endpoint answered 410 Gone: no more tries
    CANCELLED = "cancelled"  # the endpoint was deleted or disabled, or the call turned non-engagement


FINAL_STATUSES = frozenset(
    {DeliveryStatus.SUCCEEDED, DeliveryStatus.EXHAUSTED, DeliveryStatus.FAILED, DeliveryStatus.CANCELLED}
)


class AttemptOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"  # 2xx
    GONE = "gone"  # 410
    FAILED = "failed"  # anything else: 3xx (never followed), 4xx, 5xx, timeout, refused target


@dataclass(frozen=True)
class SendResult:
    """What one HTTP try came back with (``status_code`` None when no response was read)."""

    status_code: int | None
    latency_ms: int
    error: str | None = None
    retry_after: timedelta | None = None

    @property
    def outcome(self) -> AttemptOutcome:
        if self.status_code is not None and 200 <= self.status_code < 300:
            return AttemptOutcome.SUCCEEDED
        if self.status_code == 410:
            return AttemptOutcome.GONE
        return AttemptOutcome.FAILED

    @property
    def honoured_retry_after(self) -> timedelta | None:
        """``Retry-After`` counts only on 429 and 5xx."""
        if self.status_code is not None and (self.status_code == 429 or self.status_code >= 500):
            return self.retry_after
        return None


@dataclass(frozen=True)
class DeliveryAttempt:
    delivery_id: str
    number: int
    attempted_at: datetime
    outcome: AttemptOutcome
    status_code: int | None
    latency_ms: int
    error: str | None
    next_attempt_at: datetime | None  # None: no further try scheduled


@dataclass
class WebhookDelivery:
    """One message (``message_id``, the ``webhook-id`` header, same on every try) to one endpoint.

    ``payload`` is the body without ``recording_url``: that is minted fresh for every try from
    ``recording_key``, so a retry days later still carries a URL that works.
    """

    id: str
    endpoint_id: str
    org_id: str
    message_id: str
    event_type: str
    call_id: str | None
    payload: str
    recording_key: str | None
    status: DeliveryStatus
    created_at: datetime
    next_attempt_at: datetime | None
    attempt_count: int = 0
    claimed_until: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    completed_at: datetime | None = None
    version: int = 0
    new_attempts: list[DeliveryAttempt] = field(default_factory=list, compare=False, repr=False)
    events: list[events.Event] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def create(
        cls,
        *,
        id: str,
        endpoint_id: str,
        org_id: str,
        message_id: str,
        event_type: str,
        call_id: str | None,
        payload: str,
        recording_key: str | None,
        now: datetime,
    ) -> WebhookDelivery:
        """A new delivery, due immediately."""
        return cls(
            id=id,
            endpoint_id=endpoint_id,
            org_id=org_id,
            message_id=message_id,
            event_type=event_type,
            call_id=call_id,
            payload=payload,
            recording_key=recording_key,
            status=DeliveryStatus.PENDING,
            created_at=now,
            next_attempt_at=now,
        )

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def due(self, now: datetime) -> bool:
        return (
            self.status == DeliveryStatus.PENDING
            and self.next_attempt_at is not None
            and self.next_attempt_at <= now
            and (self.claimed_until is None or self.claimed_until <= now)
        )

    def claim(self, now: datetime, lease: timedelta) -> None:
        """A sender takes this try; nobody else sends it until ``now + lease``."""
        if not self.due(now):
            raise InvalidTransition(f"delivery {self.id} is not due")
        self.claimed_until = now + lease

    def attempted(self, result: SendResult, now: datetime, *, jitter: float = 1.0) -> DeliveryAttempt:
        """Record one try and decide what happens next: done, the next try of the schedule, or
        exhausted. A manual retry beyond the schedule that fails leaves it exhausted again. A try
        that raced a cancellation is recorded and changes nothing else."""
        was_final = self.final
        self.attempt_count += 1
        self.claimed_until = None
        self.last_status_code = result.status_code
        self.last_error = result.error
        outcome = result.outcome
        next_at: datetime | None = None
        if was_final:
            pass
        elif outcome == AttemptOutcome.SUCCEEDED:
            self._finish(DeliveryStatus.SUCCEEDED, now)
        elif outcome == AttemptOutcome.GONE:
            self._finish(DeliveryStatus.FAILED, now)
        elif self.attempt_count >= MAX_ATTEMPTS:
            self._finish(DeliveryStatus.EXHAUSTED, now)
        else:
            next_at = now + retry_delay(
                self.attempt_count, jitter=jitter, retry_after=result.honoured_retry_after
            )
            self.next_attempt_at = next_at
        attempt = DeliveryAttempt(
            delivery_id=self.id,
            number=self.attempt_count,
            attempted_at=now,
            outcome=outcome,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            error=result.error,
            next_attempt_at=next_at,
        )
        self.new_attempts.append(attempt)
        return attempt

    def _finish(self, status: DeliveryStatus, now: datetime) -> None:
        self.status = status
        self.next_attempt_at = None
        self.completed_at = now

    def cancel(self, reason: str, now: datetime) -> None:
        """No more tries (the endpoint went away, or the call turned out to be non-engagement)."""
        if self.final:
            return
        self.last_error = reason
        self.claimed_until = None
        self._finish(DeliveryStatus.CANCELLED, now)

    def retry_now(self, now: datetime) -> None:
        """An admin asked for another try now: a pending delivery is brought forward, a finished one
        gets one more try (and, failing, stays where the schedule left it)."""
        if self.status == DeliveryStatus.PENDING:
            if self.next_attempt_at is None or self.next_attempt_at > now:
                self.next_attempt_at = now
            return
        self.status = DeliveryStatus.PENDING
        self.next_attempt_at = now
        self.completed_at = None
        self.claimed_until = None
