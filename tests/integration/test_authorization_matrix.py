"""The authorization matrix (docs/authorization-matrix.csv) drives one suite over every endpoint.

Rows are role x endpoint x target: ``own`` (an object of the caller's org), ``other`` (the same kind of
object of another org), ``missing`` (no such object) or ``none`` (no id in the path). Adding an
endpoint without rows fails ``test_every_endpoint_has_rows_in_the_matrix``.
"""

from __future__ import annotations

import asyncio
import csv
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from litestar.routes import HTTPRoute

from tests.support.app import ApiHarness, api_harness, error_code

MATRIX = Path(__file__).resolve().parents[2] / "docs" / "authorization-matrix.csv"
# Authenticated otherwise (Twilio signatures, signed media URLs, the dashboard session cookie: see
# tests/e2e/test_dashboard_browser.py) or public: not in the matrix.
OUTSIDE_MATRIX = re.compile(r"^/(twilio|media|healthz|readyz|metrics|schema|dashboard)(/|$)")


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    role: str
    target: str
    status: int

    def __str__(self) -> str:
        return f"{self.role}-{self.method}-{self.path}-{self.target}"


def load_matrix() -> list[Row]:
    with MATRIX.open() as f:
        return [
            Row(r["method"], r["path"], r["role"], r["target"], int(r["status"])) for r in csv.DictReader(f)
        ]


ROWS = load_matrix()
OWN_NUMBER, OTHER_NUMBER = "+15550000001", "+15550000002"
WEBHOOK_BODY: dict[str, object] = {"url": "http://127.0.0.1:9/hook", "events": ["call.ended"]}
ERASURE_BODY: dict[str, object] = {"caller_number": "+15559990000", "reason": "caller asked"}


@dataclass
class World:
    harness: ApiHarness
    own_call: str
    other_call: str
    webhooks: dict[str, tuple[str, str]] = field(default_factory=dict)  # target → (endpoint, delivery)
    erasures: dict[str, str] = field(default_factory=dict)  # target → erasure request


