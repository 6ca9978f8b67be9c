"""Erasure requests, the org's calls of one caller, and the stored copies of a call's caller number."""

from __future__ import annotations

import json

from sqlalchemy import bindparam, func, select, update

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.mapping import AggregateMapping, Json
from adapters.sqlalchemy.repository import Repository
from domain.erasure import ErasureRequest
from domain.model import CallKind

_c, _o, _d = t.calls.c, t.outbox.c, t.webhook_deliveries.c

_OF_CALLER = (
    select(_c.id)
    .where(
        _c.org_id == bindparam("org_id"),
        _c.kind == CallKind.CUSTOMER.value,  # an org's calls are customer calls
        _c.from_number.in_(bindparam("numbers", expanding=True)),
    )
    .order_by(_c.started_at, _c.id)
)  # ix_calls_org_kind_from_started (migration 0020)
_REDACT_OUTBOX = (
    update(t.outbox)
    .where(_o.aggregate_id == bindparam("b_call"))
    .values(payload=func.replace(_o.payload, bindparam("b_original"), bindparam("b_redacted")))
)
_REDACT_DELIVERIES = (
    update(t.webhook_deliveries)
    .where(_d.call_id == bindparam("b_call"))
    .values(payload=func.replace(_d.payload, bindparam("b_original"), bindparam("b_redacted")))
)


class SqlAlchemyErasureRequestRepository(Repository[ErasureRequest]):
    mapping = AggregateMapping(
        ErasureRequest, t.erasure_requests, fields={"erased_call_ids": Json(), "held_call_ids": Json()}
    )

    async def calls_of_caller(self, org_id: str, numbers: list[str]) -> list[str]:
        """Ids of the org's calls whose caller is one of ``numbers``, oldest first."""
        result = await self.conn.execute(_OF_CALLER, {"org_id": org_id, "numbers": numbers})
        return [row.id for row in result]

    async def redact_stored_copies(self, call_id: str, original: str, redacted: str) -> None:
        """Replace the number, as a JSON string, in the call's events in the outbox and its webhook
        deliveries' stored payloads (both hold it as ``"+1555…"``)."""
        params = {"b_call": call_id, "b_original": json.dumps(original), "b_redacted": json.dumps(redacted)}
        await self.conn.execute(_REDACT_OUTBOX, params)
        await self.conn.execute(_REDACT_DELIVERIES, params)
