"""The reconciliation sweep: finds recordings stuck in a state for too long and resumes their work.

Twilio retries status callbacks rarely, a process can die between two steps, a message can end up
in a dead-letter topic: this sweep is what guarantees that no recording is left behind at Twilio and
none is deleted there before it is archived. It looks only at recordings whose row has not changed
for ``stuck_after`` (the ``(status, updated_at)`` index), and it resumes the work only through the
commands and handlers of the normal flow, which are idempotent: a sweep that races the normal flow,
or another sweep in another process, changes nothing twice.

=====================  ===========================================  ===================================
state                  stuck because                                the sweep
=====================  ===========================================  ===================================
requested,             the ``completed``/``absent``/``failed``      asks Twilio for the call's
in_progress,           callback was lost, or the stop or delete     recordings and applies what Twilio
discarding             of unconsented audio failed for good         says as ``RecordRecordingStatus``;
                                                                    a requested recording that Twilio
                                                                    never started, of a call that has
                                                                    ended, is marked absent; audio
                                                                    being discarded that Twilio no
                                                                    longer lists is deleted (404) and
                                                                    marked discarded
completed              archiving kept failing, or its event was     runs ``archive_recording`` again
                       lost                                         (download, store, verify)
archived               the Twilio DELETE kept failing, or its       runs ``delete_twilio_copy`` again
                       event was lost                               (404 counts as done)
=====================  ===========================================  ===================================

Whatever else Twilio lists for the call, and the service does not know, is adopted through the same
command: archived if the call was recorded, discarded if not. Additional recordings of a call are
resumed exactly like the call's own.

Run ``sweep()`` on demand (``callrec reconcile``) or, as a ``PollingLoop``, ``run_forever(stop)``
every ``poll_interval`` seconds beside the workers (``entrypoints/runtime.py`` starts it).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from application import handlers
from application.commands import RecordRecordingStatus
from application.messagebus import MessageBus
from application.polling import PollingLoop
from application.ports import ProviderRecording
from application.retry import retry_conflicts
from application.services import Services
from domain import events
from domain.model import LIVE_STATUSES, ProviderRecordingStatus, Recording, RecordingStatus

__all__ = ["STUCK_STATUSES", "RecordingReconciler", "SweepReport"]

log = logging.getLogger(__name__)

STUCK_STATUSES = (
    RecordingStatus.REQUESTED,
    RecordingStatus.IN_PROGRESS,
    RecordingStatus.COMPLETED,
    RecordingStatus.ARCHIVED,
    RecordingStatus.DISCARDING,
)
# What Twilio still holds: the sweep asks Twilio about these.
_AT_TWILIO = LIVE_STATUSES | {RecordingStatus.DISCARDING}


@dataclass
class SweepReport:
    """What one pass found and did. ``resumed`` counts actions by name; ``failed`` names what raised."""

    examined: int = 0
    resumed: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (recording id, error)

    def __str__(self) -> str:
        done = ", ".join(f"{name}={count}" for name, count in sorted(self.resumed.items())) or "nothing"
        return f"examined {self.examined} stuck recordings; resumed {done}; {len(self.failed)} failed"


class RecordingReconciler(PollingLoop):
    """Finds stuck recordings and resumes their work (see the module docstring)."""

    def __init__(
        self,
        services: Services,
        *,
        stuck_after: timedelta = timedelta(minutes=15),
        batch_size: int = 200,
        concurrency: int = 4,
        poll_interval: float = 300.0,
        bus: MessageBus | None = None,
    ) -> None:
        """``poll_interval``: seconds between two passes of ``run_forever``; ``bus``: the service's
        (commands the sweep resumes go through it), or one of its own."""
        if stuck_after <= timedelta(0) or batch_size < 1 or concurrency < 1:
            raise ValueError("stuck_after, batch_size and concurrency must be positive")
        self.services = services
        self.stuck_after = stuck_after
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self._bus = bus if bus is not None else MessageBus(services)
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}  # a pass finishes its work itself

    async def sweep(self) -> SweepReport:
        """One pass over every recording stuck for longer than ``stuck_after``."""
        svc = self.services
        async with svc.uow() as uow:
            stuck = await uow.recordings.stuck(
                statuses=STUCK_STATUSES,
                updated_before=svc.clock.now() - self.stuck_after,
                limit=self.batch_size,
            )
        report = SweepReport(examined=len(stuck))
        slots = asyncio.Semaphore(self.concurrency)

        async def resume(recording: Recording) -> None:
            async with slots:
                try:
                    actions = await self._resume(recording)
                except Exception as error:
                    log.warning(
                        "reconciling recording %s (%s) failed: %s", recording.id, recording.status, error
                    )
                    report.failed.append((recording.id, f"{type(error).__name__}: {error}"))
                    return
                for action in actions:
                    log.info("reconciled recording %s (%s): %s", recording.id, recording.status, action)
                    report.resumed[action] += 1

        await asyncio.gather(*(resume(recording) for recording in stuck))
        return report

    async def run_once(self) -> int:
        """One sweep (``run_forever`` runs it every ``poll_interval`` seconds); it finishes what it
        starts, so it returns 0 and ``drain()`` is one sweep."""
        report = await self.sweep()
        if report.resumed or report.failed:
            log.info("reconciliation sweep: %s", report)
        return 0

    # --- per state --------------------------------------------------------------------------------

    async def _resume(self, recording: Recording) -> list[str]:
        if recording.status in _AT_TWILIO:
            return await self._ask_twilio(recording)
        action = await self._resume_ours(recording)
        return [action] if action is not None else []

    async def _resume_ours(self, recording: Recording) -> str | None:
        if recording.status == RecordingStatus.COMPLETED:
            assert recording.recording_sid is not None
            completed = events.RecordingCompletedAtTwilio(
                occurred_at=self.services.clock.now(),
                org_id=recording.org_id,
                recording_id=recording.id,
                call_id=recording.call_id,
                recording_sid=recording.recording_sid,
                duration_s=recording.duration_s,
            )
            await self._retry_conflicts(lambda: handlers.archive_recording(completed, self.services))
            return "archive"
        if recording.status == RecordingStatus.ARCHIVED and recording.audio is not None:
            assert recording.recording_sid is not None
            audio = recording.audio
            archived = events.RecordingArchived(
                occurred_at=self.services.clock.now(),
                org_id=recording.org_id,
                recording_id=recording.id,
                call_id=recording.call_id,
                recording_sid=recording.recording_sid,
                storage_key=audio.storage_key,
                size_bytes=audio.size_bytes,
                sha256=audio.sha256,
                content_type=audio.content_type,
                duration_s=recording.duration_s,
            )
            await self._retry_conflicts(lambda: handlers.delete_twilio_copy(archived, self.services))
            return "delete-twilio-copy"
        return None

    async def _ask_twilio(self, recording: Recording) -> list[str]:
        """A recording Twilio holds that nobody has heard of for a while: what does Twilio say about it,
        and what else does it hold for the call?"""
        listed = await self.services.telephony.list_call_recordings(recording.call_sid)
        async with self.services.uow() as uow:
            known = {r.recording_sid for r in await uow.recordings.for_call(recording.call_id)}
        ours = _ours(recording, listed, known)
        actions = []
        action = await self._apply_ours(recording, ours)
        if action is not None:
            actions.append(action)
        if recording.recording_sid is None and action is None:
            return actions  # the first unknown one may yet be this recording: adopt nothing before it
        for other in listed:
            if other is ours or other.sid in known or other.status is None:
                continue
            log.warning("call %s: adopting recording %s found at Twilio", recording.call_sid, other.sid)
            await self._tell(recording.call_sid, other, other.status)
            actions.append("adopted-from-twilio")
        return actions

    async def _apply_ours(self, recording: Recording, ours: ProviderRecording | None) -> str | None:
        if ours is None:
            if recording.status == RecordingStatus.REQUESTED and recording.recording_sid is None:
                return await self._absent_if_call_ended(recording)
            if recording.status == RecordingStatus.DISCARDING and recording.recording_sid is not None:
                # Gone from Twilio's list: its delete (a 404 counts as done) marks it discarded.
                gone = ProviderRecording(
                    sid=recording.recording_sid, call_sid=recording.call_sid, status=None
                )
                await self._tell(recording.call_sid, gone, ProviderRecordingStatus.COMPLETED)
                return "discard"
            log.warning(
                "Twilio lists no recording %s for call %s (recording %s)",
                recording.recording_sid,
                recording.call_sid,
                recording.id,
            )
            return None
        status = ours.status
        if status is None:
            return None  # a status we do not know: look again later
        if status == ProviderRecordingStatus.CAPTURING:
            if recording.status == RecordingStatus.IN_PROGRESS:
                return None  # still being recorded (a long call): look again later
            if recording.status == RecordingStatus.DISCARDING and not ours.capturing:
                return None  # stopped, and finishing at Twilio: its completion is deleted
        await self._tell(recording.call_sid, ours, status)
        return f"twilio-said-{status}"

    async def _tell(self, call_sid: str, listed: ProviderRecording, status: ProviderRecordingStatus) -> None:
        await self._bus.handle(
            RecordRecordingStatus(
                call_sid=call_sid,
                recording_sid=listed.sid,
                status=status,
                media_url=listed.media_url,
                duration_s=listed.duration_s,
                error_code=listed.error_code,
            )
        )

    async def _absent_if_call_ended(self, recording: Recording) -> str | None:
        async with self.services.uow() as uow:
            current = await uow.recordings.get(recording.id)
            call = await uow.calls.get(recording.call_id)
            if current is None or call is None or not call.ended:
                return None
            current.never_captured(self.services.clock.now())
            if current.status != RecordingStatus.ABSENT:
                return None
            await uow.commit()
        return "never-captured"

    @staticmethod
    async def _retry_conflicts(run: Callable[[], Awaitable[None]]) -> None:
        await retry_conflicts(run, what="reconcile")


def _ours(
    recording: Recording, listed: list[ProviderRecording], known: set[str | None]
) -> ProviderRecording | None:
    """Our recording among Twilio's: by sid, or (never told its sid) the call's oldest one that no
    other recording of the call is."""
    if recording.recording_sid is not None:
        return next((r for r in listed if r.sid == recording.recording_sid), None)
    return next((r for r in reversed(listed) if r.sid not in known), None)
