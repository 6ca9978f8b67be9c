"""The ``WebhookSender`` port's contract, run against ``RecordingWebhookSender`` and against the real
``StandardWebhookSender`` posting to a receiver on loopback (private networks allowed, as in
development). What only the real sender can show (signatures, SSRF, TLS) is in test_webhook_sender.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import pytest

from adapters.webhook_sender import StandardWebhookSender
from application.errors import WebhookTargetRefused
from application.ports import WebhookMessage, WebhookSender
from domain.webhooks import SendResult, new_webhook_secret
from tests.fakes_webhooks import RecordingWebhookSender
from tests.support.webhook_receiver import Reply, WebhookReceiver, webhook_receiver

REFUSED = ["ftp://hooks.example.com/x", "https://0.0.0.0/x"]  # not https; nobody can be reached there


class Backend(Protocol):
    @property
    def sender(self) -> WebhookSender: ...

    def url(self) -> str: ...
    def answer_next(self, status: int, *, retry_after_s: int | None = None) -> None: ...
    def received(self) -> list[tuple[str, bytes]]: ...


@dataclass
class FakeBackend:
    fake: RecordingWebhookSender = field(default_factory=RecordingWebhookSender)

    @property
    def sender(self) -> WebhookSender:
        return self.fake

    def url(self) -> str:
        return "https://hooks.example.com/callrec"

    def answer_next(self, status: int, *, retry_after_s: int | None = None) -> None:
        retry_after = timedelta(seconds=retry_after_s) if retry_after_s is not None else None
        self.fake.answers = [
            SendResult(status, 3, error=f"HTTP {status}", retry_after=retry_after),
            *self.fake.answers,
        ]

    def received(self) -> list[tuple[str, bytes]]:
        return [(m.message_id, m.body) for m in self.fake.sent]


@dataclass
class RealBackend:
    receiver: WebhookReceiver
    real: StandardWebhookSender = field(
        default_factory=lambda: StandardWebhookSender(allow_private_networks=True)
    )

    @property
    def sender(self) -> WebhookSender:
        return self.real

    def url(self) -> str:
        return self.receiver.url("/callrec")

    def answer_next(self, status: int, *, retry_after_s: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else {}
        self.receiver.script("/callrec", Reply(status, headers=headers))

    def received(self) -> list[tuple[str, bytes]]:
        return [(r.webhook_id, r.body) for r in self.receiver.received]


@pytest.fixture(params=["fake", "standard"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "fake":
        yield FakeBackend()
        return
    with webhook_receiver() as receiver:
        yield RealBackend(receiver)


def message(url: str, body: bytes = '{"type":"call.ended","data":{"n":"é"}}'.encode()) -> WebhookMessage:
    return WebhookMessage(url=url, message_id="msg_1", body=body, secrets=(new_webhook_secret(),))


async def test_a_message_arrives_byte_for_byte_under_its_webhook_id(backend: Backend) -> None:
    await backend.sender.check_target(backend.url())
    sent = message(backend.url())

    result = await backend.sender.send(sent)

    assert result.status_code is not None and 200 <= result.status_code < 300 and result.error is None
    assert backend.received() == [("msg_1", sent.body)]


async def test_a_refusal_comes_back_as_its_status_and_when_to_try_again(backend: Backend) -> None:
    backend.answer_next(503, retry_after_s=120)

    refused = await backend.sender.send(message(backend.url()))
    accepted = await backend.sender.send(message(backend.url()))

    assert (refused.status_code, refused.retry_after) == (503, timedelta(seconds=120))
    assert refused.error is not None and "503" in refused.error
    assert accepted.status_code is not None and 200 <= accepted.status_code < 300
    assert len(backend.received()) == 2


@pytest.mark.parametrize("url", REFUSED)
async def test_a_target_that_must_not_be_used_is_refused_and_never_sent_to(
    backend: Backend, url: str
) -> None:
    with pytest.raises(WebhookTargetRefused):
        await backend.sender.check_target(url)

    result = await backend.sender.send(message(url))

    assert result.status_code is None and (result.error or "").startswith("refused")
    assert backend.received() == []
