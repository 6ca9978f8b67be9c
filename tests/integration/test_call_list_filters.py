"""The calls list's caller, non-engagement and newer-page queries on real SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from application.ports import CallCursor, CallQuery
from domain.model import Call, CallStatus
from tests.integration.test_sqlalchemy_unit_of_work import T0, new_call, new_org, save


def call_from(org_calls: list[Call], number: str, at_minute: int) -> Call:
    org = new_org()
    call = Call.start(
        call_sid=f"CA{len(org_calls)}",
        account_sid="AC1",
        from_number=number,
        to_number=org.phone_numbers[0],
        now=T0 + timedelta(minutes=at_minute),
        org=org,
    )
    org_calls.append(call)
    return call


async def sids(engine: AsyncEngine, query: CallQuery) -> list[str]:
    async with SqlAlchemyUnitOfWork(engine) as uow:
        return [c.call_sid for c in await uow.calls.page(query)]


async def test_the_caller_filter_matches_numbers_that_start_with_it(engine: AsyncEngine) -> None:
    calls: list[Call] = []
    for minute, number in enumerate(
        ["+15550100001", "+15550100002", "+15551000000", "+442079460958", "anonymous", "client:alice", "+1"]
    ):
        call_from(calls, number, minute)
    other = new_org("org-b", numbers=("+15550000009",))
    foreign = new_call(other, "CB1")  # from +15559999999, another org's
    await save(engine, new_org(), other, *calls, foreign)

    def query(prefix: str) -> CallQuery:
        return CallQuery(org_id="org-a", caller_prefix=prefix)

    assert await sids(engine, query("+1555010")) == ["CA1", "CA0"]  # newest first
    assert await sids(engine, query("+15550100002")) == ["CA1"]  # a whole number
    assert await sids(engine, query("+1")) == ["CA6", "CA2", "CA1", "CA0"]
    assert await sids(engine, query("+44")) == ["CA3"]
    assert await sids(engine, query("+1555999")) == []  # not another org's call
    assert await sids(engine, query("+2")) == []


async def test_hiding_non_engagement_leaves_out_what_settling_or_the_scorability_filter_judged(
    engine: AsyncEngine,
) -> None:
    org = new_org()
    engaged, hangup, robocall, live = (new_call(org, f"CA{i}", T0 + timedelta(minutes=i)) for i in range(4))
    for call in (engaged, hangup):
        call.answer(call.started_at + timedelta(seconds=1))
    engaged.end(status=CallStatus.COMPLETED, duration_s=90, now=engaged.started_at + timedelta(seconds=91))
    hangup.end(status=CallStatus.COMPLETED, duration_s=1, now=hangup.started_at + timedelta(seconds=2))
    robocall.record_scorability(scorable=False, reason="robocall", now=T0)  # not settled yet
    for call in (engaged, hangup):
        assert call.settle(None, now=call.started_at + timedelta(minutes=5))
    assert (engaged.non_engagement_reason, hangup.non_engagement_reason) == (None, "instant_hangup")
    await save(engine, org, engaged, hangup, robocall, live)

    assert await sids(engine, CallQuery(org_id="org-a")) == ["CA3", "CA2", "CA1", "CA0"]
    assert await sids(engine, CallQuery(org_id="org-a", hide_non_engagement=True)) == ["CA3", "CA0"]
    async with SqlAlchemyUnitOfWork(engine) as uow:
        loaded = await uow.calls.get(hangup.id)
    assert loaded is not None and loaded.non_engagement_reason == "instant_hangup"


async def test_the_newer_page_is_the_calls_just_after_a_position_oldest_first(engine: AsyncEngine) -> None:
    org = new_org()
    calls = [new_call(org, f"CA{i}", T0 + timedelta(minutes=i // 2)) for i in range(7)]  # ties on started_at
    await save(engine, org, *calls)
    newest_first = [c.call_sid for c in sorted(calls, key=lambda c: (c.started_at, c.id), reverse=True)]
    by_sid = {c.call_sid: c for c in calls}
    oldest = by_sid[newest_first[-1]]
    walked: list[str] = []
    before = CallCursor(oldest.started_at, oldest.id)
    while page := await sids(engine, CallQuery(org_id="org-a", limit=2, before=before)):
        walked.extend(page)
        last = by_sid[page[-1]]
        before = CallCursor(last.started_at, last.id)
    assert walked == newest_first[-2::-1]
    filtered = CallQuery(org_id="org-a", before=CallCursor(oldest.started_at, oldest.id), caller_prefix="+1")
    assert await sids(engine, filtered) == newest_first[-2::-1]
