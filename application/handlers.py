"""Handlers: one per command, any number per event.

Command handlers decide and record; the outbox carries their events to the event handlers, which do
the slow or external work (Twilio, the recording store) each in its own unit of work, recording
``(consumer, event id)`` with the effect so a redelivered event changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from application import commands, deletion, erasure, filtered, pauses, retention, webhooks
from application.errors import (
    ArchiveVerificationFailed,
    NotFound,
    PhoneNumberTaken,
    UnknownNumber,
)
from application.ports import ProviderRecording, StoredObject, UnitOfWork
from application.retry import retry_conflicts
from application.services import Services
from domain import events
from domain.audit import SYSTEM_ROLE, AuditActor, AuditEntry
from domain.model import (
    DISCARDED_RECORDING_OFF,
    LIVE_STATUSES,
    Call,
    Organization,
    ProviderRecordingStatus,
    Recording,
    RecordingStatus,
    StreamEvent,
    identifier,
    is_identifier,
    unique_numbers,
)

# --- results returned to the edge ---------------------------------------------------------------


@dataclass(frozen=True)
class CallDecision:
    """What the agent is told when a call arrives."""

    call_id: str
    greeting: str
    recorded: bool


# --- command handlers ---------------------------------------------------------------------------


async def upsert_organization(cmd: commands.UpsertOrganization, svc: Services) -> Organization:
    """Create or update an org. A number another org already owns is refused; new orgs record nothing.

    The id and the numbers are checked against their grammar first, so every later check sees exactly
    the values that will be stored.
    """
    now = svc.clock.now()
    org_id = identifier(cmd.org_id, "organization id")
    numbers = unique_numbers(cmd.phone_numbers)
    async with svc.uow() as uow:
        for number in numbers:
            owner = await uow.organizations.get_by_phone_number(number)
            if owner is not None and owner.id != org_id:
                raise PhoneNumberTaken(f"{number} already belongs to another organization")
            if number in svc.settings.platform_lines:
                raise PhoneNumberTaken(f"{number} is one of the platform's own lines")
        org = await uow.organizations.get(org_id)
        if org is None:
            org = Organization.create(
                id=org_id, name=cmd.name, phone_numbers=numbers, greeting=cmd.greeting, now=now
            )
            uow.organizations.add(org)
        else:
            org.update_profile(name=cmd.name, phone_numbers=numbers, greeting=cmd.greeting, now=now)
        await uow.commit()
        return org


async def set_call_recording(cmd: commands.SetCallRecording, svc: Services) -> Organization:
    """Flip the org-wide toggle. It governs the next call; calls in progress keep their decision."""
    async with svc.uow() as uow:
        org = await uow.organizations.get(cmd.org_id)
        if org is None:
            raise NotFound("organization not found")
        was = org.recording_enabled
        now = svc.clock.now()
        org.set_recording(enabled=cmd.enabled, by=cmd.changed_by, now=now)
        if org.recording_enabled != was:  # a real change, audited with it
            uow.audit.add(
                AuditEntry.record(
                    actor=cmd.actor or AuditActor(cmd.changed_by, SYSTEM_ROLE),
                    action="turn_recording_on" if cmd.enabled else "turn_recording_off",
                    now=now,
                    org_id=org.id,
                )
            )
        if cmd.keep_non_engagement is not None:
            filtered.apply_policy_change(
                uow, org, keep=cmd.keep_non_engagement, by=cmd.changed_by, actor=cmd.actor, now=now
            )
        await uow.commit()
        return org


async def set_number_recording(cmd: commands.SetNumberRecording, svc: Services) -> Organization:
    """Set one of the org's numbers to on, off or inherit, for its next calls; a number the org does
    not own is not found (whoever owns it)."""
    async with svc.uow() as uow:
        org = await uow.organizations.get(cmd.org_id)
        if org is None or cmd.number not in org.phone_numbers:
            raise NotFound("no such number in this organization")
        was = org.recording_mode(cmd.number)
        now = svc.clock.now()
        org.set_number_recording(number=cmd.number, mode=cmd.mode, by=cmd.changed_by, now=now)
        if org.recording_mode(cmd.number) != was:  # a real change, audited with it
            uow.audit.add(
                AuditEntry.record(
                    actor=cmd.actor or AuditActor(cmd.changed_by, SYSTEM_ROLE),
                    action=f"set_number_recording_{cmd.mode.value}",
                    now=now,
                    org_id=org.id,
                    target_id=cmd.number,
                )
            )
        await uow.commit()
        return org


async def start_call(cmd: commands.StartCall, svc: Services) -> CallDecision:
    """A call arrives: snapshot the called number's setting (its own, else the org toggle), build the
    greeting (with disclosure iff recorded).

    A repeated CallSid returns the decision already taken and creates nothing.
    """
    async with svc.uow() as uow:
        existing = await uow.calls.get_by_sid(cmd.call_sid)
        if existing is not None:
            return CallDecision(existing.id, existing.greeting, existing.recorded)
        platform_kind = svc.settings.platform_lines.get(cmd.to_number)
        org = None
        if platform_kind is None:
            org = await uow.organizations.get_by_phone_number(cmd.to_number)
            if org is None:
                raise UnknownNumber(f"no organization answers {cmd.to_number}")
        call = Call.start(
            call_sid=cmd.call_sid,
            account_sid=cmd.account_sid,
            from_number=cmd.from_number,
            to_number=cmd.to_number,
            now=svc.clock.now(),
            org=org,
            platform_kind=platform_kind,
        )
        uow.calls.add(call)
        await uow.commit()
        return CallDecision(call.id, call.greeting, call.recorded)


async def _call_by_sid(uow: Any, call_sid: str) -> Call:
    call: Call | None = await uow.calls.get_by_sid(call_sid)
    if call is None:
        raise NotFound(f"unknown call {call_sid}")
    return call


async def record_stream_event(cmd: commands.RecordStreamEvent, svc: Services) -> None:
    """``stream-started`` is the agent answering: the only moment capture may begin."""
    async with svc.uow() as uow:
        call = await _call_by_sid(uow, cmd.call_sid)
        if cmd.event != StreamEvent.STARTED:
            return
        recording = call.answer(svc.clock.now())
        if recording is not None:
            uow.recordings.add(recording)
        await uow.commit()


async def record_recording_status(cmd: commands.RecordRecordingStatus, svc: Services) -> None:
    """Apply Twilio's recording callback; duplicates and out-of-order callbacks are harmless."""
    async with svc.uow() as uow:
        call = await _call_by_sid(uow, cmd.call_sid)
        await _apply_recording_status(
            uow,
            call,
            recording_sid=cmd.recording_sid,
            status=cmd.status,
            now=svc.clock.now(),
            media_url=cmd.media_url,
            duration_s=cmd.duration_s,
            error_code=cmd.error_code,
        )
        await uow.commit()


