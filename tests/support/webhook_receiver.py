"""A webhook subscriber on loopback that verifies every delivery with the ``standardwebhooks`` library.

``WebhookReceiver`` runs an aiohttp server on its own thread (so sync e2e tests and async tests can
both use it). Answers are scripted per path (``script``), or ``fail_first=True`` answers 500 to the
first try of every message and 204 afterwards. ``TcpCanary`` is a listener that only counts who
connects to it: the target a rebinding resolver would steer a careless sender to.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Reply:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: bytes = b""
    endless: bool = False  # stream a body that never ends (until the client hangs up)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class WebhookReceiver:
    def __init__(
        self, *, fail_first: bool = False, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.fail_first = fail_first
        self.ssl_context = ssl_context
        self.host = host
        self.secrets: list[str] = []
        self.received: list[Received] = []
        self._scripts: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="webhook-receiver")
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ---

    def start(self) -> WebhookReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def url(self, path: str = "/hook") -> str:
        return self.base_url + path

    # --- behaviour ---

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with these replies, in order (then 204)."""
        with self._lock:
            self._scripts[path] = list(replies)

    def _reply_for(self, path: str, webhook_id: str) -> Reply:
        with self._lock:
            queue = self._scripts.get(path)
            if queue:
                return queue.pop(0)
            if self.fail_first and not any(r.webhook_id == webhook_id for r in self.received):
                return Reply(500, body=b"not yet")
        return Reply(204)

    def verify(self, body: bytes, headers: dict[str, str]) -> bool:
        for secret in list(self.secrets):
            try:
                Webhook(secret).verify(body, headers)
                return True
            except WebhookVerificationError:
                continue
        return False

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        reply = self._reply_for(request.path, headers.get("webhook-id", ""))
        received = Received(request.path, headers, body, self.verify(body, headers), reply.status)
        with self._lock:
            self.received.append(received)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.endless:
            response = web.StreamResponse(status=reply.status, headers=reply.headers)
            await response.prepare(request)
            with contextlib.suppress(ConnectionError, RuntimeError):
                for _ in range(100_000):
                    await response.write(b"x" * 65536)
            return response
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)

    # --- waiting ---

    def wait_for(self, count: int, timeout: float = 10.0, **match: str) -> list[Received]:
        """Until ``count`` requests (matching the given header values) arrived; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [r for r in self.received if all(r.headers.get(k) == v for k, v in match.items())]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


@contextlib.contextmanager
def webhook_receiver(**kwargs: Any) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(**kwargs).start()
    try:
        yield receiver
    finally:
        receiver.stop()


class TcpCanary:
    """A loopback listener that counts connections and never answers."""

    def __init__(self) -> None:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self.hits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="tcp-canary")
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
