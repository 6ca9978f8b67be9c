"""What an operator watches: /healthz, /readyz (503 naming what failed), /metrics moving with the
calls, and JSON log lines that carry their context and never a secret."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from adapters.kafka import KafkaOptions, KafkaTopics
from adapters.kafka.monitoring import broker_gauges
from adapters.kafka.topics import ensure_topics
from tests.support.app import ApiHarness, sqlite_api_harness
from tests.support.kafka import TansuBroker
from tests.support.services import free_port

ACME, ACME_NUMBER = "acme", "+15550000001"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


async def scrape(h: ApiHarness) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = await h.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_health_readiness_and_metrics_follow_a_recorded_call(tmp_path: Path) -> None:
    async with sqlite_api_harness(tmp_path) as h:
        assert (await h.client.get("/healthz")).json() == {"status": "ok"}
        ready = await h.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"database": "ok"}}

        before = await scrape(h)
        await h.org(ACME, ACME_NUMBER)
        call_id = await h.archived_call(ACME_NUMBER, audio=b"ID3" + bytes(range(256)) * 40)
        r = await h.client.get(f"/api/v1/calls/{call_id}", headers=h.auth(ACME), params={})
        assert r.status_code == 200 and r.headers["x-request-id"]
        after = await scrape(h)

    assert value(after, "callrec_recordings", state="twilio_deleted") == 1
    assert value(after, "callrec_outbox_backlog") == 0
    assert value(after, "callrec_dlq_messages", bus="inprocess") == 0
    assert sum(value(after, "callrec_recordings_stuck", state=s) for s in ("requested", "completed")) == 0
    assert (
        value(after, "callrec_archives_total", outcome="ok")
        - value(before, "callrec_archives_total", outcome="ok")
        == 1
    )
    assert value(after, "callrec_archive_bytes_total") - value(before, "callrec_archive_bytes_total") == (
        3 + 256 * 40
    )
    route = {"method": "GET", "route": "/api/v1/calls/{call_id}", "status": "200"}
    assert (
        value(after, "callrec_http_requests_total", **route)
        - value(before, "callrec_http_requests_total", **route)
        == 1
    )


async def test_readyz_is_503_naming_every_dependency_that_does_not_answer(tmp_path: Path) -> None:
    closed = free_port()
    async with sqlite_api_harness(
        tmp_path,
        CALLREC_BUS="kafka",
        CALLREC_KAFKA_BOOTSTRAP=f"127.0.0.1:{closed}",
        CALLREC_STORAGE="s3",
        CALLREC_S3_BUCKET="recordings",
        CALLREC_S3_ENDPOINT_URL=f"http://127.0.0.1:{closed}",
        CALLREC_S3_MAX_ATTEMPTS="1",
        CALLREC_READY_TIMEOUT_S="2",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
    ) as h:
        r = await h.client.get("/readyz")
        assert (await h.client.get("/healthz")).status_code == 200
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable" and body["failed"] == ["broker", "store"]
    assert body["checks"]["database"] == "ok"
    assert all(body["checks"][name] != "ok" for name in ("broker", "store"))


LOGGING_SCRIPT = """
import logging, structlog
from entrypoints.logs import configure_logging
configure_logging()
logging.getLogger("entrypoints.cli").info("first line")
logging.getLogger("twilio.http_client").info("GET https://api.twilio.com/... (every REST request)")
with structlog.contextvars.bound_contextvars(call_id="call-1", request_id="req-1"):
    logging.getLogger("application.handlers").info(
        "fetched %s", "https://s3.local/b/k.mp3?X-Amz-Credential=AKIA1&X-Amz-Signature=deadbeef&x=1"
    )
structlog.get_logger("entrypoints.demo").warning(
    "connecting", url="postgresql+asyncpg://callrec:hunter2@db/callrec", auth_token="tok-123",
    header="Authorization: Bearer abcdefghijklmnop",
)
try:
    raise ValueError("boom")
except ValueError:
    logging.getLogger("entrypoints.runtime").exception("loop crashed")
raise RuntimeError("the process crashes")
"""


def test_log_lines_are_json_from_the_first_with_context_and_without_secrets() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOGGING_SCRIPT], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    events = [line["event"] for line in lines]
    assert events[0] == "first line" and events[2:] == ["connecting", "loop crashed", "uncaught exception"]
    assert "RuntimeError: the process crashes" in lines[4]["exception"]
    assert all({"event", "level", "timestamp", "logger"} <= set(line) for line in lines)
    assert lines[0]["level"] == "info" and lines[0]["logger"] == "entrypoints.cli"
    assert lines[1]["call_id"] == "call-1" and lines[1]["request_id"] == "req-1"
    assert "call_id" not in lines[2]  # bound only inside the block
    assert "ValueError: boom" in lines[3]["exception"]
    for secret in ("deadbeef", "AKIA1", "hunter2", "tok-123", "abcdefghijklmnop", "every REST request"):
        assert secret not in done.stderr
    assert "x=1" in lines[1]["event"]  # the rest of the URL stays


async def test_consumer_lag_counts_past_the_committed_offset_and_the_dlq_its_messages(
    kafka_broker: TansuBroker,
) -> None:
    prefix = f"ops{uuid.uuid4().hex[:8]}."
    options = KafkaOptions(bootstrap=kafka_broker.bootstrap, topic_prefix=prefix, group_prefix=prefix)
    topics = KafkaTopics(prefix)
    await ensure_topics(options, topics.all)
    topic = topics.for_event_type("RecordingCompletedAtTwilio")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    try:
        for _ in range(3):
            await producer.send_and_wait(topic, b"{}", partition=0)
        await producer.send_and_wait(topics.dlq, b"{}", partition=1)
    finally:
        await producer.stop()
    committer = AIOKafkaConsumer(
        bootstrap_servers=kafka_broker.bootstrap, group_id=f"{prefix}archive", enable_auto_commit=False
    )
    committer.assign([TopicPartition(topic, 0)])
    await committer.start()
    try:
        await committer.commit({TopicPartition(topic, 0): 1})
    finally:
        await committer.stop()

    lags, dlq = await broker_gauges(
        options, {"archive": ["RecordingCompletedAtTwilio"], "calls.settle": ["CallEnded"]}
    )
    assert lags == {f"{prefix}archive": 2, f"{prefix}calls.settle": 0}
    assert dlq == 1
