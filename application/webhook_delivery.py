"""The webhook delivery scheduler: sends the deliveries that are due, records every try.

Delivery state lives in the database (``webhook_deliveries``, one row per endpoint and message, and
``webhook_attempts``, one row per try), so the schedule survives restarts: a pass claims due rows
(a lease, so several processes can share the work and a crashed sender's claim runs out), sends
each, and records the try, which decides the next one (``WebhookDelivery.attempted``). A try whose
result could not be recorded (a crash in between) is sent again when the lease runs out, with the
same ``webhook-id``: receivers deduplicate on it, as Standard Webhooks asks of them.

It only delivers: settling the calls that webhooks announce is ``application/settling.py``'s.

Run ``run_forever(stop)`` beside the HTTP app (``callrec serve``) and/or in ``callrec worker``;
``wake()`` after a commit that wrote deliveries makes the first try immediate.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable
from datetime import timedelta

from application.audit import record_before_access
from application.errors import ConcurrencyConflict
from application.polling import PollingLoop
from application.ports import WebhookMessage
from application.retry import retry_conflicts
from application.services import Services
from application.webhooks import message_body, webhook_ports
from domain.audit import SYSTEM_ROLE, AuditActor, AuditEntry
from domain.model import CallKind, RecordingStatus
from domain.webhooks import JITTER, DeliveryAttempt, DeliveryStatus, SendResult, WebhookDelivery

log = logging.getLogger(__name__)


def random_jitter() -> float:
    return random.uniform(1 - JITTER, 1 + JITTER)


class WebhookDeliveryScheduler(PollingLoop):
    def __init__(
        self,
        services: Services,
        *,
        batch_size: int = 50,
        concurrency: int = 16,
        lease: timedelta = timedelta(seconds=60),
        poll_interval: float = 1.0,
        jitter: Callable[[], float] = random_jitter,
    ) -> None:
        """``lease`` must outlast one try (the sender's timeout plus minting the recording URL)."""
        self.services = services
        self.batch_size = batch_size
        self.lease = lease
        self.poll_interval = poll_interval
        self.jitter = jitter
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    # --- one pass -------------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Start a try for every due delivery; returns how many started."""
        free = self.batch_size - len(self._in_flight)
        if free <= 0:
            return 0
        claimed = await self._claim(free)
        for delivery_id in claimed:
            await self._slots.acquire()
            task = asyncio.create_task(self._deliver(delivery_id), name=f"webhook-{delivery_id}")
            self._in_flight[delivery_id] = task
            task.add_done_callback(functools.partial(self._done, delivery_id))
        return len(claimed)

    def _done(self, delivery_id: str, _task: asyncio.Task[None]) -> None:
        self._in_flight.pop(delivery_id, None)
        self._slots.release()

    async def _claim(self, limit: int) -> list[str]:
        svc = self.services
        try:
            async with svc.uow() as uow:
                now = svc.clock.now()
                due = [
                    d
                    for d in await uow.webhook_deliveries.due(now=now, limit=limit)
                    if d.id not in self._in_flight
                ]
                for delivery in due:
                    delivery.claim(now, self.lease)
                await uow.commit()
        except ConcurrencyConflict:
            return []  # another scheduler claimed some of them first: next pass
        return [d.id for d in due]

    async def _deliver(self, delivery_id: str) -> None:
        try:
            await self._try(delivery_id)
        except Exception:
            # The claim runs out and the delivery is tried again then.
            log.exception("webhook delivery %s: the try could not be made or recorded", delivery_id)

    async def _try(self, delivery_id: str) -> None:
        svc = self.services
        sender, box = webhook_ports(svc)
        async with svc.uow() as uow:
            delivery = await uow.webhook_deliveries.get(delivery_id)
            if delivery is None or delivery.status != DeliveryStatus.PENDING:
                return
            endpoint = await uow.webhook_endpoints.get(delivery.endpoint_id)
            if endpoint is None or not endpoint.active:
                reason = (
                    "the endpoint was deleted"
                    if endpoint is None or endpoint.deleted_at
                    else (f"the endpoint is disabled: {endpoint.disabled_reason}")
                )
                delivery.cancel(reason, svc.clock.now())
                await uow.commit()
                return
            secrets = tuple(box.open(sealed) for sealed in endpoint.signing_secrets(svc.clock.now()))
            url = endpoint.url
            recording_key = delivery.recording_key
            if recording_key is not None and delivery.call_id is not None:
                recording = await uow.recordings.get_for_call(delivery.call_id)
                if recording is not None and recording.status == RecordingStatus.PURGED:
                    recording_key = None  # purged since: a retry carries no URL of deleted audio
        recording_url = None
        if recording_key is not None:
            # Audited before it is minted; if the audit log cannot be written, no URL is sent and
            # the try is made again when its claim runs out.
            await record_before_access(
                svc,
                AuditEntry.record(
                    actor=AuditActor(f"webhook:{delivery.endpoint_id}", SYSTEM_ROLE),
                    action="webhook_recording_url",
                    now=svc.clock.now(),
                    org_id=delivery.org_id,
                    call_id=delivery.call_id,
                    call_kind=CallKind.CUSTOMER.value,
                    target_id=delivery.endpoint_id,
                ),
            )
            ttl = min(svc.settings.webhook_url_ttl, svc.store.max_url_lifetime)
            recording_url = await svc.store.signed_url(recording_key, expires_in=ttl)
        body = message_body(delivery.payload, recording_url)
        result = await sender.send(WebhookMessage(url, delivery.message_id, body, secrets))
        attempt = await self._record(delivery_id, result)
        if attempt is not None:
            log.info(
                "webhook %s try %d to %s: %s (%s)%s",
                delivery.message_id,
                attempt.number,
                url,
                attempt.outcome,
                result.status_code if result.status_code is not None else result.error,
                f", next at {attempt.next_attempt_at.isoformat()}" if attempt.next_attempt_at else "",
                extra={"call_id": delivery.call_id} if delivery.call_id else None,
            )

    async def _record(self, delivery_id: str, result: SendResult) -> DeliveryAttempt | None:
        """Record the try on the delivery and what it says about the endpoint, in one transaction."""
        svc = self.services

        async def record() -> DeliveryAttempt | None:
            async with svc.uow() as uow:
                delivery: WebhookDelivery | None = await uow.webhook_deliveries.get(delivery_id)
                if delivery is None:
                    return None
                now = svc.clock.now()
                attempt = delivery.attempted(result, now, jitter=self.jitter())
                endpoint = await uow.webhook_endpoints.get(delivery.endpoint_id)
                if endpoint is not None:
                    endpoint.delivered(result.outcome, now)
                await uow.commit()
                return attempt

        return await retry_conflicts(record, what=f"recording webhook delivery {delivery_id}")

    # --- loops ----------------------------------------------------------------------------------
