"""The ``Clock`` port's contract, run against ``FakeClock`` and the real ``SystemClock``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta

import pytest

from adapters.clock import SystemClock
from application.ports import Clock
from tests.fakes import FakeClock


@dataclass
class Backend:
    clock: Clock
    let_time_pass: Callable[[], object]


@pytest.fixture(params=["fake", "system"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "fake":
        fake = FakeClock()
        return Backend(fake, lambda: fake.advance(seconds=1))
    return Backend(SystemClock(), lambda: None)


def test_the_time_is_timezone_aware_utc(backend: Backend) -> None:
    now = backend.clock.now()

    assert now.tzinfo is UTC and now.utcoffset() == timedelta(0)


def test_the_time_never_goes_backwards(backend: Backend) -> None:
    readings = []
    for _ in range(100):
        readings.append(backend.clock.now())
        backend.let_time_pass()

    assert readings == sorted(readings)


def test_the_fake_clock_refuses_a_time_without_a_zone_or_to_be_turned_back() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError):
        FakeClock(clock.now().replace(tzinfo=None))
    with pytest.raises(ValueError):
        clock.advance(seconds=-1)
    with pytest.raises(ValueError):
        clock.set(clock.now() - timedelta(microseconds=1))