async def _apply_recording_status(
    uow: UnitOfWork,
    call: Call,
    *,
    recording_sid: str,
    status: ProviderRecordingStatus,
    now: datetime,
    media_url: str | None = None,
    duration_s: int | None = None,
    error_code: str | None = None,
) -> None:
    """What Twilio says of one of the call's recordings, found by its RecordingSid.

    Every recording Twilio holds for the call ends archived or discarded. A RecordingSid the service
    does not know yet is the call's recording while that one still waits for Twilio to name it (or
    when the call has none: audio we never asked for, or whose request's record was lost); otherwise
    it is an additional recording of the call (``Recording.found``).
    """
    recording = await uow.recordings.get_by_sid(recording_sid)
    if recording is None:
        primary = await uow.recordings.get_for_call(call.id) if call.recorded else None
        if call.recorded and primary is None:
            recording = Recording.request(call=call, now=now)
            call.recording_id = recording.id
        elif primary is not None and primary.recording_sid is None and primary.status in LIVE_STATUSES:
            recording = primary
        else:
            recording = Recording.found(call=call, recording_sid=recording_sid, now=now)
        if recording is not primary:
            uow.recordings.add(recording)
    if recording.status == RecordingStatus.DISCARDING and status in (
        ProviderRecordingStatus.CAPTURING,
        ProviderRecordingStatus.COMPLETED,
    ):
        # The caller was never told: this audio must not be kept. Discard it at Twilio.
        call.found_unconsented_recording(recording_sid=recording_sid, twilio_status=status, now=now)
    recording.provider_reported(
        status=status,
        recording_sid=recording_sid,
        now=now,
        media_url=media_url,
        duration_s=duration_s,
        error_code=error_code,
    )


