"""Webhook endpoints, deliveries and the non-engagement rules: pure domain, no I/O."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from domain import events
from domain.errors import InvalidTransition, InvalidValue
from domain.model import Call, CallStatus, Organization, Recording, RecordingStatus, non_engagement_reason
from domain.webhooks import (
    MAX_ATTEMPTS,
    RETRY_SCHEDULE,
    AttemptOutcome,
    DeliveryStatus,
    EndpointStatus,
    SendResult,
    WebhookDelivery,
    WebhookEndpoint,
    new_webhook_secret,
    retry_delay,
)

T0 = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)


def endpoint(now: datetime = T0) -> WebhookEndpoint:
    return WebhookEndpoint.register(
        id="ep1",
        org_id="acme",
        url="https://hooks.example.com/x",
        event_types=["call.ended"],
        sealed_secret="s1",
        now=now,
    )


def delivery(now: datetime = T0) -> WebhookDelivery:
    return WebhookDelivery.create(
        id="d1",
        endpoint_id="ep1",
        org_id="acme",
        message_id="msg1",
        event_type="call.ended",
        call_id="c1",
        payload="{}",
        recording_key=None,
        now=now,
    )


def failing(status: int | None = 500, retry_after: timedelta | None = None) -> SendResult:
    return SendResult(status, 12, error="nope", retry_after=retry_after)


# --- secrets ------------------------------------------------------------------------------------


def test_a_secret_is_whsec_and_base64_of_32_random_bytes() -> None:
    secret = new_webhook_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert new_webhook_secret() != secret


def test_after_a_rotation_both_secrets_sign_for_24_hours_then_only_the_new_one() -> None:
    ep = endpoint()
    ep.rotate_secret("s2", T0 + timedelta(hours=1))
    assert ep.signing_secrets(T0 + timedelta(hours=1)) == ["s2", "s1"]
    assert ep.signing_secrets(T0 + timedelta(hours=24, minutes=59)) == ["s2", "s1"]
    assert ep.signing_secrets(T0 + timedelta(hours=25)) == ["s2"]


def test_a_second_rotation_within_the_overlap_keeps_the_first_expiry() -> None:
    ep = endpoint()
    ep.rotate_secret("s2", T0)
    ep.rotate_secret("s3", T0 + timedelta(hours=2))
    assert ep.signing_secrets(T0 + timedelta(hours=23)) == ["s3", "s2", "s1"]
    assert ep.signing_secrets(T0 + timedelta(hours=25)) == ["s3", "s2"]
    assert ep.signing_secrets(T0 + timedelta(hours=27)) == ["s3"]


# --- the schedule -------------------------------------------------------------------------------


def test_failures_follow_the_schedule_then_the_delivery_is_exhausted() -> None:
    d = delivery()
    now = T0
    waits = []
    for _ in range(MAX_ATTEMPTS - 1):
        attempt = d.attempted(failing(500), now)
        assert d.status == DeliveryStatus.PENDING and attempt.next_attempt_at == d.next_attempt_at
        assert d.next_attempt_at is not None
        waits.append(d.next_attempt_at - now)
        now = d.next_attempt_at
    assert waits == [
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
        timedelta(hours=10),
    ]
    last = d.attempted(failing(500), now)
    assert d.status == DeliveryStatus.EXHAUSTED and last.next_attempt_at is None and d.next_attempt_at is None
    assert [a.number for a in d.new_attempts] == list(range(1, 9))


@pytest.mark.parametrize("jitter", [0.9, 1.1])
def test_jitter_stretches_each_wait_by_at_most_a_tenth(jitter: float) -> None:
    for attempts in range(1, MAX_ATTEMPTS):
        assert retry_delay(attempts, jitter=jitter) == RETRY_SCHEDULE[attempts] * jitter
    with pytest.raises(InvalidValue):
        retry_delay(1, jitter=1.5)
    with pytest.raises(InvalidTransition):
        retry_delay(MAX_ATTEMPTS)  # the last try was the last


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_on_429_and_5xx_is_honoured_up_to_a_cap(status: int) -> None:
    d = delivery()
    d.attempted(failing(status, retry_after=timedelta(minutes=3)), T0)
    assert d.next_attempt_at == T0 + timedelta(minutes=3)  # later than the schedule's 5 s
    d.attempted(failing(status, retry_after=timedelta(seconds=1)), T0)
    assert d.next_attempt_at == T0 + timedelta(minutes=5)  # never sooner than the schedule
    d.attempted(failing(status, retry_after=timedelta(days=30)), T0)
    assert d.next_attempt_at == T0 + timedelta(hours=10)  # capped


def test_retry_after_on_other_answers_is_ignored() -> None:
    d = delivery()
    d.attempted(failing(400, retry_after=timedelta(hours=1)), T0)
    assert d.next_attempt_at == T0 + timedelta(seconds=5)


def test_only_2xx_succeeds_and_a_redirect_is_a_failure() -> None:
    assert SendResult(204, 1).outcome == AttemptOutcome.SUCCEEDED
    for status in (302, 301, 307, 400, 404, 500, None):
        assert SendResult(status, 1).outcome == AttemptOutcome.FAILED
    assert SendResult(410, 1).outcome == AttemptOutcome.GONE
    d = delivery()
    d.attempted(SendResult(302, 3, error="HTTP 302"), T0)
    assert d.status == DeliveryStatus.PENDING and d.last_status_code == 302


def test_a_success_ends_the_delivery() -> None:
    d = delivery()
    d.attempted(failing(500), T0)
    d.attempted(SendResult(200, 3), T0 + timedelta(seconds=5))
    assert d.status == DeliveryStatus.SUCCEEDED and d.completed_at == T0 + timedelta(seconds=5)
    assert d.next_attempt_at is None


def test_a_claimed_delivery_is_not_due_until_its_lease_runs_out() -> None:
    d = delivery()
    d.claim(T0, timedelta(seconds=60))
    assert not d.due(T0 + timedelta(seconds=59))
    assert d.due(T0 + timedelta(seconds=60))


def test_a_manual_retry_of_an_exhausted_delivery_is_one_more_try() -> None:
    d = delivery()
    for _ in range(MAX_ATTEMPTS):
        d.attempted(failing(500), T0)
    assert d.status == DeliveryStatus.EXHAUSTED
    d.retry_now(T0 + timedelta(days=4))
    assert d.due(T0 + timedelta(days=4))
    d.attempted(failing(500), T0 + timedelta(days=4))
    assert d.status == DeliveryStatus.EXHAUSTED
    d.retry_now(T0 + timedelta(days=5))
    d.attempted(SendResult(200, 1), T0 + timedelta(days=5))
    assert d.status == DeliveryStatus.SUCCEEDED  # type: ignore[comparison-overlap]  # mypy keeps the narrowing


# --- endpoint health ----------------------------------------------------------------------------


def test_410_gone_disables_the_endpoint_with_a_reason() -> None:
    ep, d = endpoint(), delivery()
    result = SendResult(410, 4, error="HTTP 410")
    d.attempted(result, T0)
    ep.delivered(result.outcome, T0)
    assert d.status == DeliveryStatus.FAILED and d.next_attempt_at is None
    assert ep.status == EndpointStatus.DISABLED and "410" in (ep.disabled_reason or "")
    [disabled] = ep.events
    assert isinstance(disabled, events.WebhookEndpointDisabled) and disabled.org_id == "acme"


def test_an_endpoint_failing_five_days_straight_is_disabled_and_a_success_resets_the_count() -> None:
    ep = endpoint()
    ep.delivered(AttemptOutcome.FAILED, T0)
    ep.delivered(AttemptOutcome.FAILED, T0 + timedelta(days=3))
    ep.delivered(AttemptOutcome.SUCCEEDED, T0 + timedelta(days=3, hours=1))
    ep.delivered(AttemptOutcome.FAILED, T0 + timedelta(days=4))
    ep.delivered(AttemptOutcome.FAILED, T0 + timedelta(days=8, hours=23))
    assert ep.active
    ep.delivered(AttemptOutcome.FAILED, T0 + timedelta(days=9))
    assert ep.status == EndpointStatus.DISABLED
    assert ep.disabled_reason is not None and "5 days" in ep.disabled_reason


def test_a_deleted_endpoint_wants_nothing() -> None:
    ep = endpoint()
    assert ep.wants("call.ended")
    ep.delete(T0)
    assert not ep.wants("call.ended") and ep.status == EndpointStatus.DELETED


# --- non-engagement and settling ----------------------------------------------------------------


def recorded_call(
    *, answered_after_s: float = 1, ended_after_s: float = 60, duration_s: int | None = 59
) -> Call:
    org = Organization.create(id="acme", name="Acme", phone_numbers=["+15550001111"], greeting="Hi", now=T0)
    org.set_recording(enabled=True, by="admin", now=T0)
    call = Call.start(
        call_sid="CA1",
        account_sid="AC1",
        from_number="+15557654321",
        to_number="+15550001111",
        now=T0,
        org=org,
    )
    call.answer(T0 + timedelta(seconds=answered_after_s))
    call.end(status=CallStatus.COMPLETED, duration_s=duration_s, now=T0 + timedelta(seconds=ended_after_s))
    return call


def recording(call: Call, status: RecordingStatus, error_code: str | None = None) -> Recording:
    rec = Recording.request(call=call, now=T0)
    rec.status = status
    rec.error_code = error_code
    return rec


def test_the_platform_verdict_makes_a_call_non_engagement() -> None:
    call = recorded_call()
    assert non_engagement_reason(call, None) is None
    call.record_scorability(scorable=False, reason="robocall", now=T0)
    assert non_engagement_reason(call, None) == "robocall"


def test_a_silent_recording_is_non_engagement_but_other_absent_ones_are_not() -> None:
    call = recorded_call()
    assert non_engagement_reason(call, recording(call, RecordingStatus.ABSENT, "16102")) == "silent_recording"
    assert non_engagement_reason(call, recording(call, RecordingStatus.ABSENT, None)) is None


def test_an_instant_hangup_needs_both_our_clock_and_twilio_to_say_so() -> None:
    assert non_engagement_reason(recorded_call(ended_after_s=3, duration_s=2), None) == "instant_hangup"
    # Twilio did not say how long the call was: not enough to withhold the business's notification.
    assert non_engagement_reason(recorded_call(ended_after_s=3, duration_s=None), None) is None
    # Callbacks that arrive together (a replay, a test driver) but a long call by Twilio's count:
    assert non_engagement_reason(recorded_call(ended_after_s=1, duration_s=44), None) is None
    assert non_engagement_reason(recorded_call(ended_after_s=60, duration_s=2), None) is None
    limit = timedelta(seconds=10)
    assert non_engagement_reason(recorded_call(ended_after_s=9, duration_s=8), None, instant_hangup=limit)


def test_an_unanswered_call_is_not_an_instant_hangup() -> None:
    org = Organization.create(id="acme", name="Acme", phone_numbers=["+15550100001"], greeting="Hi", now=T0)
    call = Call.start(
        call_sid="CA1", account_sid="AC1", from_number="+1", to_number="+15550100001", now=T0, org=org
    )
    call.end(status=CallStatus.CANCELED, duration_s=0, now=T0 + timedelta(seconds=1))
    assert non_engagement_reason(call, None) is None


def test_a_call_settles_only_once_ended_and_its_recording_settled() -> None:
    call = recorded_call()
    live = recording(call, RecordingStatus.COMPLETED)
    assert not call.settle(live, now=T0 + timedelta(minutes=2))
    archived = recording(call, RecordingStatus.ABSENT)
    assert call.settle(archived, now=T0 + timedelta(minutes=2))
    assert not call.settle(archived, now=T0 + timedelta(minutes=3))  # once
    [settled] = [e for e in call.events if isinstance(e, events.CallSettled)]
    assert settled.storage_key is None and settled.non_engagement is None


def test_a_call_without_a_verdict_waits_the_scorability_wait() -> None:
    call = recorded_call()
    wait = timedelta(seconds=30)
    ended = call.ended_at
    assert ended is not None
    assert not call.settle(None, now=ended + timedelta(seconds=29), scorability_wait=wait)
    assert call.settle(None, now=ended + timedelta(seconds=30), scorability_wait=wait)


def test_a_verdict_ends_the_scorability_wait_early() -> None:
    call = recorded_call()
    call.record_scorability(scorable=True, reason=None, now=T0)
    assert call.settle(None, now=call.ended_at or T0, scorability_wait=timedelta(hours=1))
