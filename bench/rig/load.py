"""The open-loop driver: calls start at a fixed offered rate whatever the service's pace, each one the
callback sequence Twilio sends (voice → stream-started → recording in-progress → stream-stopped → call
completed → recording completed), signed as Twilio signs them, over one aiohttp connection pool.

The recording's sid is learnt as Twilio's own API would tell it (the stand-in's list of the call's
recordings), polled with a growing interval until the service has started the recording.
"""

from __future__ import annotations

import asyncio
import functools
import re
import resource
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp
from twilio.request_validator import RequestValidator

from bench.rig.stack import Stack
from entrypoints.http.auth import issue_token
from tests.twilio_standin import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    call_status_payload,
    new_sid,
    recording_status_payload,
    stream_status_payload,
    voice_payload,
)

ORG, NUMBER, CALLER = "bench", "+15550400001", "+15558675309"
AUDIO_SIZE = 160 * 1024
SID_POLL_S = 0.05  # first wait, growing by half each time up to SID_POLL_MAX_S
SID_POLL_MAX_S = 0.5
STEP_TIMEOUT_S = 120.0
CALL_ID = re.compile(r'name="call_id" value="([^"]+)"')


@dataclass
class CallRecord:
    call_sid: str
    scheduled: float  # when the offered rate says it starts (monotonic)
    started: float = 0.0
    call_id: str = ""
    voice_s: float | None = None  # /twilio/voice round trip
    ended_at: float | None = None  # just before the call-completed callback went out
    error: str | None = None


@dataclass
class Phase:
    rate: float
    duration_s: float
    calls: list[CallRecord]
    began: float
    offered_until: float
    driver_cpu_s: float  # the driver process's user + system CPU over the offered window
    events: dict[str, float] = field(default_factory=dict)  # name → monotonic time (e.g. a kill)


