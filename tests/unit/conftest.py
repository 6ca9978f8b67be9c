"""Fakes shared by the unit tier (``db``, the real database, comes from tests/conftest.py).
Each test module builds its own ``svc`` from them (settings differ)."""

from __future__ import annotations

import pytest

from application.messagebus import MessageBus
from application.services import Services
from tests.fakes import FakeClock, FakeTelephony, InMemoryRecordingStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def telephony() -> FakeTelephony:
    return FakeTelephony()


@pytest.fixture
def store(clock: FakeClock) -> InMemoryRecordingStore:
    return InMemoryRecordingStore(clock=clock.now)


@pytest.fixture
def bus(svc: Services) -> MessageBus:
    return MessageBus(svc)
