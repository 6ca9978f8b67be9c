"""Pausing a call's recording for sensitive moments (card data): commands, the consumer that tells
Twilio, and the loop that resumes what nobody resumed.

A pause or resume is committed first (the interval, its event, its audit record: one unit of work);
the consumer ``telephony.pause-recording`` then sets Twilio's recording to the state the recording
has *now* (``Status=paused`` with ``PauseBehavior``, or ``Status=in-progress``), retried by the relay
until Twilio answers, exactly like starting and stopping a recording. Events of one recording are
handed on in order, so the last one sent always matches the committed state.

A pause never outlives the call: ending the call closes it at the call's end, and ``PauseLimiter``
resumes a pause older than ``CALLREC_MAX_PAUSE_S`` (and closes any a race left open on an ended call).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from datetime import datetime

from application import commands
from application.errors import ConcurrencyConflict, NotFound
from application.polling import PollingLoop
from application.ports import UnitOfWork
from application.retry import retry_conflicts
from application.services import Services
from domain import events
from domain.audit import SYSTEM_ROLE, AuditActor, AuditEntry
from domain.errors import InvalidTransition
from domain.model import LIVE_STATUSES, Call, Recording, ResumeReason

log = logging.getLogger(__name__)

PLATFORM_ACTOR = AuditActor("platform-service", SYSTEM_ROLE)
SYSTEM_ACTOR = AuditActor("system", SYSTEM_ROLE)


@dataclass(frozen=True)
class PauseState:
    """What the pause and resume endpoints answer: the call's recording and its pauses."""

    call: Call
    recording: Recording


def _audit(
    recording: Recording,
    call: Call,
    *,
    actor: AuditActor,
    paused: bool,
    now: datetime,
    reason: str | None = None,
) -> AuditEntry:
    return AuditEntry.record(
        actor=actor,
        action="pause_recording" if paused else "resume_recording",
        now=now,
        org_id=call.org_id,
        call_id=call.id,
        call_kind=call.kind.value,
        target_id=recording.id,
        reason=reason,
    )


async def _live_recording(uow: UnitOfWork, call_id: str) -> tuple[Call, Recording]:
    """The call and its own recording, if a pause or resume may apply to them (409 otherwise)."""
    call = await uow.calls.get(call_id)
    if call is None:
        raise NotFound("call not found")
    if not call.recorded:
        raise InvalidTransition("this call is not recorded: there is nothing to pause or resume")
    if call.ended:
        raise InvalidTransition("this call has ended: its recording can no longer be paused or resumed")
    if call.transfer_stage == "completed":
        raise InvalidTransition("this call was transferred off the platform: its recording has stopped")
    recording = await uow.recordings.get_for_call(call.id)
    if recording is None:
        raise InvalidTransition("the call has not been answered yet: its recording has not started")
    return call, recording


async def pause_recording(cmd: commands.PauseRecording, svc: Services) -> PauseState:
    """Pause the call's recording (idempotent: already paused answers the state as it is).

    409 when the call is not recorded, has ended or left the platform, or its recording is not live
    at Twilio yet (requested but not yet named by Twilio: retry in a moment) or any more.
    """
    async with svc.uow() as uow:
        call, recording = await _live_recording(uow, cmd.call_id)
        now, actor = svc.clock.now(), cmd.actor or PLATFORM_ACTOR
        if recording.pause(by=actor.sub, now=now):
            uow.audit.add(_audit(recording, call, actor=actor, paused=True, now=now))
            await uow.commit()
        return PauseState(call, recording)


async def resume_recording(cmd: commands.ResumeRecording, svc: Services) -> PauseState:
    """Resume the call's recording (idempotent: not paused answers the state as it is); 409 as pausing."""
    async with svc.uow() as uow:
        call, recording = await _live_recording(uow, cmd.call_id)
        now, actor = svc.clock.now(), cmd.actor or PLATFORM_ACTOR
        if recording.resume(by=actor.sub, now=now):
            uow.audit.add(_audit(recording, call, actor=actor, paused=False, now=now))
            await uow.commit()
        return PauseState(call, recording)


async def close_pauses_of_ended_call(uow: UnitOfWork, call: Call, now: datetime) -> None:
    """In the unit of work that ends ``call``: its open pause closes at the call's end."""
    if call.ended_at is None or not call.recorded or call.recording_id is None:
        return
    recording = await uow.recordings.get_for_call(call.id)
    if recording is not None and recording.open_pause is not None:
        _close(uow, call, recording, at=call.ended_at, now=now, reason=ResumeReason.CALL_ENDED)