def _rusage_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CallDriver:
    def __init__(self, stack: Stack, session: aiohttp.ClientSession) -> None:
        self.stack = stack
        self.session = session
        self.validator = RequestValidator(DEFAULT_AUTH_TOKEN)
        self.standin = stack.standin.base_url
        self.auth = aiohttp.BasicAuth(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)
        self.service = {"Authorization": f"Bearer {stack.env['CALLREC_SERVICE_TOKEN']}"}
        self.played: list[CallRecord] = []  # every call of every phase

    async def setup_org(self) -> None:
        """One org, recording on, one webhook endpoint (the receiver) subscribed to ``call.ended``."""
        base = self.stack.base_url
        async with self.session.put(
            f"{base}/internal/v1/organizations/{ORG}",
            json={"name": "Bench", "phone_numbers": [NUMBER], "greeting": "Hi, bench here."},
            headers=self.service,
        ) as r:
            assert r.status == 200, await r.text()
        token = issue_token(self.stack.env["CALLREC_JWT_SECRET"], org_id=ORG, role="admin", sub="bench")
        admin = {"Authorization": f"Bearer {token}"}
        async with self.session.put(
            f"{base}/api/v1/settings/call-recording", json={"enabled": True}, headers=admin
        ) as r:
            assert r.status == 200, await r.text()
        async with self.session.post(
            f"{base}/api/v1/webhook-endpoints",
            json={"url": self.stack.receiver.url(f"/{ORG}"), "events": ["call.ended"]},
            headers=admin,
        ) as r:
            assert r.status == 201, await r.text()
            self.stack.receiver.secrets.append((await r.json())["secret"])

    async def twilio(self, path: str, params: dict[str, str], expect: int = 204) -> str:
        url = self.stack.base_url + path
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
            "X-Twilio-Signature": self.validator.compute_signature(url, params),
        }
        async with self.session.post(url, data=urlencode(params), headers=headers) as r:
            text = await r.text()
            if r.status != expect:
                raise RuntimeError(f"{path} answered {r.status}: {text[:200]}")
            return text

    async def recording_sid(self, call_sid: str) -> str:
        url = f"{self.standin}/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Calls/{call_sid}/Recordings.json"
        deadline = time.monotonic() + STEP_TIMEOUT_S
        wait = SID_POLL_S
        while time.monotonic() < deadline:
            await asyncio.sleep(wait)
            wait = min(SID_POLL_MAX_S, wait * 1.5)
            async with self.session.get(url, auth=self.auth) as r:
                found = (await r.json())["recordings"]
            if found:
                return str(found[0]["sid"])
        raise RuntimeError(f"no recording started for {call_sid}")

    async def play(self, call: CallRecord) -> None:
        call.started = time.monotonic()
        try:
            sent = time.monotonic()
            twiml = await self.twilio(
                "/twilio/voice", voice_payload(call.call_sid, from_=CALLER, to=NUMBER), 200
            )
            call.voice_s = time.monotonic() - sent
            found = CALL_ID.search(twiml)
            if not found:
                raise RuntimeError(f"no call_id in the TwiML: {twiml[:200]}")
            call.call_id = found.group(1)
            await self.twilio("/twilio/stream-status", stream_status_payload(call.call_sid, "stream-started"))
            sid = await self.recording_sid(call.call_sid)
            recording = functools.partial(
                recording_status_payload, call_sid=call.call_sid, recording_sid=sid, standin_base=self.standin
            )
            await self.twilio("/twilio/recording-status", recording(status="in-progress"))
            async with self.session.post(
                f"{self.standin}/_standin/recordings/{sid}/complete",
                json={"duration": 20, "size": AUDIO_SIZE},
            ) as r:
                if r.status != 200:
                    raise RuntimeError(f"the stand-in did not complete {sid}: {r.status}")
            await self.twilio("/twilio/stream-status", stream_status_payload(call.call_sid, "stream-stopped"))
            call.ended_at = time.monotonic()
            await self.twilio(
                "/twilio/call-status", call_status_payload(call.call_sid, "completed", duration=21)
            )
            await self.twilio(
                "/twilio/recording-status",
                recording(status="completed", duration=20),
            )
        except (TimeoutError, RuntimeError, aiohttp.ClientError) as error:
            call.error = f"{type(error).__name__}: {error}"

    async def open_loop(
        self, rate: float, duration_s: float, midway: Callable[[], None] | None = None
    ) -> Phase:
        """Start ``rate x duration_s`` calls at their scheduled times; returns once all were played
        (not once the service is done with them: see ``drain``)."""
        count = max(1, round(rate * duration_s))
        began = time.monotonic() + 0.05
        calls = [CallRecord(new_sid("CA"), began + i / rate) for i in range(count)]
        self.played += calls
        cpu_before = _rusage_cpu()
        tasks: list[asyncio.Task[None]] = []
        events: dict[str, float] = {}
        for i, call in enumerate(calls):
            if midway is not None and i == count // 2:
                events["midway"] = time.monotonic()
                midway()
            delay = call.scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.play(call)))
        offered_until = time.monotonic()
        await asyncio.gather(*tasks)
        return Phase(rate, duration_s, calls, began, offered_until, _rusage_cpu() - cpu_before, events)

    async def drain(self, phase: Phase | None, timeout_s: float) -> float:
        """Until every call of the phase (of every phase: ``None``) played without error has its
        ``call.ended`` and Twilio holds no recording (all deleted), or ``timeout_s``; returns when
        that was (monotonic)."""
        arrived = self.stack.receiver.arrived
        wanted = [c.call_id for c in (self.played if phase is None else phase.calls) if c.error is None]
        deadline = time.monotonic() + timeout_s
        listing = f"{self.standin}/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Recordings.json?PageSize=1"
        while time.monotonic() < deadline:
            if all(call_id in arrived for call_id in wanted):
                async with self.session.get(listing, auth=self.auth) as r:
                    if not (await r.json())["recordings"]:
                        break
            await asyncio.sleep(0.1)
        return time.monotonic()


def new_session() -> aiohttp.ClientSession:
    # Idle connections are dropped well before uvicorn's 5 s keep-alive ends them under us.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=1.0)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=STEP_TIMEOUT_S))
