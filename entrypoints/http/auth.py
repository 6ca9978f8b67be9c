"""Authentication at the edge.

Dashboard users present a bearer JWT (HS256, ``CALLREC_JWT_SECRET``; claims ``sub``, ``org_id``,
``role``, ``exp``; ``iat`` is optional and checked when present), checked by Litestar's ``JWTAuth``
middleware: a missing, expired, wrongly signed or ``alg=none`` token, or one sent with another scheme
than ``Bearer``, is a 401 before any handler runs. Platform services present the static service
token on ``/internal`` (excluded from the JWT middleware, checked by ``service_guard``). Twilio
callbacks and signed media URLs carry their own proof and are excluded too.
"""

from __future__ import annotations

import hmac
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import AuthenticationResult
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token
from litestar.security.jwt.token import JWTDecodeOptions

from domain.audit import AuditActor
from domain.model import is_identifier

ROLES = ("member", "admin", "ops_admin")
CUSTOMER_ROLES = ("member", "admin")
ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "sub")  # org_id and role are checked by ``retrieve_principal``
MAX_SUB_LENGTH = 200
BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}

# Paths that do not take a dashboard JWT (they authenticate otherwise, or are public).
JWT_EXCLUDED = [
    "^/twilio/",
    "^/internal/",
    "^/media/",
    "^/healthz$",
    "^/readyz$",
    "^/metrics$",
    "^/schema",
    "^/dashboard",
]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a dashboard user of one org, with one role."""

    sub: str
    org_id: str
    role: str


def issue_token(
    secret: str, *, org_id: str, role: str, sub: str, ttl: timedelta = timedelta(hours=12)
) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    now = datetime.now(UTC)
    claims = {"sub": sub, "org_id": org_id, "role": role, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class DashboardToken(Token):
    """Litestar's ``Token`` with ``iat`` optional, as RFC 7519 has it.

    ``Token.decode`` requires an ``iat`` claim; a token without one is taken as issued when it is
    decoded (``Token``'s own default). A present ``iat`` is still checked: PyJWT refuses one that is
    not a number or lies in the future, and ``Token`` one after now.
    """

    @classmethod
    def decode_payload(
        cls,
        encoded_token: str,
        secret: str,
        algorithms: list[str],
        issuer: str | Sequence[str] | None = None,
        audience: str | Sequence[str] | None = None,
        options: JWTDecodeOptions | None = None,
    ) -> Any:
        payload = super().decode_payload(encoded_token, secret, algorithms, issuer, audience, options)
        if isinstance(payload, dict):
            payload.setdefault("iat", int(time.time()))
        return payload


class BearerJWTMiddleware(JWTAuthenticationMiddleware):
    """Takes the token only from ``Authorization: Bearer <token>`` (the scheme is case-insensitive).

    Litestar's middleware takes whatever follows the first space, so ``Basic <jwt>`` or
    ``Token <jwt>`` would pass as a bearer token.
    """

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        token = bearer_token(connection)
        try:
            return await self.authenticate_token(encoded_token=token, connection=connection)
        except NotAuthorizedException as exc:
            raise NotAuthorizedException(exc.detail, headers=BEARER_CHALLENGE) from None


def decode_token(encoded: str, secret: str) -> DashboardToken:
    """A dashboard JWT, verified as the API's middleware verifies it (401 when it is not valid)."""
    return DashboardToken.decode(encoded, secret, ALGORITHM, require_claims=REQUIRED_CLAIMS)


async def retrieve_principal(token: Token, _: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The principal named by a verified token; None (a 401) when its claims are not ours."""
    role, org_id, sub = token.extras.get("role"), token.extras.get("org_id"), token.sub
    if role not in ROLES or not isinstance(org_id, str) or not is_identifier(org_id):
        return None
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_LENGTH:
        return None
    return Principal(sub=sub, org_id=org_id, role=role)


def build_jwt_auth(secret: str) -> JWTAuth[Principal, DashboardToken]:
    return JWTAuth[Principal, DashboardToken](
        token_secret=secret,
        retrieve_user_handler=retrieve_principal,
        algorithm=ALGORITHM,
        require_claims=list(REQUIRED_CLAIMS),
        token_cls=DashboardToken,
        authentication_middleware_class=BearerJWTMiddleware,
        exclude=JWT_EXCLUDED,
        description="Dashboard bearer JWT (HS256) with claims sub, org_id, role, exp (iat optional).",
    )


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; a 401 for any other header."""
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("missing bearer token", headers=BEARER_CHALLENGE)
    return token.strip()


def service_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Only platform services, with the service token, reach /internal."""
    expected: str = connection.app.state.settings.service_token
    if not hmac.compare_digest(bearer_token(connection).encode(), expected.encode()):
        raise NotAuthorizedException("invalid service token", headers=BEARER_CHALLENGE)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise NotAuthorizedException("not authenticated")
    return user


def customer_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Members and admins of an org; the operations team uses the admin API instead."""
    if principal_of(connection).role not in CUSTOMER_ROLES:
        raise PermissionDeniedException("this endpoint is for an organization's members and admins")


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Only an org's admins change its settings."""
    if principal_of(connection).role != "admin":
        raise PermissionDeniedException("admin role required")


def ops_admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Only the platform's operations team."""
    if principal_of(connection).role != "ops_admin":
        raise PermissionDeniedException("ops_admin role required")


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The caller's ``X-Request-ID`` when it is a sane token, else a new one for this request."""
    given = connection.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else str(uuid.uuid4())


def audit_actor(
    connection: ASGIConnection[Any, Any, Any, Any], principal: Principal | None = None
) -> AuditActor:
    """Who is acting, for the audit log: the principal, the request id and the source address."""
    who = principal or principal_of(connection)
    client = connection.client.host[:64] if connection.client else None
    return AuditActor(who.sub, who.role, request_id(connection), client)