async def end_call(cmd: commands.EndCall, svc: Services) -> None:
    async with svc.uow() as uow:
        call = await _call_by_sid(uow, cmd.call_sid)
        now = svc.clock.now()
        call.end(status=cmd.status, duration_s=cmd.duration_s, now=now)
        await pauses.close_pauses_of_ended_call(uow, call, now)  # a pause never outlives the call
        await uow.commit()


async def record_scorability(cmd: commands.RecordScorability, svc: Services) -> None:
    """Mark a call (non-)engagement. The recording is kept all the same."""
    async with svc.uow() as uow:
        call = await uow.calls.get(cmd.call_id)
        if call is None:
            raise NotFound("call not found")
        call.record_scorability(scorable=cmd.scorable, reason=cmd.reason, now=svc.clock.now())
        await uow.commit()


async def transfer_call(cmd: commands.TransferCall, svc: Services) -> None:
    """A warm transfer; ``completed`` stops the recording at Twilio (via the TransferCompleted event)."""
    async with svc.uow() as uow:
        call = await uow.calls.get(cmd.call_id)
        if call is None:
            raise NotFound("call not found")
        call.transfer(stage=cmd.stage, now=svc.clock.now())
        await uow.commit()


# --- event handlers -----------------------------------------------------------------------------


async def start_twilio_recording(event: events.RecordingRequested, svc: Services) -> None:
    """Ask Twilio to start the dual-channel recording the answered call needs."""
    async with svc.uow() as uow:
        recording = await uow.recordings.get(event.recording_id)
        call = await uow.calls.get(event.call_id)
        if recording is None or call is None or recording.status != RecordingStatus.REQUESTED:
            return
        if recording.recording_sid is not None:
            return
        if call.ended:
            recording.never_captured(svc.clock.now())
            await uow.commit()
            return
        known = {r.recording_sid for r in await uow.recordings.for_call(call.id)}
    # A start whose answer we never committed (a crash, a lost response) may already have created a
    # recording at Twilio: adopt it rather than start a second one nobody would archive or delete.
    listed = await svc.telephony.list_call_recordings(event.call_sid)
    live = [
        r
        for r in listed
        if r.status in (ProviderRecordingStatus.CAPTURING, ProviderRecordingStatus.COMPLETED)
        and r.sid not in known
    ]
    if live:
        recording_sid = live[-1].sid  # newest first: the oldest is the one we started
    else:
        recording_sid = await svc.telephony.start_recording(
            event.call_sid, svc.settings.recording_status_callback
        )

    # Retried here on a lost race: run again from the top, this handler would no longer know which
    # recording it started (and a callback that won the race may have named another one).
    async def record_start() -> None:
        async with svc.uow() as uow:
            recording = await uow.recordings.get(event.recording_id)
            call = await uow.calls.get(event.call_id)
            assert recording is not None and call is not None
            now = svc.clock.now()
            if recording.recording_sid == recording_sid or (
                recording.recording_sid is None
                and recording.status in LIVE_STATUSES
                and await uow.recordings.get_by_sid(recording_sid) is None
            ):
                recording.started(recording_sid=recording_sid, now=now)
            else:
                # A callback named another recording as the call's first: ours is kept all the same.
                await _apply_recording_status(
                    uow, call, recording_sid=recording_sid, status=ProviderRecordingStatus.CAPTURING, now=now
                )
            for other in listed:  # whatever else Twilio holds for the call is kept (or discarded) too
                if other.sid != recording_sid:
                    await _adopt(uow, call, other, now)
            await uow.commit()

    await retry_conflicts(record_start, what="recording the start of a recording")


