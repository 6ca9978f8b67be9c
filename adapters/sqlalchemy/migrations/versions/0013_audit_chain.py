"""audit log of every access and change, hash-chained

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from adapters.sqlalchemy.tables import UTCDateTime
from domain.audit import GENESIS_HASH, AuditEntry

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEGACY = sa.table(
    "audit_log",
    sa.column("id", sa.String),
    sa.column("occurred_at", UTCDateTime(timezone=True)),
    sa.column("actor", sa.String),
    sa.column("actor_role", sa.String),
    sa.column("action", sa.String),
    sa.column("reason", sa.Text),
    sa.column("org_id", sa.String),
    sa.column("call_id", sa.String),
    sa.column("call_kind", sa.String),
    sa.column("seq", sa.BigInteger),
    sa.column("prev_hash", sa.String),
    sa.column("hash", sa.String),
    sa.column("outcome", sa.String),
)


def _chain_existing_entries() -> None:
    """The operations team's accesses logged before the chain: chained in the order they happened."""
    bind = op.get_bind()
    rows = bind.execute(sa.select(_LEGACY).order_by(_LEGACY.c.occurred_at, _LEGACY.c.id)).all()
    prev_hash = GENESIS_HASH
    for seq, row in enumerate(rows, start=1):
        m = row._mapping
        entry = AuditEntry(
            id=m["id"],
            actor=m["actor"],
            actor_role=m["actor_role"],
            action=m["action"],
            reason=m["reason"],
            occurred_at=m["occurred_at"],
            org_id=m["org_id"],
            call_id=m["call_id"],
            call_kind=m["call_kind"],
        )
        entry.seal(seq=seq, prev_hash=prev_hash)
        bind.execute(
            sa.update(_LEGACY)
            .where(_LEGACY.c.id == entry.id)
            .values(seq=seq, prev_hash=prev_hash, hash=entry.hash, outcome=entry.outcome)
        )
        assert entry.hash is not None
        prev_hash = entry.hash


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("target_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("request_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("source_address", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("outcome", sa.String(length=16), nullable=True))
        batch_op.alter_column("reason", existing_type=sa.Text(), nullable=True)
    _chain_existing_entries()
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("outcome", existing_type=sa.String(length=16), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_audit_log_seq"), ["seq"])


def downgrade() -> None:
    # Entries of the org's own users and of changes have no reason: they go with the chain.
    op.execute("DELETE FROM audit_log WHERE reason IS NULL")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_audit_log_seq"), type_="unique")
        batch_op.alter_column("reason", existing_type=sa.Text(), nullable=False)
        for column in ("outcome", "source_address", "request_id", "target_id", "hash", "prev_hash", "seq"):
            batch_op.drop_column(column)
