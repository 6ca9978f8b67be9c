"""Erasure by caller: an admin's request to erase one caller's data in the org, and its progress.

The request is worked through asynchronously, one call per transaction (``application.erasure``):
each call of the caller has its audio purged (reason ``erasure``) and its caller number replaced by
``redacted_as``, unless the call is under legal hold, which is skipped and listed. The request
holds the number only until it is completed; from then on only its redacted form is anywhere.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from domain import events
from domain.errors import InvalidValue
from domain.events import Event
from domain.model import new_id, phone_number

REDACTED_PREFIX = "redacted:"
MAX_REASON = 1000


class ErasureStatus(enum.StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"


def redacted_form(request_id: str) -> str:
    """What an erased caller number becomes: no digit of it, and the request that erased it."""
    return f"{REDACTED_PREFIX}{request_id}"


def is_redacted(number: str) -> bool:
    """The caller number of an erased call (no caller address Twilio sends looks like it)."""
    return number.startswith(REDACTED_PREFIX)


@dataclass
class ErasureRequest:
    id: str
    org_id: str
    caller_number: str | None  # None once completed
    reason: str
    requested_by: str
    status: ErasureStatus
    requested_at: datetime
    completed_at: datetime | None = None
    erased_call_ids: list[str] = field(default_factory=list)
    held_call_ids: list[str] = field(default_factory=list)
    recordings_purged: int = 0
    version: int = 0
    events: list[Event] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def open(
        cls, *, org_id: str, caller_number: str, reason: str, requested_by: str, now: datetime
    ) -> ErasureRequest:
        """A new pending request; the number must be E.164 and a reason is required."""
        phone_number(caller_number)
        reason = reason.strip()
        if not reason:
            raise InvalidValue("reason: an erasure request needs a reason")
        if len(reason) > MAX_REASON:
            raise InvalidValue(f"reason: at most {MAX_REASON} characters")
        request = cls(
            id=new_id(),
            org_id=org_id,
            caller_number=caller_number,
            reason=reason,
            requested_by=requested_by,
            status=ErasureStatus.PENDING,
            requested_at=now,
        )
        request.events.append(
            events.ErasureRequested(occurred_at=now, org_id=org_id, erasure_request_id=request.id)
        )
        return request

    @property
    def redacted_as(self) -> str:
        return redacted_form(self.id)

    @property
    def completed(self) -> bool:
        return self.status == ErasureStatus.COMPLETED

    def call_erased(self, *, call_id: str, recording_ids: list[str], now: datetime) -> None:
        """One call's audio is purged and its number redacted. Once per call."""
        if call_id in self.erased_call_ids:
            return
        self.erased_call_ids.append(call_id)
        self.recordings_purged += len(recording_ids)
        self.events.append(
            events.CallerDataErased(
                occurred_at=now,
                org_id=self.org_id,
                erasure_request_id=self.id,
                call_id=call_id,
                recording_ids=list(recording_ids),
                redacted_as=self.redacted_as,
            )
        )

    def call_held(self, call_id: str) -> None:
        """The call is under legal hold: left as it is, and listed."""
        if call_id not in self.held_call_ids:
            self.held_call_ids.append(call_id)

    def complete(self, now: datetime) -> None:
        """Every call of the caller is erased or held: forget the number."""
        if self.completed:
            return
        self.status = ErasureStatus.COMPLETED
        self.completed_at = now
        self.caller_number = None
        self.events.append(
            events.ErasureCompleted(
                occurred_at=now,
                org_id=self.org_id,
                erasure_request_id=self.id,
                erased_calls=len(self.erased_call_ids),
                held_call_ids=list(self.held_call_ids),
                recordings_purged=self.recordings_purged,
            )
        )
