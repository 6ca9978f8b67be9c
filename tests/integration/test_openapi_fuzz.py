"""Schemathesis against the ASGI app: the published OpenAPI contract holds under fuzzed requests.

Every documented operation is fuzzed with positive and negative data, as three callers:

- ``own``: an admin of ``acme``, which has an archived call, a call made while recording was off,
  and a recording toggle that has been flipped;
- ``foreign``: an admin of ``globex``, another org with an archived call of its own;
- ``service``: the platform's service token, on the ``/internal`` operations only.

Half of the path ids are the real ids of both orgs, so the fuzzer reaches existing objects (own and
foreign) and not only random misses; the list's ``from``/``to`` also take boundary dates, and the
org upsert also takes numbers that already belong to an org. Checks: no 5xx, a documented status
code and content type, a body that matches the documented schema, and tenant isolation (another
org's call answers 404 exactly like a missing one, and no list holds one).

Schemathesis' ASGI transport drives the app on its own event-loop thread and runs the app's lifespan
there. So the data is seeded first, through ``api_harness`` on a loop of its own, and the app under
test is a second app on the same SQLite database and recording store. The fuzzing runs once per
module; the tests below judge its findings.

``CALLREC_FUZZ_EXAMPLES`` raises the examples per operation and mode (default 30) for a deeper run.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from dependency_injector import providers
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from litestar import Litestar
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from adapters.sqlalchemy.engine import migrate
from application import commands
from entrypoints.config import Settings
from entrypoints.container import Container
from entrypoints.http.app import create_app
from entrypoints.http.auth import issue_token
from tests.fakes_telephony import FakeTelephony
from tests.support.app import api_harness

MAX_EXAMPLES = int(os.environ.get("CALLREC_FUZZ_EXAMPLES", "30"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OWN, FOREIGN = "acme", "globex"
OWN_NUMBER, FOREIGN_NUMBER = "+15550100001", "+15550200002"
KNOWN_ORGS = [OWN, FOREIGN, "initech"]
KNOWN_NUMBERS = [OWN_NUMBER, FOREIGN_NUMBER, "+15550300003"]
EDGE_DATES = st.one_of(st.sampled_from([date.min, date.max]), st.dates())

SERVER_ERROR = "server error"
CONFORMANCE = "conformance"
TENANCY = "tenancy"


@dataclass(frozen=True)
class Seeded:
    calls: dict[str, list[str]]  # org id -> its call ids

    @property
    def all_call_ids(self) -> list[str]:
        return [call_id for ids in self.calls.values() for call_id in ids]


@dataclass(frozen=True)
class Caller:
    name: str
    headers: dict[str, str]
    org_id: str | None  # None: the platform service
    path_prefix: str


@dataclass
class Findings:
    """Distinct problems (category, caller, operation, what) with one failing request each."""

    items: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (caller, operation) -> count
    statuses: set[tuple[str, str, int]] = field(default_factory=set)  # (caller, operation, status)
    documented: set[str] = field(default_factory=set)  # every operation of the schema

    def add(self, category: str, caller: str, operation: str, what: str, example: str) -> None:
        self.items.setdefault((category, caller, operation, what), example)

    def report(self, category: str) -> str:
        found = [(key, example) for key, example in self.items.items() if key[0] == category]
        lines = [f"[{caller}] {op}: {what}\n{example}" for (_, caller, op, what), example in found]
        return f"{len(found)} problem(s):\n\n" + "\n\n".join(lines)

    def of(self, category: str) -> list[tuple[str, str, str]]:
        return [key[1:] for key in self.items if key[0] == category]


def _secrets() -> dict[str, str]:
    return {
        "CALLREC_JWT_SECRET": "fuzz-jwt-" + secrets.token_hex(16),
        "CALLREC_SERVICE_TOKEN": "fuzz-service-" + secrets.token_hex(16),
        "CALLREC_MEDIA_SIGNING_KEY": "fuzz-media-" + secrets.token_hex(16),
    }


async def _seed(tmp_path: Path, database_url: str, env: dict[str, str]) -> Seeded:
    async with api_harness(tmp_path, database_url, **env) as h:
        await h.org(OWN, OWN_NUMBER)
        await h.org(FOREIGN, FOREIGN_NUMBER)
        own_archived = await h.archived_call(OWN_NUMBER)
        await h.bus.handle(commands.SetCallRecording(OWN, False, f"admin@{OWN}"))
        own_unrecorded = await h.unrecorded_call(OWN_NUMBER)
        await h.bus.handle(commands.SetCallRecording(OWN, True, f"admin@{OWN}"))
        foreign_archived = await h.archived_call(FOREIGN_NUMBER)
        await h.relay.drain()
        detail = await h.client.get(f"/api/v1/calls/{own_unrecorded}", headers=h.auth(OWN, "member"))
        assert detail.json()["recording"]["reason"] == "recording_off", detail.text
        detail = await h.client.get(f"/api/v1/calls/{own_archived}", headers=h.auth(OWN, "member"))
        assert detail.json()["recording"]["status"] == "available", detail.text
        return Seeded({OWN: [own_archived, own_unrecorded], FOREIGN: [foreign_archived]})


def _app_under_test(tmp_path: Path, database_url: str, env: dict[str, str]) -> Litestar:
    """The app as ``api_harness`` builds it (same settings and store, fake Twilio)."""
    settings = Settings.from_env(
        {
            "CALLREC_VAR_DIR": str(tmp_path / "var"),
            "CALLREC_DATABASE_URL": database_url,
            "CALLREC_PUBLIC_URL": "http://testserver.local",
            "TWILIO_ACCOUNT_SID": "AC1",
            "TWILIO_AUTH_TOKEN": "token",
            "CALLREC_PLATFORM_LINES": "support=+15557770002",
            **env,
        }
    )
    container = Container(settings=settings)
    container.telephony.override(providers.Object(FakeTelephony()))
    return create_app(container=container)


def _sometimes(strategy: Any, values: Any, apply: Any) -> Any:
    """Half of the cases get ``apply(case, value)`` with a value drawn from ``values``."""
    return st.one_of(strategy, st.tuples(strategy, values).map(lambda pair: apply(*pair)))


def _set_path(name: str) -> Any:
    def apply(case: Any, value: str) -> Any:
        case.path_parameters = {**(case.path_parameters or {}), name: value}
        return case

    return apply


def _set_dates(case: Any, dates: tuple[date, date]) -> Any:
    case.query = {**(case.query or {}), "from": dates[0].isoformat(), "to": dates[1].isoformat()}
    return case


def _set_numbers(case: Any, numbers: list[str]) -> Any:
    if isinstance(case.body, dict):
        case.body = {**case.body, "phone_numbers": numbers}
    return case


def _strategies(operation: Any, seeded: Seeded) -> Iterator[tuple[GenerationMode, Any]]:
    names = {p.name for p in operation.query}
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategy = operation.as_strategy(generation_mode=mode)
        if "{call_id}" in operation.path:
            strategy = _sometimes(strategy, st.sampled_from(seeded.all_call_ids), _set_path("call_id"))
        if "{org_id}" in operation.path:
            strategy = _sometimes(strategy, st.sampled_from(KNOWN_ORGS), _set_path("org_id"))
            numbers = st.lists(st.sampled_from(KNOWN_NUMBERS), max_size=2, unique=True)
            strategy = _sometimes(strategy, numbers, _set_numbers)
        if {"from", "to"} <= names:
            strategy = _sometimes(strategy, st.tuples(EDGE_DATES, EDGE_DATES), _set_dates)
        yield mode, strategy


def _tenant_problem(caller: Caller, case: Any, response: Any, seeded: Seeded) -> str | None:
    """With the caller's own token, another org's call must look exactly like a missing one."""
    if caller.org_id is None or case.method.upper() != "GET" or case.path.startswith("/api/v1/admin/"):
        return None  # the admin API is the operations team's: it sees every org by design
    if response.request.headers.get("Authorization") != caller.headers["Authorization"]:
        return None  # a negative case that dropped or replaced the token: a 401 is right
    others = {cid for org, ids in seeded.calls.items() if org != caller.org_id for cid in ids}
    if (case.path_parameters or {}).get("call_id") in others and response.status_code not in (400, 404):
        return f"another org's call answered {response.status_code}, not 404"
    if case.path == "/api/v1/calls" and response.status_code == 200:
        if {item["id"] for item in response.json()["items"]} & others:
            return "the list holds another org's call"
    return None


def _fuzz_operation(
    strategy: Any, label: str, mode: GenerationMode, caller: Caller, seeded: Seeded, findings: Findings
) -> None:
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run: a CI failure reproduces locally
        phases=[Phase.explicit, Phase.generate],  # findings are collected, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        findings.requests[caller.name, label] = findings.requests.get((caller.name, label), 0) + 1
        response = case.call(headers=caller.headers)
        findings.statuses.add((caller.name, label, response.status_code))
        curl = case.as_curl_command(headers=caller.headers)
        example = f"({mode.value}) {curl}\n-> {response.status_code} {response.text[:300]}"
        try:
            case.validate_response(response, checks=CHECKS, headers=caller.headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                category = SERVER_ERROR if response.status_code >= 500 else CONFORMANCE
                findings.add(
                    category, caller.name, label, f"{failure.title} ({response.status_code})", example
                )
        problem = _tenant_problem(caller, case, response, seeded)
        if problem is not None:
            findings.add(TENANCY, caller.name, label, problem, example)

    fuzz()


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> Findings:
    tmp_path = tmp_path_factory.mktemp("openapi-fuzz")
    database_url = f"sqlite+aiosqlite:///{tmp_path}/callrec.db"
    migrate(database_url)
    env = _secrets()
    seeded = asyncio.run(_seed(tmp_path, database_url, env))

    def admin(org_id: str) -> dict[str, str]:
        token = issue_token(env["CALLREC_JWT_SECRET"], org_id=org_id, role="admin", sub=f"admin@{org_id}")
        return {"Authorization": f"Bearer {token}"}

    def ops_admin() -> dict[str, str]:
        secret = env["CALLREC_JWT_SECRET"]
        token = issue_token(secret, org_id="platform", role="ops_admin", sub="ops@platform")
        return {"Authorization": f"Bearer {token}"}

    callers = [
        Caller("own", admin(OWN), OWN, "/api/"),
        Caller("foreign", admin(FOREIGN), FOREIGN, "/api/"),
        Caller("ops", ops_admin(), None, "/api/v1/admin/"),
        # Last: it renames orgs and moves their numbers.
        Caller("service", {"Authorization": f"Bearer {env['CALLREC_SERVICE_TOKEN']}"}, None, "/internal/"),
    ]
    found = Findings()
    schema = schemathesis.openapi.from_asgi(
        "/schema/openapi.json", _app_under_test(tmp_path, database_url, env)
    )
    try:
        operations = [result.ok() for result in schema.get_all_operations()]
        found.documented = {f"{op.method.upper()} {op.path}" for op in operations}
        for caller in callers:
            for operation in operations:
                if operation.path.startswith(caller.path_prefix):
                    label = f"{operation.method.upper()} {operation.path}"
                    for mode, strategy in _strategies(operation, seeded):
                        _fuzz_operation(strategy, label, mode, caller, seeded, found)
    finally:
        schemathesis_asgi.shutdown_lifespans()
    return found


def test_every_operation_is_fuzzed_by_its_callers(findings: Findings) -> None:
    fuzzed = {operation for _, operation in findings.requests}
    # A new API (another prefix, another credential) needs its caller here.
    assert findings.documented == fuzzed, findings.documented - fuzzed
    assert {
        "GET /api/v1/settings/call-recording",
        "PUT /api/v1/settings/call-recording",
        "GET /api/v1/calls",
        "GET /api/v1/calls/{call_id}",
        "GET /api/v1/calls/{call_id}/recording",
        "PUT /internal/v1/organizations/{org_id}",
        "POST /internal/v1/calls/{call_id}/scorability",
        "POST /internal/v1/calls/{call_id}/transfer",
    } <= fuzzed
    assert {caller for caller, _ in findings.requests} == {"own", "foreign", "ops", "service"}
    # The seeded objects were reached, not only random misses.
    for expected in [
        ("own", "GET /api/v1/calls/{call_id}", 200),
        ("own", "GET /api/v1/calls/{call_id}/recording", 307),
        ("foreign", "GET /api/v1/calls/{call_id}", 200),
        ("own", "GET /api/v1/calls/{call_id}", 404),
        ("service", "POST /internal/v1/calls/{call_id}/transfer", 204),
        ("service", "PUT /internal/v1/organizations/{org_id}", 200),
    ]:
        assert expected in findings.statuses, expected


def test_another_orgs_calls_answer_404_and_never_list(findings: Findings) -> None:
    assert not findings.of(TENANCY), findings.report(TENANCY)


def test_no_server_errors(findings: Findings) -> None:
    assert not findings.of(SERVER_ERROR), findings.report(SERVER_ERROR)


def test_responses_match_the_documented_contract(findings: Findings) -> None:
    assert not findings.of(CONFORMANCE), findings.report(CONFORMANCE)
