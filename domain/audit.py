"""The audit log: every access to recordings and every change of an org's settings, hash-chained.

An entry is recorded (``AuditEntry.record``) without its place in the chain; the persistence adapter
appends it under a lock at commit time (``AuditEntry.seal``): the next ``seq``, the previous entry's
hash, and its own hash, the SHA-256 of its canonical encoding (which includes the previous hash).
Editing, removing or reordering an entry therefore breaks the chain at that entry, and
``verify_chain`` names it. Never holds a token, secret or signed URL: only who, what, which call,
why, from where, and how it went.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from domain.errors import InvalidValue
from domain.events import AuditEntryAppended, Event, PrivilegedAccessRecorded
from domain.model import new_id

# Accesses to recordings (and listings of calls by the operations team) ...
ACCESS_ACTIONS = ("list_calls", "play_recording", "download_recording", "webhook_recording_url")
# ... and changes of an org's settings.
CHANGE_ACTIONS = (
    "turn_recording_on",
    "turn_recording_off",
    "create_webhook_endpoint",
    "rotate_webhook_secret",
    "delete_webhook_endpoint",
    "set_number_recording_on",
    "set_number_recording_off",
    "set_number_recording_inherit",
    "pause_recording",
    "resume_recording",
    "set_retention",
    "purge_recording",
    "place_legal_hold",
    "release_legal_hold",
    # Erasure by caller and the policy for filtered calls.
    "request_erasure",
    "erase_caller_data",
    "keep_filtered_recordings",
    "delete_filtered_recordings",
)
ACTIONS = ACCESS_ACTIONS + CHANGE_ACTIONS
OPERATIONS_ROLE = "ops_admin"  # the platform's operations team: every access needs a reason
SYSTEM_ROLE = "system"  # the service itself (a webhook delivery, a platform call)
GENESIS_HASH = "0" * 64  # the "previous hash" of the first entry
CANONICAL_VERSION = 1


@dataclass(frozen=True)
class AuditActor:
    """Who acts, and where the request came from (``request_id``, ``source_address``)."""

    sub: str
    role: str
    request_id: str | None = None
    source_address: str | None = None


@dataclass
class AuditEntry:
    """One audited access or change. Appended once; never changed afterwards."""

    id: str
    actor: str
    actor_role: str
    action: str
    reason: str | None
    occurred_at: datetime
    org_id: str | None  # the org whose data was accessed or changed; None for the platform's own lines
    call_id: str | None = None
    call_kind: str | None = None
    target_id: str | None = None  # the webhook endpoint concerned, if any
    request_id: str | None = None
    source_address: str | None = None
    outcome: str = "granted"  # granted (an access) | succeeded (a change)
    seq: int | None = None  # the place in the chain, from 1; set when appended
    prev_hash: str | None = None
    hash: str | None = None
    events: list[Event] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def record(
        cls,
        *,
        actor: str | AuditActor,
        action: str,
        now: datetime,
        org_id: str | None,
        actor_role: str | None = None,
        reason: str | None = None,
        call_id: str | None = None,
        call_kind: str | None = None,
        target_id: str | None = None,
    ) -> AuditEntry:
        who = actor if isinstance(actor, AuditActor) else AuditActor(actor, actor_role or SYSTEM_ROLE)
        if action not in ACTIONS:
            raise InvalidValue(f"unknown audited action {action!r}")
        reason = reason.strip() if reason is not None else None
        if who.role == OPERATIONS_ROLE and not reason:
            raise InvalidValue("a privileged access needs a reason")
        entry = cls(
            id=new_id(),
            actor=who.sub,
            actor_role=who.role,
            action=action,
            reason=reason or None,
            occurred_at=now,
            org_id=org_id,
            call_id=call_id,
            call_kind=call_kind,
            target_id=target_id,
            request_id=who.request_id,
            source_address=who.source_address,
            outcome="granted" if action in ACCESS_ACTIONS else "succeeded",
        )
        if who.role == OPERATIONS_ROLE:
            entry.events.append(
                PrivilegedAccessRecorded(
                    occurred_at=now,
                    org_id=org_id,
                    audit_id=entry.id,
                    actor=who.sub,
                    actor_role=who.role,
                    action=action,
                    reason=entry.reason or "",
                    call_id=call_id,
                    call_kind=call_kind,
                )
            )
        return entry

    def seal(self, *, seq: int, prev_hash: str) -> None:
        """Take place ``seq`` in the chain after the entry whose hash is ``prev_hash``.

        Records ``AuditEntryAppended``, the new head of the chain, for ``callrec.audit.v1``.
        """
        if self.seq is not None:
            raise InvalidValue(f"audit entry {self.id} is already in the chain")
        self.seq, self.prev_hash = seq, prev_hash
        self.hash = entry_hash(self)
        self.events.append(
            AuditEntryAppended(
                occurred_at=self.occurred_at,
                org_id=self.org_id,
                audit_id=self.id,
                seq=seq,
                hash=self.hash,
                prev_hash=prev_hash,
                actor=self.actor,
                actor_role=self.actor_role,
                action=self.action,
                reason=self.reason,
                call_id=self.call_id,
                call_kind=self.call_kind,
                target_id=self.target_id,
                request_id=self.request_id,
                source_address=self.source_address,
                outcome=self.outcome,
            )
        )


def canonical_encoding(entry: AuditEntry) -> bytes:
    """The bytes an entry's hash covers: every field but the hash itself, as sorted, compact JSON.

    Timestamps are UTC microseconds, so the encoding does not depend on how a database returns them.
    """
    stamp = entry.occurred_at.astimezone(UTC)
    fields = {
        "v": CANONICAL_VERSION,
        "seq": entry.seq,
        "prev_hash": entry.prev_hash,
        "id": entry.id,
        "occurred_at": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": entry.actor,
        "actor_role": entry.actor_role,
        "action": entry.action,
        "reason": entry.reason,
        "org_id": entry.org_id,
        "call_id": entry.call_id,
        "call_kind": entry.call_kind,
        "target_id": entry.target_id,
        "request_id": entry.request_id,
        "source_address": entry.source_address,
        "outcome": entry.outcome,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: AuditEntry) -> str:
    return hashlib.sha256(canonical_encoding(entry)).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str


@dataclass(frozen=True)
class ChainBreak:
    """Where the chain stops being what was appended: the first entry that cannot be trusted."""

    seq: int | None
    entry_id: str | None
    problem: str

    def __str__(self) -> str:
        where = f"record {self.entry_id} (seq {self.seq})" if self.entry_id else f"seq {self.seq}"
        return f"{where}: {self.problem}"


@dataclass(frozen=True)
class ChainReport:
    count: int
    head: ChainHead | None
    broken: ChainBreak | None


def verify_chain(entries: Iterable[AuditEntry], *, published: ChainHead | None = None) -> ChainReport:
    """Walk the entries in ``seq`` order and find the first edited, removed or reordered one.

    - an edited entry no longer matches its own hash;
    - a removed entry leaves a gap in ``seq``, and the next entry's ``prev_hash`` names a hash that
      is not the one before it;
    - swapped entries are out of ``seq`` order or each name the wrong predecessor.
    ``published`` is a head announced on ``callrec.audit.v1``: a chain that ends before it, or holds
    another hash at its ``seq``, lost its tail.
    """
    count, prev_hash, expected_seq = 0, GENESIS_HASH, 1
    head: ChainHead | None = None
    published_hash: str | None = None  # what the chain holds at the published head's seq
    for entry in entries:
        count += 1
        if entry.seq != expected_seq:
            problem = (
                f"expected seq {expected_seq}: records before it were removed"
                if entry.seq is not None and entry.seq > expected_seq
                else f"expected seq {expected_seq}: out of order"
            )
            return ChainReport(count, head, ChainBreak(entry.seq, entry.id, problem))
        if entry.prev_hash != prev_hash:
            problem = "does not follow the record before it (removed or reordered)"
            return ChainReport(count, head, ChainBreak(entry.seq, entry.id, problem))
        if entry.hash != entry_hash(entry):
            return ChainReport(
                count, head, ChainBreak(entry.seq, entry.id, "edited: its hash does not match")
            )
        prev_hash, expected_seq = entry.hash, expected_seq + 1
        head = ChainHead(entry.seq, entry.hash)
        if published is not None and entry.seq == published.seq:
            published_hash = entry.hash
    if published is not None:
        if head is None or head.seq < published.seq:
            last = head.seq if head else 0
            problem = f"the log ends at seq {last}, before the published head {published.seq}: truncated"
            return ChainReport(count, head, ChainBreak(published.seq, None, problem))
        if published_hash != published.hash:
            # Every entry is linked to the one before, so a rewritten log differs here too.
            problem = "differs from the published head: the log was rewritten"
            return ChainReport(count, head, ChainBreak(published.seq, None, problem))
    return ChainReport(count, head, None)
