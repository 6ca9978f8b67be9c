"""What operators and orchestrators call: ``/healthz``, ``/readyz``, ``/metrics``; and the middleware
that gives every request an id (``X-Request-ID``, bound to its log lines) and counts it."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import MutableScopeHeaders, State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST
from structlog.contextvars import bound_contextvars

from entrypoints.observability import HTTP_DURATION, HTTP_REQUESTS, readiness, render_metrics

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    """The process is alive (nothing else is checked)."""
    return {"status": "ok"}


@get("/readyz", include_in_schema=False)
async def readyz(request: Request[Any, Any, State]) -> Response[dict[str, Any]]:
    """200 when every dependency answers, else 503 naming what failed."""
    checks = await readiness(request.app.state.container)
    failed = sorted(name for name, outcome in checks.items() if outcome != "ok")
    body: dict[str, Any] = {"status": "ready" if not failed else "unavailable", "checks": checks}
    if failed:
        body["failed"] = failed
    return Response(body, status_code=503 if failed else 200, headers={"Cache-Control": "no-store"})


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, State]) -> Response[bytes]:
    """Prometheus text format."""
    body = await render_metrics(request.app.state.container)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


def observe_requests(app: ASGIApp) -> ASGIApp:
    """Binds ``request_id`` (the caller's ``X-Request-ID`` if well-formed, else a new one) and the
    path's ``call_id`` to the request's log lines, echoes the id in the response, and counts the
    request by route template."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method = str(scope.get("method", ""))
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableScopeHeaders.from_message(message)["X-Request-ID"] = request_id
            await send(message)

        started = time.perf_counter()
        route = str(scope.get("path_template") or "unmatched")
        try:
            context = {"request_id": request_id}
            call_id = (scope.get("path_params") or {}).get("call_id")
            if call_id:
                context["call_id"] = str(call_id)
            with bound_contextvars(**context):
                await app(scope, receive, send_with_id)
        finally:
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)

    return middleware
