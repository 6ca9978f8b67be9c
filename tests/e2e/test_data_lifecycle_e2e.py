"""Retention end to end: `callrec serve`, `callrec purge` as processes, and the purged call in Chromium."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.conftest import RunningService
from tests.e2e.pages import assert_accessible, check_page
from tests.e2e.test_dashboard_browser import browser, recorded_call, sign_in, sine_wav  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def age_calls(service: RunningService, days: int) -> None:
    """Move every call (and its recordings) ``days`` days into the past, in the service's database."""
    with sqlite3.connect(service.var_dir / "callrec.db", timeout=30) as db:
        shift = f"-{days} days"
        db.execute("UPDATE calls SET started_at = datetime(started_at, ?)", (shift,))
        db.execute("UPDATE recordings SET call_started_at = datetime(call_started_at, ?)", (shift,))


def callrec_purge(service: RunningService) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CALLREC_VAR_DIR": str(service.var_dir),
        "CALLREC_PUBLIC_URL": service.base_url,
        "CALLREC_TWILIO_API_BASE": service.standin.base_url,
        "TWILIO_ACCOUNT_SID": service.standin.account_sid,
        "TWILIO_AUTH_TOKEN": service.standin.auth_token,
        "CALLREC_SERVICE_TOKEN": service.service_token,
        "CALLREC_JWT_SECRET": service.jwt_secret,
    }
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "purge", "--drain-s", "20"],
        cwd=service.var_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_callrec_purge_deletes_old_audio_and_the_dashboard_explains_it(
    service: RunningService,
    browser: Any,  # noqa: F811
) -> None:
    call_id = recorded_call(service, "acme", "+15550300001", sine_wav())
    with service.dashboard("acme") as admin:
        assert admin.put("/api/v1/settings/retention", json={"days": 30}).json() == {"days": 30}
    stored = list((service.var_dir / "recordings" / "objects").rglob("*.mp3"))
    assert len(stored) == 1
    age_calls(service, 31)

    done = callrec_purge(service)

    assert done.returncode == 0, done.stderr
    assert "1 organizations with a retention policy; purged 1 recordings; 0 calls failed" in done.stdout
    assert not stored[0].exists()
    with service.dashboard("acme", "member") as member:
        recording = member.get(f"/api/v1/calls/{call_id}").json()["recording"]
        assert (recording["status"], recording["reason"]) == ("purged", "retention")
        gone = member.get(f"/api/v1/calls/{call_id}/recording")
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "recording_purged"

    context = await browser.new_context()
    page = await sign_in(context, service, "acme", "member")
    await page.goto(f"{service.base_url}/dashboard/calls/{call_id}")
    explanation = await page.text_content("#no-recording")
    assert explanation is not None and "retention policy" in explanation and "Deleted on" in explanation
    assert await page.locator("#player").count() == 0
    await assert_accessible(page, "purged call")
    response = await page.goto(f"{service.base_url}/dashboard/calls/{call_id}/audio?download=true")
    assert response is not None and response.status == 410
    assert "retention policy" in (await page.content())
    await page.goto(f"{service.base_url}/dashboard/settings")
    assert await page.text_content("#retention-state") == "30 days"
    await assert_accessible(page, "settings with retention")
    await context.close()

    # an admin places a legal hold from the call page, then releases it
    context = await browser.new_context()
    page = await sign_in(context, service, "acme", "admin")
    await page.goto(f"{service.base_url}/dashboard/calls/{call_id}")
    await check_page(page, "call-admin-hold-form")
    await page.get_by_label("Reason").fill("Dispute 2026-41")
    await page.click("#place-hold")
    await page.wait_for_url(f"{service.base_url}/dashboard/calls/{call_id}#legal-hold")
    assert "Dispute 2026-41" in (await page.text_content("#legal-hold") or "")
    await check_page(page, "call-held")
    await page.click("#release-hold")
    await page.wait_for_selector("#place-hold")
    await context.close()
