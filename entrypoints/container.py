"""The composition root: the only place that names concrete adapters."""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from dependency_injector import containers, providers
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.clock import SystemClock
from adapters.fernet_secret_box import FernetSecretBox
from adapters.filesystem_store import FilesystemRecordingStore
from adapters.inprocess_bus import InProcessEventPublisher
from adapters.retry import RetryPolicy
from adapters.sqlalchemy.engine import create_engine
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from adapters.webhook_sender import StandardWebhookSender
from application.messagebus import EventDispatcher, MessageBus
from application.outbox import OutboxRelay
from application.pauses import PauseLimiter
from application.ports import Clock
from application.reconcile import RecordingReconciler
from application.services import Services
from application.settling import CallSettler
from application.webhook_delivery import WebhookDeliveryScheduler
from entrypoints.config import Settings
from entrypoints.observability import InstrumentedSender, InstrumentedStore

if TYPE_CHECKING:  # imported where used: the embedded default starts without aioboto3 or aiokafka
    from adapters.kafka import KafkaEventPublisher, KafkaOptions
    from adapters.s3_store import S3RecordingStore
    from adapters.twilio_telephony import TwilioTelephony


async def _engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    yield engine
    await engine.dispose()


class LazyTwilioTelephony:
    """The ``Telephony`` port on Twilio, imported and built at its first use (a process is ready
    without the Twilio SDK and aiohttp; ``warm_up`` imports them in a thread meanwhile)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._telephony: TwilioTelephony | None = None

    @staticmethod
    async def warm_up() -> None:
        await asyncio.to_thread(importlib.import_module, "adapters.twilio_telephony")

    def __getattr__(self, name: str) -> Any:
        if self._telephony is None:
            from adapters.twilio_telephony import TwilioTelephony

            settings = self.settings
            self._telephony = TwilioTelephony(
                settings.twilio_account_sid,
                settings.twilio_auth_token,
                api_base=settings.twilio_api_base,
                retry=RetryPolicy(
                    max_attempts=settings.twilio_max_attempts,
                    base_s=settings.twilio_retry_base_s,
                    max_retry_after_s=settings.twilio_max_retry_after_s,
                ),
            )
        return getattr(self._telephony, name)

    async def aclose(self) -> None:
        if self._telephony is not None:
            await self._telephony.aclose()


async def _telephony(settings: Settings) -> AsyncIterator[LazyTwilioTelephony]:
    telephony = LazyTwilioTelephony(settings)
    warming = asyncio.create_task(telephony.warm_up())
    yield telephony
    await warming
    await telephony.aclose()


class CommitSignal:
    """Fan-out of "this kind of row was committed" to the loops that have work for it (the relay
    for events, the webhook delivery scheduler for deliveries), to wake them up."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[], None]] = []

    def __call__(self) -> None:
        for listener in self.listeners:
            listener()


class UnitOfWorkFactory:
    def __init__(
        self,
        engine: AsyncEngine,
        signal: CommitSignal,
        clock: Clock,
        deliveries_signal: CommitSignal | None = None,
    ) -> None:
        self.engine, self.signal, self.clock = engine, signal, clock
        self.deliveries_signal = deliveries_signal

    def __call__(
        self, *, processed_by: tuple[str, str] | None = None, read_only: bool = False
    ) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(
            self.engine,
            processed_by=processed_by,
            on_events_committed=self.signal,
            on_deliveries_committed=self.deliveries_signal,
            clock=self.clock.now,
            read_only=read_only,
        )


def _filesystem_store(settings: Settings, clock: Clock) -> FilesystemRecordingStore:
    return FilesystemRecordingStore(
        root=settings.storage_dir,
        public_url=settings.public_url,
        signing_key=settings.media_signing_key.encode(),
        clock=clock.now,
    )


def _s3_store(settings: Settings) -> S3RecordingStore:
    from adapters.s3_store import S3RecordingStore

    assert settings.s3_bucket is not None, "CALLREC_S3_BUCKET is required when CALLREC_STORAGE=s3"
    return S3RecordingStore(
        settings.s3_bucket,
        region=settings.s3_region,
        endpoint_url=settings.s3_endpoint_url,
        public_endpoint_url=settings.s3_public_endpoint_url,
        platform_bucket=settings.s3_platform_bucket,
        sse=settings.s3_sse,
        kms_key_id=settings.s3_kms_key_id,
        part_size=settings.s3_part_size,
        multipart_threshold=settings.s3_multipart_threshold,
        upload_concurrency=settings.s3_upload_concurrency,
        max_attempts=settings.s3_max_attempts,
        addressing_style=settings.s3_addressing_style,
    )


async def _open_store(store: Any) -> AsyncIterator[Any]:
    """The S3 store's client starts and stops with the app (the filesystem store needs neither)."""
    closes = hasattr(store, "open") and hasattr(store, "aclose")
    if closes:
        await store.open()
    yield store
    if closes:
        await store.aclose()


