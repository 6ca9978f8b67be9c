"""Read side: what the dashboard shows of calls and recordings. Scoped to one org, always."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from application.audit import record_before_access
from application.errors import NotFound, RecordingGone
from application.ports import CallCursor, CallQuery
from application.services import Services
from domain.audit import AuditActor, AuditEntry
from domain.model import (
    PURGE_ERASURE,
    PURGE_FILTERED,
    PURGE_RETENTION,
    Call,
    CallKind,
    Organization,
    PauseInterval,
    Recording,
    RecordingStatus,
    non_engagement_reason,
)


@dataclass(frozen=True)
class RecordingView:
    status: str  # available | processing | not_recorded | failed | purged
    reason: str | None  # recording_off | no_audio | filtered | retention | erasure | None
    duration_s: int | None
    size_bytes: int | None
    content_type: str | None
    error_code: str | None = None  # Twilio's ErrorCode of a failed or absent recording
    purged_at: datetime | None = None  # when the audio was deleted (status purged, or filtered)


@dataclass(frozen=True)
class AdditionalRecordingView:
    """Another recording Twilio made of the call, and its fate: archived, or discarded at Twilio."""

    status: str  # processing | archived | discarded | not_recorded | failed
    reason: str | None  # recording_off (discarded) | no_audio (not_recorded) | None
    duration_s: int | None
    size_bytes: int | None
    content_type: str | None


@dataclass(frozen=True)
class CallView:
    call: Call
    recording: RecordingView
    # The platform's verdict or a built-in rule (instant hangup, silent recording): no webhook.
    non_engagement: bool = False
    # Only in a call's detail (``get_call``), oldest first; never "the" recording of the call.
    additional_recordings: tuple[AdditionalRecordingView, ...] = ()
    # Why it is non-engagement (``robocall``, ``instant_hangup``, ``silent_recording``…), or None.
    non_engagement_reason: str | None = None
    # Only in a call's detail: the paused stretches of its recording, oldest first.
    pauses: tuple[PauseInterval, ...] = ()


def recording_view(call: Call, recording: Recording | None) -> RecordingView:
    """Explain the recording, or why there is none."""
    if not call.recorded:
        return RecordingView("not_recorded", "recording_off", None, None, None)
    if recording is None:
        if call.ended:
            return RecordingView("not_recorded", "no_audio", None, None, None)
        return RecordingView("processing", None, None, None, None)
    return own_recording_view(recording)


def own_recording_view(recording: Recording) -> RecordingView:
    """``recording_view`` of a recorded call whose own recording this is (its call does not matter)."""
    if recording.is_archived and recording.audio is not None:
        audio = recording.audio
        return RecordingView("available", None, recording.duration_s, audio.size_bytes, audio.content_type)
    if recording.status == RecordingStatus.ABSENT:
        return RecordingView("not_recorded", "no_audio", None, None, None, recording.error_code)
    if recording.status == RecordingStatus.FAILED:
        return RecordingView("failed", None, recording.duration_s, None, None, recording.error_code)
    if recording.status == RecordingStatus.PURGED:
        return purged_view(recording)
    return RecordingView("processing", None, recording.duration_s, None, None)


def purged_view(recording: Recording) -> RecordingView:
    """A purged recording: ``purged`` with its reason, but a filtered call's reads as never kept."""
    status = "not_recorded" if recording.purge_reason == PURGE_FILTERED else "purged"
    return RecordingView(
        status, recording.purge_reason, recording.duration_s, None, None, purged_at=recording.purged_at
    )


def additional_recording_view(recording: Recording) -> AdditionalRecordingView:
    """What became of a recording that is not the call's own (``Recording.found``)."""
    if recording.is_archived and recording.audio is not None:
        audio = recording.audio
        return AdditionalRecordingView(
            "archived", None, recording.duration_s, audio.size_bytes, audio.content_type
        )
    if recording.status == RecordingStatus.PURGED:
        purged = purged_view(recording)
        return AdditionalRecordingView(purged.status, purged.reason, recording.duration_s, None, None)
    if recording.status == RecordingStatus.DISCARDED:
        return AdditionalRecordingView(
            "discarded", recording.discard_reason, recording.duration_s, None, None
        )
    if recording.status == RecordingStatus.ABSENT:
        return AdditionalRecordingView("not_recorded", "no_audio", None, None, None)
    if recording.status == RecordingStatus.FAILED:
        return AdditionalRecordingView("failed", None, recording.duration_s, None, None)
    return AdditionalRecordingView("processing", None, recording.duration_s, None, None)


