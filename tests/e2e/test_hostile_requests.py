"""``callrec serve`` under hostile form posts: refused quickly, and nobody else waits meanwhile."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import httpx

from tests.e2e.conftest import RunningService

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# ~1 MiB of one key repeated (just under the service's general body limit): before the fix, each of
# these held the only event loop for 20-45 s.
FLOOD = b"&".join([b"a=1"] * 262_000)
# Under the form routes' own 64 KiB limit, so it is parsed: 16,000 repeats of one key.
SMALL_FLOOD = b"&".join([b"a=1"] * 16_000)
# Generous next to the milliseconds /healthz takes, tiny next to the tens of seconds of the stall.
PROMPT_S = 2.0


def test_health_answers_promptly_while_form_floods_are_refused(service: RunningService) -> None:
    targets = [
        ("/twilio/voice", {**FORM, "X-Twilio-Signature": "A" * 27 + "="}),
        ("/twilio/recording-status", {**FORM, "X-Twilio-Signature": "A" * 27 + "="}),
        ("/dashboard/session", {**FORM, "Origin": service.base_url}),
    ]
    statuses: list[int] = []
    done = threading.Event()

    def flood() -> None:
        with httpx.Client(base_url=service.base_url, timeout=120) as client:
            for _ in range(3):
                for path, headers in targets:
                    for body in (FLOOD, SMALL_FLOOD):
                        statuses.append(client.post(path, content=body, headers=headers).status_code)
        done.set()

    attacker = threading.Thread(target=flood, daemon=True)
    attacker.start()
    slowest = 0.0
    probes = 0
    with httpx.Client(base_url=service.base_url, timeout=60) as client:
        while not done.is_set() or probes < 5:
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            probes += 1
            time.sleep(0.01)
    attacker.join(timeout=60)
    assert len(statuses) == 3 * len(targets) * 2
    assert set(statuses) <= {400, 413}, statuses
    assert slowest < PROMPT_S, f"/healthz took {slowest:.2f} s while floods were refused"


def test_an_unsigned_twilio_callback_is_answered_without_waiting_for_its_body(
    service: RunningService,
) -> None:
    # Headers announce 50 kB that never come: the service must not wait for (or read) them.
    address = urlsplit(service.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as conn:
        conn.sendall(
            b"POST /twilio/voice HTTP/1.1\r\n"
            + f"Host: {address.netloc}\r\n".encode()
            + b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 50000\r\n\r\nCallSid=CA"
        )
        conn.settimeout(PROMPT_S)
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
