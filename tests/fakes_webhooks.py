"""Fakes for webhooks: in-memory repositories, a sender that records and answers as told, a secret box.

The repositories plug into ``FakeUnitOfWork`` (tests/fakes.py) with the same semantics as the
others: copies in, versions checked on commit, a delivery's new attempts stored with it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from application.errors import WebhookTargetRefused
from application.ports import DeliveryCursor, WebhookMessage
from domain.webhooks import (
    DeliveryAttempt,
    DeliveryStatus,
    EndpointStatus,
    SendResult,
    WebhookDelivery,
    WebhookEndpoint,
)
from tests.fakes import _FakeRepository


class FakeWebhookEndpointRepository(_FakeRepository[Any]):
    async def for_org(self, org_id: str) -> list[WebhookEndpoint]:
        found = sorted(
            (e for e in self._table.values() if e.org_id == org_id and e.status != EndpointStatus.DELETED),
            key=lambda e: (e.created_at, e.id),
        )
        return [e for stored in found if (e := self._remember(stored)) is not None]


class FakeWebhookDeliveryRepository(_FakeRepository[Any]):
    def __init__(self, table: dict[str, WebhookDelivery], attempts: dict[str, list[DeliveryAttempt]]) -> None:
        super().__init__(table)
        self._attempts = attempts

    def check(self) -> None:
        super().check()
        after = {**self._table, **{t.aggregate.id: t.aggregate for t, _ in self.changes()}}
        keys = [(d.endpoint_id, d.message_id) for d in after.values()]
        if len(keys) != len(set(keys)):
            from application.errors import ConcurrencyConflict

            raise ConcurrencyConflict("duplicate delivery of one message to one endpoint")

    def write(self) -> None:
        for tracked, _ in self.changes():
            self._attempts.setdefault(tracked.aggregate.id, []).extend(tracked.aggregate.new_attempts)
        super().write()
        for delivery in self._table.values():
            delivery.new_attempts = []

    def committed(self) -> None:
        for tracked in self.tracked.values():
            tracked.aggregate.new_attempts.clear()
        super().committed()

    def _select(self, predicate: Callable[[WebhookDelivery], bool]) -> list[WebhookDelivery]:
        return [d for d in self._table.values() if predicate(d)]

    async def due(self, *, now: datetime, limit: int) -> list[WebhookDelivery]:
        found = sorted(self._select(lambda d: d.due(now)), key=lambda d: (d.next_attempt_at, d.id))
        return [d for stored in found[:limit] if (d := self._remember(stored)) is not None]

    async def for_endpoint(
        self, endpoint_id: str, *, limit: int, after: DeliveryCursor | None = None
    ) -> list[WebhookDelivery]:
        found = sorted(
            self._select(
                lambda d: (
                    d.endpoint_id == endpoint_id
                    and (after is None or (d.created_at, d.id) < (after.created_at, after.id))
                )
            ),
            key=lambda d: (d.created_at, d.id),
            reverse=True,
        )
        return [d for stored in found[:limit] if (d := self._remember(stored)) is not None]

    async def pending_for_call(self, call_id: str) -> list[WebhookDelivery]:
        found = self._select(lambda d: d.call_id == call_id and d.status == DeliveryStatus.PENDING)
        return [d for stored in found if (d := self._remember(stored)) is not None]

    async def attempts(self, delivery_ids: list[str]) -> dict[str, list[DeliveryAttempt]]:
        return {i: copy.deepcopy(self._attempts[i]) for i in delivery_ids if self._attempts.get(i)}


class PlainSecretBox:
    """Seals by prefixing: enough to see that secrets are stored sealed and opened to send."""

    def seal(self, secret: str) -> str:
        return "sealed:" + secret[::-1]

    def open(self, sealed: str) -> str:
        assert sealed.startswith("sealed:"), sealed
        return sealed.removeprefix("sealed:")[::-1]


@dataclass
class RecordingWebhookSender:
    """Implements ``WebhookSender`` without a network: records each message and answers from a script.

    ``answers`` are consumed one per send (the last one repeats); ``refuse`` holds URL substrings
    that ``check_target`` refuses.
    """

    answers: list[SendResult] = field(default_factory=lambda: [SendResult(200, 5)])
    refuse: tuple[str, ...] = ("127.0.0.1", "localhost", "10.0.0.")
    sent: list[WebhookMessage] = field(default_factory=list)

    async def check_target(self, url: str) -> None:
        if not url.startswith("https://") or any(bad in url for bad in self.refuse):
            raise WebhookTargetRefused(f"url: {url} refused")

    async def send(self, message: WebhookMessage) -> SendResult:
        self.sent.append(message)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
