"""What the call page (``/dashboard/calls/{id}``) says of one call, in plain words.

``call_page`` builds the template's context; ``call_state`` is the small JSON the page polls
(``/dashboard/calls/{id}/state.json``) until the call and its recording have settled. Times go to the
template as datetimes: it renders ``<time datetime="…" data-format="…">`` with a UTC text that the
shared ``dashboard.js`` rewrites in the viewer's timezone; numbers and lengths are written as on the
Calls page (``call_list``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from application.views import CallView
from entrypoints.http.call_list import format_duration, format_phone, iso_utc, utc_text

CALL_STATUSES = {
    "ringing": "Ringing",
    "in-progress": "In progress",
    "completed": "Completed",
    "busy": "Busy",
    "failed": "Could not connect",
    "no-answer": "No answer",
    "canceled": "Canceled: the caller hung up while it rang",
}
NON_ENGAGEMENT = {
    "robocall": "an automated call (robocall)",
    "wrong_number": "a wrong number",
    "silent_dialer": "a silent dialer: nobody spoke",
    "instant_hangup": "the caller hung up right after the agent answered",
    "silent_recording": "the recording was silent",
    "scorability_filter": "the platform judged it not a real conversation",
}
# A state the page shows, and what the page's live region says when the page turns to it.
ANNOUNCEMENTS = {
    "live": "The call is in progress.",
    "processing": "The call has ended; its recording is being processed.",
    "available": "The recording is ready to play.",
    "failed": "The recording failed.",
    "not_recorded": "There is no recording of this call.",
}


@dataclass(frozen=True)
class Lengths:
    call: str
    audio: str
    note: str  # why the audio is shorter than the call, if it is


def lengths(view: CallView) -> Lengths:
    call, audio = view.call.duration_s, view.recording.duration_s
    note = ""
    if call is not None and audio is not None and audio < call:
        before = ""
        waited = (
            (view.call.answered_at - view.call.started_at).total_seconds() if view.call.answered_at else 0
        )
        if waited >= 1:
            before = f"; the first {format_duration(int(waited))} were ringing and connecting"
        note = (
            f"The audio ({format_duration(audio)}) is shorter than the call ({format_duration(call)}): "
            f"recording starts when the agent answers{before}."
        )
    return Lengths(format_duration(call), format_duration(audio), note)


def page_state(view: CallView) -> str:
    """``live`` (the call is still going), or the recording's status once the call has ended."""
    status = view.recording.status
    if not view.call.ended and status in ("processing", "not_recorded"):
        return "live" if status == "processing" else "not_recorded"
    return status


def settled(view: CallView) -> bool:
    """Nothing on the page will change by itself any more."""
    return view.call.ended and view.recording.status != "processing"


def recording_explanation(
    view: CallView, *, now: datetime, stuck_after: timedelta, reasons: Mapping[str, str] = {}
) -> str:
    """Why there is no audio to play (yet), and what happens next; ``reasons`` words any other
    ``recording.reason`` than ``recording_off`` and ``no_audio``."""
    call, recording = view.call, view.recording
    if recording.status == "processing":
        if not call.ended or call.ended_at is None:
            return "The call is in progress. Its recording will be ready shortly after it ends."
        waited = now - call.ended_at
        minutes = int(waited.total_seconds() // 60)
        since = "moments ago" if minutes < 1 else f"{minutes} minute{'s' if minutes != 1 else ''} ago"
        text = f"Processing: the call ended {since} and its recording is being archived."
        if waited >= stuck_after:
            text += (
                " This is taking longer than usual; the service keeps retrying by itself, and the "
                "recording stays safe at Twilio until it is archived."
            )
        return text
    if recording.status == "failed":
        return (
            "Twilio reported that the recording failed, so no audio was kept and nothing more will "
            "happen for this call. If recordings keep failing, contact support with the call ID below."
        )
    if recording.reason == "recording_off":
        return "Recording was off when this call came in, so nothing was recorded."
    if recording.reason and recording.reason != "no_audio" and recording.reason in reasons:
        return reasons[recording.reason]
    if view.non_engagement_reason == "silent_recording":
        return "Twilio captured only silence, so there is no audio to play."
    return (
        "No audio was captured: the call ended before recording could start (it starts when the agent "
        "answers)."
    )


def call_page(
    view: CallView, *, now: datetime, stuck_after: timedelta, reasons: Mapping[str, str] = {}
) -> dict[str, Any]:
    """The call page's context (besides the principal, the title and the links)."""
    reason = view.non_engagement_reason
    return {
        "call": view.call,
        "recording": view.recording,
        "caller": format_phone(view.call.from_number),
        "callee": format_phone(view.call.to_number),
        "call_status": CALL_STATUSES.get(view.call.status.value, view.call.status.value),
        "lengths": lengths(view),
        "state": page_state(view),
        "settled": settled(view),
        "explanation": recording_explanation(view, now=now, stuck_after=stuck_after, reasons=reasons),
        "non_engagement": NON_ENGAGEMENT.get(reason, reason.replace("_", " ")) if reason else None,
        "utc": utc_text,
        "iso": iso_utc,
    }


def call_state(
    view: CallView, *, now: datetime, stuck_after: timedelta, reasons: Mapping[str, str] = {}
) -> dict[str, Any]:
    """What the page polls: its state, whether it has settled, and what to tell the listener."""
    state = page_state(view)
    return {
        "state": state,
        "settled": settled(view),
        "recording": {"status": view.recording.status, "reason": view.recording.reason},
        "announcement": ANNOUNCEMENTS.get(state, "This call's page has changed."),
        "explanation": recording_explanation(view, now=now, stuck_after=stuck_after, reasons=reasons),
    }
