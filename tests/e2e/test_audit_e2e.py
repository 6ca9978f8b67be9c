"""The audit log and the consent record against ``callrec serve``, checked as an outsider would."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from entrypoints.http.auth import issue_token
from tests.e2e.conftest import RunningService
from tests.e2e.test_recording_lifecycle import (
    archived,
    arrive,
    callback,
    make_org,
    recording_sid_of,
)
from tests.twilio_standin import call_status_payload, stream_status_payload

ROOT = Path(__file__).resolve().parents[2]


def verify(service: RunningService) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CALLREC_VAR_DIR": str(service.var_dir), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_accesses_are_in_the_admins_audit_log_verify_catches_an_edit_and_the_call_has_its_consent(
    service: RunningService,
) -> None:
    make_org(service, "acme", "+15550100001", recording=True)
    call_sid, params = arrive(service, "+15550100001")
    call_id = params["call_id"]
    service.driver.stream_status(stream_status_payload(call_sid, "stream-started"))
    recording_sid = recording_sid_of(service, call_sid)
    service.standin.complete_recording(recording_sid, duration=5, size=20_000)
    service.driver.call_status(call_status_payload(call_sid, "completed", duration=6))
    callback(service, call_sid, recording_sid, "completed", duration=5)
    detail = archived(service, "acme", call_id)

    ops_token = issue_token(service.jwt_secret, org_id="platform", role="ops_admin", sub="ops@platform")
    with service.client() as client:
        ops = client.get(
            f"/api/v1/admin/calls/{call_id}/recording",
            params={"reason": "ticket 4711: caller disputes the quote"},
            headers={"Authorization": f"Bearer {ops_token}"},
        )
    assert ops.status_code == 307, ops.text
    with service.dashboard("acme", "member") as member:
        assert member.get(f"/api/v1/calls/{call_id}/recording").status_code == 307
        assert member.get("/api/v1/audit-log").status_code == 403
    with service.dashboard("acme", "admin") as admin:
        r = admin.get("/api/v1/audit-log")
    assert r.status_code == 200, r.text
    entries = r.json()["items"]
    assert [(e["actor"], e["actor_role"], e["action"], e["call_id"], e["reason"]) for e in entries[:2]] == [
        ("member@acme", "member", "play_recording", call_id, None),
        ("ops@platform", "ops_admin", "play_recording", call_id, "ticket 4711: caller disputes the quote"),
    ]

    # The call carries what the caller was told, and when: the greeting the agent was given.
    consent = detail["consent"]
    assert consent["recorded"] is True and consent["disclosed_at"] and consent["disclosure_version"]
    assert params["greeting"].startswith(consent["disclosure_text"])

    intact = verify(service)
    assert intact.returncode == 0, intact.stderr
    # One text value of a middle row, changed directly in the database.
    database = service.var_dir / "callrec.db"
    with sqlite3.connect(database) as db:
        [(middle_id, seq)] = db.execute(
            "SELECT id, seq FROM audit_log WHERE actor = 'ops@platform'"
        ).fetchall()
        assert 1 < seq < db.execute("SELECT max(seq) FROM audit_log").fetchone()[0]
        db.execute("UPDATE audit_log SET reason = 'routine check' WHERE id = ?", (middle_id,))
    broken = verify(service)
    assert broken.returncode == 1 and middle_id in broken.stderr, broken.stderr
