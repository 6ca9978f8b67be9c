"""Org admins → service: erasure of one caller's data.

Admins only (members and the operations team get 403). ``POST`` records the request and answers
``202`` at once; the work runs asynchronously (``application.erasure``). Another org's request
answers 404 like a missing one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import JSONBody

from application import commands, erasure
from domain.erasure import ErasureRequest
from entrypoints.http.auth import admin_guard, audit_actor, principal_of
from entrypoints.http.deps import Bus, ServicesDep
from entrypoints.http.errors import AUTH_ERRORS, BAD_REQUEST, BODY_ERRORS, NOT_FOUND
from entrypoints.http.schemas import IdPath, PhoneNumber, Strict


class ErasureRequestCreate(Strict):
    caller_number: PhoneNumber
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class ErasureRequestAccepted(msgspec.Struct):
    id: str
    status: Literal["pending", "completed"]


class ErasureRequestResponse(msgspec.Struct):
    id: str
    status: Literal["pending", "completed"]
    # What the caller's number now reads as in the org's calls (never the number itself).
    caller_number: str
    reason: str
    requested_by: str
    requested_at: str
    completed_at: str | None
    calls_erased: int
    recordings_purged: int
    held_calls: list[str]  # ids of the caller's calls under legal hold: not erased
    erased_calls: list[str]


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def erasure_body(request: ErasureRequest) -> ErasureRequestResponse:
    return ErasureRequestResponse(
        id=request.id,
        status=request.status.value,
        caller_number=request.redacted_as,
        reason=request.reason,
        requested_by=request.requested_by,
        requested_at=_iso(request.requested_at) or "",
        completed_at=_iso(request.completed_at),
        calls_erased=len(request.erased_call_ids),
        recordings_purged=request.recordings_purged,
        held_calls=list(request.held_call_ids),
        erased_calls=list(request.erased_call_ids),
    )


class ErasureApi(Controller):
    path = "/api/v1/erasure-requests"
    guards = [admin_guard]
    tags = ["dashboard"]

    @post("/", status_code=202, responses={**AUTH_ERRORS, **BODY_ERRORS, **NOT_FOUND})
    async def request_erasure(
        self, request: Request[Any, Any, State], data: JSONBody[ErasureRequestCreate], bus: Bus
    ) -> ErasureRequestAccepted:
        """Erase a caller's data in the org (admins): their calls' audio is purged (calls under legal
        hold excepted and listed), their number redacted in the org's call metadata, one audit record
        per call. Runs asynchronously: poll ``GET /api/v1/erasure-requests/{id}``."""
        created = await bus.handle(
            commands.RequestErasure(
                org_id=principal_of(request).org_id,
                caller_number=data.caller_number,
                reason=data.reason,
                actor=audit_actor(request),
            )
        )
        return ErasureRequestAccepted(id=created.id, status=created.status.value)

    @get("/{request_id:str}", responses={**AUTH_ERRORS, **BAD_REQUEST, **NOT_FOUND})
    async def get_erasure_request(
        self, request: Request[Any, Any, State], request_id: IdPath, services: ServicesDep
    ) -> ErasureRequestResponse:
        """An erasure request of the org: its progress, what was erased, and the held calls skipped."""
        found = await erasure.get_erasure_request(
            services, org_id=principal_of(request).org_id, request_id=request_id
        )
        return erasure_body(found)
