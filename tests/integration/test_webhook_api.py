"""The webhook endpoints API on the real app and database, delivering to a loopback receiver."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from adapters.sqlalchemy.engine import migrate
from tests.support.app import ApiHarness, api_harness, error_code
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver

ACME, ACME_NUMBER = "acme", "+15550000001"
AUDIO = b"ID3" + bytes(range(256)) * 40


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver(fail_first=True) as running:
        yield running


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[ApiHarness]:
    url = f"sqlite+aiosqlite:///{tmp_path}/api.db"
    await asyncio.to_thread(migrate, url)
    async with api_harness(tmp_path, url, CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS="true") as running:
        await running.org(ACME, ACME_NUMBER)
        yield running


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[ApiHarness]:
    url = f"sqlite+aiosqlite:///{tmp_path}/strict.db"
    await asyncio.to_thread(migrate, url)
    async with api_harness(tmp_path, url) as running:
        yield running


async def register(harness: ApiHarness, url: str, role: str = "admin") -> httpx.Response:
    return await harness.client.post(
        "/api/v1/webhook-endpoints",
        json={"url": url, "events": ["call.ended"]},
        headers=harness.auth(ACME, role),
    )


async def test_an_admin_registers_an_endpoint_and_sees_its_secret_once(
    harness: ApiHarness, receiver: WebhookReceiver
) -> None:
    created = await register(harness, receiver.url())
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) >= {"id", "url", "events", "secret"}
    assert body["secret"].startswith("whsec_") and body["events"] == ["call.ended"]
    listed = (await harness.client.get("/api/v1/webhook-endpoints", headers=harness.auth(ACME))).json()
    assert [e["id"] for e in listed["items"]] == [body["id"]]
    assert "secret" not in listed["items"][0] and body["secret"] not in str(listed)
    one = await harness.client.get(f"/api/v1/webhook-endpoints/{body['id']}", headers=harness.auth(ACME))
    assert one.status_code == 200 and one.json()["status"] == "active"
    assert (await register(harness, receiver.url(), role="member")).status_code == 403


async def test_unknown_events_and_stray_fields_are_refused(harness: ApiHarness) -> None:
    for payload in (
        {"url": "https://hooks.example.com/x", "events": ["call.started"]},
        {"url": "https://hooks.example.com/x", "events": []},
        {"url": "https://hooks.example.com/x", "secret": "whsec_mine"},
        {"events": ["call.ended"]},
        {"url": "0"},
        {"url": "hooks.example.com/x"},
        {"url": "https://user:pass@hooks.example.com/x"},
        {"url": "https://hooks.example.com/x#frag"},
        {"url": "https://hooks.example.com/a b"},
        {"url": "https:///x"},
        {"url": "ftp://hooks.example.com/x"},
    ):
        r = await harness.client.post("/api/v1/webhook-endpoints", json=payload, headers=harness.auth(ACME))
        assert r.status_code == 400, (payload, r.text)
        error_code(r)


async def test_the_document_states_the_url_rules_a_client_can_know_up_front(strict: ApiHarness) -> None:
    doc = (await strict.client.get("/schema/openapi.json")).json()
    url = doc["components"]["schemas"]["WebhookEndpointCreate"]["properties"]["url"]
    assert url["format"] == "uri"
    pattern = re.compile(url["pattern"])
    assert pattern.search("https://hooks.example.com/x?y=1")
    for refused in ("http://hooks.example.com/x", "https://u:p@h/x", "https://h/x#f", "https://h/a b", "0"):
        assert not pattern.search(refused), refused
    operation = doc["paths"]["/api/v1/webhook-endpoints"]["post"]
    assert {"400", "422"} <= set(operation["responses"])


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[64:ff9b::7f00:1]/hook",
        "https://0x7f000001/hook",
        "https://2130706433/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.64.0.1/hook",
        "https://10.0.0.5/hook",
        "https://[fd00::1]/hook",
        "http://hooks.example.com/hook",
    ],
)
async def test_a_strict_instance_refuses_private_loopback_metadata_and_plain_http_targets(
    strict: ApiHarness, url: str
) -> None:
    await strict.org(ACME, ACME_NUMBER)
    r = await strict.client.post(
        "/api/v1/webhook-endpoints", json={"url": url, "events": ["call.ended"]}, headers=strict.auth(ACME)
    )
    assert r.status_code == 422, r.text
    assert error_code(r) == "webhook_url_refused"
    listed = await strict.client.get("/api/v1/webhook-endpoints", headers=strict.auth(ACME))
    assert listed.json()["items"] == []


async def test_call_ended_is_delivered_signed_retried_on_request_and_its_recording_url_plays(
    harness: ApiHarness, receiver: WebhookReceiver
) -> None:
    created = (await register(harness, receiver.url())).json()
    receiver.secrets.append(created["secret"])
    call_id = await harness.archived_call(ACME_NUMBER, audio=AUDIO)
    scheduler = harness.app.state.webhook_scheduler
    await scheduler.drain()
    [first] = await asyncio.to_thread(receiver.wait_for, 1)
    assert first.answered == 500 and first.verified

    deliveries_url = f"/api/v1/webhook-endpoints/{created['id']}/deliveries"
    [delivery] = (await harness.client.get(deliveries_url, headers=harness.auth(ACME))).json()["items"]
    assert delivery["status"] == "pending" and delivery["call_id"] == call_id
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 500 and attempt["next_attempt_at"] is not None
    assert attempt["latency_ms"] >= 0 and delivery["webhook_id"] == first.webhook_id

    retried = await harness.client.post(
        f"{deliveries_url}/{delivery['id']}/retry", headers=harness.auth(ACME)
    )
    assert retried.status_code == 202, retried.text
    await scheduler.drain()
    tries = await asyncio.to_thread(receiver.wait_for, 2)
    assert [t.answered for t in tries] == [500, 204] and all(t.verified for t in tries)
    assert {t.webhook_id for t in tries} == {first.webhook_id}
    [delivery] = (await harness.client.get(deliveries_url, headers=harness.auth(ACME))).json()["items"]
    assert delivery["status"] == "succeeded" and [a["status_code"] for a in delivery["attempts"]] == [
        500,
        204,
    ]

    data = tries[1].json()["data"]
    assert data["call_id"] == call_id and data["org_id"] == ACME and data["to"] == ACME_NUMBER
    audio = await harness.client.get(data["recording_url"])
    assert audio.status_code == 200 and audio.content == AUDIO


async def test_rotation_signs_with_both_secrets_and_deletion_stops_deliveries(
    harness: ApiHarness, receiver: WebhookReceiver
) -> None:
    receiver.fail_first = False
    created = (await register(harness, receiver.url())).json()
    rotated = await harness.client.post(
        f"/api/v1/webhook-endpoints/{created['id']}/rotate-secret", headers=harness.auth(ACME)
    )
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != created["secret"] and rotated.json()["previous_secret_expires_at"] is not None
    await harness.archived_call(ACME_NUMBER)
    await harness.app.state.webhook_scheduler.drain()
    [got] = await asyncio.to_thread(receiver.wait_for, 1)
    for secret in (created["secret"], new_secret):
        receiver.secrets[:] = [secret]
        assert receiver.verify(got.body, got.headers)

    deleted = await harness.client.delete(
        f"/api/v1/webhook-endpoints/{created['id']}", headers=harness.auth(ACME)
    )
    assert deleted.status_code == 204
    gone = await harness.client.get(f"/api/v1/webhook-endpoints/{created['id']}", headers=harness.auth(ACME))
    assert gone.status_code == 404
    await harness.archived_call(ACME_NUMBER)
    await harness.app.state.webhook_scheduler.drain()
    assert len(receiver.received) == 1
