"""What handlers are given: the ports and the settings that matter to the application."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from application.ports import Clock, RecordingStore, Telephony
from application.unit_of_work import UnitOfWork, UnitOfWorkFactory
from domain.model import CallKind


@dataclass(frozen=True)
class ServiceSettings:
    public_url: str
    platform_lines: dict[str, CallKind] = field(default_factory=dict)
    playback_url_ttl: timedelta = timedelta(minutes=15)

    @property
    def recording_status_callback(self) -> str:
        return f"{self.public_url.rstrip('/')}/twilio/recording-status"


@dataclass(frozen=True)
class Services:
    """The ports a handler may use. ``uow()`` opens a fresh unit of work."""

    uow_factory: UnitOfWorkFactory
    telephony: Telephony
    store: RecordingStore
    clock: Clock
    settings: ServiceSettings
    processed_by: tuple[str, str] | None = None

    def uow(self) -> UnitOfWork:
        return self.uow_factory(processed_by=self.processed_by)

    def for_consumer(self, consumer: str, event_id: str) -> Services:
        return Services(
            self.uow_factory, self.telephony, self.store, self.clock, self.settings, (consumer, event_id)
        )


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
