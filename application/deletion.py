"""The audio-deletion primitive: purge a recording's audio for good, keep its metadata.

``purge_recording`` is the decision, inside the caller's unit of work (retention's purge pass, an
erasure request, the filtered-call policy); the caller has already checked the call's legal hold.
``RecordingPurged`` then reaches ``delete_purged_audio`` (consumer ``store.delete-purged``), which
deletes every copy: the store's object (every version, on a versioned bucket), and Twilio's copy when
it may still exist, and records that on the recording. Both are safe to run twice.

Nothing brings purged audio back: the archive handler does not archive a purged recording (and
deletes what a late upload wrote), the sweep does not look at it, no URL is signed for it (playback
answers 410 Gone) and a retried ``call.ended`` carries no ``recording_url`` for it.
"""

from __future__ import annotations

from datetime import datetime

from application.ports import UnitOfWork
from application.services import Services
from domain import events
from domain.errors import InvalidTransition
from domain.model import PURGEABLE_STATUSES, Call, Recording, RecordingStatus

__all__ = ["delete_purged_audio", "purge_call_audio", "purge_recording"]


def purge_recording(uow: UnitOfWork, recording: Recording, *, reason: str, now: datetime) -> bool:
    """Mark ``recording`` purged (``reason``: retention, erasure, filtered) in ``uow``; its
    ``RecordingPurged`` has the copies deleted once committed. Returns whether it was purged now
    (False: purged already). Anything with no audio to delete raises ``InvalidTransition``."""
    if recording.status == RecordingStatus.PURGED:
        return False
    recording.purge(reason=reason, now=now)
    return True


async def purge_call_audio(uow: UnitOfWork, call: Call, *, reason: str, now: datetime) -> list[Recording]:
    """Purge every recording of ``call`` that holds audio (its own and any additional one), unless
    the call is under legal hold. Returns the recordings purged now."""
    if call.held:
        return []
    purged = []
    for recording in await uow.recordings.for_call(call.id):
        if recording.status in PURGEABLE_STATUSES and purge_recording(uow, recording, reason=reason, now=now):
            purged.append(recording)
    return purged


async def delete_purged_audio(event: events.RecordingPurged, svc: Services) -> None:
    """Delete every copy of purged audio: the store's object under its key (every version), and
    Twilio's copy unless it is known to be gone; then note on the recording that it is all gone.

    The key the archive writes is derived from the recording, so it is deleted too even when the
    recording was purged before its archive committed (a half-finished upload leaves nothing).
    """
    from application.handlers import storage_key  # the one place that names keys

    async with svc.uow() as uow:
        recording = await uow.recordings.get(event.recording_id)
    if recording is None or recording.status != RecordingStatus.PURGED:
        async with svc.uow() as uow:
            await uow.commit()
        return
    keys = dict.fromkeys(k for k in (event.storage_key, storage_key(recording)) if k is not None)
    for key in keys:
        await svc.store.delete(key)
    if recording.recording_sid is not None and recording.twilio_deleted_at is None:
        await svc.telephony.delete_recording(recording.recording_sid)  # already gone (404) is done
    async with svc.uow() as uow:
        recording = await uow.recordings.get(event.recording_id)
        if recording is None:
            raise InvalidTransition("a purged recording vanished")
        recording.audio_deleted(svc.clock.now())
        await uow.commit()
