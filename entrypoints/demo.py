"""``callrec demo``: see the service work before wiring up Twilio.

On the embedded default (SQLite, in-process bus, files under ``CALLREC_VAR_DIR``), with no Twilio
account: runs the service on a local port against the built-in Twilio stand-in
(``entrypoints/demo_twilio.py``), provisions the ``demo`` organization with recording on, plays one
call with a few seconds of generated speech-like audio, waits for the recording to be archived and
checks that it plays back byte for byte. Then it prints the dashboard URL and a session token.
The call stays in the database: open it later with ``callrec serve`` running, or pass ``--serve``
to keep this service up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import signal
import socket
import time
import wave
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from entrypoints.config import Settings
from entrypoints.demo_twilio import DemoTwilio, speech_like_wav
from entrypoints.http.app import create_app
from entrypoints.http.auth import issue_token

log = logging.getLogger(__name__)

ORG_ID = "demo"
NUMBER = "+15005550006"
CALLER = "+15551230199"
SECONDS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_demo(settings: Settings, *, port: int | None, serve: bool, timeout_s: float = 60.0) -> int:
    if settings.bus != "inprocess":
        print("callrec demo runs on the embedded default: unset CALLREC_BUS (or set it to inprocess)")
        return 2
    if make_url(settings.database_url).get_backend_name() == "sqlite":
        from adapters.sqlalchemy.engine import migrate

        await asyncio.to_thread(migrate, settings.database_url)
    twilio = DemoTwilio()
    await twilio.start()
    port = port or _free_port()
    local_url = f"http://127.0.0.1:{port}"
    demo_settings = settings.model_copy(
        update={
            "public_url": local_url,
            "twilio_api_base": twilio.base_url,
            "twilio_account_sid": twilio.account_sid,
            "twilio_auth_token_secret": SecretStr(twilio.auth_token),
        }
    )
    config = uvicorn.Config(
        create_app(settings=demo_settings), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    server_task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if server_task.done():
                await server_task
                return 1
            await asyncio.sleep(0.05)
        audio = speech_like_wav(SECONDS)
        call_id = await _play(demo_settings, twilio, audio, timeout_s)
        token = issue_token(settings.jwt_secret, org_id=ORG_ID, role="admin", sub="demo@callrec")
        base = local_url if serve else settings.public_url
        print(
            f"\nThe demo call was recorded, archived ({len(audio)} bytes, sha256 "
            f"{hashlib.sha256(audio).hexdigest()[:16]}…), deleted at the Twilio stand-in and plays back.\n\n"
            f"  dashboard: {base}/dashboard/calls/{call_id}\n"
            f"  sign in:   {base}/dashboard/sign-in with this session token (valid 12 hours):\n\n"
            f"{token}\n"
        )
        if not serve:
            print("Start the service (./scripts/serve) to open it, or run `callrec demo --serve`.")
            return 0
        print(f"Serving on {local_url}; Ctrl-C stops.")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        return 0
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await server_task
        await twilio.stop()


async def _play(settings: Settings, twilio: DemoTwilio, audio: bytes, timeout_s: float) -> str:
    url = settings.public_url
    service = {"Authorization": f"Bearer {settings.service_token}"}
    admin = issue_token(settings.jwt_secret, org_id=ORG_ID, role="admin", sub="demo@callrec")
    dashboard = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        organization = {
            "name": "Demo Dental Clinic",
            "phone_numbers": [NUMBER],
            "greeting": "Thanks for calling Demo Dental, how can I help?",
        }
        _ok(await client.put(f"/internal/v1/organizations/{ORG_ID}", json=organization, headers=service))
        _ok(await client.put("/api/v1/settings/call-recording", json={"enabled": True}, headers=dashboard))
        log.info("demo organization %s provisioned, recording on; playing a call to %s", ORG_ID, NUMBER)
        call_id, recording_sid = await twilio.play_call(
            url, caller=CALLER, number=NUMBER, audio=audio, seconds=SECONDS
        )
        deadline = time.monotonic() + timeout_s
        while True:
            detail = _ok(await client.get(f"/api/v1/calls/{call_id}", headers=dashboard)).json()
            if detail["recording"]["status"] == "available" and twilio.deletes.get(recording_sid):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the recording was not archived within {timeout_s:g} s: {detail}")
            await asyncio.sleep(0.1)
        redirect = await client.get(f"/api/v1/calls/{call_id}/recording", headers=dashboard)
        if redirect.status_code != 307:
            raise RuntimeError(f"playback answered {redirect.status_code}: {redirect.text}")
        played = await client.get(redirect.headers["location"])
        _ok(played)
        if played.content != audio:
            raise RuntimeError("the archived recording does not play back the call's audio")
        with wave.open(io.BytesIO(played.content)) as wav:
            if wav.getnframes() / wav.getframerate() < SECONDS - 0.5:
                raise RuntimeError("the archived recording is shorter than the call")
        if twilio.deletes[recording_sid] != 1:
            raise RuntimeError(f"Twilio's copy was deleted {twilio.deletes[recording_sid]} times")
    return call_id


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code}")
    return response
