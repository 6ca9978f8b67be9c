"""The Litestar app on a real database with the Twilio adapter swapped for the fake, for API tests."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from dependency_injector import providers
from litestar import Litestar

from adapters.sqlalchemy.engine import migrate
from application import commands
from application.handlers import CallDecision
from application.messagebus import MessageBus
from application.outbox import OutboxRelay
from application.services import Services
from domain.model import CallStatus, ProviderRecordingStatus, StreamEvent
from entrypoints.config import Settings
from entrypoints.container import Container
from entrypoints.http.app import create_app
from entrypoints.runtime import resolve

__all__ = [
    "ApiHarness",
    "Settings",
    "api_harness",
    "asgi_transport",
    "create_app",
    "error_code",
    "lifespan",
    "sqlite_api_harness",
]
from entrypoints.http.auth import issue_token
from tests.fakes_telephony import FakeTelephony


@dataclass
class ApiHarness:
    app: Litestar
    client: httpx.AsyncClient
    settings: Settings
    telephony: FakeTelephony
    bus: MessageBus
    services: Services
    relay: OutboxRelay

    def token(self, org_id: str, role: str = "admin", sub: str | None = None) -> str:
        return issue_token(self.settings.jwt_secret, org_id=org_id, role=role, sub=sub or f"{role}@{org_id}")

    def auth(self, org_id: str, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(org_id, role)}"}

    @property
    def service_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.service_token}"}

    async def org(self, org_id: str, number: str, *, recording: bool = True) -> None:
        await self.bus.handle(commands.UpsertOrganization(org_id, org_id.title(), [number], f"Hi, {org_id}."))
        if recording:
            await self.bus.handle(commands.SetCallRecording(org_id, True, "setup"))

    async def archived_call(self, number: str, audio: bytes = b"ID3" + bytes(range(256)) * 40) -> str:
        """A whole recorded call, archived: returns the call id."""
        call_sid = "CA" + secrets.token_hex(16)
        decision: CallDecision = await self.bus.handle(
            commands.StartCall(
                call_sid=call_sid, account_sid="AC1", from_number="+15550001111", to_number=number
            )
        )
        await self.bus.handle(commands.RecordStreamEvent(call_sid, "MZ1", StreamEvent.STARTED))
        await self.relay.drain()
        recording_sid = next(
            sid for sid, rec in self.telephony.recordings.items() if rec.call_sid == call_sid
        )
        self.telephony.set_audio(recording_sid, audio)
        await self.bus.handle(
            commands.RecordRecordingStatus(
                call_sid, recording_sid, ProviderRecordingStatus.COMPLETED, duration_s=5
            )
        )
        await self.bus.handle(commands.EndCall(call_sid, CallStatus.COMPLETED, 6))
        await self.relay.drain()
        return decision.call_id

    async def unrecorded_call(self, number: str) -> str:
        call_sid = "CA" + secrets.token_hex(16)
        decision: CallDecision = await self.bus.handle(
            commands.StartCall(
                call_sid=call_sid, account_sid="AC1", from_number="+15550001111", to_number=number
            )
        )
        return decision.call_id


@asynccontextmanager
async def api_harness(tmp_path: Path, database_url: str, **env: str) -> AsyncIterator[ApiHarness]:
    settings = Settings.from_env(
        {
            "CALLREC_VAR_DIR": str(tmp_path / "var"),
            "CALLREC_DATABASE_URL": database_url,
            "CALLREC_PUBLIC_URL": "http://testserver.local",
            "TWILIO_ACCOUNT_SID": "AC1",
            "TWILIO_AUTH_TOKEN": "token",
            "CALLREC_PLATFORM_LINES": "support=+15557770002",
            **env,
        }
    )
    container = Container(settings=settings)
    telephony = FakeTelephony()
    container.telephony.override(providers.Object(telephony))
    app = create_app(container=container)
    transport = asgi_transport(app)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as client,
    ):
        services: Services = await resolve(container.services)
        bus: MessageBus = await resolve(container.bus)
        relay: OutboxRelay = app.state.relay
        yield ApiHarness(app, client, settings, telephony, bus, services, relay)


def asgi_transport(app: Litestar) -> httpx.ASGITransport:
    """httpx into the app in-process (Litestar's ASGI types are narrower than httpx's)."""
    return httpx.ASGITransport(app=app)  # type: ignore[arg-type]


@asynccontextmanager
async def sqlite_api_harness(tmp_path: Path, **env: str) -> AsyncIterator[ApiHarness]:
    """``api_harness`` on a freshly migrated SQLite database in ``tmp_path``."""
    url = f"sqlite+aiosqlite:///{tmp_path}/api.db"
    await asyncio.to_thread(migrate, url)
    async with api_harness(tmp_path, url, **env) as harness:
        yield harness


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    """Run the app's ASGI lifespan on this event loop (Litestar's test clients use another thread's)."""
    to_app: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive() -> dict[str, str]:
        return await to_app.get()

    async def send(message: dict[str, Any]) -> None:
        await from_app.put(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]  # plain dicts as ASGI messages
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"app failed to start: {started}")
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await task


def error_code(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["code"])
