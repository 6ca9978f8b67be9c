"""Bearer authentication: dashboard JWTs (HS256) on /api, the service token on /internal."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

ROLES = ("member", "admin", "ops_admin")


@dataclass(frozen=True)
class Principal:
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


def decode_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["exp", "sub", "org_id", "role"]}
        )
    except jwt.PyJWTError as exc:
        raise NotAuthorizedException(f"invalid token: {exc}") from None
    role, org_id, sub = claims.get("role"), claims.get("org_id"), claims.get("sub")
    if role not in ROLES or not isinstance(org_id, str) or not org_id or not isinstance(sub, str):
        raise NotAuthorizedException("invalid token claims")
    return Principal(sub=sub, org_id=org_id, role=role)


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def principal_from(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    secret: str = connection.app.state.settings.jwt_secret
    return decode_token(secret, _bearer(connection))


def service_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Only platform services, with the service token, reach /internal."""
    expected: str = connection.app.state.settings.service_token
    if not hmac.compare_digest(_bearer(connection).encode(), expected.encode()):
        raise NotAuthorizedException("invalid service token", headers={"WWW-Authenticate": "Bearer"})


def dashboard_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A valid dashboard JWT of a customer role (ops_admin uses the admin API only)."""
    principal = principal_from(connection)
    if principal.role == "ops_admin":
        raise PermissionDeniedException("ops_admin uses the admin API")
    connection.scope["state"]["principal"] = principal


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    principal = connection.scope["state"].get("principal") or principal_from(connection)
    if principal.role != "admin":
        raise PermissionDeniedException("admin role required")
