"""``TwilioTelephony`` retrying against the Twilio stand-in: backoff with jitter, ``Retry-After``
honoured, and only the calls that are safe to repeat."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.retry import RetryPolicy
from adapters.twilio_telephony import TwilioTelephony, TwilioTelephonyError
from application.commands import EndCall, RecordStreamEvent, SetCallRecording, StartCall, UpsertOrganization
from application.messagebus import MessageBus
from application.ports import MediaNotFound
from application.reconcile import RecordingReconciler
from domain.model import CallStatus, RecordingStatus, StreamEvent
from tests.fakes import FakeClock, make_services
from tests.support.database import Database
from tests.twilio_standin import TwilioStandin, new_sid

CALLBACK_URL = "https://callrec.example.com/twilio/recording-status"
POLICY = RetryPolicy(max_attempts=4, base_s=0.01, cap_s=0.05, max_retry_after_s=5)


class RecordedSleeps:
    """Remembers how long the adapter asked to wait, and returns at once."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


@pytest.fixture
def sleeps() -> RecordedSleeps:
    return RecordedSleeps()


@pytest.fixture
async def telephony(twilio_standin: TwilioStandin, sleeps: RecordedSleeps) -> AsyncIterator[TwilioTelephony]:
    async with TwilioTelephony(
        twilio_standin.account_sid,
        twilio_standin.auth_token,
        api_base=twilio_standin.base_url,
        retry=POLICY,
        sleep=sleeps,
    ) as adapter:
        yield adapter


def statuses(standin: TwilioStandin, route: str) -> list[int]:
    return [r["status"] for r in standin.requests(route)]


async def test_a_delete_answering_5xx_then_429_is_retried_after_the_retry_after_it_asked_for(
    telephony: TwilioTelephony, twilio_standin: TwilioStandin, sleeps: RecordedSleeps
) -> None:
    sid = twilio_standin.add_recording(new_sid("CA"), status="completed")
    twilio_standin.inject_fault("delete_recording", status=500)
    twilio_standin.inject_fault("delete_recording", status=429, retry_after="2")

    assert await telephony.delete_recording(sid) is True

    assert statuses(twilio_standin, "delete_recording") == [500, 429, 204]
    assert 0 <= sleeps.asked[0] <= 0.01  # backoff with jitter
    assert 2 <= sleeps.asked[1] <= 2.05  # what Twilio asked for, plus a little jitter


async def test_a_retry_after_longer_than_the_policy_waits_for_fails_at_once_with_the_hint(
    telephony: TwilioTelephony, twilio_standin: TwilioStandin, sleeps: RecordedSleeps
) -> None:
    sid = twilio_standin.add_recording(new_sid("CA"), status="completed")
    twilio_standin.inject_fault("delete_recording", status=429, retry_after="120")

    with pytest.raises(TwilioTelephonyError) as raised:
        await telephony.delete_recording(sid)

    assert (raised.value.status, raised.value.retry_after) == (429, 120)
    assert sleeps.asked == [] and twilio_standin.delete_count(sid) == 1


async def test_persistent_5xx_gives_up_after_the_last_attempt(
    telephony: TwilioTelephony, twilio_standin: TwilioStandin, sleeps: RecordedSleeps
) -> None:
    sid = twilio_standin.add_recording(new_sid("CA"), status="completed")
    twilio_standin.inject_fault("delete_recording", status=503, times=10)

    with pytest.raises(TwilioTelephonyError):
        await telephony.delete_recording(sid)

    assert statuses(twilio_standin, "delete_recording") == [503] * POLICY.max_attempts
    assert len(sleeps.asked) == POLICY.max_attempts - 1


async def test_a_delete_whose_retry_finds_it_gone_counts_as_done(
    telephony: TwilioTelephony, twilio_standin: TwilioStandin
) -> None:
    sid = new_sid("RE")  # as if the 500 had come after Twilio deleted it
    twilio_standin.inject_fault("delete_recording", status=500)

    assert await telephony.delete_recording(sid) is False
    assert statuses(twilio_standin, "delete_recording") == [500, 404]


async def test_a_4xx_other_than_429_is_not_retried(
    telephony: TwilioTelephony, twilio_standin: TwilioStandin
) -> None:
    twilio_standin.inject_fault("update_recording", status=400)

    with pytest.raises(TwilioTelephonyError):
        await telephony.stop_recording(new_sid("CA"), new_sid("RE"))

    assert statuses(twilio_standin, "update_recording") == [400]


async def test_starting_a_recording_is_retried_on_429_but_never_on_5xx(
    telephony: TwilioTelephony, twilio_standin: TwilioStandin
) -> None:
    twilio_standin.inject_fault("create_recording", status=429, retry_after="0")
    assert (await telephony.start_recording(new_sid("CA"), CALLBACK_URL)).startswith("RE")

    twilio_standin.inject_fault("create_recording", status=500)
    with pytest.raises(TwilioTelephonyError):
        await telephony.start_recording(new_sid("CA"), CALLBACK_URL)  # it may have started one

    assert statuses(twilio_standin, "create_recording") == [429, 201, 500]


async def test_opening_media_is_retried_but_a_missing_recording_is_not(
    telephony: TwilioTelephony, twilio_standin: TwilioStandin
) -> None:
    sid = twilio_standin.add_recording(new_sid("CA"), status="completed")
    audio = twilio_standin.complete_recording(sid, size=100_000)
    twilio_standin.inject_fault("fetch_media", status=503, retry_after="1")

    async with telephony.open_media(sid) as media:
        assert b"".join([chunk async for chunk in media.chunks]) == audio

    with pytest.raises(MediaNotFound):
        async with telephony.open_media(new_sid("RE")):
            pass
    assert statuses(twilio_standin, "fetch_media") == [503, 200, 404]


