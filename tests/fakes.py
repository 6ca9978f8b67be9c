"""The outside world's fakes for the unit tier, and the glue that wires them to the real database.

Persistence is never faked: ``make_services`` opens the real ``SqlAlchemyUnitOfWork`` on the test's
migrated SQLite copy (``tests.support.database.Database``). What stands in is what lies outside the
service: the clock, Twilio (``FakeTelephony``), the recording store (``InMemoryRecordingStore``), the
webhook sender and the secret box; each passes the contract suite of the adapter it replaces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from application.messagebus import EventDispatcher
from application.ports import OutboxMessage, RecordingStore, Telephony, WebhookSender
from application.services import Services, ServiceSettings
from domain import events as ev
from domain.model import CallKind
from tests.fakes_store import InMemoryRecordingStore
from tests.fakes_telephony import FakeTelephony
from tests.fakes_webhooks import PlainSecretBox, RecordingWebhookSender
from tests.support.database import Database, UnitOfWorkFactory

__all__ = [
    "PUBLIC_URL",
    "DrainResult",
    "FakeClock",
    "FakeTelephony",
    "InMemoryRecordingStore",
    "PlainSecretBox",
    "RecordingWebhookSender",
    "drain",
    "make_services",
]

PUBLIC_URL = "https://callrec.test"

# --- clock --------------------------------------------------------------------------------------


class FakeClock:
    """A clock that stands still until told otherwise. Always timezone-aware UTC, never turned back."""

    def __init__(self, now: datetime | None = None) -> None:
        self._now = _utc(now or datetime(2026, 11, 2, 15, 0, tzinfo=UTC))

    def now(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        if _utc(now) < self._now:
            raise ValueError(f"a clock does not go back from {self._now} to {now}")
        self._now = _utc(now)

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """``advance(timedelta(seconds=5))`` or ``advance(seconds=5)``; returns the new time."""
        self.set(self._now + (delta or timedelta()) + timedelta(**kwargs))
        return self._now


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("FakeClock needs a timezone-aware datetime")
    return moment.astimezone(UTC)


# --- wiring -------------------------------------------------------------------------------------


def make_services(
    *,
    db: Database,
    telephony: Telephony | None = None,
    store: RecordingStore | None = None,
    clock: FakeClock | None = None,
    public_url: str = PUBLIC_URL,
    platform_lines: dict[str, CallKind] | None = None,
    webhook_sender: WebhookSender | None = None,
    settings: ServiceSettings | None = None,
    on_events_committed: Callable[[], None] | None = None,
) -> Services:
    """``Services`` on ``db`` and fakes. Pass the fakes you want to look at afterwards; the rest are made."""
    clock = clock if clock is not None else FakeClock()
    return Services(
        uow_factory=UnitOfWorkFactory(db, clock.now, on_events_committed),
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
