"""Repositories of webhook endpoints and deliveries (with their attempt rows): mappings and queries.

A delivery's new attempts are inserted with it; past attempts are read only for the deliveries list.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import and_, select, tuple_

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.mapping import AggregateMapping, Appended, Json
from adapters.sqlalchemy.repository import Repository
from application.ports import DeliveryCursor
from domain.webhooks import DeliveryAttempt, DeliveryStatus, EndpointStatus, WebhookDelivery, WebhookEndpoint


class SqlAlchemyWebhookEndpointRepository(Repository[WebhookEndpoint]):
    mapping = AggregateMapping(
        WebhookEndpoint, t.webhook_endpoints, fields={"event_types": Json(), "secrets": Json()}
    )

    async def for_org(self, org_id: str) -> list[WebhookEndpoint]:
        e = t.webhook_endpoints.c
        return await self._all(
            select(t.webhook_endpoints)
            .where(e.org_id == org_id, e.status != EndpointStatus.DELETED.value)
            .order_by(e.created_at, e.id)
        )


class SqlAlchemyWebhookDeliveryRepository(Repository[WebhookDelivery]):
    mapping = AggregateMapping(
        WebhookDelivery, t.webhook_deliveries, fields={"new_attempts": Appended(t.webhook_attempts)}
    )
    _attempt_rows = mapping.appended[0].rows

    async def due(self, *, now: datetime, limit: int) -> list[WebhookDelivery]:
        d = t.webhook_deliveries.c
        stmt = (
            select(t.webhook_deliveries)
            .where(
                d.status == DeliveryStatus.PENDING.value,
                d.next_attempt_at <= now,
                (d.claimed_until.is_(None)) | (d.claimed_until <= now),
            )
            .order_by(d.next_attempt_at, d.id)
            .limit(limit)
        )
        if self.conn.dialect.name == "postgresql":
            # Two schedulers claiming at once take different rows (SQLite serializes writers anyway).
            stmt = stmt.with_for_update(skip_locked=True)
        return await self._all(stmt)

    async def for_endpoint(
        self, endpoint_id: str, *, limit: int, after: DeliveryCursor | None = None
    ) -> list[WebhookDelivery]:
        d = t.webhook_deliveries.c
        where = [d.endpoint_id == endpoint_id]
        if after is not None:
            where.append(tuple_(d.created_at, d.id) < tuple_(after.created_at, after.id))
        stmt = (
            select(t.webhook_deliveries)
            .where(and_(*where))
            .order_by(d.created_at.desc(), d.id.desc())
            .limit(limit)
        )
        return await self._all(stmt)

    async def pending_for_call(self, call_id: str) -> list[WebhookDelivery]:
        d = t.webhook_deliveries.c
        return await self._all(
            select(t.webhook_deliveries).where(d.call_id == call_id, d.status == DeliveryStatus.PENDING.value)
        )

    async def attempts(self, delivery_ids: list[str]) -> dict[str, list[DeliveryAttempt]]:
        if not delivery_ids:
            return {}
        a = t.webhook_attempts.c
        result = await self.conn.execute(
            select(t.webhook_attempts)
            .where(a.delivery_id.in_(delivery_ids))
            .order_by(a.delivery_id, a.number)
        )
        found: dict[str, list[DeliveryAttempt]] = defaultdict(list)
        for row in result:
            attempt = self._attempt_rows.load(row._mapping)
            found[attempt.delivery_id].append(attempt)
        return dict(found)
