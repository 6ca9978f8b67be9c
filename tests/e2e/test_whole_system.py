"""The whole system at scale, in its production shape, as processes on this machine: a throwaway
PostgreSQL, Tansu (Kafka protocol), a moto S3 server behind a fault proxy, the Twilio stand-in, a
webhook receiver, ``callrec serve`` and two ``callrec worker``s.

200 calls are driven concurrently, as Twilio and the platform drive them, with mixed outcomes:
recorded, unrecorded, absent (silent) audio, non-engagement (a robocall), a warm transfer, duplicate
and out-of-order callbacks; Twilio answers 5xx to some deletes and a media download, S3 to some
uploads; one worker is killed with SIGKILL midway. Then: every recording is archived with the right
bytes and deleted at Twilio exactly once, every expected ``call.ended`` arrives once (one message
id, which a receiver deduplicates on; every try correctly signed) and no other, nothing is left in
the outbox or the DLQ, the metrics agree with what happened, the logs are JSON lines that name their
call and hold no secret, and the audit chain verifies.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.sqlalchemy.engine import migrate
from application.handlers import EVENT_HANDLERS
from entrypoints.http.auth import issue_token
from tests.support.kafka import TansuBroker
from tests.support.s3 import S3_CREDENTIALS, MotoServer, S3FaultProxy, sync_client
from tests.support.services import PostgresServer, create_database, free_port, stop_pid
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import WebhookReceiver, webhook_receiver
from tests.twilio_fixtures import StandinProcess, start_standin_process, stop_standin_process
from tests.twilio_standin import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    TwilioCallbackDriver,
    call_status_payload,
    generate_audio,
    new_sid,
    recording_status_payload,
    stream_status_payload,
    voice_payload,
)

T = TypeVar("T")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONSUMERS = sorted({name for handlers in EVENT_HANDLERS.values() for name, _ in handlers})
CALLS = 200
AUDIO_SIZE = 16 * 1024
IN_FLIGHT = 64  # calls driven at once
REC_ORG, REC_NUMBER = "acme", "+15550300001"
OFF_ORG, OFF_NUMBER = "plain", "+15550300002"
CALLER = "+15558675309"
# What each call does, by its index modulo 10.
KINDS = ("recorded",) * 5 + ("shuffled", "unrecorded", "absent", "robocall", "transfer")
ARCHIVED = {"recorded", "shuffled", "robocall", "transfer"}
# call.ended expected; a robocall and silent (absent) audio are non-engagement: none for them.
ANNOUNCED = {"recorded", "shuffled", "unrecorded", "transfer"}
SURVIVORS = ("worker-2",)


@dataclass
class Call:
    kind: str
    call_sid: str
    call_id: str = ""
    recording_sid: str | None = None


@dataclass
class Stack:
    base_url: str
    env: dict[str, str]
    database_url: str
    tmp_path: Path
    standin: StandinProcess
    proxy: S3FaultProxy
    receiver: WebhookReceiver
    bucket: str
    moto: MotoServer
    pids: dict[str, int]
    metrics_ports: dict[str, int]

    def log(self, name: str) -> Path:
        return self.tmp_path / f"{name}.log"

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        with self.log(name).open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "entrypoints.cli", *args],
                cwd=self.tmp_path,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pids[name] = proc.pid

    def start_worker(self, name: str) -> None:
        self.metrics_ports[name] = free_port()
        self.spawn(name, "worker", env={"CALLREC_METRICS_PORT": str(self.metrics_ports[name])})

    def lines(self, name: str) -> list[dict[str, Any]]:
        """Every line as JSON (a process killed mid-line leaves its last line unfinished)."""
        text = self.log(name).read_text()
        whole = text if text.endswith("\n") else text.rpartition("\n")[0]
        return [json.loads(line) for line in whole.splitlines() if line.strip()]

    def assigned(self, name: str) -> bool:
        latest: dict[str, str] = {}
        for line in self.lines(name):
            found = re.search(r"consumer (\S+) assigned (.*)$", line["event"])
            if found:
                latest[found.group(1)] = found.group(2)
        return set(latest) == set(CONSUMERS) and all(v != "nothing" for v in latest.values())


@pytest.fixture
def stack(
    tmp_path: Path, postgres_server: PostgresServer, kafka_broker: TansuBroker, moto_server: MotoServer
) -> Iterator[Stack]:
    database_url = create_database(postgres_server, f"w_{uuid.uuid4().hex[:12]}")
    migrate(database_url)
    bucket = f"whole-{uuid.uuid4().hex[:12]}"
    sync_client(moto_server.endpoint_url).create_bucket(Bucket=bucket)
    prefix = f"w{uuid.uuid4().hex[:8]}."
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    standin = start_standin_process(stderr_path=tmp_path / "standin.log")
    proxy = S3FaultProxy(moto_server.endpoint_url)
    proxy.start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CALLREC_", "TWILIO_", "AWS_"))},
        "PYTHONPATH": str(PROJECT_ROOT),
        "CALLREC_VAR_DIR": str(tmp_path / "var"),
        "CALLREC_PUBLIC_URL": base_url,
        "CALLREC_DATABASE_URL": database_url,
        "CALLREC_TWILIO_API_BASE": standin.base_url,
        "TWILIO_ACCOUNT_SID": DEFAULT_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": DEFAULT_AUTH_TOKEN,
        "CALLREC_TWILIO_RETRY_BASE_S": "0.05",
        "CALLREC_SERVICE_TOKEN": "service-" + uuid.uuid4().hex,
        "CALLREC_JWT_SECRET": "jwt-" + uuid.uuid4().hex,
        "CALLREC_WEBHOOK_SECRET_KEY": "webhook-key-" + uuid.uuid4().hex,
        "CALLREC_RELAY_RETRY_BASE_S": "0.2",
        "CALLREC_BUS": "kafka",
        "CALLREC_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "CALLREC_KAFKA_TOPIC_PREFIX": prefix,
        "CALLREC_KAFKA_GROUP_PREFIX": prefix,
        "CALLREC_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "CALLREC_KAFKA_RETRY_BACKOFF_S": "0.2",
        "CALLREC_KAFKA_MESSAGE_TIME_LIMIT_S": "30",
        "CALLREC_KAFKA_MAX_POLL_INTERVAL_MS": "60000",
        "CALLREC_STORAGE": "s3",
        "CALLREC_S3_BUCKET": bucket,
        "CALLREC_S3_ENDPOINT_URL": proxy.endpoint_url,
        "AWS_ACCESS_KEY_ID": S3_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS["aws_secret_access_key"],
        "CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        "CALLREC_WEBHOOK_POLL_S": "0.2",
        "CALLREC_WEBHOOK_TIMEOUT_S": "5",
    }
    with webhook_receiver() as receiver:
        running = Stack(
            base_url, env, database_url, tmp_path, standin, proxy, receiver, bucket, moto_server, {}, {}
        )
        try:
            running.spawn("serve", "serve", "--port", str(port))
            running.start_worker("worker-1")
            running.start_worker("worker-2")
            wait_for(lambda: _ready(base_url), "callrec serve to be ready", 30)
            wait_for(
                lambda: running.assigned("worker-1") and running.assigned("worker-2"),
                "both workers in every consumer group",
                60,
            )
            yield running
        finally:
            for pid in running.pids.values():
                stop_pid(pid)
            proxy.stop()
            standin.close()
            stop_standin_process(standin.popen)


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


# --- driving the calls ----------------------------------------------------------------------------


class SharedTransport(httpx.AsyncBaseTransport):
    """One connection pool for every callback: the driver's per-request clients must not close it."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        pass


