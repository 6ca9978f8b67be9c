"""pytest fixtures for the Twilio stand-in. Import them into ``tests/conftest.py``::

    from tests.twilio_fixtures import *  # noqa: F403

* ``twilio_standin``: a ``TwilioStandin`` serving in a background thread on a free port of 127.0.0.1.
* ``twilio_standin_process``: the stand-in as a subprocess (``python -m tests.twilio_standin``), driven
  over HTTP through ``StandinHttpControl`` (same test-side methods); stopped by its PID at teardown.
* ``twilio_telephony``: the real ``TwilioTelephony`` pointed at ``twilio_standin`` (closed afterwards).
* ``fake_telephony``: a fresh ``FakeTelephony``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from adapters.twilio_telephony import TwilioTelephony
from tests.fakes_telephony import FakeTelephony
from tests.twilio_standin import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, StandinHttpControl, TwilioStandin

__all__ = [
    "StandinProcess",
    "fake_telephony",
    "start_standin_process",
    "stop_standin_process",
    "twilio_standin",
    "twilio_standin_process",
    "twilio_telephony",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class StandinProcess(StandinHttpControl):
    """A stand-in subprocess: ``base_url``, ``pid``, ``popen`` and the ``StandinHttpControl`` methods."""

    def __init__(
        self, popen: subprocess.Popen[bytes], base_url: str, account_sid: str, auth_token: str
    ) -> None:
        super().__init__(base_url, account_sid=account_sid, auth_token=auth_token, pid=popen.pid)
        self.popen = popen


def start_standin_process(
    *,
    account_sid: str = DEFAULT_ACCOUNT_SID,
    auth_token: str = DEFAULT_AUTH_TOKEN,
    port: int = 0,
    extra_args: list[str] | None = None,
    stderr_path: Path | None = None,
    timeout: float = 20.0,
) -> StandinProcess:
    """Start ``python -m tests.twilio_standin`` and wait for its ready line."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    args = [
        sys.executable,
        "-m",
        "tests.twilio_standin",
        "--port",
        str(port),
        "--account-sid",
        account_sid,
        "--auth-token",
        auth_token,
        *(extra_args or []),
    ]
    with contextlib.ExitStack() as stack:
        stderr = (
            stack.enter_context(stderr_path.open("wb")) if stderr_path is not None else subprocess.DEVNULL
        )
        popen = subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr)
    assert popen.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or popen.poll() is not None:
            stop_standin_process(popen)
            detail = stderr_path.read_text(errors="replace")[-2000:] if stderr_path else ""
            raise RuntimeError(f"Twilio stand-in process did not get ready: {detail}")
        readable, _, _ = select.select([popen.stdout], [], [], remaining)
        if readable:
            line += os.read(popen.stdout.fileno(), 4096)
    ready = json.loads(line.split(b"\n", 1)[0])
    return StandinProcess(popen, ready["base_url"], account_sid, auth_token)


def stop_standin_process(popen: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM by PID, then SIGKILL if it does not exit in ``timeout`` seconds."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGKILL)
            popen.wait(timeout)
    if popen.stdout is not None:
        popen.stdout.close()


@pytest.fixture
def twilio_standin() -> Iterator[TwilioStandin]:
    standin = TwilioStandin(host="127.0.0.1", port=0)
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def twilio_standin_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandinProcess]:
    stderr_path = tmp_path_factory.mktemp("twilio-standin") / "stderr.log"
    process = start_standin_process(stderr_path=stderr_path)
    try:
        yield process
    finally:
        process.close()
        stop_standin_process(process.popen)


@pytest.fixture
async def twilio_telephony(twilio_standin: TwilioStandin) -> AsyncIterator[TwilioTelephony]:
    async with TwilioTelephony(
        twilio_standin.account_sid, twilio_standin.auth_token, api_base=twilio_standin.base_url
    ) as telephony:
        yield telephony


@pytest.fixture
def fake_telephony() -> FakeTelephony:
    return FakeTelephony()
