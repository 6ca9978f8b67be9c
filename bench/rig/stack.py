"""The service's two shapes as processes on this machine, started the way the e2e tier starts them.

* production: a throwaway PostgreSQL, Tansu (Kafka protocol), a moto S3 server, the Twilio stand-in
  process, a webhook receiver (a thread of the driver), ``callrec serve`` and two ``callrec worker``s;
* embedded: ``callrec serve`` on its default (SQLite, in-process bus, filesystem store), the stand-in
  and the receiver.

Every process is started in its own session and stopped by its PID when the context exits, even on
error. ``Stack.service`` names the service's processes, ``Stack.infra`` the others (process-group
leaders, so a forking server's children are counted with it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiohttp import web

from adapters.sqlalchemy.engine import migrate
from application.handlers import EVENT_HANDLERS
from tests.support.kafka import running_tansu
from tests.support.s3 import S3_CREDENTIALS, moto_server_process, sync_client
from tests.support.services import create_database, free_port, stop_pid, throwaway_postgres
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver
from tests.twilio_fixtures import StandinProcess, start_standin_process, stop_standin_process
from tests.twilio_standin import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONSUMERS = sorted({name for handlers in EVENT_HANDLERS.values() for name, _ in handlers})


DRIVER_NICE = -5


def normal_priority() -> None:
    """In a child of a prioritised driver: back to the default priority."""
    os.setpriority(os.PRIO_PROCESS, 0, 0)


@contextlib.contextmanager
def prioritised(receiver: TimedReceiver) -> Iterator[None]:
    """The driver's thread and the receiver's run at nice ``DRIVER_NICE`` meanwhile (Linux: per
    thread), so that on a shared machine the load generator keeps its schedule and its clocks; the
    processes it starts meanwhile go back to the default (``normal_priority``). Without the right
    to raise priority (not root) nothing changes."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, DRIVER_NICE)
    except PermissionError:
        yield
        return
    receiver.call_in_thread(os.setpriority, os.PRIO_PROCESS, 0, DRIVER_NICE)
    try:
        yield
    finally:
        receiver.call_in_thread(os.setpriority, os.PRIO_PROCESS, 0, 0)
        os.setpriority(os.PRIO_PROCESS, 0, 0)


class TimedReceiver(WebhookReceiver):
    """The e2e tier's webhook receiver (verifies every delivery), noting when each call's first
    ``call.ended`` arrived (``time.monotonic()``)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[str, float] = {}

    def call_in_thread(self, fn: Callable[..., object], *args: object) -> None:
        """Runs ``fn(*args)`` on the receiver's thread and waits for it."""
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args)
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        response = await super()._handle(request)
        last = self.received[-1]
        if last.verified:
            call_id = str(last.json().get("data", {}).get("call_id", ""))
            self.arrived.setdefault(call_id, at)
        return response


@dataclass
class Stack:
    shape: str
    base_url: str
    env: dict[str, str]
    workdir: Path
    standin: StandinProcess
    receiver: TimedReceiver
    service: dict[str, int] = field(default_factory=dict)  # name → PID (process-group leader)
    infra: dict[str, int] = field(default_factory=dict)

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> int:
        with self.log(name).open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "entrypoints.cli", *args],
                cwd=self.workdir,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=normal_priority,
            )
        self.service[name] = proc.pid
        return proc.pid

    def start_worker(self, name: str) -> int:
        return self.spawn(name, "worker", env={"CALLREC_METRICS_PORT": str(free_port())})

    def assigned(self, name: str) -> bool:
        """The worker's every consumer holds partitions (from its JSON log lines)."""
        latest: dict[str, str] = {}
        text = self.log(name).read_text(errors="replace")
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                event = str(json.loads(line).get("event", ""))
                found = re.search(r"consumer (\S+) assigned (.*)$", event)
                if found:
                    latest[found.group(1)] = found.group(2)
        return set(latest) == set(CONSUMERS) and all(v != "nothing" for v in latest.values())

    def stop_service(self, name: str) -> None:
        pid = self.service.pop(name, None)
        if pid is not None:
            stop_pid(pid)


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _base_env(base_url: str, standin: StandinProcess, workdir: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CALLREC_", "TWILIO_", "AWS_"))},
        "PYTHONPATH": str(PROJECT_ROOT),
        "CALLREC_VAR_DIR": str(workdir / "var"),
        "CALLREC_PUBLIC_URL": base_url,
        "CALLREC_TWILIO_API_BASE": standin.base_url,
        "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
        "CALLREC_SERVICE_TOKEN": "service-" + uuid.uuid4().hex,
        "CALLREC_JWT_SECRET": "jwt-" + uuid.uuid4().hex,
        "CALLREC_WEBHOOK_SECRET_KEY": "webhook-key-" + uuid.uuid4().hex,
        "CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",  # the receiver is on loopback
    }