class Driver:
    """Twilio's and the platform's side of the calls, asynchronously."""

    def __init__(self, stack: Stack, http: httpx.AsyncClient, transport: httpx.AsyncBaseTransport) -> None:
        self.stack = stack
        self.http = http
        self.twilio = TwilioCallbackDriver(
            stack.base_url, DEFAULT_AUTH_TOKEN, async_transport=SharedTransport(transport)
        )
        self.service = {"Authorization": f"Bearer {stack.env['CALLREC_SERVICE_TOKEN']}"}
        self.recordings: dict[str, str] = {}  # call sid → recording sid, as the stand-in reports
        self.statuses: dict[str, str] = {}  # recording sid → its status at the stand-in

    async def ok(self, sent: Awaitable[httpx.Response], status: int = 204) -> httpx.Response:
        response = await sent
        assert response.status_code == status, response.text
        return response

    async def recording_of(self, call_sid: str) -> str:
        deadline = time.monotonic() + 90
        while call_sid not in self.recordings:
            assert time.monotonic() < deadline, f"no recording started for {call_sid}"
            await asyncio.sleep(0.1)
        return self.recordings[call_sid]

    async def watch_recordings(self, stop: asyncio.Event) -> None:
        """One poller of the stand-in's state for every call waiting for its recording."""
        while not stop.is_set():
            state = (await self.http.get(f"{self.stack.standin.base_url}/_standin/state")).json()
            for sid, info in state["recordings"].items():
                self.recordings.setdefault(info["call_sid"], sid)
                self.statuses[sid] = info["status"]
            await asyncio.sleep(0.2)

    async def stopped(self, recording_sid: str) -> None:
        deadline = time.monotonic() + 90
        while self.statuses.get(recording_sid) != "stopped":
            assert time.monotonic() < deadline, f"recording {recording_sid} was not stopped"
            await asyncio.sleep(0.1)

    async def recording_callback(self, call: Call, status: str, **kw: Any) -> None:
        assert call.recording_sid is not None
        payload = recording_status_payload(
            call_sid=call.call_sid,
            recording_sid=call.recording_sid,
            status=status,
            standin_base=self.stack.standin.base_url,
            **kw,
        )
        await self.ok(self.twilio.arecording_status(payload))

    async def standin(self, path: str, body: dict[str, Any]) -> None:
        r = await self.http.post(f"{self.stack.standin.base_url}/_standin/{path}", json=body)
        assert r.status_code < 300, r.text

    async def play(self, call: Call) -> None:
        number = OFF_NUMBER if call.kind == "unrecorded" else REC_NUMBER
        twiml = await self.ok(self.twilio.avoice(voice_payload(call.call_sid, from_=CALLER, to=number)), 200)
        found = re.search(r'name="call_id" value="([^"]+)"', twiml.text)
        assert found, twiml.text
        call.call_id = found.group(1)
        await self.ok(self.twilio.astream_status(stream_status_payload(call.call_sid, "stream-started")))
        if call.kind == "unrecorded":
            await self.end(call)
            return
        call.recording_sid = await self.recording_of(call.call_sid)
        if call.kind == "robocall":
            await self.ok(
                self.http.post(
                    f"{self.stack.base_url}/internal/v1/calls/{call.call_id}/scorability",
                    json={"scorable": False, "reason": "robocall"},
                    headers=self.service,
                )
            )
        if call.kind == "transfer":
            url = f"{self.stack.base_url}/internal/v1/calls/{call.call_id}/transfer"
            for stage in ("started", "completed"):
                await self.ok(self.http.post(url, json={"stage": stage}, headers=self.service))
            await self.stopped(call.recording_sid)  # the transfer stops the recording; Twilio completes it
        if call.kind == "absent":
            await self.recording_callback(call, "in-progress")
            await self.standin(f"recordings/{call.recording_sid}/status", {"status": "absent"})
            await self.recording_callback(call, "absent", error_code="16102")
            await self.end(call)
            return
        if call.kind != "shuffled":
            await self.recording_callback(call, "in-progress")
        await self.standin(f"recordings/{call.recording_sid}/complete", {"duration": 20, "size": AUDIO_SIZE})
        await self.end(call)
        await self.recording_callback(call, "completed", duration=20)
        if call.kind == "shuffled":  # in-progress after completed, then both repeated
            await self.recording_callback(call, "in-progress")
            await self.recording_callback(call, "completed", duration=20)
            await self.end(call)

    async def end(self, call: Call) -> None:
        await self.ok(self.twilio.astream_status(stream_status_payload(call.call_sid, "stream-stopped")))
        await self.ok(self.twilio.acall_status(call_status_payload(call.call_sid, "completed", duration=21)))


