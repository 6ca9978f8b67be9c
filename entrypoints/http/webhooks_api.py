"""Org admins → service: webhook endpoints, their deliveries and manual retries.

Admins only (members and the operations team get 403). Every endpoint and delivery is looked up
within the caller's org: another org's answers 404 like a missing one. A secret is shown once, in
the answer to the request that made it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter

from application import commands, webhooks
from application.ports import DeliveryCursor
from domain.webhooks import EndpointStatus, WebhookEndpoint
from entrypoints.http.auth import admin_guard, audit_actor, principal_of
from entrypoints.http.cursors import CursorQuery, decode_keyset, encode_keyset
from entrypoints.http.deps import Bus, ServicesDep
from entrypoints.http.errors import AUTH_ERRORS, BAD_REQUEST, BODY_ERRORS, NOT_FOUND, error_spec
from entrypoints.http.schemas import IdPath, Strict

EventType = Literal["call.ended"]


# What a client can know up front about a webhook URL: an absolute http(s) URL with a host, without
# credentials, a fragment or white space. Decoding checks it with either scheme, because an instance
# with CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS (development) takes plain http; the document states the
# production rule, https only, which the target policy (adapters/webhook_sender.py) enforces. What
# needs DNS (a public address) cannot be stated: a URL that fails it is a 422.
_URL_REST = r"://[^\s/?#@\\]+(?:[/?][^\s#]*)?$"
WEBHOOK_URL_SYNTAX = r"^https?" + _URL_REST
WEBHOOK_URL_PATTERN = r"^https" + _URL_REST
WebhookUrl = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=2048,
        pattern=WEBHOOK_URL_SYNTAX,
        description="https URL of the receiver; its host must resolve to public internet addresses only",
        # Litestar copies these "extra" keys onto the field's schema: the format, and the production
        # pattern in place of the decoding one.
        extra_json_schema={"extra": {"format": "uri", "pattern": WEBHOOK_URL_PATTERN}},
    ),
]


class WebhookEndpointCreate(Strict):
    url: WebhookUrl
    events: Annotated[list[EventType], msgspec.Meta(min_length=1, max_length=10)] = msgspec.field(
        default_factory=lambda: ["call.ended"]
    )


class WebhookEndpointResponse(msgspec.Struct):
    id: str
    url: str
    events: list[str]
    status: Literal["active", "disabled"]
    disabled_reason: str | None
    disabled_at: str | None
    failing_since: str | None
    created_at: str
    previous_secret_expires_at: str | None  # during a rotation's overlap, when the old secret stops


class WebhookEndpointCreated(msgspec.Struct):
    """The endpoint and its signing secret (``whsec_…``): shown this once, never again."""

    id: str
    url: str
    events: list[str]
    secret: str
    status: Literal["active", "disabled"]
    created_at: str
    previous_secret_expires_at: str | None


class WebhookEndpointPage(msgspec.Struct):
    items: list[WebhookEndpointResponse]


class WebhookAttemptResponse(msgspec.Struct):
    number: int
    attempted_at: str
    outcome: Literal["succeeded", "gone", "failed"]
    status_code: int | None
    latency_ms: int
    error: str | None
    next_attempt_at: str | None


class WebhookDeliveryResponse(msgspec.Struct):
    id: str
    webhook_id: str  # the ``webhook-id`` header, the same on every try
    event_type: str
    call_id: str | None
    status: Literal["pending", "succeeded", "exhausted", "failed", "cancelled"]
    attempt_count: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    created_at: str
    completed_at: str | None
    attempts: list[WebhookAttemptResponse]


class WebhookDeliveryPage(msgspec.Struct):
    items: list[WebhookDeliveryResponse]
    next_cursor: str | None


def _iso(value: datetime | None) -> str | None:
    return webhooks.iso(value)


def _previous_expiry(endpoint: WebhookEndpoint) -> str | None:
    expiring = [s.expires_at for s in endpoint.secrets if s.expires_at is not None]
    return _iso(max(expiring)) if expiring else None


def _status(endpoint: WebhookEndpoint) -> Literal["active", "disabled"]:
    return "active" if endpoint.status == EndpointStatus.ACTIVE else "disabled"


def endpoint_body(endpoint: WebhookEndpoint) -> WebhookEndpointResponse:
    return WebhookEndpointResponse(
        id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.event_types),
        status=_status(endpoint),
        disabled_reason=endpoint.disabled_reason,
        disabled_at=_iso(endpoint.disabled_at),
        failing_since=_iso(endpoint.failing_since),
        created_at=_iso(endpoint.created_at) or "",
        previous_secret_expires_at=_previous_expiry(endpoint),
    )


def _with_secret(result: webhooks.EndpointWithSecret) -> WebhookEndpointCreated:
    endpoint = result.endpoint
    return WebhookEndpointCreated(
        id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.event_types),
        secret=result.secret,
        status=_status(endpoint),
        created_at=_iso(endpoint.created_at) or "",
        previous_secret_expires_at=_previous_expiry(endpoint),
    )


def delivery_body(view: webhooks.DeliveryView) -> WebhookDeliveryResponse:
    d = view.delivery
    return WebhookDeliveryResponse(
        id=d.id,
        webhook_id=d.message_id,
        event_type=d.event_type,
        call_id=d.call_id,
        status=d.status.value,
        attempt_count=d.attempt_count,
        next_attempt_at=_iso(d.next_attempt_at),
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        created_at=_iso(d.created_at) or "",
        completed_at=_iso(d.completed_at),
        attempts=[
            WebhookAttemptResponse(
                number=a.number,
                attempted_at=_iso(a.attempted_at) or "",
                outcome=a.outcome.value,
                status_code=a.status_code,
                latency_ms=a.latency_ms,
                error=a.error,
                next_attempt_at=_iso(a.next_attempt_at),
            )
            for a in view.attempts
        ],
    )


def encode_cursor(cursor: DeliveryCursor) -> str:
    return encode_keyset(cursor.created_at, cursor.id)


def decode_cursor(value: str) -> DeliveryCursor:
    return DeliveryCursor(*decode_keyset(value))


EndpointId = IdPath
DeliveryId = IdPath
REFUSED_URL = {
    422: error_spec(
        "A URL this service will not send to: not https (`webhook_url_refused`), a name that does not "
        "resolve, or an address that is not public"
    )
}
INVALID_STATE = {409: error_spec("The endpoint is disabled")}


class WebhookEndpointsApi(Controller):
    path = "/api/v1/webhook-endpoints"
    guards = [admin_guard]
    tags = ["webhooks"]

    @post("/", status_code=201, responses={**AUTH_ERRORS, **BODY_ERRORS, **REFUSED_URL})
    async def create_endpoint(
        self, request: Request[Any, Any, State], data: JSONBody[WebhookEndpointCreate], bus: Bus
    ) -> WebhookEndpointCreated:
        """Subscribe an https URL to ``call.ended``. The answer holds the signing secret, shown once."""
        result = await bus.handle(
            commands.RegisterWebhookEndpoint(
                org_id=principal_of(request).org_id,
                url=data.url,
                event_types=list(data.events),
                actor=audit_actor(request),
            )
        )
        return _with_secret(result)

    @get("/", responses={**AUTH_ERRORS})
    async def list_endpoints(
        self, request: Request[Any, Any, State], services: ServicesDep
    ) -> WebhookEndpointPage:
        """The org's endpoints (without secrets), with why any of them was disabled."""
        found = await webhooks.list_endpoints(services, org_id=principal_of(request).org_id)
        return WebhookEndpointPage(items=[endpoint_body(e) for e in found])

    @get("/{endpoint_id:str}", responses={**AUTH_ERRORS, **NOT_FOUND})
    async def get_endpoint(
        self, request: Request[Any, Any, State], endpoint_id: EndpointId, services: ServicesDep
    ) -> WebhookEndpointResponse:
        """One endpoint (without its secret)."""
        endpoint = await webhooks.get_endpoint(
            services, org_id=principal_of(request).org_id, endpoint_id=endpoint_id
        )
        return endpoint_body(endpoint)

    @delete("/{endpoint_id:str}", status_code=204, responses={**AUTH_ERRORS, **NOT_FOUND})
    async def delete_endpoint(
        self, request: Request[Any, Any, State], endpoint_id: EndpointId, bus: Bus
    ) -> None:
        """Remove an endpoint; nothing more is sent to it."""
        await bus.handle(
            commands.DeleteWebhookEndpoint(
                org_id=principal_of(request).org_id, endpoint_id=endpoint_id, actor=audit_actor(request)
            )
        )

    @post("/{endpoint_id:str}/rotate-secret", status_code=200, responses={**AUTH_ERRORS, **NOT_FOUND})
    async def rotate_secret(
        self, request: Request[Any, Any, State], endpoint_id: EndpointId, bus: Bus
    ) -> WebhookEndpointCreated:
        """A new secret, shown once. For 24 hours messages carry signatures by both old and new."""
        result = await bus.handle(
            commands.RotateWebhookSecret(
                org_id=principal_of(request).org_id, endpoint_id=endpoint_id, actor=audit_actor(request)
            )
        )
        return _with_secret(result)

    @get("/{endpoint_id:str}/deliveries", responses={**AUTH_ERRORS, **NOT_FOUND, **BAD_REQUEST})
    async def list_deliveries(
        self,
        request: Request[Any, Any, State],
        endpoint_id: EndpointId,
        services: ServicesDep,
        limit: Annotated[int, QueryParameter(ge=1, le=200, description="Page size, 1 to 200")] = 50,
        cursor: CursorQuery = None,
    ) -> WebhookDeliveryPage:
        """The endpoint's deliveries, newest first, each with its tries (status, response code,
        latency, next retry)."""
        page, next_cursor = await webhooks.list_deliveries(
            services,
            org_id=principal_of(request).org_id,
            endpoint_id=endpoint_id,
            limit=limit,
            after=decode_cursor(cursor) if cursor else None,
        )
        return WebhookDeliveryPage(
            items=[delivery_body(v) for v in page],
            next_cursor=encode_cursor(next_cursor) if next_cursor else None,
        )

    @post(
        "/{endpoint_id:str}/deliveries/{delivery_id:str}/retry",
        status_code=202,
        responses={**AUTH_ERRORS, **NOT_FOUND, **INVALID_STATE},
    )
    async def retry_delivery(
        self, request: Request[Any, Any, State], endpoint_id: EndpointId, delivery_id: DeliveryId, bus: Bus
    ) -> WebhookDeliveryResponse:
        """Try a delivery again now; the answer is the delivery as scheduled (the try follows)."""
        view = await bus.handle(
            commands.RetryWebhookDelivery(
                org_id=principal_of(request).org_id, endpoint_id=endpoint_id, delivery_id=delivery_id
            )
        )
        return delivery_body(view)
