"""``callrec demo`` on a fresh var dir, as a new operator runs it: exits 0 with the recording archived
and playable, prints where to open it, and logs JSON from the first line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import jwt

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_callrec_demo_plays_a_call_archives_it_and_prints_where_to_listen(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLREC_", "TWILIO_"))}
    env |= {"CALLREC_VAR_DIR": str(tmp_path / "var"), "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    found = re.search(r"http://127\.0\.0\.1:8000/dashboard/calls/([0-9a-f-]{36})", done.stdout)
    assert found, done.stdout
    call_id = found.group(1)
    assert "http://127.0.0.1:8000/dashboard/sign-in" in done.stdout
    [token] = re.findall(r"^(eyJ[\w-]+\.[\w-]+\.[\w-]+)$", done.stdout, re.MULTILINE)
    secret = (tmp_path / "var" / "jwt_secret").read_text().strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims["org_id"] == "demo" and claims["role"] == "admin"

    [stored] = list((tmp_path / "var" / "recordings" / "objects").rglob(f"{call_id}/*"))
    with wave.open(str(stored)) as audio:  # speech-like audio, both channels, as long as the call
        assert audio.getnchannels() == 2 and audio.getnframes() / audio.getframerate() >= 5.5

    lines = [json.loads(line) for line in done.stderr.splitlines()]  # every line JSON, the first too
    assert lines and all({"event", "level", "timestamp"} <= set(line) for line in lines)
    call_lines = [line for line in lines if line.get("call_sid") or "call CA" in line["event"]]
    assert call_lines and all(line["call_id"] == call_id for line in call_lines)
