"""Security headers on every response the app sends.

Set once, in a ``before_send`` hook: it sees every response, including those Litestar makes before
any handler runs (a 404 for an unknown path, a 405, a 401 from the JWT middleware), which route-level
``response_headers`` and middleware do not.

- ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` everywhere;
- ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`` on every response that does
  not bring its own: JSON, errors, redirects, TwiML and audio are never documents that load
  anything or may be framed. The dashboard pages bring their own (``dashboard.page_headers``).
"""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

API_CSP = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": API_CSP,
}


async def add_security_headers(message: Message, _: Scope) -> None:
    """A ``before_send`` hook: each security header a response does not already carry."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in SECURITY_HEADERS.items():
        if name not in headers:
            headers[name] = value
