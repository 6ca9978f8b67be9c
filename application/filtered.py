"""The policy for filtered calls: keep, or delete once settled, the recordings of calls
the scorability filter marks non-engagement.

Only the platform's scorability verdict counts (``call.scorable is False``); the built-in rules
(instant hangup, silent recording) withhold ``call.ended`` but never delete audio. The policy in
force when the call settles decides (``purge_if_filtered`` runs in the transaction that settles
it), or, for a verdict that arrives after the call settled, the policy in force at that moment.
A call under legal hold keeps its audio.
"""

from __future__ import annotations

from datetime import datetime

from application import commands
from application.deletion import purge_call_audio
from application.errors import NotFound
from application.ports import UnitOfWork
from application.services import Services
from domain.audit import SYSTEM_ROLE, AuditActor, AuditEntry
from domain.model import PURGE_FILTERED, Call, Organization

POLICY_ACTOR = AuditActor("filtered-call policy", SYSTEM_ROLE)


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


async def purge_if_filtered(uow: UnitOfWork, call: Call, now: datetime) -> None:
    """Purge the settled call's audio (reason ``filtered``) if the scorability filter marked it
    non-engagement and its org does not keep such recordings; one audit record when something was
    purged. Safe to run again: what is purged stays purged, and nothing more is recorded."""
    if not call.non_engagement or call.settled_at is None or call.org_id is None or call.held:
        return
    org = await uow.organizations.get(call.org_id)
    if org is None or org.keep_non_engagement:
        return
    if await purge_call_audio(uow, call, reason=PURGE_FILTERED, now=now):
        uow.audit.add(
            AuditEntry.record(
                actor=POLICY_ACTOR,
                action="purge_recording",
                reason=f"{PURGE_FILTERED}: {call.scorability_reason or 'non-engagement'}",
                now=now,
                org_id=call.org_id,
                call_id=call.id,
                call_kind=call.kind.value,
            )
        )
