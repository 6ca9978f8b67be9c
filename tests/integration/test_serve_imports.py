"""``callrec serve`` on the embedded default starts without the libraries only other configurations
use (Kafka, S3), without Alembic, without test-only modules, and without the optional extras of
libraries that entrypoints/__init__.py keeps out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Runs `callrec serve` with uvicorn.run replaced by "start the app, report the loaded modules, stop".
PROBE = """
import asyncio, json, sys
from entrypoints.cli import main
import uvicorn

def run(app, **_):
    async def started():
        async with app.lifespan():
            return sorted({name.split(".")[0] for name in sys.modules})
    print(json.dumps(asyncio.run(started())))

uvicorn.run = run
main(["serve"])
"""
NOT_ON_THE_EMBEDDED_DEFAULT = {"aiokafka", "aioboto3", "aiobotocore", "boto3", "botocore", "alembic", "mako"}
TEST_ONLY = {"pytest", "hypothesis", "schemathesis", "moto", "playwright", "tests"}
UNUSED_EXTRAS = {"rich", "pygments", "pydantic_settings", "werkzeug"}  # entrypoints/__init__.py


def _serve_modules(var: Path) -> set[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CALLREC_")}
    env["CALLREC_VAR_DIR"] = str(var)
    run = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=var, check=True
    )
    return set(json.loads(run.stdout.strip().splitlines()[-1]))


def test_serve_on_the_embedded_default_imports_no_kafka_s3_alembic_or_test_module(tmp_path: Path) -> None:
    fresh = _serve_modules(tmp_path)
    assert {"litestar", "sqlalchemy", "aiosqlite", "uvicorn"} <= fresh  # the probe saw a real start
    assert fresh & (NOT_ON_THE_EMBEDDED_DEFAULT | TEST_ONLY | UNUSED_EXTRAS) == set()
    at_head = _serve_modules(tmp_path)  # the same ./var again: the schema is at head
    assert at_head & (NOT_ON_THE_EMBEDDED_DEFAULT | TEST_ONLY | UNUSED_EXTRAS) == set()
