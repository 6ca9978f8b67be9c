"""A local S3 server for the integration and e2e tiers, and a fault-injecting proxy in front of it.

``moto_server`` (session scope) runs ``moto_server`` as its own process on a free loopback port and
stops it by PID. moto speaks the S3 protocol well enough (multipart, Range, presigned GET, checksum
headers) but **validates nothing**: it stores whatever bytes arrive, never checks a part's
``x-amz-checksum-sha256`` and never checks a presigned signature. Tests that must show corruption
being caught therefore put ``S3FaultProxy`` between the store and moto: it can answer a request
with an error (5xx, throttling), flip bytes of a request body or cut it short on the way, and, when
asked, check ``x-amz-checksum-sha256`` the way S3 does (400 ``BadDigest``).

Fixtures: ``moto_server``, ``s3_bucket`` (a fresh bucket per test), ``s3_proxy`` (a proxy per test),
``s3_client`` (a plain synchronous boto3 client on moto, for looking behind the store's back) and
``s3_store`` (an ``S3RecordingStore`` on that bucket with 5 MiB parts and 1 h URLs).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aioboto3
import boto3
import httpx
import pytest
from aiohttp import ClientSession, ClientTimeout, web

from adapters.s3_store import MIN_PART_SIZE, S3RecordingStore
from tests.support.services import free_port, missing_service, stop_pid

__all__ = [
    "S3_CREDENTIALS",
    "S3_REGION",
    "MotoServer",
    "ProxiedRequest",
    "S3FaultProxy",
    "moto_server",
    "moto_server_process",
    "s3_bucket",
    "s3_client",
    "s3_operation",
    "s3_proxy",
    "s3_store",
    "s3_store_on",
    "sync_client",
]

S3_REGION = "us-east-1"
S3_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass
class MotoServer:
    endpoint_url: str
    port: int
    pid: int


def _moto_executable() -> str | None:
    beside_python = Path(sys.executable).parent / "moto_server"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("moto_server")


@contextmanager
def moto_server_process(
    log_path: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[MotoServer]:
    """``moto_server -H 127.0.0.1 -p PORT`` in its own session; stopped by PID."""
    executable = _moto_executable()
    if executable is None:
        missing_service("moto server not installed (uv add --dev 'moto[server]')")
    assert executable is not None
    port = free_port()
    with contextlib.ExitStack() as stack:
        log: Any = stack.enter_context(log_path.open("wb")) if log_path else subprocess.DEVNULL
        proc = subprocess.Popen(
            [executable, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{endpoint}/moto-api/", timeout=0.5).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto server did not start")
            time.sleep(0.05)
        yield MotoServer(endpoint_url=endpoint, port=port, pid=proc.pid)
    finally:
        stop_pid(proc.pid)


def sync_client(endpoint_url: str) -> Any:
    """A synchronous boto3 S3 client (path-style) for fixtures and for inspecting what is stored."""
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=S3_REGION,
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 2}),
        **S3_CREDENTIALS,
    )


# --- the fault proxy ------------------------------------------------------------------------------


def s3_operation(method: str, path: str, query: dict[str, str], headers: dict[str, str]) -> str:
    """The S3 operation a path-style request is (enough of them to aim faults at)."""
    has_key = path.strip("/").count("/") >= 1
    if method == "PUT":
        if "uploadId" in query and "partNumber" in query:
            return "UploadPart"
        if "x-amz-copy-source" in {k.lower() for k in headers}:
            return "CopyObject"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "Post"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "GET":
        if "uploads" in query:
            return "ListMultipartUploads"
        return "GetObject" if has_key else "ListObjects"
    return method


@dataclass
class ProxiedRequest:
    method: str
    path: str
    operation: str
    part_number: int | None
    status: int = 0
    spoiled: str | None = None  # "corrupt" | "truncate" when the body was tampered with
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    operation: str
    kind: str  # status | corrupt | truncate
    times: int
    part_number: int | None = None
    status: int = 500
    code: str = "InternalError"
    retry_after: str | None = None
    keep: int | None = None


_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
    "<RequestId>proxy</RequestId></Error>"
)
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "expect"}


class S3FaultProxy:
    """An HTTP proxy in front of an S3 server, serving in a background thread on a loopback port.

    ``fail_next(op, status, times, part_number=None, code=…, retry_after=None)`` answers the next
    matching requests with an S3 error; ``corrupt_next(op)`` flips 16 bytes in the middle of the
    next matching request body and ``truncate_next(op, keep=None)`` cuts it (to half by default)
    before forwarding. ``validate_checksums=True`` answers ``BadDigest`` when a body does not match
    its ``x-amz-checksum-sha256``, as S3 does. ``requests`` lists what passed, oldest first.
    """

    def __init__(self, upstream: str, *, validate_checksums: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.validate_checksums = validate_checksums
        self.requests: list[ProxiedRequest] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- test-side API --

    def fail_next(
        self,
        operation: str,
        status: int = 500,
        times: int = 1,
        *,
        part_number: int | None = None,
        code: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        default_code = {500: "InternalError", 503: "SlowDown"}.get(status, "InternalError")
        with self._lock:
            self._faults.append(
                _Fault(operation, "status", times, part_number, status, code or default_code, retry_after)
            )

    def corrupt_next(self, operation: str, times: int = 1, *, part_number: int | None = None) -> None:
        with self._lock:
            self._faults.append(_Fault(operation, "corrupt", times, part_number))

    def truncate_next(
        self, operation: str, times: int = 1, *, part_number: int | None = None, keep: int | None = None
    ) -> None:
        with self._lock:
            self._faults.append(_Fault(operation, "truncate", times, part_number, keep=keep))

    def heal(self) -> None:
        """Forget every fault still waiting for its request."""
        with self._lock:
            self._faults.clear()

    def seen(self, operation: str | None = None) -> list[ProxiedRequest]:
        with self._lock:
            return [r for r in self.requests if operation is None or r.operation == operation]

    # -- lifecycle --

    def start(self, timeout: float = 10.0) -> str:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            self._stop = asyncio.Event()
            session = ClientSession(timeout=ClientTimeout(total=120), auto_decompress=False)
            app = web.Application(client_max_size=1024**3)
            app.router.add_route("*", "/{tail:.*}", self._make_handler(session))
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            try:
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                server = site._server
                sockets = getattr(server, "sockets", None) or []
                self.port = int(sockets[0].getsockname()[1])
            except BaseException as error:
                failure.append(error)
                ready.set()
                raise
            ready.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()
                await session.close()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(serve())
            except BaseException:
                pass
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="s3-fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failure:
            raise RuntimeError("S3 fault proxy did not start") from (failure[0] if failure else None)
        return self.endpoint_url

    def stop(self, timeout: float = 10.0) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        self._thread = None

    # -- internals --

    def _take(self, operation: str, part_number: int | None) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.operation == operation and fault.part_number in (None, part_number):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _make_handler(self, session: ClientSession) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            query = {k: v for k, v in request.query.items()}
            headers = {k: v for k, v in request.headers.items()}
            operation = s3_operation(request.method, request.path, query, headers)
            part = int(query["partNumber"]) if "partNumber" in query else None
            record = ProxiedRequest(request.method, request.path, operation, part, headers=headers)
            with self._lock:
                self.requests.append(record)
            body = await request.read()
            fault = self._take(operation, part)
            if fault is not None and fault.kind == "status":
                record.status = fault.status
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return web.Response(
                    status=fault.status,
                    text=_ERROR_BODY.format(code=fault.code, message="injected by the test proxy"),
                    content_type="application/xml",
                    headers=extra,
                )
            if fault is not None and fault.kind == "corrupt" and body:
                middle = len(body) // 2
                body = (
                    body[:middle] + bytes(b ^ 0xFF for b in body[middle : middle + 16]) + body[middle + 16 :]
                )
                record.spoiled = "corrupt"
            elif fault is not None and fault.kind == "truncate" and body:
                body = body[: fault.keep if fault.keep is not None else len(body) // 2]
                record.spoiled = "truncate"
            declared = headers.get("x-amz-checksum-sha256")
            if self.validate_checksums and declared is not None:
                actual = base64.b64encode(hashlib.sha256(body).digest()).decode()
                if actual != declared:
                    record.status = 400
                    return web.Response(
                        status=400,
                        text=_ERROR_BODY.format(
                            code="BadDigest",
                            message="The SHA256 you specified did not match the calculated checksum.",
                        ),
                        content_type="application/xml",
                    )
            forward = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            async with session.request(
                request.method,
                self.upstream + request.rel_url.raw_path_qs,
                headers=forward,
                data=body if body or request.method in ("PUT", "POST") else None,
                allow_redirects=False,
            ) as upstream:
                record.status = upstream.status
                response = web.StreamResponse(
                    status=upstream.status,
                    headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP},
                )
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                await response.prepare(request)
                if request.method != "HEAD":
                    async for chunk in upstream.content.iter_chunked(256 * 1024):
                        await response.write(chunk)
                await response.write_eof()
                return response

        return handle


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with moto_server_process(log_path) as server:
        yield server


@pytest.fixture
def s3_client(moto_server: MotoServer) -> Any:
    return sync_client(moto_server.endpoint_url)


@pytest.fixture
def s3_bucket(s3_client: Any) -> Iterator[str]:
    """A fresh, empty bucket; its objects are removed afterwards (moto keeps them in memory)."""
    name = f"callrec-test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            for upload in s3_client.list_multipart_uploads(Bucket=name).get("Uploads", []):
                s3_client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
            for obj in s3_client.list_objects_v2(Bucket=name).get("Contents", []):
                s3_client.delete_object(Bucket=name, Key=obj["Key"])
            s3_client.delete_bucket(Bucket=name)


@pytest.fixture
def s3_proxy(moto_server: MotoServer) -> Iterator[S3FaultProxy]:
    proxy = S3FaultProxy(moto_server.endpoint_url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def s3_store_on(endpoint_url: str, bucket: str, **options: Any) -> S3RecordingStore:
    """An ``S3RecordingStore`` for tests: 5 MiB parts (S3's minimum), URLs of at most an hour."""
    settings: dict[str, Any] = {
        "endpoint_url": endpoint_url,
        "session": aioboto3.Session(**S3_CREDENTIALS),
        "part_size": MIN_PART_SIZE,
        "multipart_threshold": MIN_PART_SIZE,
        "max_url_lifetime": timedelta(hours=1),
        "max_attempts": 3,
        **options,
    }
    return S3RecordingStore(bucket, **settings)


@pytest.fixture
async def s3_store(moto_server: MotoServer, s3_bucket: str) -> AsyncIterator[S3RecordingStore]:
    async with s3_store_on(moto_server.endpoint_url, s3_bucket) as store:
        yield store
