"""Fakes for webhooks: a sender that records and answers as told, and a secret box."""

from __future__ import annotations

from dataclasses import dataclass, field

from application.errors import WebhookTargetRefused
from application.ports import WebhookMessage
from domain.webhooks import SendResult


class PlainSecretBox:
    """Seals by prefixing: enough to see that secrets are stored sealed and opened to send."""

    def seal(self, secret: str) -> str:
        return "sealed:" + secret[::-1]

    def open(self, sealed: str) -> str:
        if not sealed.startswith("sealed:"):
            raise ValueError("not sealed by this box")
        return sealed.removeprefix("sealed:")[::-1]


@dataclass
class RecordingWebhookSender:
    """Implements ``WebhookSender`` without a network: records each message and answers from a script.

    ``answers`` are consumed one per send (the last one repeats); ``refuse`` holds URL substrings
    that ``check_target`` refuses, and ``send`` too, as the real sender checks again before sending.
    """

    answers: list[SendResult] = field(default_factory=lambda: [SendResult(200, 5)])
    refuse: tuple[str, ...] = ("127.0.0.1", "localhost", "10.0.0.", "0.0.0.0")
    sent: list[WebhookMessage] = field(default_factory=list)

    async def check_target(self, url: str) -> None:
        if not url.startswith("https://") or any(bad in url for bad in self.refuse):
            raise WebhookTargetRefused(f"url: {url} refused")

    async def send(self, message: WebhookMessage) -> SendResult:
        try:
            await self.check_target(message.url)
        except WebhookTargetRefused as exc:
            return SendResult(None, 0, error=f"refused: {exc}")
        self.sent.append(message)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
