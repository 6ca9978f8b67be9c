"""What handlers are given: the ports and the settings that matter to the application."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta

from application.ports import (
    Clock,
    RecordingStore,
    SecretBox,
    Telephony,
    UnitOfWork,
    UnitOfWorkFactory,
    WebhookSender,
)
from domain.model import INSTANT_HANGUP, CallKind


@dataclass(frozen=True)
class ServiceSettings:
    public_url: str
    platform_lines: dict[str, CallKind] = field(default_factory=dict)
    playback_url_ttl: timedelta = timedelta(minutes=15)
    # The signed recording URL sent in webhooks (capped by the store, at most 7 days on S3).
    webhook_url_ttl: timedelta = timedelta(hours=24)
    # Before an archive counts as verified, read Twilio's copy a second time and compare SHA-256s:
    # the only way to catch a download that arrived whole but corrupted (Twilio sends no checksum).
    recheck_source_audio: bool = True
    # call.ended waits this long past the call's end for the scorability verdict (when it has none).
    scorability_wait: timedelta = timedelta(0)
    # Answered, then ended within this long: an instant hangup, non-engagement.
    instant_hangup: timedelta = INSTANT_HANGUP
    # A pause nobody resumes ends after this long; Twilio's PauseBehavior (silence | skip).
    max_pause: timedelta = timedelta(minutes=5)
    pause_behavior: str = "silence"

    @property
    def recording_status_callback(self) -> str:
        return f"{self.public_url.rstrip('/')}/twilio/recording-status"


@dataclass(frozen=True)
class Services:
    """The ports a handler may use. ``uow()`` opens a fresh unit of work, ``reader()`` a read-only one."""

    uow_factory: UnitOfWorkFactory
    telephony: Telephony
    store: RecordingStore
    clock: Clock
    settings: ServiceSettings
    processed_by: tuple[str, str] | None = None
    webhook_sender: WebhookSender | None = None
    secret_box: SecretBox | None = None

    def uow(self) -> UnitOfWork:
        return self.uow_factory(processed_by=self.processed_by)

    def reader(self) -> UnitOfWork:
        """A unit of work that only reads: cheaper, and never blocks or waits for a writer."""
        return self.uow_factory(read_only=True)

    def for_consumer(self, consumer: str, event_id: str) -> Services:
        return replace(self, processed_by=(consumer, event_id))


def parse_platform_lines(spec: str) -> dict[str, CallKind]:
    """``discovery=+1555...,support=+1555...`` → {number: kind}. Several numbers per kind are allowed."""
    lines: dict[str, CallKind] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        kind, sep, number = part.partition("=")
        if not sep or not number.strip():
            raise ValueError(f"CALLREC_PLATFORM_LINES entry {part!r} is not kind=+number")
        try:
            lines[number.strip()] = CallKind(kind.strip())
        except ValueError:
            raise ValueError(f"CALLREC_PLATFORM_LINES kind {kind!r} is not discovery or support") from None
        if lines[number.strip()] == CallKind.CUSTOMER:
            raise ValueError("CALLREC_PLATFORM_LINES kinds are discovery or support")
    return lines
