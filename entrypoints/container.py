"""The composition root: the only place that names concrete adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from dependency_injector import containers, providers
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.clock import SystemClock
from adapters.filesystem_store import FilesystemRecordingStore
from adapters.inprocess_bus import InProcessEventPublisher
from adapters.sqlalchemy.engine import create_engine
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from adapters.twilio_telephony import TwilioTelephony
from application.messagebus import EventDispatcher, MessageBus
from application.outbox import OutboxRelay
from application.ports import Clock
from application.services import Services
from entrypoints.config import Settings


async def _engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    yield engine
    await engine.dispose()


async def _telephony(settings: Settings) -> AsyncIterator[TwilioTelephony]:
    telephony = TwilioTelephony(
        settings.twilio_account_sid, settings.twilio_auth_token, api_base=settings.twilio_api_base
    )
    yield telephony
    await telephony.aclose()


class CommitSignal:
    """Fan-out of "events were committed" to whoever wants to know (the relay, to wake up)."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[], None]] = []

    def __call__(self) -> None:
        for listener in self.listeners:
            listener()


class UnitOfWorkFactory:
    def __init__(self, engine: AsyncEngine, signal: CommitSignal, clock: Clock) -> None:
        self.engine, self.signal, self.clock = engine, signal, clock

    def __call__(self, *, processed_by: tuple[str, str] | None = None) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(
            self.engine, processed_by=processed_by, on_events_committed=self.signal, clock=self.clock.now
        )


def _filesystem_store(settings: Settings, clock: Clock) -> FilesystemRecordingStore:
    return FilesystemRecordingStore(
        root=settings.storage_dir,
        public_url=settings.public_url,
        signing_key=settings.media_signing_key.encode(),
        clock=clock.now,
    )


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    clock = providers.Singleton(SystemClock)
    engine = providers.Resource(_engine, settings.provided.database_url)
    commit_signal = providers.Singleton(CommitSignal)
    uow_factory = providers.Singleton(UnitOfWorkFactory, engine, commit_signal, clock)
    telephony = providers.Resource(_telephony, settings)
    store = providers.Singleton(_filesystem_store, settings, clock)
    service_settings = providers.Callable(lambda s: s.service_settings, settings)

    services = providers.Singleton(
        Services,
        uow_factory=uow_factory,
        telephony=telephony,
        store=store,
        clock=clock,
        settings=service_settings,
    )
    bus = providers.Singleton(MessageBus, services)
    dispatcher = providers.Singleton(EventDispatcher, services)
    publisher = providers.Singleton(InProcessEventPublisher, dispatcher)
    relay = providers.Singleton(
        lambda uow_factory, publisher, clock, settings: OutboxRelay(
            uow_factory, publisher, clock, retry_base=timedelta(seconds=settings.relay_retry_base_s)
        ),
        uow_factory,
        publisher,
        clock,
        settings,
    )
