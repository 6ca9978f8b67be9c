"""The delivery schedule for real: SQLite and PostgreSQL, the real sender, a loopback receiver that
verifies every try with the ``standardwebhooks`` library, and a fake clock that walks the schedule."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy.engine import create_engine
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from adapters.webhook_sender import StandardWebhookSender
from application import webhooks
from application.commands import RegisterWebhookEndpoint, UpsertOrganization
from application.messagebus import MessageBus
from application.services import Services, ServiceSettings
from application.webhook_delivery import WebhookDeliveryScheduler
from domain import events
from domain.webhooks import DeliveryStatus, EndpointStatus
from tests.fakes import FakeClock, FakeTelephony, InMemoryRecordingStore
from tests.fakes_webhooks import PlainSecretBox
from tests.support.webhook_receiver import Reply, WebhookReceiver, webhook_receiver


class UowFactory:
    def __init__(self, engine: AsyncEngine, clock: FakeClock) -> None:
        self.engine, self.clock = engine, clock

    def __call__(
        self, *, processed_by: tuple[str, str] | None = None, read_only: bool = False
    ) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(
            self.engine, processed_by=processed_by, clock=self.clock.now, read_only=read_only
        )


@dataclass
class World:
    svc: Services
    bus: MessageBus
    clock: FakeClock
    receiver: WebhookReceiver
    store: InMemoryRecordingStore

    def scheduler(self) -> WebhookDeliveryScheduler:
        return WebhookDeliveryScheduler(self.svc, jitter=lambda: 1.0, lease=timedelta(seconds=60))


def make_services(engine: AsyncEngine, clock: FakeClock, store: InMemoryRecordingStore) -> Services:
    return Services(
        uow_factory=UowFactory(engine, clock),
        telephony=FakeTelephony(),
        store=store,
        clock=clock,
        settings=ServiceSettings(public_url="https://callrec.test"),
        webhook_sender=StandardWebhookSender(allow_private_networks=True, timeout_s=0.5),
        secret_box=PlainSecretBox(),
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture
async def world(engine: AsyncEngine, receiver: WebhookReceiver) -> AsyncIterator[World]:
    clock = FakeClock()
    store = InMemoryRecordingStore(clock=clock.now)
    svc = make_services(engine, clock, store)
    bus = MessageBus(svc)
    await bus.handle(UpsertOrganization("acme", "Acme", ["+15550001111"], "Hi"))
    yield World(svc, bus, clock, receiver, store)


async def subscribe(world: World, path: str) -> str:
    result: webhooks.EndpointWithSecret = await world.bus.handle(
        RegisterWebhookEndpoint("acme", world.receiver.url(path), ["call.ended"])
    )
    world.receiver.secrets.append(result.secret)
    return result.endpoint.id


async def call_settled(world: World, n: int, storage_key: str | None = None) -> events.CallSettled:
    """What the domain records when call ``n`` settles, handed to the fan-out consumer."""
    now = world.clock.now()
    event = events.CallSettled(
        occurred_at=now,
        org_id="acme",
        call_id=f"call-{n}",
        call_sid=f"CA{n:032x}",
        kind="customer",
        status="completed",
        from_number="+15557654321",
        to_number="+15550001111",
        started_at=now - timedelta(minutes=2),
        answered_at=now - timedelta(minutes=2),
        ended_at=now,
        duration_s=120,
        recorded=storage_key is not None,
        recording_id=None,
        storage_key=storage_key,
        non_engagement=None,
    )
    await webhooks.enqueue_call_ended(event, world.svc.for_consumer("webhooks.enqueue", event.id))
    return event


async def deliveries(world: World, endpoint_id: str) -> list[webhooks.DeliveryView]:
    views, _ = await webhooks.list_deliveries(world.svc, org_id="acme", endpoint_id=endpoint_id, limit=50)
    return views


async def test_the_schedule_through_500s_a_timeout_a_302_and_retry_after_until_delivered(
    world: World,
) -> None:
    endpoint = await subscribe(world, "/flaky")
    world.receiver.script(
        "/flaky",
        Reply(500),
        Reply(200, delay_s=1.5),  # longer than the 0.5 s timeout
        Reply(302, headers={"Location": "http://127.0.0.1:9/elsewhere"}),
        Reply(429, headers={"Retry-After": str(4 * 3600)}),  # later than the schedule's 2 h
        Reply(503),
        Reply(204),
    )
    event = await call_settled(world, 1)
    scheduler = world.scheduler()
    waits = []
    for _ in range(6):
        await scheduler.drain()
        [view] = await deliveries(world, endpoint)
        if view.delivery.next_attempt_at is None:
            break
        waits.append(view.delivery.next_attempt_at - world.clock.now())
        world.clock.set(view.delivery.next_attempt_at - timedelta(seconds=1))
        await scheduler.drain()  # not due yet: nothing is sent early
        world.clock.advance(seconds=1)
    assert waits == [
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=4),
        timedelta(hours=5),
    ]
    [view] = await deliveries(world, endpoint)
    assert view.delivery.status == DeliveryStatus.SUCCEEDED
    assert [a.status_code for a in view.attempts] == [500, None, 302, 429, 503, 204]
    assert "timed out" in (view.attempts[1].error or "")
    received = world.receiver.wait_for(6, timeout=5)
    assert len(received) == 6
    assert all(r.verified for r in received)  # every try verifies with standardwebhooks
    assert {r.webhook_id for r in received} == {event.id}  # one message, one webhook-id
    assert len({r.body for r in received}) == 1  # and the same body every time
    body = json.loads(received[0].body)
    assert body["type"] == "call.ended" and body["data"]["call_id"] == "call-1"
    assert "recording_url" not in body["data"]


async def test_a_receiver_that_never_succeeds_exhausts_the_schedule(world: World) -> None:
    endpoint = await subscribe(world, "/down")
    world.receiver.script("/down", *[Reply(500)] * 8)
    await call_settled(world, 2)
    scheduler = world.scheduler()
    for _ in range(10):
        await scheduler.drain()
        [view] = await deliveries(world, endpoint)
        if view.delivery.next_attempt_at is None:
            break
        world.clock.set(view.delivery.next_attempt_at)
    [view] = await deliveries(world, endpoint)
    assert view.delivery.status == DeliveryStatus.EXHAUSTED and len(view.attempts) == 8
    assert world.clock.now() - view.delivery.created_at == timedelta(hours=27, minutes=35, seconds=5)


async def test_410_disables_the_endpoint_with_a_reason_its_admins_can_read(world: World) -> None:
    gone = await subscribe(world, "/gone")
    world.receiver.script("/gone", Reply(410))
    await call_settled(world, 3)
    await world.scheduler().drain()
    endpoint = await webhooks.get_endpoint(world.svc, org_id="acme", endpoint_id=gone)
    assert endpoint.status == EndpointStatus.DISABLED and "410" in (endpoint.disabled_reason or "")
    await call_settled(world, 4)  # a disabled endpoint gets nothing more
    world.clock.advance(minutes=1)
    await world.scheduler().drain()
    assert len(world.receiver.received) == 1


async def test_the_recording_url_is_minted_afresh_for_every_try(world: World) -> None:
    endpoint = await subscribe(world, "/rec")
    world.receiver.script("/rec", Reply(500))
    await world.store.put("orgs/acme/a.mp3", _chunks(b"ID3audio"), content_type="audio/mpeg", metadata={})
    await call_settled(world, 5, storage_key="orgs/acme/a.mp3")
    scheduler = world.scheduler()
    await scheduler.drain()
    world.clock.advance(seconds=5)
    await scheduler.drain()
    urls = [json.loads(r.body)["data"]["recording_url"] for r in world.receiver.wait_for(2)]
    assert len(set(urls)) == 2 and all("/media/orgs/acme/a.mp3" in u for u in urls)
    [view] = await deliveries(world, endpoint)
    assert view.delivery.status == DeliveryStatus.SUCCEEDED
    # Each URL put into a webhook is in the org's audit log (committed before it was minted).
    async with world.svc.uow() as uow:
        audited = await uow.audit.page(org_id="acme", limit=10)
    sent = [e for e in audited if e.action == "webhook_recording_url"]
    assert [(e.call_id, e.target_id, e.actor_role) for e in sent] == [("call-5", endpoint, "system")] * 2


async def test_a_restart_in_the_middle_of_the_schedule_picks_up_where_it_left_off(
    world: World, database_url: str
) -> None:
    endpoint = await subscribe(world, "/restart")
    world.receiver.script("/restart", Reply(503), Reply(503))
    await call_settled(world, 6)
    await world.scheduler().drain()  # try 1: 503, the next due in 5 s
    await call_settled(world, 7)
    crashed = world.scheduler()
    assert len(await crashed._claim(10)) == 1  # claimed call 7's first try, then "crashed"

    # A new process: new engine, new services, new scheduler, same database.
    engine = create_engine(database_url)
    try:
        svc = make_services(engine, world.clock, world.store)
        restarted = WebhookDeliveryScheduler(svc, jitter=lambda: 1.0, lease=timedelta(seconds=60))
        await restarted.drain()
        assert len(world.receiver.received) == 1  # call 6 is not due; call 7 is still claimed
        world.clock.advance(seconds=5)
        await restarted.drain()  # call 6, try 2: 503
        world.clock.advance(seconds=60)
        await restarted.drain()  # call 7's claim ran out: its first try; call 6 not due until 5 min
        world.clock.advance(minutes=5)
        await restarted.drain()  # call 6, try 3: 204
        views = {v.delivery.call_id: v for v in await deliveries(world, endpoint)}
        assert [a.status_code for a in views["call-6"].attempts] == [503, 503, 204]
        assert [a.status_code for a in views["call-7"].attempts] == [204]
        assert all(v.delivery.status == DeliveryStatus.SUCCEEDED for v in views.values())
    finally:
        await engine.dispose()
    assert all(r.verified for r in world.receiver.received)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
