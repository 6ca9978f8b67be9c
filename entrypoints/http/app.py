"""The Litestar app factory: HTTP edge of the service, plus the in-process relay on the embedded default."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, get
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig

from application.messagebus import MessageBus
from application.services import Services
from entrypoints.config import Settings
from entrypoints.container import Container
from entrypoints.http.api import DashboardApi
from entrypoints.http.errors import EXCEPTION_HANDLERS
from entrypoints.http.internal import InternalApi
from entrypoints.http.media import media_router
from entrypoints.http.twilio_webhooks import TwilioWebhooks

log = logging.getLogger(__name__)


@get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def resolve(provider: Any) -> Any:
    """A provider's object; providers that depend on async resources hand back an awaitable."""
    value = provider()
    if inspect.isawaitable(value):
        value = await value
    return value


def create_app(container: Container | None = None, settings: Settings | None = None) -> Litestar:
    """Build the app. Nothing connects here: resources start in the lifespan."""
    if container is None:
        container = Container(settings=settings or Settings.from_env())
    settings = container.settings()
    assert isinstance(settings, Settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await container.init_resources()  # type: ignore[misc]
        resolved["services"] = await resolve(container.services)
        resolved["bus"] = await resolve(container.bus)
        stop = asyncio.Event()
        relay_task = None
        if settings.bus == "inprocess":
            relay = await resolve(container.relay)
            app.state.relay = relay
            container.commit_signal().listeners.append(relay.wake)
            relay_task = asyncio.create_task(relay.run_forever(stop), name="outbox-relay")
        try:
            yield
        finally:
            stop.set()
            if relay_task is not None:
                await relay_task
            await container.shutdown_resources()  # type: ignore[misc]

    resolved: dict[str, Any] = {}

    async def provide_bus() -> MessageBus:
        bus: MessageBus = resolved["bus"]
        return bus

    async def provide_services() -> Services:
        services: Services = resolved["services"]
        return services

    def on_app_init(config: AppConfig) -> AppConfig:
        config.state = State({"settings": settings, "container": container})
        return config

    return Litestar(
        route_handlers=[healthz, TwilioWebhooks, InternalApi, DashboardApi, media_router(container.store())],
        dependencies={"bus": Provide(provide_bus), "services": Provide(provide_services)},
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[lifespan],
        on_app_init=[on_app_init],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="Call recording service", version="1.0.0", path="/schema"),
        debug=False,
    )


def app_from_env() -> Any:
    return create_app()
