"""The embedded bus's dead letters on a real database: bounded retries, ``callrec dlq`` list and replay."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from tests.support.app import api_harness

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NUMBER = "+15550000001"


def callrec(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "CALLREC_VAR_DIR": str(tmp_path / "cli-var"),
        "CALLREC_DATABASE_URL": database_url,
        "CALLREC_BUS": "inprocess",
    }
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_an_archive_that_keeps_failing_is_dead_lettered_listed_and_replayed(
    tmp_path: Path, database_url: str
) -> None:
    env = {"CALLREC_OUTBOX_MAX_ATTEMPTS": "3", "CALLREC_RELAY_RETRY_BASE_S": "0.01"}
    async with api_harness(tmp_path, database_url, **env) as h:
        await h.org("acme", NUMBER)
        h.telephony.fail_next("open_media", times=3)  # every attempt the relay may make
        call_id = await h.archived_call(NUMBER)

        for _ in range(200):
            await h.relay.drain()
            async with h.services.uow() as uow:
                assert isinstance(uow, SqlAlchemyUnitOfWork)
                if await uow.outbox.dead_letters():
                    break
            await asyncio.sleep(0.05)
        listed = await asyncio.to_thread(callrec, tmp_path, database_url, "dlq", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        letters = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [(d["event_type"], d["attempts"]) for d in letters] == [("RecordingCompletedAtTwilio", 3)]
        assert "injected failure of open_media" in letters[0]["error"]
        await asyncio.sleep(0.2)
        await h.relay.drain()  # a dead letter is not retried any more
        r = await h.client.get(f"/api/v1/calls/{call_id}", headers=h.auth("acme", "member"))
        assert r.json()["recording"]["status"] == "processing"

        replayed = await asyncio.to_thread(callrec, tmp_path, database_url, "dlq", "replay")
        assert replayed.returncode == 0 and "1 dead letter(s) replayed" in replayed.stdout, replayed.stderr
        await h.relay.drain()
        r = await h.client.get(f"/api/v1/calls/{call_id}", headers=h.auth("acme", "member"))
        assert r.json()["recording"]["status"] == "available"
        listed = await asyncio.to_thread(callrec, tmp_path, database_url, "dlq", "list")
        assert listed.stdout.strip().endswith("0 dead letter(s)")