async def list_calls(
    svc: Services,
    *,
    org_id: str | None,
    kinds: tuple[CallKind, ...] = (CallKind.CUSTOMER,),
    limit: int,
    after: CallCursor | None = None,
    started_from: datetime | None = None,
    started_to: datetime | None = None,
    recording_status: str | None = None,
    caller_prefix: str | None = None,
    hide_non_engagement: bool = False,
) -> tuple[list[CallView], CallCursor | None]:
    """One page, newest first, and the cursor of the next page (None on the last)."""
    query = CallQuery(
        org_id=org_id,
        kinds=kinds,
        limit=limit,
        after=after,
        started_from=started_from,
        started_to=started_to,
        recording_status=recording_status,
        caller_prefix=caller_prefix,
        hide_non_engagement=hide_non_engagement,
    )
    found = await calls_page(svc, query)
    return found.items, found.older


# The recording statuses the list shows and filters by (``recording_view``), in the order offered.
RECORDING_STATUSES = ("available", "processing", "not_recorded", "failed", "purged")


@dataclass(frozen=True)
class CallsPage:
    items: list[CallView]  # newest first
    older: CallCursor | None  # the next page's position (None on the last)
    newer: CallCursor | None  # the previous page's position, for ``CallQuery.before`` (None on the first)


async def calls_page(svc: Services, query: CallQuery) -> CallsPage:
    """One page of ``query.limit`` calls, newest first, with the positions of the pages either side.

    With ``query.before`` it is the page just newer than that position; when fewer than a page of
    newer calls are left, it is the first page instead.
    """
    limit = query.limit
    async with svc.reader() as uow:
        calls = await uow.calls.page(replace(query, limit=limit + 1))
        if query.before is not None and len(calls) <= limit:
            query = replace(query, before=None, after=None)
            calls = await uow.calls.page(replace(query, limit=limit + 1))
        if query.before is not None:
            calls, more_older, more_newer = calls[limit - 1 :: -1], True, True
        else:
            calls, more_older, more_newer = calls[:limit], len(calls) > limit, query.after is not None
        recordings = await uow.recordings.get_for_calls([c.id for c in calls if c.recording_id is not None])
    views = [_view(svc, c, recordings.get(c.id)) for c in calls]
    first, last = (calls[0], calls[-1]) if calls else (None, None)
    return CallsPage(
        views,
        CallCursor(last.started_at, last.id) if more_older and last else None,
        CallCursor(first.started_at, first.id) if more_newer and first else None,
    )


async def _owned_call(
    svc: Services,
    *,
    org_id: str | None,
    call_id: str,
    kinds: tuple[CallKind, ...],
    additional: bool = False,
) -> tuple[Call, Recording | None, list[Recording]]:
    """The call, its recording and (with ``additional``) its additional recordings, if the call is
    this org's (or a platform line's when org_id is None).

    Another org's call is NotFound, exactly like a missing one.
    """
    async with svc.reader() as uow:
        call = await uow.calls.get(call_id)
        if call is None or call.org_id != org_id or call.kind not in kinds:
            raise NotFound("call not found")
        if not additional:
            return call, await uow.recordings.get_for_call(call.id), []
        every = await uow.recordings.for_call(call.id)  # its own among them: one query, not two
    own = next((r for r in every if r.id == call.recording_id), None)
    return call, own, [r for r in every if r.id != call.recording_id]


