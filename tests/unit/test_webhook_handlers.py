"""call.ended through the bus with fakes: settling, fan-out, the scheduler's bookkeeping, management."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from application import webhooks
from application.commands import (
    DeleteWebhookEndpoint,
    EndCall,
    RecordRecordingStatus,
    RecordScorability,
    RegisterWebhookEndpoint,
    RetryWebhookDelivery,
    RotateWebhookSecret,
)
from application.errors import NotFound, WebhookTargetRefused
from application.messagebus import MessageBus
from application.services import Services, ServiceSettings
from application.settling import CallSettler
from application.webhook_delivery import WebhookDeliveryScheduler
from domain import events
from domain.errors import InvalidTransition
from domain.model import CallStatus, ProviderRecordingStatus
from domain.webhooks import DeliveryStatus, EndpointStatus, SendResult
from tests.fakes import (
    PUBLIC_URL,
    FakeClock,
    FakeTelephony,
    InMemoryRecordingStore,
    drain,
    make_services,
)
from tests.fakes_webhooks import RecordingWebhookSender
from tests.support.database import Database
from tests.unit.test_handlers import (
    ACME,
    ACME_NUMBER,
    GLOBEX,
    GLOBEX_NUMBER,
    agent_answers,
    archived_call,
    given_org,
    incoming,
    recorded_call_in_progress,
    sid,
    twilio_recording_of,
)

HOOK = "https://hooks.example.com/callrec"


@pytest.fixture
def sender() -> RecordingWebhookSender:
    return RecordingWebhookSender()


def services(
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    clock: FakeClock,
    sender: RecordingWebhookSender,
    **settings: object,
) -> Services:
    return make_services(
        db=db,
        telephony=telephony,
        store=store,
        clock=clock,
        webhook_sender=sender,
        settings=ServiceSettings(public_url=PUBLIC_URL, **settings),  # type: ignore[arg-type]
    )


@pytest.fixture
def svc(
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    clock: FakeClock,
    sender: RecordingWebhookSender,
) -> Services:
    return services(db, telephony, store, clock, sender)


@pytest.fixture
def scheduler(svc: Services) -> WebhookDeliveryScheduler:
    return WebhookDeliveryScheduler(svc, jitter=lambda: 1.0)


async def subscribed(bus: MessageBus, org_id: str = ACME, url: str = HOOK) -> webhooks.EndpointWithSecret:
    result: webhooks.EndpointWithSecret = await bus.handle(
        RegisterWebhookEndpoint(org_id, url, ["call.ended"])
    )
    return result


def bodies(sender: RecordingWebhookSender) -> list[dict[str, object]]:
    return [json.loads(m.body) for m in sender.sent]


# --- management ---------------------------------------------------------------------------------


async def test_a_registered_secret_is_shown_once_and_stored_sealed(bus: MessageBus, db: Database) -> None:
    result = await subscribed(bus)
    assert result.secret.startswith("whsec_")
    stored = await db.webhook_endpoint(result.endpoint.id)
    assert [s.sealed for s in stored.secrets] != [result.secret]
    assert result.secret not in repr(vars(stored))


async def test_a_refused_url_registers_nothing(bus: MessageBus, db: Database) -> None:
    for url in ("http://hooks.example.com/x", "https://127.0.0.1/x"):
        with pytest.raises(WebhookTargetRefused):
            await subscribed(bus, url=url)
    assert await db.webhook_endpoint_ids() == []


async def test_another_orgs_endpoint_is_not_found(bus: MessageBus) -> None:
    result = await subscribed(bus, org_id=GLOBEX)
    for command in (
        DeleteWebhookEndpoint(ACME, result.endpoint.id),
        RotateWebhookSecret(ACME, result.endpoint.id),
        RetryWebhookDelivery(ACME, result.endpoint.id, "nope"),
    ):
        with pytest.raises(NotFound):
            await bus.handle(command)


async def test_rotating_gives_a_new_secret_and_both_sign_for_a_day(
    bus: MessageBus, svc: Services, clock: FakeClock
) -> None:
    first = await subscribed(bus)
    second: webhooks.EndpointWithSecret = await bus.handle(RotateWebhookSecret(ACME, first.endpoint.id))
    assert second.secret != first.secret
    async with svc.uow() as uow:
        endpoint = await uow.webhook_endpoints.get(first.endpoint.id)
    assert endpoint is not None and svc.secret_box is not None
    opened = [svc.secret_box.open(s) for s in endpoint.signing_secrets(clock.now())]
    assert opened == [second.secret, first.secret]
    assert len(endpoint.signing_secrets(clock.now() + timedelta(hours=25))) == 1


# --- call.ended ---------------------------------------------------------------------------------


async def test_a_recorded_call_gets_one_call_ended_with_a_fresh_recording_url(
    bus: MessageBus,
    svc: Services,
    telephony: FakeTelephony,
    sender: RecordingWebhookSender,
    scheduler: WebhookDeliveryScheduler,
    store: InMemoryRecordingStore,
) -> None:
    await given_org(bus, recording=True)
    endpoint = await subscribed(bus)
    decision = await archived_call(bus, svc, telephony, sid(1))
    await scheduler.drain()
    [body] = bodies(sender)
    assert body["type"] == "call.ended" and set(body) == {"type", "timestamp", "data"}
    data = body["data"]
    assert isinstance(data, dict)
    assert set(data) == {
        "call_id", "org_id", "call_sid", "from", "to", "started_at", "answered_at", "ended_at", "duration_s",
        "recording_url",
    }  # fmt: skip
    assert (data["call_id"], data["org_id"], data["call_sid"]) == (decision.call_id, ACME, sid(1))
    assert data["to"] == ACME_NUMBER and data["duration_s"] == 42
    [issued] = store.issued_urls
    assert data["recording_url"] == issued.url and issued.expires_in == timedelta(hours=24)
    assert store.data(issued.key) is not None and issued.download_filename is None
    [message] = sender.sent
    assert message.secrets == (endpoint.secret,) and message.url == HOOK
    await drain(svc)
    await scheduler.drain()
    assert len(sender.sent) == 1  # nothing is sent twice


async def test_a_second_recording_archived_after_the_call_settled_sends_nothing_more(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    sender: RecordingWebhookSender,
    scheduler: WebhookDeliveryScheduler,
    store: InMemoryRecordingStore,
) -> None:
    await given_org(bus, recording=True)
    await subscribed(bus)
    decision = await archived_call(bus, svc, telephony, sid(1))
    await scheduler.drain()
    other = telephony.add_recording(sid(1), status="completed", audio=b"ID3 another take")
    telephony.complete_recording(other, duration=5)

    await bus.handle(RecordRecordingStatus(sid(1), other, ProviderRecordingStatus.COMPLETED, duration_s=5))
    await drain(svc)
    await scheduler.drain()

    assert telephony.is_deleted(other)  # archived, then deleted at Twilio
    [message] = sender.sent
    [issued] = store.issued_urls
    own = await db.recording_for_call(decision.call_id)
    assert own is not None and own.audio is not None and issued.key == own.audio.storage_key
    assert json.loads(message.body)["data"]["recording_url"] == issued.url
    assert len(await db.events_of(events.CallSettled)) == 1


async def test_an_unrecorded_call_gets_call_ended_without_a_recording_url(
    bus: MessageBus, svc: Services, sender: RecordingWebhookSender, scheduler: WebhookDeliveryScheduler
) -> None:
    await given_org(bus, recording=False)
    await subscribed(bus)
    await incoming(bus, sid(2))
    await agent_answers(bus, sid(2))
    await bus.handle(EndCall(sid(2), CallStatus.COMPLETED, 30))
    await drain(svc)
    await scheduler.drain()
    [body] = bodies(sender)
    assert "recording_url" not in body["data"]  # type: ignore[operator]


async def test_only_the_orgs_own_active_endpoints_get_it(
    bus: MessageBus,
    svc: Services,
    telephony: FakeTelephony,
    sender: RecordingWebhookSender,
    scheduler: WebhookDeliveryScheduler,
) -> None:
    await given_org(bus, recording=True)
    await given_org(bus, recording=True, org_id=GLOBEX, number=GLOBEX_NUMBER)
    await subscribed(bus, url=HOOK + "/1")
    removed = await subscribed(bus, url=HOOK + "/2")
    await subscribed(bus, org_id=GLOBEX, url=HOOK + "/globex")
    await bus.handle(DeleteWebhookEndpoint(ACME, removed.endpoint.id))
    await archived_call(bus, svc, telephony, sid(3))
    await scheduler.drain()
    assert [m.url for m in sender.sent] == [HOOK + "/1"]


async def test_a_robocall_gets_no_webhook_but_keeps_its_recording(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    sender: RecordingWebhookSender,
    scheduler: WebhookDeliveryScheduler,
) -> None:
    await given_org(bus, recording=True)
    await subscribed(bus)
    decision = await recorded_call_in_progress(bus, svc, sid(4))
    await bus.handle(RecordScorability(decision.call_id, False, "robocall"))
    await archived_call(bus, svc, telephony, sid(4))
    await scheduler.drain()
    assert sender.sent == [] and await db.webhook_deliveries() == []
    recording = await db.recording_for_call(decision.call_id)
    assert recording is not None and recording.is_archived
    [settled] = await db.events_of(events.CallSettled)
    assert settled.non_engagement == "robocall"


async def test_a_silent_recording_gets_no_webhook(
    bus: MessageBus,
    svc: Services,
    telephony: FakeTelephony,
    sender: RecordingWebhookSender,
    scheduler: WebhookDeliveryScheduler,
) -> None:
    await given_org(bus, recording=True)
    await subscribed(bus)
    await recorded_call_in_progress(bus, svc, sid(5))
    recording_sid = twilio_recording_of(telephony, sid(5))
    await bus.handle(
        RecordRecordingStatus(sid(5), recording_sid, ProviderRecordingStatus.ABSENT, error_code="16102")
    )
    await bus.handle(EndCall(sid(5), CallStatus.COMPLETED, 20))
    await drain(svc)
    await scheduler.drain()
    assert sender.sent == []


async def test_a_late_robocall_verdict_cancels_the_remaining_tries(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    sender: RecordingWebhookSender,
    scheduler: WebhookDeliveryScheduler,
    clock: FakeClock,
) -> None:
    sender.answers = [SendResult(500, 3, error="HTTP 500")]
    await given_org(bus, recording=True)
    await subscribed(bus)
    decision = await archived_call(bus, svc, telephony, sid(6))
    await scheduler.drain()
    await bus.handle(RecordScorability(decision.call_id, False, "robocall"))
    await drain(svc)
    clock.advance(minutes=1)
    await scheduler.drain()
    assert len(sender.sent) == 1
    [delivery] = await db.webhook_deliveries()
    assert delivery.status == DeliveryStatus.CANCELLED and "robocall" in (delivery.last_error or "")


async def test_the_scorability_wait_holds_call_ended_until_a_verdict_or_its_end(
    db: Database,
    telephony: FakeTelephony,
    store: InMemoryRecordingStore,
    clock: FakeClock,
    sender: RecordingWebhookSender,
) -> None:
    svc = services(db, telephony, store, clock, sender, scorability_wait=timedelta(seconds=30))
    bus = MessageBus(svc)
    scheduler = WebhookDeliveryScheduler(svc, jitter=lambda: 1.0)
    settler = CallSettler(svc)
    await given_org(bus, recording=False)
    await subscribed(bus)
    waited = (await incoming(bus, sid(7))).call_id
    judged = (await incoming(bus, sid(8))).call_id
    for call_sid in (sid(7), sid(8)):
        await agent_answers(bus, call_sid)
        await bus.handle(EndCall(call_sid, CallStatus.COMPLETED, 30))
    await drain(svc)
    await scheduler.drain()
    assert sender.sent == []
    await bus.handle(RecordScorability(judged, True, None))
    await drain(svc)
    await scheduler.drain()
    assert [b["data"]["call_id"] for b in bodies(sender)] == [judged]  # type: ignore[index]
    clock.advance(seconds=31)
    await settler.drain()  # the wait is over: the call settles
    await drain(svc)
    await scheduler.drain()
    assert [b["data"]["call_id"] for b in bodies(sender)] == [judged, waited]  # type: ignore[index]


async def test_a_410_disables_the_endpoint_and_cancels_what_was_still_due(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    sender: RecordingWebhookSender,
    scheduler: WebhookDeliveryScheduler,
) -> None:
    sender.answers = [SendResult(500, 3, error="HTTP 500"), SendResult(410, 3, error="HTTP 410")]
    await given_org(bus, recording=True)
    endpoint = await subscribed(bus)
    await archived_call(bus, svc, telephony, sid(9))  # first try: 500
    await scheduler.drain()
    await archived_call(bus, svc, telephony, sid(10))  # 410
    await scheduler.drain()
    stored = await db.webhook_endpoint(endpoint.endpoint.id)
    assert stored.status == EndpointStatus.DISABLED and "410" in (stored.disabled_reason or "")
    svc.clock.advance(seconds=10)  # type: ignore[attr-defined]
    await scheduler.drain()
    assert len(sender.sent) == 2
    assert sorted(d.status for d in await db.webhook_deliveries()) == ["cancelled", "failed"]
    [first] = [d for d in await db.webhook_deliveries() if d.status == DeliveryStatus.CANCELLED]
    with pytest.raises(InvalidTransition):
        await bus.handle(RetryWebhookDelivery(ACME, endpoint.endpoint.id, first.id))


async def test_an_admin_retry_brings_the_next_try_forward(
    bus: MessageBus,
    svc: Services,
    db: Database,
    telephony: FakeTelephony,
    sender: RecordingWebhookSender,
    scheduler: WebhookDeliveryScheduler,
) -> None:
    sender.answers = [
        SendResult(503, 3, error="HTTP 503", retry_after=timedelta(hours=1)),
        SendResult(200, 3),
    ]
    await given_org(bus, recording=True)
    endpoint = await subscribed(bus)
    await archived_call(bus, svc, telephony, sid(11))
    await scheduler.drain()
    [delivery] = await db.webhook_deliveries()
    assert delivery.next_attempt_at == svc.clock.now() + timedelta(hours=1)
    view: webhooks.DeliveryView = await bus.handle(
        RetryWebhookDelivery(ACME, endpoint.endpoint.id, delivery.id)
    )
    assert view.delivery.next_attempt_at == svc.clock.now() and len(view.attempts) == 1
    await scheduler.drain()
    assert (await db.webhook_delivery(delivery.id)).status == DeliveryStatus.SUCCEEDED
    assert [a.status_code for a in await db.webhook_attempts(delivery.id)] == [503, 200]
    assert len({m.message_id for m in sender.sent}) == 1  # the same webhook-id on every try
