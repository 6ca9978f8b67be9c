"""erasure_requests; organizations.keep_non_engagement

Revision ID: 0019
Revises: 0017
(After 0015 the chain runs 0018, 0020, 0016, 0017, 0019: numbered as planned, chained as they landed.)
Create Date: 2026-11-29 06:00:00.000000

An erasure request is worked through asynchronously (it finds the caller's calls by the index of
migration 0020). An org keeps the recordings of calls the scorability filter marks non-engagement
unless it says otherwise.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("keep_non_engagement", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.create_table(
        "erasure_requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("caller_number", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("erased_call_ids", sa.Text(), nullable=False),
        sa.Column("held_call_ids", sa.Text(), nullable=False),
        sa.Column("recordings_purged", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasure_requests")),
    )
    op.create_index("ix_erasure_requests_org", "erasure_requests", ["org_id", "requested_at"])


def downgrade() -> None:
    op.drop_index("ix_erasure_requests_org", table_name="erasure_requests")
    op.drop_table("erasure_requests")
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_column("keep_non_engagement")