async def _adopt(uow: UnitOfWork, call: Call, listed: ProviderRecording, now: datetime) -> None:
    if listed.status is not None:
        await _apply_recording_status(
            uow,
            call,
            recording_sid=listed.sid,
            status=listed.status,
            now=now,
            media_url=listed.media_url,
            duration_s=listed.duration_s,
            error_code=listed.error_code,
        )


async def stop_recording_after_transfer(event: events.TransferCompleted, svc: Services) -> None:
    """The call left the platform: stop its live recordings at Twilio (Status=stopped)."""
    async with svc.uow() as uow:
        recordings = await uow.recordings.for_call(event.call_id)
    live = [r for r in recordings if r.status in LIVE_STATUSES]
    for recording in live:
        if recording.recording_sid is not None:
            await svc.telephony.stop_recording(recording.call_sid, recording.recording_sid)
    if any(recording.recording_sid is None for recording in live):
        raise RuntimeError("recording not started at Twilio yet; retry the stop later")
    async with svc.uow() as uow:
        await uow.commit()  # records (consumer, event id): a redelivery does not stop twice


async def discard_unconsented_recording(event: events.UnconsentedRecordingFound, svc: Services) -> None:
    """Stop a live unconsented recording (its completed callback brings us back), delete a finished one
    and note on its recording that it was discarded."""
    async with svc.uow() as uow:
        recording = await uow.recordings.get_by_sid(event.recording_sid)
    if recording is not None and recording.status != RecordingStatus.DISCARDING:
        async with svc.uow() as uow:
            await uow.commit()  # already discarded (or Twilio captured nothing): nothing left to do
        return
    if event.twilio_status == ProviderRecordingStatus.CAPTURING:
        await svc.telephony.stop_recording(event.call_sid, event.recording_sid)
        async with svc.uow() as uow:
            await uow.commit()
        return
    await svc.telephony.delete_recording(event.recording_sid)
    async with svc.uow() as uow:
        recording = await uow.recordings.get_by_sid(event.recording_sid)
        if recording is None:  # found before recordings of unrecorded calls were kept track of
            call = await uow.calls.get(event.call_id)
            assert call is not None
            recording = Recording.found(call=call, recording_sid=event.recording_sid, now=svc.clock.now())
            uow.recordings.add(recording)
        if recording.status == RecordingStatus.DISCARDING:
            recording.discarded(reason=DISCARDED_RECORDING_OFF, now=svc.clock.now())
        await uow.commit()


def storage_key(recording: Recording) -> str:
    """Customer audio lives under its org; the platform's own lines under a prefix of their own.

    Every segment is in the identifier grammar, which every store accepts. An id from before the
    grammar was enforced is written as ``_`` and its UTF-8 in hex (no valid id starts with ``_``, so
    the two never meet), rather than leaving its audio at Twilio for ever.
    """
    day = recording.call_started_at.strftime("%Y/%m/%d")
    if recording.org_id is None:
        prefix = f"platform/{recording.kind.value}"
    else:
        prefix = f"orgs/{key_segment(recording.org_id)}"
    return f"{prefix}/{day}/{key_segment(recording.call_id)}/{key_segment(recording.id)}.mp3"


def key_segment(value: str) -> str:
    return value if is_identifier(value) else "_" + value.encode().hex()


