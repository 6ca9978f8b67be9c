"""``call.ended`` webhooks: endpoint management, settling calls, and one delivery per endpoint.

The flow: a call's end, its recording's last word (archived, absent, failed) and the scorability
verdict each run ``settle_call`` (consumer ``calls.settle``); once the call has ended and its
recording has settled, ``Call.settle`` records ``CallSettled``, with the verdict of the
non-engagement rules. Through the outbox and the bus, ``enqueue_call_ended`` (consumer
``webhooks.enqueue``) turns it into one ``WebhookDelivery`` row per subscribed endpoint of the org,
unless the call is non-engagement. ``WebhookDeliveryScheduler`` (``application.webhook_delivery``)
sends the rows that are due and records every try.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from application import commands, erasure, filtered
from application.errors import InvalidInput, NotFound
from application.ports import DeliveryCursor, SecretBox, UnitOfWork, WebhookSender
from application.services import Services
from domain import events
from domain.audit import SYSTEM_ROLE, AuditActor, AuditEntry
from domain.errors import InvalidTransition
from domain.model import CallKind, new_id
from domain.webhooks import (
    CALL_ENDED,
    DeliveryAttempt,
    DeliveryStatus,
    EndpointStatus,
    WebhookDelivery,
    WebhookEndpoint,
    new_webhook_secret,
)

MAX_ENDPOINTS_PER_ORG = 20


@dataclass(frozen=True)
class EndpointWithSecret:
    """A new or re-keyed endpoint and its new secret in the clear: shown once, never again."""

    endpoint: WebhookEndpoint
    secret: str


@dataclass(frozen=True)
class DeliveryView:
    delivery: WebhookDelivery
    attempts: list[DeliveryAttempt]


def webhook_ports(svc: Services) -> tuple[WebhookSender, SecretBox]:
    if svc.webhook_sender is None or svc.secret_box is None:
        raise RuntimeError("webhooks need a WebhookSender and a SecretBox in Services")
    return svc.webhook_sender, svc.secret_box


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


# --- the message --------------------------------------------------------------------------------


def call_ended_payload(event: events.CallSettled) -> str:
    """The ``call.ended`` body as the contract has it, without ``recording_url`` (minted per try)."""
    body = {
        "type": CALL_ENDED,
        "timestamp": iso(event.occurred_at),
        "data": {
            "call_id": event.call_id,
            "org_id": event.org_id,
            "call_sid": event.call_sid,
            "from": event.from_number,
            "to": event.to_number,
            "started_at": iso(event.started_at),
            "answered_at": iso(event.answered_at),
            "ended_at": iso(event.ended_at),
            "duration_s": event.duration_s,
        },
    }
    return json.dumps(body, separators=(",", ":"))


def message_body(payload: str, recording_url: str | None) -> bytes:
    """The exact bytes signed and sent: the stored payload, plus ``recording_url`` when there is one."""
    body: dict[str, Any] = json.loads(payload)
    if recording_url is not None:
        body["data"]["recording_url"] = recording_url
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# --- command handlers ---------------------------------------------------------------------------


async def _own_endpoint(uow: UnitOfWork, org_id: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = await uow.webhook_endpoints.get(endpoint_id)
    if endpoint is None or endpoint.org_id != org_id or endpoint.status == EndpointStatus.DELETED:
        raise NotFound("webhook endpoint not found")
    return endpoint


def _audit_change(
    uow: UnitOfWork, svc: Services, actor: AuditActor | None, action: str, endpoint: WebhookEndpoint
) -> None:
    """Audit a change of one of the org's endpoints in the transaction that makes it (never its secret)."""
    uow.audit.add(
        AuditEntry.record(
            actor=actor or AuditActor("service", SYSTEM_ROLE),
            action=action,
            now=svc.clock.now(),
            org_id=endpoint.org_id,
            target_id=endpoint.id,
        )
    )


async def register_webhook_endpoint(
    cmd: commands.RegisterWebhookEndpoint, svc: Services
) -> EndpointWithSecret:
    """Register a subscriber URL (checked against SSRF now and at every send); the secret is shown once."""
    sender, box = webhook_ports(svc)
    await sender.check_target(cmd.url)
    secret = new_webhook_secret()
    async with svc.uow() as uow:
        if len(await uow.webhook_endpoints.for_org(cmd.org_id)) >= MAX_ENDPOINTS_PER_ORG:
            raise InvalidInput(f"url: an organization has at most {MAX_ENDPOINTS_PER_ORG} webhook endpoints")
        endpoint = WebhookEndpoint.register(
            id=new_id(),
            org_id=cmd.org_id,
            url=cmd.url,
            event_types=cmd.event_types,
            sealed_secret=box.seal(secret),
            now=svc.clock.now(),
        )
        uow.webhook_endpoints.add(endpoint)
        _audit_change(uow, svc, cmd.actor, "create_webhook_endpoint", endpoint)
        await uow.commit()
    return EndpointWithSecret(endpoint, secret)


async def delete_webhook_endpoint(cmd: commands.DeleteWebhookEndpoint, svc: Services) -> None:
    """Remove an endpoint: nothing more is sent to it (its pending deliveries are cancelled when due)."""
    async with svc.uow() as uow:
        endpoint = await _own_endpoint(uow, cmd.org_id, cmd.endpoint_id)
        endpoint.delete(svc.clock.now())
        _audit_change(uow, svc, cmd.actor, "delete_webhook_endpoint", endpoint)
        await uow.commit()


