"""Repositories of webhook endpoints and deliveries (with their attempt rows): mappings and queries.

A delivery's new attempts are inserted with it; past attempts are read only for the deliveries list.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, bindparam, select

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.mapping import AggregateMapping, Appended, Json
from adapters.sqlalchemy.repository import Repository, newest_first
from application.ports import DeliveryCursor
from domain.webhooks import DeliveryAttempt, DeliveryStatus, EndpointStatus, WebhookDelivery, WebhookEndpoint

_e, _d, _a = t.webhook_endpoints.c, t.webhook_deliveries.c, t.webhook_attempts.c


class SqlAlchemyWebhookEndpointRepository(Repository[WebhookEndpoint]):
    mapping = AggregateMapping(
        WebhookEndpoint, t.webhook_endpoints, fields={"event_types": Json(), "secrets": Json()}
    )
    _for_org = (
        select(t.webhook_endpoints)
        .where(_e.org_id == bindparam("org_id"), _e.status != EndpointStatus.DELETED.value)
        .order_by(_e.created_at, _e.id)
    )

    async def for_org(self, org_id: str) -> list[WebhookEndpoint]:
        return await self._all(self._for_org, {"org_id": org_id})


class SqlAlchemyWebhookDeliveryRepository(Repository[WebhookDelivery]):
    mapping = AggregateMapping(
        WebhookDelivery, t.webhook_deliveries, fields={"new_attempts": Appended(t.webhook_attempts)}
    )
    _attempt_rows = mapping.appended[0].rows
    _now = bindparam("now", type_=_d.next_attempt_at.type)
    _due = (
        select(t.webhook_deliveries)
        .where(
            _d.status == DeliveryStatus.PENDING.value,
            _d.next_attempt_at <= _now,
            (_d.claimed_until.is_(None)) | (_d.claimed_until <= _now),
        )
        .order_by(_d.next_attempt_at, _d.id)
        .limit(bindparam("limit", type_=Integer()))
    )
    # Two schedulers claiming at once take different rows (SQLite serializes writers anyway).
    _due_locked = _due.with_for_update(skip_locked=True)
    _for_endpoint, _for_endpoint_after = newest_first(
        select(t.webhook_deliveries).where(_d.endpoint_id == bindparam("endpoint_id")), _d.created_at, _d.id
    )
    _pending_for_call = select(t.webhook_deliveries).where(
        _d.call_id == bindparam("call_id"), _d.status == DeliveryStatus.PENDING.value
    )
    _attempts = (
        select(t.webhook_attempts)
        .where(_a.delivery_id.in_(bindparam("ids", expanding=True)))
        .order_by(_a.delivery_id, _a.number)
    )

    async def due(self, *, now: datetime, limit: int) -> list[WebhookDelivery]:
        stmt = self._due_locked if self.conn.dialect.name == "postgresql" else self._due
        return await self._all(stmt, {"now": now, "limit": limit})

    async def for_endpoint(
        self, endpoint_id: str, *, limit: int, after: DeliveryCursor | None = None
    ) -> list[WebhookDelivery]:
        params: dict[str, Any] = {"endpoint_id": endpoint_id, "limit": limit}
        if after is not None:
            params["after_at"], params["after_id"] = after.created_at, after.id
        return await self._all(self._for_endpoint if after is None else self._for_endpoint_after, params)

    async def pending_for_call(self, call_id: str) -> list[WebhookDelivery]:
        return await self._all(self._pending_for_call, {"call_id": call_id})

    async def attempts(self, delivery_ids: list[str]) -> dict[str, list[DeliveryAttempt]]:
        if not delivery_ids:
            return {}
        result = await self.conn.execute(self._attempts, {"ids": delivery_ids})
        found: dict[str, list[DeliveryAttempt]] = defaultdict(list)
        for row in result:
            attempt = self._attempt_rows.load(row._mapping)
            found[attempt.delivery_id].append(attempt)
        return dict(found)