async def _measure_source(svc: Services, recording: Recording) -> tuple[int, str]:
    """Size and SHA-256 of Twilio's copy, read once more and kept nowhere."""
    assert recording.recording_sid is not None
    digest = hashlib.sha256()
    size = 0
    async with svc.telephony.open_media(recording.recording_sid, recording.media_url) as media:
        async for chunk in media.chunks:
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


async def _all_or_nothing(*awaitables: Awaitable[Any]) -> list[Any]:
    """Run side by side; the first failure cancels the others (and is raised as it is)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def archive_recording(event: events.RecordingCompletedAtTwilio, svc: Services) -> None:
    """Stream Twilio's audio into the store, verify size and SHA-256, then mark it archived.

    Nothing is held in memory whole. Verified means (docs/decisions/0014-archive-verification.md):
    the download is as long as Twilio announced; the store wrote exactly the downloaded size and
    SHA-256 and, asked afterwards (``store.confirm``), vouches that the key holds it (a verifying
    read, or the checksum the storage service computed on receipt); and, with
    ``recheck_source_audio``, a second read of Twilio's copy, taken side by side with the upload,
    has them too (a download that arrived whole but corrupted is caught only that way). Otherwise
    this raises and the recording stays ``completed`` (Twilio copy untouched) until a retry
    succeeds; a retry writes the same key again.
    """
    async with svc.uow() as uow:
        recording = await uow.recordings.get(event.recording_id)
    if recording is None or recording.status != RecordingStatus.COMPLETED:
        return
    assert recording.recording_sid is not None
    key = storage_key(recording)
    digest = hashlib.sha256()
    downloaded = 0

    async with svc.telephony.open_media(recording.recording_sid, recording.media_url) as media:

        async def measured() -> AsyncIterator[bytes]:
            nonlocal downloaded
            async for chunk in media.chunks:
                digest.update(chunk)
                downloaded += len(chunk)
                yield chunk

        content_type = media.content_type or "audio/mpeg"
        upload = svc.store.put(
            key,
            measured(),
            content_type=content_type,
            metadata={
                "org-id": key_segment(recording.org_id)
                if recording.org_id
                else f"platform-{recording.kind.value}",
                "call-id": recording.call_id,
                "recording-id": recording.id,
                "recording-sid": recording.recording_sid,
            },
        )
        rereading = _measure_source(svc, recording) if svc.settings.recheck_source_audio else asyncio.sleep(0)
        results = await _all_or_nothing(upload, rereading)
        written: StoredObject = results[0]
        source: tuple[int, str] | None = results[1]
        expected_length = media.content_length
    sha256 = digest.hexdigest()
    if expected_length is not None and downloaded != expected_length:
        raise ArchiveVerificationFailed(
            f"download of {recording.recording_sid} was {downloaded} bytes, "
            f"Twilio announced {expected_length}"
        )
    if written.size != downloaded or written.sha256 != sha256:
        raise ArchiveVerificationFailed(
            f"write of {key} does not match the download ({downloaded} bytes, sha256 {sha256}): {written}"
        )
    if not await svc.store.confirm(written):
        raise ArchiveVerificationFailed(
            f"the store does not confirm that {key} holds the download ({downloaded} bytes, sha256 {sha256})"
        )
    if source is not None and source != (downloaded, sha256):
        raise ArchiveVerificationFailed(
            f"Twilio's copy of {recording.recording_sid} reads as {source[0]} bytes, sha256 {source[1]}; "
            f"the download had {downloaded} bytes, sha256 {sha256}: it was damaged on the way"
        )
    async with svc.uow() as uow:
        recording = await uow.recordings.get(event.recording_id)
        assert recording is not None
        purged = recording.status == RecordingStatus.PURGED
        recording.archived(
            storage_key=key,
            size_bytes=downloaded,
            sha256=sha256,
            content_type=content_type,
            now=svc.clock.now(),
        )
        await uow.commit()
    if purged:  # purged while this upload ran: what it wrote must not outlive the purge
        await svc.store.delete(key)


async def delete_twilio_copy(event: events.RecordingArchived, svc: Services) -> None:
    """Delete Twilio's copy once ours is archived and verified; already gone (404) counts as done."""
    async with svc.uow() as uow:
        recording = await uow.recordings.get(event.recording_id)
    if recording is None or recording.status != RecordingStatus.ARCHIVED:
        return
    assert recording.recording_sid is not None
    await svc.telephony.delete_recording(recording.recording_sid)
    async with svc.uow() as uow:
        recording = await uow.recordings.get(event.recording_id)
        assert recording is not None
        if recording.status != RecordingStatus.PURGED:  # purged meanwhile: its own consumer finishes
            recording.deleted_at_twilio(svc.clock.now())
        await uow.commit()


