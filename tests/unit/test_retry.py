"""The one retry mechanism: backoff and attempt counts, conflict retries, and Retry-After."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters.retry import MAX_RETRY_AFTER_S, parse_retry_after
from application.commands import Command, UpsertOrganization
from application.errors import ConcurrencyConflict
from application.messagebus import EventDispatcher, HandlerFailed, MessageBus
from application.retry import CONFLICT_RETRY, RetryPolicy, retry_conflicts, retrying
from application.services import Services
from domain.events import OrganizationCreated
from tests.fakes import make_services
from tests.support.database import Database


class Pauses:
    """An injected sleep: records each pause instead of sleeping."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def conflicting(times: int) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def run() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= times:
            raise ConcurrencyConflict("lost the race")
        return "done"

    return calls, run


async def test_a_conflict_storm_is_retried_with_growing_capped_pauses() -> None:
    sleep = Pauses()
    calls, run = conflicting(8)
    assert await retry_conflicts(run, what="test", sleep=sleep, rand=lambda: 1.0) == "done"
    assert len(calls) == 9
    assert sleep.pauses == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.25, 0.25])
    assert all(0 < pause < 1 for pause in sleep.pauses)


async def test_conflicts_past_the_last_attempt_are_raised() -> None:
    sleep = Pauses()
    calls, run = conflicting(100)
    with pytest.raises(ConcurrencyConflict):
        await retry_conflicts(run, what="test", sleep=sleep, rand=lambda: 0.5)
    assert len(calls) == CONFLICT_RETRY.max_attempts == 9
    assert len(sleep.pauses) == 8 and sleep.pauses[0] == pytest.approx(0.0025)


async def test_other_errors_are_not_retried() -> None:
    sleep = Pauses()
    attempts = 0

    async def run() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        await retry_conflicts(run, what="test", sleep=sleep)
    assert attempts == 1 and sleep.pauses == []


async def test_retrying_honours_retry_after_up_to_the_policy_limit() -> None:
    sleep = Pauses()
    policy = RetryPolicy(max_attempts=3, base_s=1.0, cap_s=4.0, max_retry_after_s=10.0)
    hints = iter([2.0, 11.0])
    attempts = 0

    async def call() -> None:
        nonlocal attempts
        attempts += 1
        raise OSError("down")

    with pytest.raises(OSError):
        await retrying(
            call,
            policy,
            retryable=lambda e: isinstance(e, OSError),
            retry_after=lambda _e: next(hints),
            sleep=sleep,
            rand=lambda: 0.0,
        )
    assert attempts == 2 and sleep.pauses == [2.0]  # a Retry-After past the limit is not waited for


@pytest.fixture
def svc(db: Database) -> Services:
    return make_services(db=db)


async def test_the_bus_retries_a_command_that_keeps_losing_races_with_pauses(svc: Services) -> None:
    attempts = 0

    async def contended(_cmd: Command, _svc: Services) -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 6:
            raise ConcurrencyConflict("lost the race")
        return "handled"

    sleep = Pauses()
    bus = MessageBus(svc, {UpsertOrganization: contended}, sleep=sleep)
    assert await bus.handle(UpsertOrganization("org", "Org", [], "Hello")) == "handled"
    assert attempts == 6 and len(sleep.pauses) == 5
    assert all(0 <= pause <= CONFLICT_RETRY.cap_s for pause in sleep.pauses)


async def test_an_event_consumer_in_a_conflict_storm_fails_after_the_last_attempt(svc: Services) -> None:
    attempts = 0

    async def always_contended(_event: OrganizationCreated, _svc: Services) -> None:
        nonlocal attempts
        attempts += 1
        raise ConcurrencyConflict("lost the race")

    sleep = Pauses()
    dispatcher = EventDispatcher(svc, {OrganizationCreated: [("storm", always_contended)]}, sleep=sleep)
    event = OrganizationCreated(occurred_at=NOW, org_id="org", name="Org", phone_numbers=[])
    with pytest.raises(HandlerFailed):
        await dispatcher.dispatch(event)
    assert attempts == CONFLICT_RETRY.max_attempts and len(sleep.pauses) == attempts - 1


NOW = dt.datetime(2026, 11, 2, 15, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30.0),
        (" 7 ", 7.0),
        ("0.5", 0.5),
        ("0", 0.0),
        ("Mon, 02 Nov 2026 15:10:00 GMT", 600.0),
        ("Mon, 02 Nov 2026 15:10:00 -0000", 600.0),  # no zone: an HTTP date is GMT
        ("Mon, 02 Nov 2026 14:00:00 GMT", 0.0),  # already past: now
        ("99999999999999999999", MAX_RETRY_AFTER_S),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER_S),
        ("-3", None),
        ("soon", None),
        ("inf", None),
        ("nan", None),
        ("1e3", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_retry_after_is_capped_as_asked() -> None:
    assert parse_retry_after("120", now=NOW, cap_s=30.0) == 30.0


def test_an_integrity_violation_is_a_409_that_says_not_to_retry() -> None:
    from litestar import Request

    from application.errors import IntegrityViolation
    from entrypoints.http.errors import application_error_handler

    request: Request[Any, Any, Any] = Request(
        {"type": "http", "method": "PUT", "path": "/api/v1/settings/call-recording", "headers": []}  # type: ignore[arg-type]
    )
    response = application_error_handler(request, IntegrityViolation("FOREIGN KEY constraint failed"))
    assert response.status_code == 409
    assert response.content["error"]["code"] == "integrity_violation"
