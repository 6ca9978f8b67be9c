"""Schemathesis against the ASGI app, with every check: the published OpenAPI contract holds.

This is ``schemathesis run --checks all`` in-process: schemathesis' own engine runs all its phases
(examples, coverage, fuzzing and stateful sequences along the links it infers, such as create then
read or delete then read) in positive and negative mode, and every registered check judges every
response: no 5xx; a documented status code, content type, headers and body; schema-valid requests
accepted and schema-invalid ones refused; 405 with ``Allow`` for undocumented methods; a missing or
wrong token refused; a created object readable, a deleted one gone. On top, tenant isolation: with
one org's token, another org's call answers exactly like a missing one, and no list holds one.

It runs once per caller, each with its own token on the operations it may use:

- ``own``: an admin of ``acme``, which has an archived call, a call made while recording was off,
  and a recording toggle that has been flipped;
- ``foreign``: an admin of ``globex``, another org with an archived call of its own;
- ``ops``: the operations team (``ops_admin``) on the admin API;
- ``service``: the platform's service token, on the ``/internal`` operations.

Half of the path ids are the real ids of both orgs (a schemathesis dictionary), so the fuzzer reaches
existing objects (own and foreign) and not only random misses; ``from``/``to`` also take boundary
dates, and the org upsert also takes numbers that already belong to an org.

Schemathesis' ASGI transport drives the app on its own event-loop thread and runs the app's lifespan
there. So the data is seeded first, through ``api_harness`` on a loop of its own, and the app under
test is a second app on the same SQLite database and recording store. The fuzzing runs once per
module (deterministically: a CI failure reproduces locally); the tests below judge its findings.

``CALLREC_FUZZ_EXAMPLES`` raises the examples per operation and phase (default 30) for a deeper run.
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

import pytest
import schemathesis
from dependency_injector import providers
from litestar import Litestar
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.engine import events, from_schema
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.python import asgi as schemathesis_asgi

from adapters.sqlalchemy.engine import migrate
from application import commands
from entrypoints.config import Settings
from entrypoints.container import Container
from entrypoints.http.app import create_app
from entrypoints.http.auth import issue_token
from tests.fakes_telephony import FakeTelephony
from tests.support.app import api_harness

MAX_EXAMPLES = int(os.environ.get("CALLREC_FUZZ_EXAMPLES", "30"))
SEED = 20261128
OWN, FOREIGN = "acme", "globex"
OWN_NUMBER, FOREIGN_NUMBER = "+15550100001", "+15550200002"
KNOWN_ORGS = [OWN, FOREIGN, "initech"]
KNOWN_NUMBERS = [OWN_NUMBER, FOREIGN_NUMBER, "+15550300003"]
EDGE_DATES = [date.min.isoformat(), date.max.isoformat(), "2026-11-28"]
POSITIVE_DEFAULT = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis' own

SERVER_ERROR = "server error"
CONFORMANCE = "conformance"
TENANCY = "tenancy"
ENGINE = "engine error"


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
    org_id: str | None  # None: the operations team or the platform service
    paths: str  # the operations this caller may use (a regular expression on the path)


@dataclass
class Findings:
    """Distinct problems (category, caller, operation, what) with one failing request each."""

    items: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (caller, operation) -> count
    statuses: set[tuple[str, str, int]] = field(default_factory=set)  # (caller, operation, status)
    checks: set[str] = field(default_factory=set)  # the checks that judged a response
    phases: set[str] = field(default_factory=set)  # the phases that sent requests
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


def _config(caller: Caller, seeded: Seeded) -> SchemathesisConfig:
    """``schemathesis run --checks all`` for one caller, with the seeded ids in its dictionaries."""
    half = 0.5
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "headers": caller.headers,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
            "checks": {"enabled": True},  # every registered check
            "dictionaries": {
                "call_ids": {"values": seeded.all_call_ids},
                "org_ids": {"values": KNOWN_ORGS},
                "numbers": {"values": KNOWN_NUMBERS},
                "dates": {"values": EDGE_DATES},
            },
            "parameters": {
                "path.call_id": {"dictionary": "call_ids", "probability": half},
                "path.org_id": {"dictionary": "org_ids", "probability": half},
                "body.phone_numbers[*]": {"dictionary": "numbers", "probability": half},
                "query.from": {"dictionary": "dates", "probability": half},
                "query.to": {"dictionary": "dates", "probability": half},
                "query.org_id": {"dictionary": "org_ids", "probability": half},
            },
            "operations": [
                # The caller's operations only. (As a config block: `schema.include()` is not honoured
                # by schemathesis' engine once the config has an `operations` block, as this one has.)
                {"exclude-path-regex": caller.paths, "enabled": False},
                {
                    # Most of the SSRF policy needs DNS (a name must resolve to public addresses
                    # only), which no schema can state: a schema-valid URL that fails it is a
                    # documented 422 (`webhook_url_refused`). The rules a client can know up front
                    # are the `url` pattern, and a URL outside it is still a 400.
                    "include-path": "/api/v1/webhook-endpoints",
                    "include-method": "POST",
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*POSITIVE_DEFAULT, "422"]}},
                },
            ],
        }
    )


def _cross_parameter_rule(case: Any) -> str | None:
    """The contract's rule across query parameters (or body fields) that a case breaks, if any.

    OpenAPI describes each parameter on its own and cannot state these; the operations' descriptions
    and their documented 400 do. A schema-valid request that breaks one is refused with a 400 that
    names the rule, by design.
    """
    query = case.query or {}
    body = case.body if isinstance(case.body, dict) else {}
    if case.path.endswith("/legal-hold") and body.get("held") is True:
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            return "a legal hold needs a reason"
    if case.path == "/api/v1/calls":
        start, end = query.get("from"), query.get("to")
        if isinstance(start, str) and isinstance(end, str) and end < start:
            return "to: must not be before from"
        if query.get("cursor") and query.get("before"):
            return "before: a page is either older (cursor) or newer (before)"
    if case.path == "/api/v1/admin/calls":
        customer = query.get("kind", "customer") == "customer"
        if customer and not query.get("org_id"):
            return "org_id: required for customer calls"
        if not customer and query.get("org_id"):
            return "org_id: discovery and support calls belong to no org"
    return None


def _waive_cross_parameter_rules(schema: Any) -> None:
    """``positive_data_acceptance`` disagrees with the contract on purpose where a schema-valid request
    breaks a rule across parameters (``_cross_parameter_rule``): such a 400 is waived, and only when
    the answer names that rule. Every other failure of every check stands."""

    @schema.hook  # type: ignore[untyped-decorator]
    def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
        rule = _cross_parameter_rule(case)
        if (
            isinstance(failure, RejectedPositiveData)
            and rule is not None
            and response.status_code == 400
            and rule in response.text
        ):
            return False
        return True


def _tenant_problem(caller: Caller, case: Any, response: Any, seeded: Seeded) -> str | None:
    """With the caller's own token, another org's call must look exactly like a missing one."""
    if caller.org_id is None or case.method.upper() != "GET":
        return None
    if response.request.headers.get("Authorization") != caller.headers["Authorization"]:
        return None  # a case that dropped or replaced the token: a 401 is right
    others = {cid for org, ids in seeded.calls.items() if org != caller.org_id for cid in ids}
    if (case.path_parameters or {}).get("call_id") in others and response.status_code not in (400, 404):
        return f"another org's call answered {response.status_code}, not 404"
    if case.path == "/api/v1/calls" and response.status_code == 200:
        if {item["id"] for item in response.json()["items"]} & others:
            return "the list holds another org's call"
    return None


def _example(case: Any, response: Any, caller: Caller) -> str:
    mode = case.meta.generation.mode.value if case.meta is not None else "?"
    curl = case.as_curl_command(headers=caller.headers)
    text = response.text[:300] if response is not None else "(no response)"
    status = response.status_code if response is not None else "-"
    return f"({mode}) {curl}\n-> {status} {text}"


def _collect(event: events.ScenarioFinished, caller: Caller, seeded: Seeded, found: Findings) -> None:
    recorder = event.recorder
    for case_id, node in recorder.cases.items():
        case = node.value
        response = recorder.find_response(case_id=case_id)
        if response is None:
            continue
        label = case.operation.label
        found.requests[caller.name, label] = found.requests.get((caller.name, label), 0) + 1
        found.statuses.add((caller.name, label, response.status_code))
        found.phases.add(event.phase.name)
        problem = _tenant_problem(caller, case, response, seeded)
        if problem is not None:
            found.add(TENANCY, caller.name, label, problem, _example(case, response, caller))
    for case_id, checks in recorder.checks.items():
        case = recorder.cases[case_id].value
        response = recorder.find_response(case_id=case_id)
        for check in checks:
            found.checks.add(check.name)
            if check.failure_info is None:
                continue
            failure = check.failure_info.failure
            status = response.status_code if response is not None else 0
            category = SERVER_ERROR if status >= 500 else CONFORMANCE
            what = f"{check.name}: {failure.title} ({status})"
            found.add(category, caller.name, case.operation.label, what, _example(case, response, caller))


def _fuzz(app: Litestar, caller: Caller, seeded: Seeded, found: Findings) -> None:
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app, config=_config(caller, seeded))
    _waive_cross_parameter_rules(schema)
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            _collect(event, caller, seeded, found)
        elif isinstance(event, events.NonFatalError):
            found.add(ENGINE, caller.name, event.label, event.info.title, event.info.format())
        elif isinstance(event, events.FatalError):
            found.add(ENGINE, caller.name, "-", type(event.exception).__name__, str(event.exception))


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Findings]:
    tmp_path = tmp_path_factory.mktemp("openapi-fuzz")
    database_url = f"sqlite+aiosqlite:///{tmp_path}/callrec.db"
    migrate(database_url)
    env = _secrets()
    seeded = asyncio.run(_seed(tmp_path, database_url, env))

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def token(org_id: str, role: str) -> dict[str, str]:
        secret = env["CALLREC_JWT_SECRET"]
        return bearer(issue_token(secret, org_id=org_id, role=role, sub=f"{role}@{org_id}"))

    def admin(org_id: str) -> dict[str, str]:
        return token(org_id, "admin")

    ops = token("platform", "ops_admin")
    customer_api = r"^/api/v1/(?!admin/)"
    callers = [
        Caller("own", admin(OWN), OWN, customer_api),
        Caller("foreign", admin(FOREIGN), FOREIGN, customer_api),
        Caller("ops", ops, None, r"^/api/v1/admin/"),
        # Last: it renames orgs and moves their numbers.
        Caller("service", bearer(env["CALLREC_SERVICE_TOKEN"]), None, r"^/internal/"),
    ]
    found = Findings()
    app = _app_under_test(tmp_path, database_url, env)
    document = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    operations = [result.ok() for result in document.get_all_operations() if isinstance(result, Ok)]
    found.documented = {f"{op.method.upper()} {op.path}" for op in operations}
    try:
        for caller in callers:
            _fuzz(app, caller, seeded, found)
    finally:
        schemathesis_asgi.shutdown_lifespans()
    yield found


def test_every_operation_is_fuzzed_by_its_callers_in_every_phase(findings: Findings) -> None:
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
    assert {"COVERAGE", "FUZZING", "STATEFUL_TESTING"} <= findings.phases, findings.phases
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


def test_every_check_judged_the_responses(findings: Findings) -> None:
    assert {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "positive_data_acceptance",
        "negative_data_rejection",
        "unsupported_method",
        "missing_required_header",
        "ignored_auth",
        "use_after_free",
        "ensure_resource_availability",
    } <= findings.checks, findings.checks


def test_the_engine_ran_without_errors(findings: Findings) -> None:
    assert not findings.of(ENGINE), findings.report(ENGINE)


def test_another_orgs_calls_answer_404_and_never_list(findings: Findings) -> None:
    assert not findings.of(TENANCY), findings.report(TENANCY)


def test_no_server_errors(findings: Findings) -> None:
    assert not findings.of(SERVER_ERROR), findings.report(SERVER_ERROR)


def test_responses_and_acceptance_match_the_documented_contract(findings: Findings) -> None:
    assert not findings.of(CONFORMANCE), findings.report(CONFORMANCE)