# --- the two maps -------------------------------------------------------------------------------

CommandHandler = Callable[[Any, Services], Awaitable[Any]]
EventHandler = Callable[[Any, Services], Awaitable[None]]

COMMAND_HANDLERS: dict[type[commands.Command], CommandHandler] = {
    commands.UpsertOrganization: upsert_organization,
    commands.SetCallRecording: set_call_recording,
    commands.SetNumberRecording: set_number_recording,
    commands.StartCall: start_call,
    commands.RecordStreamEvent: record_stream_event,
    commands.RecordRecordingStatus: record_recording_status,
    commands.EndCall: end_call,
    commands.RecordScorability: record_scorability,
    commands.TransferCall: transfer_call,
    commands.RegisterWebhookEndpoint: webhooks.register_webhook_endpoint,
    commands.DeleteWebhookEndpoint: webhooks.delete_webhook_endpoint,
    commands.RotateWebhookSecret: webhooks.rotate_webhook_secret,
    commands.RetryWebhookDelivery: webhooks.retry_webhook_delivery,
    commands.PauseRecording: pauses.pause_recording,
    commands.ResumeRecording: pauses.resume_recording,
    commands.SetRetention: retention.set_retention,
    commands.SetLegalHold: retention.set_legal_hold,
    commands.RequestErasure: erasure.request_erasure,
    commands.SetNonEngagementPolicy: filtered.set_non_engagement_policy,
}

# Each event handler is a named consumer: the name is what ``(consumer, event id)`` dedupe records.
EVENT_HANDLERS: dict[type[events.Event], list[tuple[str, EventHandler]]] = {
    events.RecordingRequested: [("telephony.start-recording", start_twilio_recording)],
    events.TransferCompleted: [("telephony.stop-recording", stop_recording_after_transfer)],
    events.UnconsentedRecordingFound: [("telephony.discard-unconsented", discard_unconsented_recording)],
    events.RecordingCompletedAtTwilio: [("archive", archive_recording)],
    events.RecordingArchived: [
        ("telephony.delete-recording", delete_twilio_copy),
        ("calls.settle", webhooks.settle_call),
    ],
    # call.ended: settle the call once it ended and its recording settled, then one delivery per endpoint
    events.CallEnded: [("calls.settle", webhooks.settle_call)],
    events.RecordingAbsent: [("calls.settle", webhooks.settle_call)],
    events.RecordingFailed: [("calls.settle", webhooks.settle_call)],
    events.RecordingPurged: [
        ("store.delete-purged", deletion.delete_purged_audio),
        ("calls.settle", webhooks.settle_call),
    ],
    events.CallScorabilityRecorded: [("calls.settle", webhooks.settle_or_withdraw)],
    events.CallSettled: [("webhooks.enqueue", webhooks.enqueue_call_ended)],
    events.RecordingPaused: [("telephony.pause-recording", pauses.set_capture_at_twilio)],
    events.RecordingResumed: [("telephony.pause-recording", pauses.set_capture_at_twilio)],
    events.ErasureRequested: [("erasure.process", erasure.process_erasure)],
}
