"""The operations team's admin API (``ops_admin`` only): every access is audited before it happens."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import QueryParameter
from litestar.response import Redirect

from application import operator_access
from domain.model import CallKind
from entrypoints.http.api import Cursor, Limit, call_body, decode_cursor, encode_cursor
from entrypoints.http.auth import audit_actor, ops_admin_guard
from entrypoints.http.deps import ServicesDep
from entrypoints.http.errors import AUDIT_DOWN, AUTH_ERRORS, BAD_REQUEST, GONE, NOT_FOUND
from entrypoints.http.schemas import CallPage, IdPath, IdQuery

Reason = Annotated[str, QueryParameter(min_length=3, max_length=500, description="Why you need this access")]
OptionalReason = Annotated[str | None, QueryParameter(max_length=500, description="Why you need this access")]


class AdminApi(Controller):
    path = "/api/v1/admin"
    guards = [ops_admin_guard]
    tags = ["admin"]

    @get("/calls", responses={**AUTH_ERRORS, **BAD_REQUEST, **AUDIT_DOWN})
    async def list_calls(
        self,
        request: Request[Any, Any, State],
        services: ServicesDep,
        kind: Annotated[Literal["customer", "discovery", "support"], QueryParameter()] = "customer",
        org_id: IdQuery = None,
        limit: Limit = 50,
        cursor: Cursor = None,
        reason: OptionalReason = None,
    ) -> CallPage:
        """Calls of any org, or of the platform's discovery and support lines. Audited."""
        page, next_cursor = await operator_access.list_calls(
            services,
            audit_actor(request),
            kind=CallKind(kind),
            org_id=org_id,
            limit=limit,
            after=decode_cursor(cursor) if cursor else None,
            reason=reason,
        )
        cursor_out = encode_cursor(next_cursor) if next_cursor else None
        return CallPage(items=[call_body(v, "/api/v1/admin/calls") for v in page], next_cursor=cursor_out)

    @get(
        "/calls/{call_id:str}/recording",
        status_code=307,
        responses={
            307: ResponseSpec(None, description="Redirect to a short-lived signed URL of the audio"),
            **AUTH_ERRORS,
            **BAD_REQUEST,
            **NOT_FOUND,
            **GONE,
            **AUDIT_DOWN,
        },
    )
    async def get_recording(
        self,
        request: Request[Any, Any, State],
        call_id: IdPath,
        reason: Reason,
        services: ServicesDep,
        download: Annotated[bool, QueryParameter(description="Serve the audio as an attachment")] = False,
    ) -> Response[Any]:
        """307 to the audio of any call. The reason is required and audited before the URL is issued."""
        url = await operator_access.recording_url(
            services, audit_actor(request), call_id=call_id, reason=reason, download=download
        )
        return Redirect(url, status_code=307, headers={"Cache-Control": "no-store"})
