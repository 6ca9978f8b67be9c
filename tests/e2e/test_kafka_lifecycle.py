"""Kafka mode as processes: ``callrec serve`` (HTTP and the relay) and two ``callrec worker`` processes on
Tansu and PostgreSQL, with the Twilio stand-in, driven as Twilio and the platform drive the service."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner

from adapters.sqlalchemy.engine import migrate
from application.handlers import EVENT_HANDLERS
from tests.e2e.conftest import PLATFORM_DISCOVERY, PLATFORM_SUPPORT, RunningService, start_service
from tests.e2e.test_recording_lifecycle import (
    arrive,
    call_detail,
    callback,
    make_org,
)
from tests.kafka_fixtures import read_all
from tests.support.kafka import TansuBroker
from tests.support.services import PostgresServer, create_database, free_port, stop_pid
from tests.support.waiting import wait_for
from tests.twilio_standin import TwilioStandin, call_status_payload, stream_status_payload

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONSUMERS = sorted({name for handlers in EVENT_HANDLERS.values() for name, _ in handlers})
ENVELOPE_FIELDS = {"id", "type", "occurred_at", "org_id", "aggregate_id", "data"}


@dataclass
class KafkaStack:
    service: RunningService
    env: dict[str, str]
    database_url: str
    prefix: str
    bootstrap: str
    tmp_path: Path
    workers: dict[str, int] = field(default_factory=dict)  # name → pid

    def log(self, name: str) -> Path:
        return self.tmp_path / f"{name}.log"

    def start_worker(self, name: str) -> None:
        log = self.log(name).open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli", "worker"],
            cwd=self.tmp_path,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.workers[name] = proc.pid

    def events(self, name: str) -> list[str]:
        """The ``event`` of each of the worker's (JSON) log lines."""
        lines = self.log(name).read_text(errors="replace").splitlines()
        return [json.loads(line)["event"] for line in lines if line.startswith("{")]

    def assigned(self, name: str) -> bool:
        """Every consumer of the worker owns partitions, as of its latest assignment."""
        latest: dict[str, str] = {}
        for line in self.events(name):
            found = re.search(r"consumer (\S+) assigned (.*)$", line)
            if found:
                latest[found.group(1)] = found.group(2)
        return set(latest) == set(CONSUMERS) and all(v != "nothing" for v in latest.values())

    def partitions(self, name: str, consumer: str) -> set[int]:
        """The partitions the worker's consumer owns as of its latest assignment."""
        latest = ""
        for line in self.events(name):
            found = re.search(rf"consumer {re.escape(consumer)} assigned (.*)$", line)
            if found:
                latest = found.group(1)
        return {int(p) for p in re.findall(r"/(\d+)", latest)}

    def wait_assigned(self, *names: str, timeout: float = 40.0) -> None:
        wait_for(lambda: all(self.assigned(n) for n in names), f"workers {names} in their groups", timeout)


def partition_of(key: str, partitions: int = 6) -> int:
    """The partition the producer's default partitioner (murmur2, as Java's) picks for a key."""
    return int(DefaultPartitioner()(key.encode(), list(range(partitions)), list(range(partitions))))


def _sql(database_url: str, query: str) -> list[Any]:
    import asyncpg

    async def run() -> list[Any]:
        dsn = database_url.replace("postgresql+asyncpg", "postgresql")
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(query))
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def kafka_stack(
    tmp_path: Path, twilio_standin: TwilioStandin, kafka_broker: TansuBroker, postgres_server: PostgresServer
) -> Iterator[KafkaStack]:
    database_url = create_database(postgres_server, f"k_{uuid.uuid4().hex[:12]}")
    migrate(database_url)
    prefix = f"e{uuid.uuid4().hex[:10]}."
    kafka_env = {
        "CALLREC_BUS": "kafka",
        "CALLREC_DATABASE_URL": database_url,
        "CALLREC_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
        "CALLREC_KAFKA_TOPIC_PREFIX": prefix,
        "CALLREC_KAFKA_GROUP_PREFIX": prefix,
        "CALLREC_KAFKA_RETRY_BACKOFF_S": "0.2",
        "CALLREC_KAFKA_MESSAGE_TIME_LIMIT_S": "30",
        "CALLREC_KAFKA_MAX_POLL_INTERVAL_MS": "60000",
    }
    service = start_service(tmp_path, twilio_standin, kafka_env)
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "CALLREC_VAR_DIR": str(service.var_dir),
        "CALLREC_PUBLIC_URL": service.base_url,
        "CALLREC_TWILIO_API_BASE": twilio_standin.base_url,
        "TWILIO_ACCOUNT_SID": twilio_standin.account_sid,
        "TWILIO_AUTH_TOKEN": twilio_standin.auth_token,
        "CALLREC_SERVICE_TOKEN": service.service_token,
        "CALLREC_JWT_SECRET": service.jwt_secret,
        "CALLREC_PLATFORM_LINES": f"discovery={PLATFORM_DISCOVERY},support={PLATFORM_SUPPORT}",
        **kafka_env,
    }
    stack = KafkaStack(service, env, database_url, prefix, kafka_broker.bootstrap, tmp_path)
    try:
        stack.start_worker("worker-1")
        stack.start_worker("worker-2")
        stack.wait_assigned("worker-1", "worker-2")
        yield stack
    finally:
        for pid in stack.workers.values():
            stop_pid(pid)
        stop_pid(service.pid)