async def rotate_webhook_secret(cmd: commands.RotateWebhookSecret, svc: Services) -> EndpointWithSecret:
    """A new secret, shown once; the old one keeps signing too for 24 hours."""
    _, box = webhook_ports(svc)
    secret = new_webhook_secret()
    async with svc.uow() as uow:
        endpoint = await _own_endpoint(uow, cmd.org_id, cmd.endpoint_id)
        endpoint.rotate_secret(box.seal(secret), svc.clock.now())
        _audit_change(uow, svc, cmd.actor, "rotate_webhook_secret", endpoint)
        await uow.commit()
    return EndpointWithSecret(endpoint, secret)


async def retry_webhook_delivery(cmd: commands.RetryWebhookDelivery, svc: Services) -> DeliveryView:
    """Try a delivery again now (a pending one is brought forward, a finished one gets one more try)."""
    async with svc.uow() as uow:
        endpoint = await _own_endpoint(uow, cmd.org_id, cmd.endpoint_id)
        delivery = await uow.webhook_deliveries.get(cmd.delivery_id)
        if delivery is None or delivery.endpoint_id != endpoint.id:
            raise NotFound("delivery not found")
        if not endpoint.active:
            raise InvalidTransition(f"the endpoint is disabled: {endpoint.disabled_reason}")
        delivery.retry_now(svc.clock.now())
        await uow.commit()
        attempts = await uow.webhook_deliveries.attempts([delivery.id])
    return DeliveryView(delivery, attempts.get(delivery.id, []))


# --- event handlers -----------------------------------------------------------------------------

SettlingEvent = (
    events.CallEnded
    | events.CallScorabilityRecorded
    | events.RecordingArchived
    | events.RecordingAbsent
    | events.RecordingFailed
)


async def _settle(uow: UnitOfWork, call_id: str, svc: Services) -> None:
    call = await uow.calls.get(call_id)
    if call is not None and call.settled_at is None and call.ended:
        recording = await uow.recordings.get_for_call(call.id)
        call.settle(
            recording,
            now=svc.clock.now(),
            scorability_wait=svc.settings.scorability_wait,
            instant_hangup=svc.settings.instant_hangup,
        )
    if call is not None:  # settled now, or before a late verdict; or erased while it was live
        await filtered.purge_if_filtered(uow, call, svc.clock.now())
        await erasure.purge_if_erased(uow, call, svc.clock.now())


async def settle_call(event: SettlingEvent, svc: Services) -> None:
    """Settle the call if this was the last thing it waited for (see ``Call.settle``)."""
    async with svc.uow() as uow:
        await _settle(uow, event.call_id, svc)
        await uow.commit()


async def settle_or_withdraw(event: events.CallScorabilityRecorded, svc: Services) -> None:
    """The verdict may be what the call waited for; a late non-engagement verdict still cancels the
    webhook tries not made yet."""
    async with svc.uow() as uow:
        await _settle(uow, event.call_id, svc)
        if not event.scorable:
            for delivery in await uow.webhook_deliveries.pending_for_call(event.call_id):
                delivery.cancel(f"the call was marked non-engagement ({event.reason})", svc.clock.now())
        await uow.commit()


async def enqueue_call_ended(event: events.CallSettled, svc: Services) -> None:
    """One ``call.ended`` delivery per subscribed endpoint of the org; none for non-engagement calls."""
    async with svc.uow() as uow:
        if event.non_engagement is None and event.org_id is not None and event.kind == CallKind.CUSTOMER:
            payload = call_ended_payload(event)
            for endpoint in await uow.webhook_endpoints.for_org(event.org_id):
                if not endpoint.wants(CALL_ENDED):
                    continue
                uow.webhook_deliveries.add(
                    WebhookDelivery.create(
                        id=new_id(),
                        endpoint_id=endpoint.id,
                        org_id=event.org_id,
                        message_id=event.id,
                        event_type=CALL_ENDED,
                        call_id=event.call_id,
                        payload=payload,
                        recording_key=event.storage_key if event.recorded else None,
                        now=svc.clock.now(),
                    )
                )
        await uow.commit()


# --- read side ----------------------------------------------------------------------------------


async def list_endpoints(svc: Services, *, org_id: str) -> list[WebhookEndpoint]:
    async with svc.uow() as uow:
        return await uow.webhook_endpoints.for_org(org_id)


async def get_endpoint(svc: Services, *, org_id: str, endpoint_id: str) -> WebhookEndpoint:
    async with svc.uow() as uow:
        return await _own_endpoint(uow, org_id, endpoint_id)


async def list_deliveries(
    svc: Services, *, org_id: str, endpoint_id: str, limit: int, after: DeliveryCursor | None = None
) -> tuple[list[DeliveryView], DeliveryCursor | None]:
    """One page of an endpoint's deliveries, newest first, each with its tries."""
    async with svc.uow() as uow:
        await _own_endpoint(uow, org_id, endpoint_id)
        found = await uow.webhook_deliveries.for_endpoint(endpoint_id, limit=limit + 1, after=after)
        page, more = found[:limit], len(found) > limit
        attempts = await uow.webhook_deliveries.attempts([d.id for d in page])
    views = [DeliveryView(d, attempts.get(d.id, [])) for d in page]
    cursor = DeliveryCursor(page[-1].created_at, page[-1].id) if more and page else None
    return views, cursor


__all__ = [
    "DeliveryStatus",
    "DeliveryView",
    "EndpointWithSecret",
    "call_ended_payload",
    "delete_webhook_endpoint",
    "enqueue_call_ended",
    "list_deliveries",
    "list_endpoints",
    "message_body",
    "register_webhook_endpoint",
    "retry_webhook_delivery",
    "rotate_webhook_secret",
    "settle_call",
    "settle_or_withdraw",
]