async def webhook_of(harness: ApiHarness, org_id: str) -> str:
    """An endpoint of the org (on loopback's discard port: deliveries fail at once, never leave)."""
    r = await harness.client.post(
        "/api/v1/webhook-endpoints", json=WEBHOOK_BODY, headers=harness.auth(org_id, "admin")
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def delivery_of(harness: ApiHarness, endpoint_id: str) -> str:
    async with harness.services.uow() as uow:
        [delivery] = await uow.webhook_deliveries.for_endpoint(endpoint_id, limit=1)
    return delivery.id


async def erasure_of(harness: ApiHarness, org_id: str) -> str:
    r = await harness.client.post(
        "/api/v1/erasure-requests", json=ERASURE_BODY, headers=harness.auth(org_id, "admin")
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    url = f"sqlite+aiosqlite:///{tmp_path}/matrix.db"
    from adapters.sqlalchemy.engine import migrate

    await asyncio.to_thread(migrate, url)
    async with api_harness(tmp_path, url, CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS="true") as harness:
        await harness.org("own", OWN_NUMBER)
        await harness.org("other", OTHER_NUMBER)
        endpoints = {org: await webhook_of(harness, org) for org in ("own", "other")}
        own_call = await harness.archived_call(OWN_NUMBER)
        other_call = await harness.archived_call(OTHER_NUMBER)
        webhooks = {org: (e, await delivery_of(harness, e)) for org, e in endpoints.items()}
        erasures = {org: await erasure_of(harness, org) for org in ("own", "other")}
        yield World(harness, own_call, other_call, webhooks, erasures)


def body_for(row: Row) -> dict[str, object] | None:
    if row.method == "GET":
        return None
    if row.path.endswith("/scorability"):
        return {"scorable": False, "reason": "robocall"}
    if row.path.endswith("/transfer"):
        return {"stage": "started"}
    if row.path.endswith(("/recording/pause", "/recording/resume")):
        return None  # no body; the own call has ended: 409
    if row.path.startswith("/internal/v1/organizations"):
        number = OWN_NUMBER if row.target == "own" else "+15550000099"
        return {"name": "Org", "phone_numbers": [number], "greeting": "Hello."}
    if row.path == "/api/v1/webhook-endpoints":
        return WEBHOOK_BODY
    if row.path.endswith("/legal-hold"):
        return {"held": True, "reason": "dispute 4711"}
    if row.path == "/api/v1/settings/retention":
        return {"days": 30}
    if row.path.endswith("/numbers/{number}"):
        return {"mode": "off"}
    if row.path == "/api/v1/erasure-requests":
        return ERASURE_BODY
    return {"enabled": False}


def headers_for(world: World, role: str) -> dict[str, str]:
    if role == "anonymous":
        return {}
    if role == "service":
        return world.harness.service_auth
    return world.harness.auth("own", role)


def path_for(world: World, row: Row) -> str:
    ids = {
        "own": (world.own_call, "own"),
        "other": (world.other_call, "other"),
        "missing": ("00000000-0000-4000-8000-000000000000", "brand-new-org"),
        "none": ("", ""),
    }
    call_id, org_id = ids[row.target]
    missing = "00000000-0000-4000-8000-000000000000"
    endpoint_id, delivery_id = world.webhooks.get(row.target, (missing, missing))
    path = row.path.replace("{endpoint_id}", endpoint_id).replace("{delivery_id}", delivery_id)
    path = path.replace("{call_id}", call_id).replace("{org_id}", org_id)
    numbers = {"own": OWN_NUMBER, "other": OTHER_NUMBER, "missing": "+15550000099"}
    path = path.replace("{number}", numbers.get(row.target, "").replace("+", "%2B"))
    path = path.replace("{request_id}", world.erasures.get(row.target, missing))
    if row.path == "/api/v1/admin/calls":
        path += "?org_id=own&kind=customer"
    elif row.path.startswith("/api/v1/admin/"):
        path += "?reason=support+ticket+4711"
    return path


@pytest.mark.parametrize("row", ROWS, ids=str)
async def test_authorization_matrix(world: World, row: Row) -> None:
    client = world.harness.client
    before = (await client.get("/api/v1/settings/call-recording", headers=world.harness.auth("other"))).json()
    response = await client.request(
        row.method, path_for(world, row), json=body_for(row), headers=headers_for(world, row.role)
    )
    assert response.status_code == row.status, response.text
    if row.status >= 400:
        error_code(response)  # the one error shape
        assert "location" not in response.headers  # no URL minted for what the caller may not see
    if row.status == 404:
        assert response.json()["error"]["code"] == "not_found"
    after = (await client.get("/api/v1/settings/call-recording", headers=world.harness.auth("other"))).json()
    assert after == before, "the other org's toggle and numbers must be untouched"


def test_every_endpoint_has_rows_in_the_matrix() -> None:
    from tests.support.app import Settings, create_app

    app = create_app(settings=Settings.from_env({"CALLREC_VAR_DIR": "/tmp/callrec-matrix-var"}))
    covered = {(r.method, r.path) for r in ROWS}
    missing = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or OUTSIDE_MATRIX.match(route.path):
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            if (method, path) not in covered:
                missing.append(f"{method} {path}")
    assert missing == [], f"endpoints without rows in {MATRIX.name}: {missing}"


def test_every_row_names_an_endpoint_that_exists() -> None:
    from tests.support.app import Settings, create_app

    app = create_app(settings=Settings.from_env({"CALLREC_VAR_DIR": "/tmp/callrec-matrix-var"}))
    existing = {
        (method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))
        for route in app.routes
        if isinstance(route, HTTPRoute)
        for method in route.methods
    }
    assert {(r.method, r.path) for r in ROWS} <= existing
