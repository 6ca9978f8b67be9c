"""The Litestar app factory: the HTTP edge of the service; its lifespan runs ``serve_loops``
(``entrypoints/runtime.py``): the relay, webhooks, settling, and the sweep on the embedded default."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.di import Provide

from adapters.filesystem_store import FilesystemRecordingStore
from application.messagebus import MessageBus
from application.services import Services
from entrypoints.config import Settings
from entrypoints.container import Container
from entrypoints.http.admin import AdminApi
from entrypoints.http.api import DashboardApi
from entrypoints.http.auth import build_jwt_auth
from entrypoints.http.dashboard import TEMPLATES, DashboardPages, page_headers, static_files
from entrypoints.http.erasure_api import ErasureApi
from entrypoints.http.errors import EXCEPTION_HANDLERS
from entrypoints.http.internal import InternalApi
from entrypoints.http.media import media_router
from entrypoints.http.openapi import StructSchemaConstraintsPlugin, openapi_config, uniform_error_responses
from entrypoints.http.operations import healthz, metrics, observe_requests, readyz
from entrypoints.http.security_headers import add_security_headers
from entrypoints.http.strict_json import StrictJSONRequest
from entrypoints.http.twilio_callbacks import TwilioCallbacks
from entrypoints.http.webhooks_api import WebhookEndpointsApi
from entrypoints.runtime import BackgroundRuntime, resolve, serve_loops

log = logging.getLogger(__name__)


def _media_routes(store: Any) -> list[Any]:
    """The filesystem store's signed URLs are served here; S3 serves its presigned URLs itself."""
    return [media_router(store)] if isinstance(store, FilesystemRecordingStore) else []


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
        runtime = BackgroundRuntime(await serve_loops(container))
        app.state.relay = await resolve(container.relay)
        app.state.webhook_scheduler = await resolve(container.webhook_scheduler)
        app.state.call_settler = await resolve(container.call_settler)
        runtime.start()
        try:
            yield
        finally:
            await runtime.stop()
            await container.shutdown_resources()  # type: ignore[misc]

    resolved: dict[str, Any] = {}

    async def provide_bus() -> MessageBus:
        bus: MessageBus = resolved["bus"]
        return bus

    async def provide_services() -> Services:
        services: Services = resolved["services"]
        return services

    jwt_auth = build_jwt_auth(settings.jwt_secret)

    def on_app_init(config: AppConfig) -> AppConfig:
        config.state = State(
            {
                "settings": settings,
                "container": container,
                "page_headers": page_headers(getattr(container.store(), "media_origins", ())),
            }
        )
        return config

    app = Litestar(
        route_handlers=[
            healthz,
            readyz,
            metrics,
            TwilioCallbacks,
            InternalApi,
            DashboardApi,
            AdminApi,
            WebhookEndpointsApi,
            ErasureApi,
            DashboardPages,
            static_files(),
            *_media_routes(container.store()),
        ],
        dependencies={"bus": Provide(provide_bus), "services": Provide(provide_services)},
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[add_security_headers],
        middleware=[observe_requests],
        lifespan=[lifespan],
        on_app_init=[on_app_init, jwt_auth.on_app_init],
        request_class=StrictJSONRequest,
        request_max_body_size=settings.max_body_bytes,
        template_config=TEMPLATES,
        openapi_config=openapi_config(title="Call recording service", version="1.0.0"),
        plugins=[StructSchemaConstraintsPlugin()],
        debug=False,
        logging_config=None,  # the process configured logging already (entrypoints/logs.py)
    )
    uniform_error_responses(app)
    return app


def app_from_env() -> Any:
    return create_app()
