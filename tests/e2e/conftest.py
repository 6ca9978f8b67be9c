"""``callrec serve`` as a process, with the Twilio stand-in, driven like Twilio and the platform would."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from entrypoints.http.auth import issue_token
from tests.support.services import free_port, stop_pid
from tests.twilio_standin import DEFAULT_AUTH_TOKEN, TwilioCallbackDriver, TwilioStandin

PLATFORM_DISCOVERY = "+15557770001"
PLATFORM_SUPPORT = "+15557770002"


@dataclass
class RunningService:
    base_url: str
    var_dir: Path
    service_token: str
    jwt_secret: str
    driver: TwilioCallbackDriver
    standin: TwilioStandin
    log_path: Path
    pid: int

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)

    def internal(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, timeout=10, headers={"Authorization": f"Bearer {self.service_token}"}
        )

    def dashboard(self, org_id: str, role: str = "admin") -> httpx.Client:
        token = issue_token(self.jwt_secret, org_id=org_id, role=role, sub=f"{role}@{org_id}")
        return httpx.Client(base_url=self.base_url, timeout=10, headers={"Authorization": f"Bearer {token}"})


def start_service(
    tmp_path: Path, standin: TwilioStandin, extra_env: dict[str, str] | None = None
) -> RunningService:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    var_dir = tmp_path / "var"
    service_token, jwt_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "CALLREC_VAR_DIR": str(var_dir),
        "CALLREC_PUBLIC_URL": base_url,
        "CALLREC_TWILIO_API_BASE": standin.base_url,
        "TWILIO_ACCOUNT_SID": standin.account_sid,
        "TWILIO_AUTH_TOKEN": standin.auth_token,
        "CALLREC_SERVICE_TOKEN": service_token,
        "CALLREC_JWT_SECRET": jwt_secret,
        "CALLREC_PLATFORM_LINES": f"discovery={PLATFORM_DISCOVERY},support={PLATFORM_SUPPORT}",
        "CALLREC_RELAY_RETRY_BASE_S": "0.2",
        **(extra_env or {}),
    }
    log_path = tmp_path / "serve.log"
    log = log_path.open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = started + 15
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_pid(proc.pid)
            raise RuntimeError(f"callrec serve did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    service = RunningService(
        base_url=base_url,
        var_dir=var_dir,
        service_token=service_token,
        jwt_secret=jwt_secret,
        driver=TwilioCallbackDriver(base_url, DEFAULT_AUTH_TOKEN),
        standin=standin,
        log_path=log_path,
        pid=proc.pid,
    )
    return service


@pytest.fixture
def service(tmp_path: Path, twilio_standin: TwilioStandin) -> Iterator[RunningService]:
    running = start_service(tmp_path, twilio_standin)
    try:
        yield running
    finally:
        stop_pid(running.pid)
