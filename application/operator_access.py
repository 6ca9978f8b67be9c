"""The operations team's access to any org's calls and to the platform's own lines: always audited.

Every access is written to the audit log, with its reason (and its events, for ``callrec.audit.v1``),
and committed *before* anything is shown or any URL is minted; if the audit log cannot be written,
the access is refused (``AuditUnavailable``).
"""

from __future__ import annotations

from application import views
from application.audit import AuditUnavailable, record_before_access
from application.errors import InvalidInput, NotFound
from application.ports import CallCursor
from application.services import Services
from domain.audit import AuditActor, AuditEntry
from domain.model import CallKind

__all__ = ["AuditUnavailable", "Operator", "list_calls", "recording_url"]

Operator = AuditActor  # who on the operations team acts (sub, role, request id, source address)


async def list_calls(
    svc: Services,
    operator: AuditActor,
    *,
    kind: CallKind,
    org_id: str | None,
    limit: int,
    after: CallCursor | None,
    reason: str | None,
) -> tuple[list[views.CallView], CallCursor | None]:
    """Calls of one org (``kind=customer``) or of one of the platform's lines (no org)."""
    if kind == CallKind.CUSTOMER and not org_id:
        raise InvalidInput("org_id: required for customer calls")
    if kind != CallKind.CUSTOMER and org_id:
        raise InvalidInput("org_id: discovery and support calls belong to no org")
    await record_before_access(
        svc,
        AuditEntry.record(
            actor=operator,
            action="list_calls",
            reason=reason or "(none given)",
            now=svc.clock.now(),
            org_id=org_id,
            call_kind=kind.value,
        ),
    )
    return await views.list_calls(svc, org_id=org_id, kinds=(kind,), limit=limit, after=after)


async def recording_url(
    svc: Services, operator: AuditActor, *, call_id: str, reason: str, download: bool
) -> str:
    """A short-lived URL of any call's audio, once the access and its reason are in the audit log."""
    if not reason.strip():
        raise InvalidInput("reason: a reason is required")
    async with svc.reader() as uow:
        call = await uow.calls.get(call_id)
        recording = await uow.recordings.get_for_call(call_id) if call else None
    if call is None:
        raise NotFound("no recording available for this call")
    return await views.audited_recording_url(
        svc, call, recording, actor=operator, download=download, reason=reason
    )