async def test_a_download_that_breaks_off_midway_is_not_retried_by_the_adapter(
    telephony: TwilioTelephony, twilio_standin: TwilioStandin
) -> None:
    sid = twilio_standin.add_recording(new_sid("CA"), status="completed")
    twilio_standin.complete_recording(sid, size=300_000)
    twilio_standin.truncate_next_media()

    with pytest.raises(TwilioTelephonyError):
        async with telephony.open_media(sid) as media:
            async for _ in media.chunks:
                pass

    assert statuses(twilio_standin, "fetch_media") == [200]


async def test_listing_a_calls_recordings_is_retried(
    telephony: TwilioTelephony, twilio_standin: TwilioStandin
) -> None:
    call = new_sid("CA")
    sid = twilio_standin.add_recording(call, status="completed")
    twilio_standin.inject_fault("list_recordings", status=502)

    assert [r.sid for r in await telephony.list_call_recordings(call)] == [sid]
    assert statuses(twilio_standin, "list_recordings") == [502, 200]


async def test_listing_the_recordings_of_a_call_twilio_does_not_know_asks_once_and_finds_none(
    telephony: TwilioTelephony, twilio_standin: TwilioStandin, sleeps: RecordedSleeps
) -> None:
    call = new_sid("CA")
    twilio_standin.add_recording(call, status="completed")
    twilio_standin.forget_call(call)

    assert await telephony.list_call_recordings(call) == []

    assert statuses(twilio_standin, "list_recordings") == [404]
    assert sleeps.asked == []


async def test_the_sweep_learns_in_one_request_that_twilio_holds_nothing_of_an_unknown_call(
    telephony: TwilioTelephony, twilio_standin: TwilioStandin, sleeps: RecordedSleeps, db: Database
) -> None:
    """The recording was requested, its RecordingRequested event lost, the call ended, and Twilio does
    not know the call: nothing was captured, and the sweep says so instead of failing on every pass."""
    clock = FakeClock()
    svc = make_services(db=db, telephony=telephony, clock=clock)
    bus = MessageBus(svc)
    await bus.handle(UpsertOrganization("org-acme", "Acme", ["+15550001111"], "Hi."))
    await bus.handle(SetCallRecording("org-acme", True, "admin@acme"))
    call = new_sid("CA")
    decision = await bus.handle(StartCall(call, twilio_standin.account_sid, "+15557654321", "+15550001111"))
    await bus.handle(RecordStreamEvent(call, new_sid("MZ"), StreamEvent.STARTED))
    await bus.handle(EndCall(call, CallStatus.COMPLETED, 3))
    twilio_standin.forget_call(call)

    clock.advance(minutes=20)
    report = await RecordingReconciler(svc).sweep()

    assert report.failed == [] and report.resumed == {"never-captured": 1}
    recording = await db.recording_for_call(decision.call_id)
    assert recording is not None and recording.status == RecordingStatus.ABSENT
    assert statuses(twilio_standin, "list_recordings") == [404]
    assert sleeps.asked == []


async def test_a_429_on_listing_honours_the_retry_after_twilio_asked_for(
    telephony: TwilioTelephony, twilio_standin: TwilioStandin, sleeps: RecordedSleeps
) -> None:
    call = new_sid("CA")
    sid = twilio_standin.add_recording(call, status="completed")
    twilio_standin.inject_fault("list_recordings", status=429, retry_after="3")

    assert [r.sid for r in await telephony.list_call_recordings(call)] == [sid]

    assert statuses(twilio_standin, "list_recordings") == [429, 200]
    assert 3 <= sleeps.asked[0] <= 3.05


STANDIN_ROUTE = {
    "start": "create_recording",
    "stop": "update_recording",
    "delete": "delete_recording",
    "list": "list_recordings",
    "media": "fetch_media",
}


async def _attempt(telephony: TwilioTelephony, operation: str, call: str, sid: str) -> object:
    if operation == "start":
        return await telephony.start_recording(call, CALLBACK_URL)
    if operation == "stop":
        await telephony.stop_recording(call, sid)
        return None
    if operation == "delete":
        return await telephony.delete_recording(sid)
    if operation == "list":
        return await telephony.list_call_recordings(call)
    async with telephony.open_media(sid) as media:
        return b"".join([chunk async for chunk in media.chunks])


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
@pytest.mark.parametrize("operation", list(STANDIN_ROUTE))
async def test_no_twilio_request_answered_with_a_4xx_other_than_429_is_repeated(
    telephony: TwilioTelephony,
    twilio_standin: TwilioStandin,
    sleeps: RecordedSleeps,
    operation: str,
    status: int,
) -> None:
    call = new_sid("CA")
    sid = twilio_standin.add_recording(call, status="completed")
    twilio_standin.inject_fault(STANDIN_ROUTE[operation], status=status)

    try:
        await _attempt(telephony, operation, call, sid)
    except TwilioTelephonyError as error:
        assert error.status == status and not error.retryable

    assert statuses(twilio_standin, STANDIN_ROUTE[operation]) == [status]
    assert sleeps.asked == []


def test_the_policy_backs_off_exponentially_with_jitter_up_to_its_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=0.5, cap_s=4)
    assert [policy.delay(n, None, rand=lambda: 1.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.delay(3, None, rand=lambda: 0.0) == 0.0
    assert policy.delay(10, None) is None
    assert policy.delay(1, 3.0, rand=lambda: 0.5) == 3.25