def twilio_recording_of(service: RunningService, call_sid: str, timeout: float = 40.0) -> str:
    """The recording Twilio was asked to start (a worker taking over partitions needs some seconds)."""

    def probe() -> str | None:
        for sid, info in service.standin.state()["recordings"].items():
            if info["call_sid"] == call_sid:
                return str(sid)
        return None

    return wait_for(probe, f"Twilio recording of {call_sid}", timeout)


def recorded_call(service: RunningService, number: str, audio_size: int) -> dict[str, Any]:
    """One whole recorded call, as Twilio would drive it; returns what identifies it."""
    call_sid, params = arrive(service, number)
    assert params["recording"] == "on"
    assert service.driver.stream_status(stream_status_payload(call_sid, "stream-started")).status_code == 204
    recording_sid = twilio_recording_of(service, call_sid)
    callback(service, call_sid, recording_sid, "in-progress")
    audio = service.standin.complete_recording(recording_sid, duration=20, size=audio_size)
    service.driver.stream_status(stream_status_payload(call_sid, "stream-stopped"))
    service.driver.call_status(call_status_payload(call_sid, "completed", duration=21))
    callback(service, call_sid, recording_sid, "completed", duration=20)
    return {
        "call_sid": call_sid,
        "call_id": params["call_id"],
        "recording_sid": recording_sid,
        "audio": audio,
    }


def archived(service: RunningService, org_id: str, call_id: str, timeout: float = 60.0) -> None:
    wait_for(
        lambda: call_detail(service, org_id, call_id)["recording"]["status"] == "available",
        f"the recording of {call_id} to be archived",
        timeout,
    )


def stored_audio(stack: KafkaStack) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (stack.service.var_dir / "recordings").rglob("*.mp3")}


def test_five_concurrent_calls_are_archived_and_deleted_at_twilio_exactly_once_each(
    kafka_stack: KafkaStack,
) -> None:
    service = kafka_stack.service
    make_org(service, "acme", "+15550200001", recording=True)
    with ThreadPoolExecutor(5) as pool:
        calls = list(pool.map(lambda _: recorded_call(service, "+15550200001", 150_000), range(5)))

    for call in calls:
        archived(service, "acme", call["call_id"])
    for call in calls:
        wait_for(functools.partial(deleted, service, call["recording_sid"]), "the Twilio copy deleted")
    time.sleep(1.0)  # stray redeliveries would show up as a second DELETE
    assert [service.standin.delete_count(c["recording_sid"]) for c in calls] == [1] * 5
    assert sorted(stored_audio(kafka_stack).values()) == sorted(c["audio"] for c in calls)

    topics = [
        f"{kafka_stack.prefix}callrec.{name}.v1" for name in ("organizations", "calls", "recordings", "audit")
    ]
    records = asyncio.run(read_all(kafka_stack.bootstrap, topics))
    seen: set[tuple[str, str]] = set()
    for record in records:
        envelope = json.loads(record.value)
        assert set(envelope) == ENVELOPE_FIELDS
        assert record.key.decode() == envelope["aggregate_id"]
        assert dict(record.headers) == {
            "event-id": envelope["id"].encode(),
            "event-type": envelope["type"].encode(),
        }
        seen.add((record.topic.removeprefix(kafka_stack.prefix), envelope["type"]))
    started = [r for r in records if json.loads(r.value)["type"] == "CallStarted"]
    assert sorted(json.loads(r.value)["aggregate_id"] for r in started) == sorted(c["call_id"] for c in calls)
    assert ("callrec.calls.v1", "CallStarted") in seen
    assert ("callrec.recordings.v1", "RecordingArchived") in seen
    assert ("callrec.recordings.v1", "RecordingDeletedAtTwilio") in seen
    assert ("callrec.organizations.v1", "RecordingSettingChanged") in seen
    handled_by = [kafka_stack.log(n).read_text() for n in ("worker-1", "worker-2")]
    assert all("consumer archive assigned" in log for log in handled_by)


