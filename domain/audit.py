"""The audit log of privileged access: who on the operations team looked at what, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from domain.errors import InvalidValue
from domain.events import Event, PrivilegedAccessRecorded
from domain.model import new_id

ACTIONS = ("list_calls", "play_recording", "download_recording")


@dataclass
class AuditEntry:
    """One privileged access. Written before the access is granted; never changed afterwards."""

    id: str
    actor: str
    actor_role: str
    action: str
    reason: str
    occurred_at: datetime
    org_id: str | None  # the org whose data was accessed; None for the platform's own lines
    call_id: str | None = None
    call_kind: str | None = None
    events: list[Event] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def record(
        cls,
        *,
        actor: str,
        actor_role: str,
        action: str,
        reason: str,
        now: datetime,
        org_id: str | None,
        call_id: str | None = None,
        call_kind: str | None = None,
    ) -> AuditEntry:
        if action not in ACTIONS:
            raise InvalidValue(f"unknown audited action {action!r}")
        if not reason.strip():
            raise InvalidValue("a privileged access needs a reason")
        entry = cls(new_id(), actor, actor_role, action, reason.strip(), now, org_id, call_id, call_kind)
        entry.events.append(
            PrivilegedAccessRecorded(
                occurred_at=now,
                org_id=org_id,
                audit_id=entry.id,
                actor=actor,
                actor_role=actor_role,
                action=action,
                reason=entry.reason,
                call_id=call_id,
                call_kind=call_kind,
            )
        )
        return entry
