"""The operations team's access is audited first: no audit log entry, no access."""

from __future__ import annotations

import pytest

from application import operator_access, views
from application.messagebus import MessageBus
from application.operator_access import AuditUnavailable, Operator
from application.services import Services
from domain.model import CallKind
from tests.fakes import FakeClock, FakeTelephony, InMemoryRecordingStore, make_services
from tests.support.database import Database
from tests.unit.test_handlers import ACME, MEMBER, archived_call, given_org, sid

OPS = Operator("ops@callrec", "ops_admin")


@pytest.fixture
def svc(db: Database, clock: FakeClock, telephony: FakeTelephony, store: InMemoryRecordingStore) -> Services:
    return make_services(db=db, clock=clock, telephony=telephony, store=store)


async def list_support_calls(svc: Services) -> None:
    await operator_access.list_calls(
        svc, OPS, kind=CallKind.SUPPORT, org_id=None, limit=10, after=None, reason="a complaint"
    )


async def test_an_access_is_in_the_audit_log_before_anything_is_shown(svc: Services, db: Database) -> None:
    await list_support_calls(svc)

    # The entry's events, committed with it: the access, and the new head of the audit chain.
    assert sorted(m.type for m in await db.unpublished()) == [
        "AuditEntryAppended",
        "PrivilegedAccessRecorded",
    ]


async def test_an_access_the_audit_log_cannot_record_is_refused(svc: Services, db: Database) -> None:
    await db.make_audit_log_unwritable()

    with pytest.raises(AuditUnavailable):
        await list_support_calls(svc)
    assert await db.unpublished() == []


@pytest.mark.parametrize("operations", [True, False])
async def test_no_playback_url_is_minted_when_the_audit_log_cannot_record_the_access(
    svc: Services, db: Database, telephony: FakeTelephony, store: InMemoryRecordingStore, operations: bool
) -> None:
    bus = MessageBus(svc)
    await given_org(bus, recording=True)
    call = await archived_call(bus, svc, telephony, sid(1))
    await db.make_audit_log_unwritable()

    with pytest.raises(AuditUnavailable):
        if operations:
            await operator_access.recording_url(
                svc, OPS, call_id=call.call_id, reason="a dispute", download=False
            )
        else:
            await views.recording_url(
                svc,
                actor=MEMBER,
                org_id=ACME,
                call_id=call.call_id,
                kinds=(CallKind.CUSTOMER,),
                download=False,
            )
    assert store.issued_urls == []
