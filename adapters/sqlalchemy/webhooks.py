"""SQLAlchemy repositories of webhook endpoints and deliveries (with their attempt rows).

Same rules as ``unit_of_work``: explicit row mapping, a snapshot of every row read, versioned
``UPDATE … WHERE version = :loaded`` on commit (zero rows: ``ConcurrencyConflict``). A delivery's
new attempts are inserted with it; past attempts are read only for the deliveries list.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Row, Table, and_, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.sqlalchemy import tables as t
from application.errors import ConcurrencyConflict
from application.ports import DeliveryCursor
from domain import events as ev
from domain.webhooks import (
    AttemptOutcome,
    DeliveryAttempt,
    DeliveryStatus,
    EndpointStatus,
    SealedSecret,
    WebhookDelivery,
    WebhookEndpoint,
)

W = TypeVar("W", WebhookEndpoint, WebhookDelivery)


class _VersionedRepository(Generic[W]):
    table: Table

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.tracked: dict[str, tuple[W, dict[str, Any] | None]] = {}
        self.wrote = False

    def to_row(self, aggregate: W) -> dict[str, Any]:
        raise NotImplementedError

    def from_row(self, row: Row[Any]) -> W:
        raise NotImplementedError

    def add(self, aggregate: W) -> None:
        self.tracked[aggregate.id] = (aggregate, None)

    def _remember(self, row: Row[Any] | None) -> W | None:
        if row is None:
            return None
        agg_id = row._mapping["id"]
        if agg_id in self.tracked:
            return self.tracked[agg_id][0]
        aggregate = self.from_row(row)
        self.tracked[agg_id] = (aggregate, self.to_row(aggregate))
        return aggregate

    def _all(self, result: Any) -> list[W]:
        return [a for row in result if (a := self._remember(row)) is not None]

    async def get(self, aggregate_id: str) -> W | None:
        result = await self.conn.execute(select(self.table).where(self.table.c.id == aggregate_id))
        return self._remember(result.first())

    async def flush(self, now: datetime) -> list[ev.Event]:
        new_events: list[ev.Event] = []
        for aggregate, snapshot in self.tracked.values():
            row = self.to_row(aggregate)
            if snapshot is None:
                await self.conn.execute(insert(self.table).values(**row))
                self.wrote = True
            elif row != snapshot:
                row["version"] = aggregate.version + 1
                result = await self.conn.execute(
                    update(self.table)
                    .where(self.table.c.id == aggregate.id, self.table.c.version == aggregate.version)
                    .values(**row)
                )
                if result.rowcount != 1:
                    raise ConcurrencyConflict(f"{self.table.name} {aggregate.id} changed concurrently")
                self.wrote = True
            await self._flush_children(aggregate)
            new_events.extend(aggregate.events)
        return new_events

    async def _flush_children(self, aggregate: W) -> None:
        pass

    def committed(self) -> None:
        for agg_id, (aggregate, snapshot) in list(self.tracked.items()):
            if snapshot is not None and self.to_row(aggregate) != snapshot:
                aggregate.version += 1
            aggregate.events.clear()
            self._children_committed(aggregate)
            self.tracked[agg_id] = (aggregate, self.to_row(aggregate))

    def _children_committed(self, aggregate: W) -> None:
        pass


class SqlAlchemyWebhookEndpointRepository(_VersionedRepository[WebhookEndpoint]):
    table = t.webhook_endpoints

    def to_row(self, endpoint: WebhookEndpoint) -> dict[str, Any]:
        return {
            "id": endpoint.id,
            "org_id": endpoint.org_id,
            "url": endpoint.url,
            "event_types": json.dumps(endpoint.event_types),
            "secrets": json.dumps(
                [
                    {
                        "sealed": s.sealed,
                        "created_at": s.created_at.isoformat(),
                        "expires_at": s.expires_at.isoformat() if s.expires_at else None,
                    }
                    for s in endpoint.secrets
                ]
            ),
            "status": endpoint.status.value,
            "disabled_reason": endpoint.disabled_reason,
            "disabled_at": endpoint.disabled_at,
            "failing_since": endpoint.failing_since,
            "created_at": endpoint.created_at,
            "deleted_at": endpoint.deleted_at,
            "version": endpoint.version,
        }

    def from_row(self, row: Row[Any]) -> WebhookEndpoint:
        m = row._mapping
        return WebhookEndpoint(
            id=m["id"],
            org_id=m["org_id"],
            url=m["url"],
            event_types=json.loads(m["event_types"]),
            secrets=[
                SealedSecret(
                    s["sealed"],
                    datetime.fromisoformat(s["created_at"]),
                    datetime.fromisoformat(s["expires_at"]) if s["expires_at"] else None,
                )
                for s in json.loads(m["secrets"])
            ],
            status=EndpointStatus(m["status"]),
            created_at=m["created_at"],
            disabled_reason=m["disabled_reason"],
            disabled_at=m["disabled_at"],
            failing_since=m["failing_since"],
            deleted_at=m["deleted_at"],
            version=m["version"],
        )

    async def for_org(self, org_id: str) -> list[WebhookEndpoint]:
        e = t.webhook_endpoints.c
        result = await self.conn.execute(
            select(t.webhook_endpoints)
            .where(e.org_id == org_id, e.status != EndpointStatus.DELETED.value)
            .order_by(e.created_at, e.id)
        )
        return self._all(result)


class SqlAlchemyWebhookDeliveryRepository(_VersionedRepository[WebhookDelivery]):
    table = t.webhook_deliveries

    def to_row(self, d: WebhookDelivery) -> dict[str, Any]:
        return {
            "id": d.id,
            "endpoint_id": d.endpoint_id,
            "org_id": d.org_id,
            "message_id": d.message_id,
            "event_type": d.event_type,
            "call_id": d.call_id,
            "payload": d.payload,
            "recording_key": d.recording_key,
            "status": d.status.value,
            "attempt_count": d.attempt_count,
            "next_attempt_at": d.next_attempt_at,
            "claimed_until": d.claimed_until,
            "last_status_code": d.last_status_code,
            "last_error": d.last_error,
            "created_at": d.created_at,
            "completed_at": d.completed_at,
            "version": d.version,
        }

    def from_row(self, row: Row[Any]) -> WebhookDelivery:
        m = row._mapping
        return WebhookDelivery(
            id=m["id"],
            endpoint_id=m["endpoint_id"],
            org_id=m["org_id"],
            message_id=m["message_id"],
            event_type=m["event_type"],
            call_id=m["call_id"],
            payload=m["payload"],
            recording_key=m["recording_key"],
            status=DeliveryStatus(m["status"]),
            created_at=m["created_at"],
            next_attempt_at=m["next_attempt_at"],
            attempt_count=m["attempt_count"],
            claimed_until=m["claimed_until"],
            last_status_code=m["last_status_code"],
            last_error=m["last_error"],
            completed_at=m["completed_at"],
            version=m["version"],
        )

    async def _flush_children(self, delivery: WebhookDelivery) -> None:
        if delivery.new_attempts:
            await self.conn.execute(
                insert(t.webhook_attempts),
                [
                    {
                        "delivery_id": a.delivery_id,
                        "number": a.number,
                        "attempted_at": a.attempted_at,
                        "outcome": a.outcome.value,
                        "status_code": a.status_code,
                        "latency_ms": a.latency_ms,
                        "error": a.error,
                        "next_attempt_at": a.next_attempt_at,
                    }
                    for a in delivery.new_attempts
                ],
            )

    def _children_committed(self, delivery: WebhookDelivery) -> None:
        delivery.new_attempts.clear()

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
        return self._all(await self.conn.execute(stmt))

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
        return self._all(await self.conn.execute(stmt))

    async def pending_for_call(self, call_id: str) -> list[WebhookDelivery]:
        d = t.webhook_deliveries.c
        result = await self.conn.execute(
            select(t.webhook_deliveries).where(d.call_id == call_id, d.status == DeliveryStatus.PENDING.value)
        )
        return self._all(result)

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
            m = row._mapping
            found[m["delivery_id"]].append(
                DeliveryAttempt(
                    delivery_id=m["delivery_id"],
                    number=m["number"],
                    attempted_at=m["attempted_at"],
                    outcome=AttemptOutcome(m["outcome"]),
                    status_code=m["status_code"],
                    latency_ms=m["latency_ms"],
                    error=m["error"],
                    next_attempt_at=m["next_attempt_at"],
                )
            )
        return dict(found)
