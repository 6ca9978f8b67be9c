"""``callrec audit verify``: walk the audit log's hash chain and name the first broken record.

Exit 0 when every record matches its hash and follows the one before it, and the log reaches the
newest chain head published on ``callrec.audit.v1`` (the one in the outbox, or ``--head SEQ:HASH``
as a subscriber received it); 1 naming the first record that was edited, removed or reordered, or
the published head a truncated log no longer reaches.
"""

from __future__ import annotations

import sys

from adapters.sqlalchemy.audit import published_head, read_chain
from adapters.sqlalchemy.engine import create_engine
from domain.audit import ChainHead, verify_chain
from entrypoints.config import Settings


def parse_head(value: str) -> ChainHead:
    """``SEQ:HASH`` (a head as ``AuditEntryAppended`` carried it) → ``ChainHead``."""
    seq, sep, digest = value.partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64:
        raise ValueError(f"--head {value!r} is not SEQ:SHA256-HEX")
    return ChainHead(int(seq), digest.lower())


async def verify_audit_log(settings: Settings, *, head: ChainHead | None = None) -> int:
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            entries = [entry async for entry in read_chain(conn)]
            published = head or await published_head(conn)
    finally:
        await engine.dispose()
    report = verify_chain(entries, published=published)
    if report.broken is not None:
        print(f"audit log broken at {report.broken}", file=sys.stderr)
        return 1
    tip = f"head seq {report.head.seq} sha256 {report.head.hash}" if report.head else "empty"
    against = f"; reaches the published head seq {published.seq}" if published else ""
    print(f"audit log intact: {report.count} records, {tip}{against}")
    return 0