@contextlib.contextmanager
def _standin_and_receiver(workdir: Path) -> Iterator[tuple[StandinProcess, TimedReceiver]]:
    standin = start_standin_process(stderr_path=workdir / "standin.log")
    try:
        receiver = TimedReceiver()
        receiver.start()
        try:
            yield standin, receiver
        finally:
            receiver.stop()
    finally:
        standin.close()
        stop_standin_process(standin.popen)


def _stop_all(stack: Stack) -> None:
    for pid in list(stack.service.values()):
        stop_pid(pid)
    stack.service.clear()


@contextlib.contextmanager
def production(workdir: Path, workers: int = 2) -> Iterator[Stack]:
    """PostgreSQL, Tansu, moto, the stand-in, the receiver, ``callrec serve`` and ``workers`` workers."""
    with contextlib.ExitStack() as exits:
        pg = exits.enter_context(throwaway_postgres())
        tansu = exits.enter_context(running_tansu(workdir))
        moto = exits.enter_context(moto_server_process(workdir / "moto.log"))
        standin, receiver = exits.enter_context(_standin_and_receiver(workdir))
        database_url = create_database(pg, f"calls_{uuid.uuid4().hex[:12]}")
        migrate(database_url)
        bucket = f"calls-{uuid.uuid4().hex[:12]}"
        sync_client(moto.endpoint_url).create_bucket(Bucket=bucket)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        prefix = f"b{uuid.uuid4().hex[:8]}."
        env = {
            **_base_env(base_url, standin, workdir),
            "CALLREC_DATABASE_URL": database_url,
            "CALLREC_BUS": "kafka",
            "CALLREC_KAFKA_BOOTSTRAP": tansu.bootstrap,
            "CALLREC_KAFKA_TOPIC_PREFIX": prefix,
            "CALLREC_KAFKA_GROUP_PREFIX": prefix,
            "CALLREC_STORAGE": "s3",
            "CALLREC_S3_BUCKET": bucket,
            "CALLREC_S3_ENDPOINT_URL": moto.endpoint_url,
            "AWS_ACCESS_KEY_ID": S3_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS["aws_secret_access_key"],
        }
        assert tansu.pid is not None
        infra = {"postgres": pg.pid, "tansu": tansu.pid, "moto": moto.pid, "twilio-standin": standin.pid or 0}
        stack = Stack("production", base_url, env, workdir, standin, receiver, infra=infra)
        exits.callback(_stop_all, stack)
        stack.spawn("api", "serve", "--port", str(port))
        for n in range(1, workers + 1):
            stack.start_worker(f"worker-{n}")
        wait_for(lambda: _ready(base_url), "callrec serve to be ready", 60, interval=0.2)
        wait_for(
            lambda: all(stack.assigned(f"worker-{n}") for n in range(1, workers + 1)),
            "every worker in every consumer group",
            120,
            interval=0.5,
        )
        yield stack


@contextlib.contextmanager
def embedded(workdir: Path) -> Iterator[Stack]:
    """``callrec serve`` on its default: SQLite, the in-process bus, the filesystem store."""
    with contextlib.ExitStack() as exits:
        standin, receiver = exits.enter_context(_standin_and_receiver(workdir))
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        infra = {"twilio-standin": standin.pid or 0}
        stack = Stack(
            "embedded",
            base_url,
            _base_env(base_url, standin, workdir),
            workdir,
            standin,
            receiver,
            infra=infra,
        )
        exits.callback(_stop_all, stack)
        stack.spawn("serve", "serve", "--port", str(port))
        wait_for(lambda: _ready(base_url), "callrec serve to be ready", 60, interval=0.2)
        yield stack


@contextlib.contextmanager
def workdir(logs_to: Path) -> Iterator[Path]:
    """A scratch directory for ``var`` and the processes' logs; the logs are copied to ``logs_to``
    when it is left, even on error."""
    with tempfile.TemporaryDirectory(prefix="callrec-calls-") as tmp:
        try:
            yield Path(tmp)
        finally:
            shutil.rmtree(logs_to, ignore_errors=True)  # an earlier run's
            logs_to.mkdir(parents=True)
            for log in Path(tmp).glob("*.log"):
                shutil.copyfile(log, logs_to / log.name)