async def setup_orgs(stack: Stack, http: httpx.AsyncClient, service: dict[str, str]) -> None:
    for org_id, number, recording in ((REC_ORG, REC_NUMBER, True), (OFF_ORG, OFF_NUMBER, False)):
        r = await http.put(
            f"{stack.base_url}/internal/v1/organizations/{org_id}",
            json={"name": org_id.title(), "phone_numbers": [number], "greeting": f"Hi, {org_id} here."},
            headers=service,
        )
        assert r.status_code == 200, r.text
        token = issue_token(stack.env["CALLREC_JWT_SECRET"], org_id=org_id, role="admin", sub="ops")
        admin = {"Authorization": f"Bearer {token}"}
        r = await http.put(
            f"{stack.base_url}/api/v1/settings/call-recording", json={"enabled": recording}, headers=admin
        )
        assert r.status_code == 200, r.text
        r = await http.post(
            f"{stack.base_url}/api/v1/webhook-endpoints",
            json={"url": stack.receiver.url(f"/{org_id}"), "events": ["call.ended"]},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        stack.receiver.secrets.append(r.json()["secret"])


async def settled(stack: Stack, calls: list[Call]) -> bool:
    """Every recording in its final state, every call settled, every webhook delivered, nothing
    waiting in the outbox."""
    conn = await asyncpg.connect(stack.database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        final = await conn.fetchval(
            "SELECT count(*) FROM recordings WHERE status IN ('twilio_deleted', 'absent')"
        )
        unsettled = await conn.fetchval("SELECT count(*) FROM calls WHERE settled_at IS NULL")
        backlog = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    finally:
        await conn.close()
    expected_final = sum(1 for c in calls if c.kind in ARCHIVED | {"absent"})
    announced = {r.json()["data"]["call_id"] for r in list(stack.receiver.received) if r.answered < 300}
    expected_announced = {c.call_id for c in calls if c.kind in ANNOUNCED}
    return final == expected_final and unsettled == 0 and backlog == 0 and announced >= expected_announced


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# --- the test ---------------------------------------------------------------------------------------


async def drive_and_settle(stack: Stack, calls: list[Call]) -> None:
    """Play the calls, ``IN_FLIGHT`` at a time; kill worker-1 halfway; wait until all is settled."""
    # Idle connections are dropped well before the servers' keep-alive timeouts (uvicorn: 5 s), so
    # that a request never goes out on a connection the server is closing.
    limits = httpx.Limits(keepalive_expiry=1.0)
    async with (
        httpx.AsyncClient(timeout=30, limits=limits) as http,
        httpx.AsyncHTTPTransport(limits=limits) as transport,
    ):
        driver = Driver(stack, http, transport)
        await setup_orgs(stack, http, driver.service)
        stop_watching = asyncio.Event()
        watcher = asyncio.create_task(driver.watch_recordings(stop_watching))
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def drive(call: Call) -> None:
            async with slots:
                await driver.play(call)

        await asyncio.gather(*(drive(call) for call in calls[: CALLS // 2]))
        os.killpg(stack.pids["worker-1"], signal.SIGKILL)  # its partitions move to worker-2
        await asyncio.gather(*(drive(call) for call in calls[CALLS // 2 :]))
        stop_watching.set()
        await watcher

    deadline = time.monotonic() + 180
    while not await settled(stack, calls) or not caught_up(stack):
        assert time.monotonic() < deadline, "the system did not settle every call in time"
        await asyncio.sleep(0.5)


def caught_up(stack: Stack) -> bool:
    """Every consumer group committed what it handled (a commit follows each batch handled)."""
    lags = [
        v for (name, _), v in scrape(f"{stack.base_url}/metrics").items() if name == "callrec_consumer_lag"
    ]
    return bool(lags) and not any(lags)


def test_two_hundred_calls_through_the_production_shape_with_faults_and_a_killed_worker(
    stack: Stack,
) -> None:
    calls = [Call(KINDS[i % len(KINDS)], new_sid("CA")) for i in range(CALLS)]
    # Twilio answers 5xx to two deletes and one media download; S3 to two uploads.
    stack.standin.inject_fault("delete_recording", status=503, times=2)
    stack.standin.inject_fault("fetch_media", status=500, times=1)
    stack.proxy.fail_next("PutObject", status=500, times=2)
    asyncio.run(drive_and_settle(stack, calls))

    by_kind = Counter(call.kind for call in calls)
    archived = [c for c in calls if c.kind in ARCHIVED]

    # Every recording archived with the right bytes, in the bucket, and nothing else there.
    s3 = sync_client(stack.moto.endpoint_url)
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket)
        for o in page.get("Contents", [])
    ]
    assert len(keys) == len(archived)
    key_of = {key.split("/")[-2]: key for key in keys}  # …/{call_id}/{recording_id}.mp3
    for call in archived:
        assert call.recording_sid is not None
        stored = s3.get_object(Bucket=stack.bucket, Key=key_of[call.call_id])["Body"].read()
        assert stored == generate_audio(call.recording_sid, AUDIO_SIZE), call

    # Deleted at Twilio exactly once (one DELETE answered 204); absent audio never deleted.
    state = httpx.get(f"{stack.standin.base_url}/_standin/state", timeout=30).json()
    deleted = Counter(
        r["path"].rsplit("/", 1)[-1].removesuffix(".json")
        for r in state["requests"]
        if r["route"] == "delete_recording" and r["status"] == 204
    )
    assert {c.recording_sid: deleted[c.recording_sid or ""] for c in archived} == {
        c.recording_sid: 1 for c in archived
    }
    assert all(deleted[c.recording_sid or ""] == 0 for c in calls if c.kind == "absent")
    assert sum(deleted.values()) == len(archived)
    assert len(state["recordings"]) == len(archived) + by_kind["absent"]  # no second recording started
    transfers = {c.recording_sid for c in calls if c.kind == "transfer"}
    stopped = {
        r["path"].rsplit("/", 1)[-1].removesuffix(".json")
        for r in state["requests"]
        if r["route"] == "update_recording" and r["form"].get("Status") == ["stopped"]
    }
    assert transfers <= stopped
    # The injected faults were met, and outlived.
    assert state["faults"] == []
    assert Counter(r["status"] for r in state["requests"] if r["route"] == "delete_recording")[503] == 2
    assert [r.status for r in stack.proxy.seen("PutObject")].count(500) == 2

    # call.ended: once per expected call (one message id), every try signed, none for a robocall.
    received = list(stack.receiver.received)
    assert received and all(r.verified for r in received)
    ids_by_call: dict[str, set[str]] = defaultdict(set)
    for r in received:
        assert r.json()["type"] == "call.ended"
        ids_by_call[r.json()["data"]["call_id"]].add(r.webhook_id)
    assert set(ids_by_call) == {c.call_id for c in calls if c.kind in ANNOUNCED}
    assert all(len(ids) == 1 for ids in ids_by_call.values())

    # Nothing left in the outbox; the DLQ is empty; the metrics say what happened.
    metrics = scrape(f"{stack.base_url}/metrics")

    def metric(name: str, **labels: str) -> float:
        return metrics.get((name, frozenset(labels.items())), 0.0)

    assert metric("callrec_recordings", state="twilio_deleted") == len(archived)
    assert metric("callrec_recordings", state="absent") == by_kind["absent"]
    assert (
        sum(v for (name, _), v in metrics.items() if name == "callrec_recordings")
        == len(archived) + (by_kind["absent"])
    )
    assert sum(v for (name, _), v in metrics.items() if name == "callrec_recordings_stuck") == 0
    assert metric("callrec_outbox_backlog") == 0 and metric("callrec_outbox_oldest_age_seconds") == 0
    assert metric("callrec_dlq_messages", bus="kafka") == 0
    lags = {
        dict(labels)["group"]: v for (name, labels), v in metrics.items() if name == "callrec_consumer_lag"
    }
    assert set(lags) == {f"{stack.env['CALLREC_KAFKA_GROUP_PREFIX']}{c}" for c in CONSUMERS}
    assert all(v == 0 for v in lags.values()), lags
    assert metric("callrec_http_requests_total", method="POST", route="/twilio/voice", status="200") == CALLS
    # Counters are per process: the killed worker's are gone, the others' count what they did.
    survivors = [scrape(f"http://127.0.0.1:{stack.metrics_ports[w]}/metrics") for w in SURVIVORS]
    survived = sum(m.get(("callrec_archives_total", frozenset({("outcome", "ok")})), 0.0) for m in survivors)
    assert 0 < survived <= len(archived)
    sent = sum(
        v
        for m in (metrics, *survivors)
        for (name, _), v in m.items()
        if name == "callrec_webhook_attempts_total"
    )
    assert 0 < sent <= len(received)

    # Logs: JSON from the first line, call lines name their call, Twilio's SDK quiet, no secret.
    secrets = [
        stack.env[name] for name in ("CALLREC_SERVICE_TOKEN", "CALLREC_JWT_SECRET", "TWILIO_AUTH_TOKEN")
    ]
    for name in ("serve", "worker-1", *SURVIVORS):
        text = stack.log(name).read_text()
        lines = stack.lines(name)  # raises unless every line is JSON
        assert lines and not any(line["logger"].startswith("twilio") for line in lines)
        assert not any(secret in text for secret in secrets) and "X-Amz-Signature=" not in text.replace(
            "X-Amz-Signature=[redacted]", ""
        )
        for line in lines:  # what the edges bound
            if line.get("call_sid"):
                assert line.get("request_id"), line
            if line.get("consumer"):
                assert line.get("event_id"), line
            if line["logger"] == "application.webhook_delivery" and " try " in line["event"]:
                assert line.get("call_id"), line
    voice_lines = [line for line in stack.lines("serve") if "arrived" in line["event"]]
    assert {line["call_id"] for line in voice_lines} == {c.call_id for c in calls}

    # The audit chain verifies.
    audit = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "audit", "verify"],
        cwd=stack.tmp_path,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