def _close(
    uow: UnitOfWork, call: Call, recording: Recording, *, at: datetime, now: datetime, reason: ResumeReason
) -> bool:
    """Close the open pause ``at`` (the call's end, or now), audited ``now`` as the service's doing."""
    if not recording.resume(by=SYSTEM_ACTOR.sub, now=at, reason=reason):
        return False
    why = "the call ended while paused" if reason == ResumeReason.CALL_ENDED else "the maximum pause ran out"
    uow.audit.add(_audit(recording, call, actor=SYSTEM_ACTOR, paused=False, now=now, reason=why))
    return True


# --- the consumer -------------------------------------------------------------------------------


async def set_capture_at_twilio(
    event: events.RecordingPaused | events.RecordingResumed, svc: Services
) -> None:
    """Pause or resume capture at Twilio, if this event still describes the recording's state.

    Skipped (and marked done) when the call has ended or the recording is no longer live (nothing is
    captured any more), and when a later pause or resume superseded it (its own event follows). A
    failure raises: the relay retries it, and the recording's later events wait for it.
    """
    async with svc.uow() as uow:
        recording = await uow.recordings.get(event.recording_id)
        call = await uow.calls.get(event.call_id)
    paused = isinstance(event, events.RecordingPaused)
    applies = (
        recording is not None
        and call is not None
        and not call.ended
        and recording.status in LIVE_STATUSES
        and (recording.open_pause is not None) == paused
    )
    if applies:
        if paused:
            found = await svc.telephony.pause_recording(
                event.call_sid, event.recording_sid, pause_behavior=svc.settings.pause_behavior
            )
        else:
            found = await svc.telephony.resume_recording(event.call_sid, event.recording_sid)
        if not found:
            log.warning(
                "Twilio no longer holds recording %s of call %s: nothing to %s",
                event.recording_sid,
                event.call_id,
                "pause" if paused else "resume",
                extra={"call_id": event.call_id},
            )
    async with svc.uow() as uow:
        await uow.commit()  # records (consumer, event id): a redelivery sends nothing twice


# --- the automatic resume -----------------------------------------------------------------------


class PauseLimiter(PollingLoop):
    """Resumes recordings paused longer than ``max_pause`` (``ResumeReason.MAX_PAUSE``, logged), and
    closes at the call's end any pause a race left open on an ended call. Safe to run in several
    processes: each resume is one unit of work, and a pause closes once."""

    def __init__(self, services: Services, *, batch_size: int = 20, poll_interval: float = 1.0) -> None:
        self.services = services
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}  # each pass closes within itself

    async def run_once(self) -> int:
        """One pass over at most ``batch_size`` due pauses; returns how many it closed."""
        svc = self.services
        async with svc.reader() as uow:
            due = await uow.recordings.paused_too_long(
                paused_before=svc.clock.now() - svc.settings.max_pause, limit=self.batch_size
            )
        closed = 0
        for recording in due:
            try:
                closed += await retry_conflicts(
                    functools.partial(self._close_one, recording.id), what="resuming a paused recording"
                )
            except ConcurrencyConflict:
                continue  # still contended: the next pass sees it again
        return closed

    async def _close_one(self, recording_id: str) -> bool:
        svc = self.services
        async with svc.uow() as uow:
            recording = await uow.recordings.get(recording_id)
            call = await uow.calls.get(recording.call_id) if recording is not None else None
            if recording is None or call is None or recording.open_pause is None:
                return False
            now = svc.clock.now()
            if call.ended and call.ended_at is not None:
                closed = _close(
                    uow, call, recording, at=call.ended_at, now=now, reason=ResumeReason.CALL_ENDED
                )
            elif now - recording.open_pause.paused_at >= svc.settings.max_pause:
                closed = _close(uow, call, recording, at=now, now=now, reason=ResumeReason.MAX_PAUSE)
                log.warning(
                    "recording %s of call %s paused for over %.0f s: resumed automatically",
                    recording.id,
                    call.id,
                    svc.settings.max_pause.total_seconds(),
                    extra={"call_id": call.id},
                )
            else:
                return False
            await uow.commit()
            return closed