def _reconciler(services: Services, bus: MessageBus, settings: Settings) -> RecordingReconciler:
    return RecordingReconciler(
        services,
        stuck_after=settings.reconcile_stuck_after,
        poll_interval=settings.reconcile_interval_s,  # 0: not run periodically (entrypoints/runtime.py)
        bus=bus,
    )


def kafka_options(settings: Settings) -> KafkaOptions:
    from adapters.kafka import KafkaOptions

    return KafkaOptions(
        bootstrap=settings.kafka_bootstrap,
        topic_prefix=settings.kafka_topic_prefix,
        group_prefix=settings.kafka_group_prefix,
        partitions=settings.kafka_partitions,
        replication=settings.kafka_replication,
        max_attempts=settings.kafka_max_attempts,
        retry_backoff_s=settings.kafka_retry_backoff_s,
        message_time_limit_s=settings.kafka_message_time_limit_s,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=min(3000, settings.kafka_session_timeout_ms // 3),
    )


def _kafka_publisher(options: KafkaOptions) -> KafkaEventPublisher:
    from adapters.kafka import KafkaEventPublisher

    return KafkaEventPublisher(options)


def _relay(uow_factory: UnitOfWorkFactory, publisher: Any, clock: Clock, settings: Settings) -> OutboxRelay:
    retry_base = timedelta(seconds=settings.relay_retry_base_s)
    if settings.bus != "kafka":
        # In-process a failure is a handler's: after a bounded number of attempts it is dead-lettered.
        return OutboxRelay(
            uow_factory, publisher, clock, retry_base=retry_base, max_attempts=settings.outbox_max_attempts
        )
    # The API and every worker each run a relay: they lease what they publish. While Kafka is down
    # events are retried at most every 30 s, so they go out soon after it is back.
    return OutboxRelay(
        uow_factory,
        publisher,
        clock,
        retry_base=retry_base,
        retry_cap=timedelta(seconds=30),
        relay_id=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        lease=timedelta(seconds=settings.relay_lease_s),
    )


def _webhook_sender(settings: Settings) -> StandardWebhookSender:
    return StandardWebhookSender(
        allow_private_networks=settings.webhook_allow_private_networks, timeout_s=settings.webhook_timeout_s
    )


def _webhook_scheduler(services: Services, settings: Settings) -> WebhookDeliveryScheduler:
    return WebhookDeliveryScheduler(
        services,
        poll_interval=settings.webhook_poll_interval_s,
        lease=timedelta(seconds=settings.webhook_timeout_s * 2 + 30),
    )


def _call_settler(services: Services, settings: Settings) -> CallSettler:
    # Settles as often as the webhook scheduler polls: what it settles is what webhooks announce.
    return CallSettler(services, poll_interval=settings.webhook_poll_interval_s)


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    clock = providers.Singleton(SystemClock)
    engine = providers.Resource(_engine, settings.provided.database_url)
    commit_signal = providers.Singleton(CommitSignal)
    deliveries_signal = providers.Singleton(CommitSignal)
    uow_factory = providers.Singleton(UnitOfWorkFactory, engine, commit_signal, clock, deliveries_signal)
    telephony = providers.Resource(_telephony, settings)
    store = providers.Selector(
        settings.provided.storage,
        filesystem=providers.Singleton(_filesystem_store, settings, clock),
        s3=providers.Singleton(_s3_store, settings),
    )
    store_lifecycle = providers.Resource(_open_store, store)
    service_settings = providers.Callable(lambda s: s.service_settings, settings)
    secret_box = providers.Singleton(FernetSecretBox, settings.provided.webhook_secret_key)
    webhook_sender = providers.Singleton(_webhook_sender, settings)

    services = providers.Singleton(
        Services,
        uow_factory=uow_factory,
        telephony=telephony,
        store=providers.Singleton(InstrumentedStore, store),  # counted: entrypoints/observability.py
        clock=clock,
        settings=service_settings,
        webhook_sender=providers.Singleton(InstrumentedSender, webhook_sender),
        secret_box=secret_box,
    )
    bus = providers.Singleton(MessageBus, services)
    dispatcher = providers.Singleton(EventDispatcher, services)
    kafka_options = providers.Singleton(kafka_options, settings)
    publisher = providers.Selector(
        settings.provided.bus,
        inprocess=providers.Singleton(InProcessEventPublisher, dispatcher),
        kafka=providers.Singleton(_kafka_publisher, kafka_options),
    )
    relay = providers.Singleton(_relay, uow_factory, publisher, clock, settings)
    # The background loops; entrypoints/runtime.py chooses which run where, and runs them.
    reconciler = providers.Singleton(_reconciler, services, bus, settings)
    webhook_scheduler = providers.Singleton(_webhook_scheduler, services, settings)
    call_settler = providers.Singleton(_call_settler, services, settings)
    pause_limiter = providers.Singleton(PauseLimiter, services)
