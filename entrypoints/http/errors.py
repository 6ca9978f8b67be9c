"""One error shape for every 4xx and 5xx: ``{"error": {"code": ..., "message": ...}}``.

Under /dashboard (but for the player's audio) the same errors are HTML pages with a heading and a
way back to the calls, as a browser shows them; everything else keeps the JSON shape.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Template
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from application.audit import AuditUnavailable
from application.errors import (
    ApplicationError,
    ConcurrencyConflict,
    IntegrityViolation,
    NotFound,
    PhoneNumberTaken,
    RecordingGone,
    WebhookTargetRefused,
)
from domain.errors import DomainError, InvalidValue
from entrypoints.http.schemas import ErrorBody

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "too_many_requests",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


_PAGE_TITLES = {
    400: "This link is not valid",
    401: "Not signed in",
    403: "Not allowed",
    404: "Page not found",
    405: "Not allowed",
    410: "Recording deleted",
}
_PAGE_MESSAGES = {404: "There is no page at this address.", 500: "Something went wrong on our side."}


def _is_page(request: Request[Any, Any, Any]) -> bool:
    path = request.url.path
    return (path == "/dashboard" or path.startswith("/dashboard/")) and not path.endswith("/audio")


def _for_caller(request: Request[Any, Any, Any], response: Response[Any]) -> Response[Any]:
    """``response`` itself, or under /dashboard the same error as an HTML page."""
    if not _is_page(request) or not isinstance(response.content, dict):
        return response
    status, message = response.status_code or 500, str(response.content["error"]["message"])
    return Template(
        template_name="message.html",
        context={
            "title": _PAGE_TITLES.get(status, "Something went wrong"),
            "message": _PAGE_MESSAGES.get(status, message),
        },
        status_code=status,
        headers={**dict(response.headers), **request.app.state.page_headers},
    )


def _validation_message(exc: ValidationException) -> str:
    extra = exc.extra
    if isinstance(extra, list) and extra:
        parts = []
        for item in extra:
            if isinstance(item, dict):
                key = item.get("key")
                msg = item.get("message", "")
                parts.append(f"{key}: {msg}" if key else str(msg))
        if parts:
            return "; ".join(parts)
    return str(exc.detail)


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return _for_caller(request, _http_error(exc))


def _http_error(exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        return error_response(400, "invalid_request", _validation_message(exc))
    headers = dict(exc.headers or {})
    return error_response(status, _CODES.get(status, "error"), str(exc.detail), headers or None)


def application_error_handler(request: Request[Any, Any, Any], exc: ApplicationError) -> Response[Any]:
    return _for_caller(request, _application_error(exc))


def _application_error(exc: ApplicationError) -> Response[Any]:
    if isinstance(exc, NotFound):
        return error_response(404, exc.code, str(exc) or "not found")
    if isinstance(exc, PhoneNumberTaken):
        return error_response(409, exc.code, str(exc))
    if isinstance(exc, RecordingGone):
        return error_response(410, exc.code, str(exc))
    if isinstance(exc, AuditUnavailable):
        return error_response(503, exc.code, str(exc))
    if isinstance(exc, ConcurrencyConflict):
        return error_response(409, exc.code, "the object changed concurrently; retry")
    if isinstance(exc, IntegrityViolation):
        # Refers to something that is not there (or lacks a value the schema needs): retrying the
        # same request cannot succeed, so not the retryable "conflict". Logged: it may be a bug.
        log.warning("integrity violation: %s", exc)
        return error_response(409, exc.code, "the request contradicts the stored state")
    if isinstance(exc, WebhookTargetRefused):
        # A well-formed URL this service does not send to. Most of these rules need DNS, so the
        # OpenAPI document cannot state them: 422, apart from the 400 of what the document refuses.
        return error_response(422, exc.code, str(exc))
    return error_response(400, exc.code, str(exc))


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    if isinstance(exc, InvalidValue):
        return _for_caller(request, error_response(400, "invalid_request", str(exc)))
    return _for_caller(request, error_response(409, "invalid_state", str(exc)))


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, RecursionError) and "deserializing" in str(exc):
        # msgspec gives up on JSON nested deeper than the interpreter's recursion limit with a
        # RecursionError, which Litestar does not turn into a 400 as it does other decode errors.
        return error_response(400, "invalid_request", "the JSON body is nested too deeply")
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    response = error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal server error")
    return _for_caller(request, response)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    HTTPException: http_exception_handler,
    ApplicationError: application_error_handler,
    DomainError: domain_error_handler,
    Exception: internal_error_handler,
}


def error_spec(description: str) -> ResponseSpec:
    """An OpenAPI response in the one error shape."""
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


AUTH_ERRORS = {
    401: error_spec("Missing, expired or invalid bearer token"),
    403: error_spec("The token's role may not use this endpoint"),
}
BAD_REQUEST = {400: error_spec("Malformed request: the message names the offending field")}
NOT_FOUND = {404: error_spec("No such object in the caller's organization")}
BODY_ERRORS = {**BAD_REQUEST, 413: error_spec("Request body too large")}
GONE = {410: error_spec("The recording's audio was deleted (retention, erasure): never served again")}
AUDIT_DOWN = {503: error_spec("The audit log cannot be written, so the access is refused")}
CONFLICT = {409: error_spec("Conflicts with the current state (e.g. a number another org owns)")}