def test_a_worker_killed_mid_batch_leaves_its_work_to_the_other_and_no_effect_is_doubled(
    kafka_stack: KafkaStack,
) -> None:
    service = kafka_stack.service
    make_org(service, "beta", "+15550200002", recording=True)

    def archived_count() -> int:
        rows = _sql(kafka_stack.database_url, "SELECT count(*) FROM recordings WHERE archived_at IS NOT NULL")
        return int(rows[0][0])

    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(recorded_call, service, "+15550200002", 3_000_000) for _ in range(16)]
        wait_for(lambda: archived_count() >= 1, "the first archive", timeout=30)
        os.killpg(kafka_stack.workers["worker-1"], signal.SIGKILL)  # a crash: no commit, no leaving the group
        killed_at = _sql(kafka_stack.database_url, "SELECT now()")[0][0]
        calls = [f.result() for f in pending]
    orphaned = kafka_stack.partitions("worker-1", "archive")  # what worker-1 owned when it died
    assert orphaned
    for call in calls:
        archived(service, "beta", call["call_id"])  # waits for the survivor to take over
    for call in calls:
        wait_for(
            functools.partial(deleted, service, call["recording_sid"]),
            "every Twilio copy deleted",
            timeout=40,
        )

    rows = _sql(
        kafka_stack.database_url,
        "SELECT aggregate_id, count(*) FROM outbox WHERE type = 'RecordingArchived' GROUP BY aggregate_id",
    )
    assert len(rows) == len(calls) and all(n == 1 for _, n in rows), "each recording archived exactly once"
    markers = _sql(
        kafka_stack.database_url, "SELECT count(*) FROM processed_messages WHERE consumer = 'archive'"
    )
    assert markers[0][0] == len(calls)
    assert sorted(stored_audio(kafka_stack).values()) == sorted(c["audio"] for c in calls)
    deletes = [service.standin.delete_count(c["recording_sid"]) for c in calls]
    # A DELETE in flight at the moment of the kill may be repeated once (Twilio then answers 404).
    assert all(d >= 1 for d in deletes) and sum(deletes) <= len(calls) + 1, deletes
    assert kafka_stack.partitions("worker-2", "archive") == set(range(6)), "the survivor took over"
    taken_over = [
        recording_id
        for recording_id, at in _sql(kafka_stack.database_url, "SELECT id, archived_at FROM recordings")
        if partition_of(recording_id) in orphaned and at > killed_at
    ]
    assert taken_over, "worker-2 archived what worker-1 left behind"


def test_serve_in_kafka_mode_keeps_answering_while_kafka_is_down_and_events_wait(
    tmp_path: Path, twilio_standin: TwilioStandin
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    service = start_service(
        tmp_path, twilio_standin, {"CALLREC_BUS": "kafka", "CALLREC_KAFKA_BOOTSTRAP": dead}
    )
    try:
        started = time.monotonic()
        make_org(service, "gamma", "+15550200003", recording=True)
        _, params = arrive(service, "+15550200003")
        assert params["recording"] == "on"
        assert time.monotonic() - started < 5
        with httpx.Client(base_url=service.base_url, timeout=5) as client:
            assert client.get("/healthz").status_code == 200
        db = service.var_dir / "callrec.db"

        def waiting() -> list[Any]:
            with sqlite3.connect(db) as conn:
                return conn.execute("SELECT type, attempts FROM outbox WHERE published_at IS NULL").fetchall()

        rows = wait_for(
            lambda: [r for r in waiting() if r[1] > 0] and waiting(), "the relay to try and defer"
        )
        assert {t for t, _ in rows} >= {"OrganizationCreated", "CallStarted"}
    finally:
        stop_pid(service.pid)


def deleted(service: Any, recording_sid: str) -> bool:
    return bool(service.standin.delete_count(recording_sid) >= 1)