async def get_call(
    svc: Services, *, org_id: str | None, call_id: str, kinds: tuple[CallKind, ...]
) -> CallView:
    """A call of this org (or of the platform's lines when ``org_id`` is None); another org's is NotFound.

    With the fate of every additional recording Twilio made of it.
    """
    call, recording, others = await _owned_call(
        svc, org_id=org_id, call_id=call_id, kinds=kinds, additional=True
    )
    view = _view(svc, call, recording)
    return replace(
        view,
        additional_recordings=tuple(additional_recording_view(r) for r in others),
        pauses=tuple(recording.pauses) if recording is not None else (),
    )


def _view(svc: Services, call: Call, recording: Recording | None) -> CallView:
    reason = non_engagement_reason(call, recording, instant_hangup=svc.settings.instant_hangup)
    return CallView(call, recording_view(call, recording), reason is not None, non_engagement_reason=reason)


def download_filename(call: Call) -> str:
    return f"call-{call.started_at.strftime('%Y%m%dT%H%M%SZ')}-{call.id}.mp3"


async def recording_url(
    svc: Services,
    *,
    actor: AuditActor,
    org_id: str | None,
    call_id: str,
    kinds: tuple[CallKind, ...],
    download: bool,
) -> str:
    """A short-lived signed URL of the archived audio. Checks ownership before touching storage.

    The URL is minted only once the access is committed to the audit log (``AuditUnavailable`` if it
    cannot be).
    """
    call, recording, _ = await _owned_call(svc, org_id=org_id, call_id=call_id, kinds=kinds)
    return await audited_recording_url(svc, call, recording, actor=actor, download=download)


async def audited_recording_url(
    svc: Services,
    call: Call,
    recording: Recording | None,
    *,
    actor: AuditActor,
    download: bool,
    reason: str | None = None,
) -> str:
    """The signed URL of the call's archived audio, minted once the access is committed to the audit log
    (``AuditUnavailable`` if it cannot be); ``NotFound`` when there is no archived audio, and
    ``RecordingGone`` when it was purged (nothing is signed for it, ever)."""
    if recording is not None and recording.status == RecordingStatus.PURGED:
        raise RecordingGone(gone_message(recording), reason=recording.purge_reason)
    if recording is None or not recording.is_archived or recording.audio is None:
        raise NotFound("no recording available for this call")
    await record_before_access(
        svc,
        AuditEntry.record(
            actor=actor,
            action="download_recording" if download else "play_recording",
            reason=reason,
            now=svc.clock.now(),
            org_id=call.org_id,
            call_id=call.id,
            call_kind=call.kind.value,
        ),
    )
    ttl = min(svc.settings.playback_url_ttl, svc.store.max_url_lifetime)
    return await svc.store.signed_url(
        recording.audio.storage_key,
        expires_in=ttl,
        download_filename=download_filename(call) if download else None,
    )


PURGE_EXPLANATIONS = {
    PURGE_RETENTION: "deleted under the organization's retention policy",
    PURGE_ERASURE: "deleted at the caller's request (erasure)",
    PURGE_FILTERED: "not kept: the call was filtered out",
}


def gone_message(recording: Recording) -> str:
    """Why a purged recording cannot be played: the reason and the day."""
    why = PURGE_EXPLANATIONS.get(recording.purge_reason or "", "deleted")
    when = f" on {recording.purged_at:%Y-%m-%d}" if recording.purged_at is not None else ""
    return f"The recording was {why}{when}; its audio no longer exists."


@dataclass(frozen=True)
class NumberRecordingView:
    """One of the org's numbers: its own setting, whether its next call is recorded, who set it, when."""

    number: str
    mode: str  # on | off | inherit
    effective: bool
    changed_by: str | None
    changed_at: datetime | None


def number_recording_views(org: Organization) -> list[NumberRecordingView]:
    """Every number of the org, in the org's order, with the recording decision its next call gets."""
    views = []
    for number in org.phone_numbers:
        setting = org.number_recording.get(number)
        views.append(
            NumberRecordingView(
                number=number,
                mode=org.recording_mode(number).value,
                effective=org.records_calls_to(number),
                changed_by=setting.changed_by if setting else None,
                changed_at=setting.changed_at if setting else None,
            )
        )
    return views
