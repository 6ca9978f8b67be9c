"""The policy for filtered calls (issue 15): keep, or delete once settled, the recordings of calls
the scorability filter marks non-engagement.

Only the platform's scorability verdict counts (``call.scorable is False``); the built-in rules
(instant hangup, silent recording) withhold ``call.ended`` but never delete audio. The policy in
force when the call settles decides: ``purge_if_filtered`` runs in the transaction that settles it.
"""

from __future__ import annotations

from datetime import datetime

from application import commands
from application.errors import NotFound
from application.ports import UnitOfWork
from application.services import Services
from domain.audit import SYSTEM_ROLE, AuditActor, AuditEntry
from domain.model import Organization


def apply_policy_change(
    uow: UnitOfWork, org: Organization, *, keep: bool, by: str, actor: AuditActor | None, now: datetime
) -> None:
    """Set the org's policy; a real change is audited in the same transaction."""
    if org.set_keep_non_engagement(keep=keep, by=by, now=now):
        uow.audit.add(
            AuditEntry.record(
                actor=actor or AuditActor(by, SYSTEM_ROLE),
                action="keep_filtered_recordings" if keep else "delete_filtered_recordings",
                now=now,
                org_id=org.id,
            )
        )


async def set_non_engagement_policy(cmd: commands.SetNonEngagementPolicy, svc: Services) -> Organization:
    """Keep or delete recordings of filtered calls from now on (the settings page's checkbox)."""
    async with svc.uow() as uow:
        org = await uow.organizations.get(cmd.org_id)
        if org is None:
            raise NotFound("organization not found")
        apply_policy_change(
            uow, org, keep=cmd.keep_non_engagement, by=cmd.changed_by, actor=cmd.actor, now=svc.clock.now()
        )
        await uow.commit()
        return org
