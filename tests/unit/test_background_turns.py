"""Background passes never make a request wait for the whole pass: they work in short transactions
of bounded pages, and on SQLite a request's writing unit of work (a Twilio callback's command) gets
its turn between two of them."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import TracebackType
from typing import Any, cast

from application.commands import EndCall
from application.messagebus import MessageBus
from application.ports import UnitOfWork
from application.settling import CallSettler
from domain.model import CallStatus
from tests.fakes import FakeClock, make_services
from tests.support.database import Database
from tests.unit.test_handlers import agent_answers, given_org, incoming, sid


class _Logged:
    """A unit of work that notes in ``log`` when it has begun and when it has ended."""

    def __init__(self, inner: UnitOfWork, log: list[str], on_begin: Any) -> None:
        self.inner, self.log, self.on_begin = inner, log, on_begin

    async def __aenter__(self) -> UnitOfWork:
        uow = await self.inner.__aenter__()
        self.log.append("page begins")
        self.on_begin()
        original = uow.calls.settling

        async def settling(*, ended_before: Any, limit: int) -> Any:
            calls = await original(ended_before=ended_before, limit=limit)
            self.log.append(f"reads {len(calls)} of at most {limit}")
            return calls

        uow.calls.settling = settling  # type: ignore[method-assign]
        return uow

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)
        self.log.append("page ends")


async def test_the_settle_pass_goes_in_pages_and_a_request_is_served_between_two(
    db: Database, clock: FakeClock
) -> None:
    svc = make_services(db=db, clock=clock)
    bus = MessageBus(svc)
    await given_org(bus, recording=False)
    calls = []
    for n in range(7):
        calls.append((await incoming(bus, sid(n))).call_id)
        await agent_answers(bus, sid(n))
        await bus.handle(EndCall(sid(n), CallStatus.COMPLETED, 30))
    # The relay has not run: the seven calls ended and wait for the settler.
    log: list[str] = []
    requests: list[asyncio.Task[None]] = []

    async def request() -> None:
        async with db.unit_of_work() as uow:  # what a command's handler opens (it may write)
            assert await uow.calls.get(calls[0]) is not None
        log.append("request served")

    def on_begin() -> None:
        if not requests:  # a request arrives while the first page is in progress
            requests.append(asyncio.create_task(request()))

    def logged_uow(*, processed_by: tuple[str, str] | None = None, read_only: bool = False) -> UnitOfWork:
        inner = svc.uow_factory(processed_by=processed_by, read_only=read_only)
        return cast(UnitOfWork, _Logged(inner, log, on_begin))

    settler = CallSettler(replace(svc, uow_factory=logged_uow), batch_size=3)
    assert await settler.run_once() == 7
    await asyncio.gather(*requests)

    assert log == [
        "page begins",
        "reads 3 of at most 3",
        "page ends",
        "request served",
        "page begins",
        "reads 3 of at most 3",
        "page ends",
        "page begins",
        "reads 1 of at most 3",
        "page ends",
    ]
    assert [(await db.call(call_id)).settled_at is not None for call_id in calls] == [True] * 7
