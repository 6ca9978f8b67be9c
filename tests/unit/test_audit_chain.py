"""The audit log's hash chain: every field is covered, and the first broken record is named."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from domain import events
from domain.audit import GENESIS_HASH, AuditActor, AuditEntry, ChainHead, verify_chain
from domain.errors import InvalidValue

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
CHAINED = ("seq", "prev_hash", "hash")


def chained(count: int) -> list[AuditEntry]:
    entries, prev = [], GENESIS_HASH
    for n in range(count):
        entry = AuditEntry.record(
            actor=AuditActor("ops@platform", "ops_admin", f"req-{n}", "203.0.113.7"),
            action="play_recording",
            reason="ticket 4711",
            now=T0 + timedelta(seconds=n),
            org_id="acme",
            call_id=f"call-{n}",
            call_kind="customer",
        )
        entry.seal(seq=n + 1, prev_hash=prev)
        assert entry.hash is not None
        entries.append(entry)
        prev = entry.hash
    return entries


def test_sealing_publishes_the_new_head_with_the_record() -> None:
    [first, second] = chained(2)
    assert second.prev_hash == first.hash
    appended = [e for e in second.events if isinstance(e, events.AuditEntryAppended)]
    assert [(e.seq, e.hash, e.prev_hash, e.reason) for e in appended] == [
        (2, second.hash, first.hash, "ticket 4711")
    ]
    assert verify_chain(chained(3)).broken is None


@pytest.mark.parametrize(
    "name",
    [f.name for f in dataclasses.fields(AuditEntry) if f.name not in (*CHAINED, "events")],
)
def test_editing_any_field_of_a_middle_record_breaks_the_chain_there(name: str) -> None:
    entries = chained(3)
    value = getattr(entries[1], name)
    edited = value + timedelta(microseconds=1) if isinstance(value, datetime) else f"{value}!"
    setattr(entries[1], name, edited)
    report = verify_chain(entries)
    assert report.broken is not None and report.broken.entry_id == entries[1].id


def test_a_published_head_the_log_does_not_reach_or_hold_is_a_break() -> None:
    entries = chained(3)
    assert entries[2].hash is not None
    head = ChainHead(3, entries[2].hash)
    assert verify_chain(entries, published=head).broken is None
    truncated = verify_chain(entries[:2], published=head).broken
    assert truncated is not None and "truncated" in truncated.problem
    rewritten = verify_chain(entries, published=ChainHead(3, "f" * 64)).broken
    assert rewritten is not None and "rewritten" in rewritten.problem


def test_the_operations_team_needs_a_reason_and_nobody_else_does() -> None:
    with pytest.raises(InvalidValue, match="reason"):
        AuditEntry.record(actor=AuditActor("ops", "ops_admin"), action="list_calls", now=T0, org_id=None)
    member = AuditEntry.record(
        actor=AuditActor("m", "member"), action="play_recording", now=T0, org_id="acme"
    )
    assert member.reason is None and member.events == []  # the chain head comes when it is appended
