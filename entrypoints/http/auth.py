"""Authentication at the edge.

Dashboard users present a bearer JWT (HS256, ``CALLREC_JWT_SECRET``; claims ``sub``, ``org_id``,
``role``, ``exp``), checked by Litestar's ``JWTAuth`` middleware: a missing, expired, wrongly signed or
``alg=none`` token is a 401 before any handler runs. Platform services present the static service
token on ``/internal`` (excluded from the JWT middleware, checked by ``service_guard``). Twilio
callbacks and signed media URLs carry their own proof and are excluded too.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.security.jwt import JWTAuth, Token

ROLES = ("member", "admin", "ops_admin")
CUSTOMER_ROLES = ("member", "admin")

# Paths that do not take a dashboard JWT (they authenticate otherwise, or are public).
JWT_EXCLUDED = ["^/twilio/", "^/internal/", "^/media/", "^/healthz$", "^/schema", "^/dashboard"]


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
    return jwt.encode(claims, secret, algorithm="HS256")


async def retrieve_principal(token: Token, _: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The principal named by a verified token; None (a 401) when its claims are not ours."""
    role, org_id = token.extras.get("role"), token.extras.get("org_id")
    if role not in ROLES or not isinstance(org_id, str) or not org_id or len(org_id) > 64:
        return None
    return Principal(sub=token.sub, org_id=org_id, role=role)


def build_jwt_auth(secret: str) -> JWTAuth[Principal, Token]:
    return JWTAuth[Principal, Token](
        token_secret=secret,
        retrieve_user_handler=retrieve_principal,
        algorithm="HS256",
        require_claims=["exp", "sub"],
        exclude=JWT_EXCLUDED,
        description="Dashboard bearer JWT (HS256) with claims sub, org_id, role, exp.",
    )


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def service_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Only platform services, with the service token, reach /internal."""
    expected: str = connection.app.state.settings.service_token
    if not hmac.compare_digest(_bearer(connection).encode(), expected.encode()):
        raise NotAuthorizedException("invalid service token", headers={"WWW-Authenticate": "Bearer"})


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
