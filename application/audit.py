"""The audit log from the application's side: accesses recorded before they are granted, and the
org's own view of its log.

An access to a recording (a playback or download URL, a recording URL put into a webhook, the
operations team's listings) is committed to the audit log on its own *before* the URL is minted or
anything is shown; if it cannot be committed the access is refused (``AuditUnavailable``, a 503).
A change (the recording toggle, a webhook endpoint) is audited in the transaction that makes it.
"""

from __future__ import annotations

import logging

from application.errors import ApplicationError
from application.ports import AuditCursor
from application.retry import retry_conflicts
from application.services import Services
from domain.audit import AuditEntry

log = logging.getLogger(__name__)


class AuditUnavailable(ApplicationError):
    """The audit log could not be written, so the access is refused."""

    code = "audit_unavailable"


async def record_before_access(svc: Services, entry: AuditEntry) -> None:
    """Commit ``entry`` now; raise ``AuditUnavailable`` (and grant nothing) when that fails."""

    async def append() -> None:
        async with svc.uow() as uow:
            uow.audit.add(entry)
            await uow.commit()

    try:
        await retry_conflicts(append, what=f"audit entry {entry.action}")
    except Exception as exc:
        log.error("audit log write failed; refusing %s by %s: %s", entry.action, entry.actor, exc)
        raise AuditUnavailable("the audit log cannot be written; access refused") from exc


async def org_audit_log(
    svc: Services, *, org_id: str, limit: int, after: AuditCursor | None = None
) -> tuple[list[AuditEntry], AuditCursor | None]:
    """One page of the org's audit log, newest first, and the cursor of the next page (None: last)."""
    async with svc.reader() as uow:
        found = await uow.audit.page(org_id=org_id, limit=limit + 1, after=after)
    page = found[:limit]
    more = len(found) > limit and page
    return page, (AuditCursor(page[-1].occurred_at, page[-1].id) if more else None)
