"""Retention and legal hold: the org's policy, the hold on a call, and the purge pass.

An org keeps recordings indefinitely unless an admin sets ``retention_days``. The purge pass deletes
the audio of every recording whose **call started** more than that many days ago (the calls list's
own clock, so what a user sees as "older than 90 days" is what goes), except calls under legal hold.
It keeps the call and the recording's metadata, marks the recording purged (reason ``retention``)
and writes one audit record per recording, actor ``system``; ``RecordingPurged`` then deletes every
copy (``application.deletion``).

The pass reads the candidates a bounded page at a time (keyset on call start and id) and purges each
call in its own transaction, so it is safe to run twice and in several processes at once: a call
another pass purged first is a lost race (``ConcurrencyConflict``), retried from a fresh read that
finds nothing left to purge. ``callrec purge`` runs it once; ``run_forever`` runs it every
``poll_interval`` seconds (``CALLREC_PURGE_INTERVAL_S``, daily) in ``serve`` and in workers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from application import commands
from application.deletion import purge_call_audio
from application.errors import NotFound
from application.polling import PollingLoop
from application.retry import retry_conflicts
from application.services import Services
from domain.audit import SYSTEM_ROLE, AuditActor, AuditEntry
from domain.model import PURGE_RETENTION, Call, CallKind, Organization

__all__ = ["PURGE_ACTOR", "PurgeReport", "RetentionPurger", "set_legal_hold", "set_retention"]

log = logging.getLogger(__name__)

PURGE_ACTOR = AuditActor("retention-purge", SYSTEM_ROLE)


async def set_retention(cmd: commands.SetRetention, svc: Services) -> Organization:
    """Set how long the org keeps recordings; a real change is audited (who, when, the new value)."""
    async with svc.uow() as uow:
        org = await uow.organizations.get(cmd.org_id)
        if org is None:
            raise NotFound("organization not found")
        now = svc.clock.now()
        if org.set_retention(days=cmd.days, by=cmd.changed_by, now=now):
            uow.audit.add(
                AuditEntry.record(
                    actor=cmd.actor or AuditActor(cmd.changed_by, SYSTEM_ROLE),
                    action="set_retention",
                    reason=f"keep recordings {cmd.days} days" if cmd.days else "keep recordings indefinitely",
                    now=now,
                    org_id=org.id,
                )
            )
        await uow.commit()
        return org


async def set_legal_hold(cmd: commands.SetLegalHold, svc: Services) -> Call:
    """Place or release the hold on one of the org's calls (another org's call is NotFound); audited."""
    async with svc.uow() as uow:
        call = await uow.calls.get(cmd.call_id)
        if call is None or call.org_id != cmd.org_id or call.kind != CallKind.CUSTOMER:
            raise NotFound("call not found")
        now = svc.clock.now()
        if cmd.held:
            changed = call.place_legal_hold(by=cmd.by, reason=cmd.reason, now=now)
        else:
            changed = call.release_legal_hold(by=cmd.by, now=now)
        if changed:
            uow.audit.add(
                AuditEntry.record(
                    actor=cmd.actor or AuditActor(cmd.by, SYSTEM_ROLE),
                    action="place_legal_hold" if cmd.held else "release_legal_hold",
                    reason=cmd.reason.strip() or None,
                    now=now,
                    org_id=call.org_id,
                    call_id=call.id,
                    call_kind=call.kind.value,
                )
            )
        await uow.commit()
        return call


@dataclass
class PurgeReport:
    """What one pass did: orgs with a policy, recordings purged, calls whose purge failed."""

    orgs: int = 0
    purged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (call id, error)

    def __str__(self) -> str:
        return (
            f"{self.orgs} organizations with a retention policy; purged {self.purged} recordings; "
            f"{len(self.failed)} calls failed"
        )


class RetentionPurger(PollingLoop):
    """The purge pass (see the module docstring)."""

    def __init__(self, services: Services, *, page_size: int = 200, poll_interval: float = 86400.0) -> None:
        if page_size < 1:
            raise ValueError("page_size must be positive")
        self.services = services
        self.page_size = page_size
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}

    async def purge(self) -> PurgeReport:
        """One pass over every org with a retention policy."""
        svc = self.services
        async with svc.reader() as uow:
            orgs = [(org.id, org.retention_days) for org in await uow.organizations.with_retention()]
        report = PurgeReport(orgs=len(orgs))
        for org_id, days in orgs:
            assert days is not None
            await self._purge_org(org_id, days, report)
        return report

    async def _purge_org(self, org_id: str, days: int, report: PurgeReport) -> None:
        svc = self.services
        cutoff = svc.clock.now() - timedelta(days=days)
        after = None
        while True:
            async with svc.reader() as uow:
                page = await uow.recordings.past_retention(
                    org_id=org_id, started_before=cutoff, after=after, limit=self.page_size
                )
            for call_id in dict.fromkeys(r.call_id for r in page):
                try:
                    report.purged += await retry_conflicts(
                        functools.partial(self._purge_call, org_id, call_id), what=f"purging call {call_id}"
                    )
                except Exception as error:
                    log.warning("purging the audio of call %s failed: %s", call_id, error)
                    report.failed.append((call_id, f"{type(error).__name__}: {error}"))
            if len(page) < self.page_size:
                return
            after = (page[-1].call_started_at, page[-1].id)

    async def _purge_call(self, org_id: str, call_id: str) -> int:
        """Purge one call's audio in one transaction, with an audit record per recording."""
        svc = self.services
        async with svc.uow() as uow:
            call = await uow.calls.get(call_id)
            org = await uow.organizations.get(org_id)
            now = svc.clock.now()
            if call is None or org is None or org.retention_days is None or call.org_id != org_id:
                return 0
            if call.started_at >= now - timedelta(days=org.retention_days):  # the policy was lengthened
                return 0
            purged = await purge_call_audio(uow, call, reason=PURGE_RETENTION, now=now)
            for recording in purged:
                uow.audit.add(
                    AuditEntry.record(
                        actor=PURGE_ACTOR,
                        action="purge_recording",
                        reason=f"retention: recordings are kept {org.retention_days} days",
                        now=now,
                        org_id=org_id,
                        call_id=call.id,
                        call_kind=call.kind.value,
                        target_id=recording.id,
                    )
                )
            await uow.commit()
            return len(purged)

    async def run_once(self) -> int:
        """One pass; it finishes what it starts, so it returns 0 and ``drain()`` is one pass."""
        report = await self.purge()
        if report.purged or report.failed:
            log.info("retention purge: %s", report)
        return 0
