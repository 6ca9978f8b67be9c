"""Erasure by caller: the request, its asynchronous work, and what an admin reads of it.

``request_erasure`` records a pending ``ErasureRequest`` (and its audit record) and answers at once;
its ``ErasureRequested`` event reaches ``process_erasure`` (consumer ``erasure.process``), which
works through the org's calls of that caller one transaction per call: a call under legal hold is
skipped and listed; any other has its recordings purged (reason ``erasure``; the ``RecordingPurged``
consumer deletes the audio from the store and Twilio), its caller number replaced by the request's
redacted form (in the call, its events in the outbox and its webhook deliveries), an audit record,
and a ``CallerDataErased`` event for the platform's services. A call still live is erased all the
same: audio that reaches our store later is purged as it settles (``purge_if_erased``). When every
call is erased or held, the request is completed and forgets the number. Running it twice changes
nothing more: a call already erased shows the redacted form, which the second run finds and leaves
alone.
"""

from __future__ import annotations

from datetime import datetime

from application import commands
from application.deletion import purge_call_audio
from application.errors import NotFound
from application.ports import UnitOfWork
from application.retry import retry_conflicts
from application.services import Services
from domain import events
from domain.audit import SYSTEM_ROLE, AuditActor, AuditEntry
from domain.erasure import REDACTED_PREFIX, ErasureRequest, is_redacted
from domain.model import PURGE_ERASURE, Call

ADMIN_ROLE = "admin"


async def request_erasure(cmd: commands.RequestErasure, svc: Services) -> ErasureRequest:
    """Record a pending erasure request of one caller's data in the org (admins), audited."""
    now = svc.clock.now()
    async with svc.uow() as uow:
        if await uow.organizations.get(cmd.org_id) is None:
            raise NotFound("organization not found")
        request = ErasureRequest.open(
            org_id=cmd.org_id,
            caller_number=cmd.caller_number,
            reason=cmd.reason,
            requested_by=cmd.actor.sub,
            now=now,
        )
        uow.erasure_requests.add(request)
        uow.audit.add(
            AuditEntry.record(
                actor=cmd.actor,
                action="request_erasure",
                reason=request.reason,
                now=now,
                org_id=cmd.org_id,
                target_id=request.id,
            )
        )
        await uow.commit()
        return request


async def get_erasure_request(svc: Services, *, org_id: str, request_id: str) -> ErasureRequest:
    """The org's erasure request; another org's is NotFound, exactly like a missing one."""
    async with svc.reader() as uow:
        request = await uow.erasure_requests.get(request_id)
    if request is None or request.org_id != org_id:
        raise NotFound("erasure request not found")
    return request


async def process_erasure(event: events.ErasureRequested, svc: Services) -> None:
    """Erase every call of the request's caller in its org, one call per transaction (see above)."""
    async with svc.reader() as uow:
        request = await uow.erasure_requests.get(event.erasure_request_id)
        if request is None or request.completed or request.caller_number is None:
            return
        numbers = [request.caller_number, request.redacted_as]
        call_ids = await uow.erasure_requests.calls_of_caller(request.org_id, numbers)
    for call_id in call_ids:
        await retry_conflicts(
            lambda call_id=call_id: _erase_call(svc, request.id, call_id),  # type: ignore[misc]
            what="erasing a call's caller data",
        )
    async with svc.uow() as uow:  # records (consumer, event id) with the completion
        request = await uow.erasure_requests.get(event.erasure_request_id)
        assert request is not None
        request.complete(svc.clock.now())
        await uow.commit()


async def _erase_call(svc: Services, request_id: str, call_id: str) -> None:
    # Not ``svc.uow()``: the consumer's (consumer, event id) is recorded only with the completion.
    async with svc.uow_factory() as uow:
        request = await uow.erasure_requests.get(request_id)
        call = await uow.calls.get(call_id)
        assert request is not None
        if call is None or call.org_id != request.org_id or request.completed:
            return
        if call_id in request.erased_call_ids and call.from_number == request.redacted_as:
            return
        if call.held:
            request.call_held(call.id)
            await uow.commit()
            return
        now = svc.clock.now()
        purged = [r.id for r in await purge_call_audio(uow, call, reason=PURGE_ERASURE, now=now)]
        original = call.from_number
        if call.redact_caller(request.redacted_as):
            await uow.erasure_requests.redact_stored_copies(call.id, original, request.redacted_as)
        request.call_erased(call_id=call.id, recording_ids=purged, now=now)
        uow.audit.add(
            AuditEntry.record(
                actor=AuditActor(request.requested_by, ADMIN_ROLE),
                action="erase_caller_data",
                reason=request.reason,
                now=now,
                org_id=call.org_id,
                call_id=call.id,
                call_kind=call.kind.value,
                target_id=request.id,
            )
        )
        await uow.commit()


async def purge_if_erased(uow: UnitOfWork, call: Call, now: datetime) -> None:
    """Audio that reaches our store after its call was erased (the call was live then) is purged as it
    settles (consumer ``calls.settle``), with an audit record, unless the call is held."""
    if call.held or not is_redacted(call.from_number):
        return
    if purged := await purge_call_audio(uow, call, reason=PURGE_ERASURE, now=now):
        uow.audit.add(
            AuditEntry.record(
                actor=AuditActor("erasure", SYSTEM_ROLE),
                action="purge_recording",
                reason=f"{PURGE_ERASURE}: audio of an erased call, {len(purged)} recording(s)",
                now=now,
                org_id=call.org_id,
                call_id=call.id,
                call_kind=call.kind.value,
                target_id=call.from_number.removeprefix(REDACTED_PREFIX)[:36],
            )
        )
