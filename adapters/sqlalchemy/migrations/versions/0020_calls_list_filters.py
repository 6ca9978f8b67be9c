"""calls: the non-engagement verdict at settling, and the caller filter as a range of an index

Revision ID: 0020
Revises: 0018
Create Date: 2026-11-29 06:00:00.000000

``non_engagement_reason`` is what ``CallSettled`` said (``instant_hangup``, ``silent_recording``, the
scorability verdict): the Calls page's "hide non-engagement" filter reads it. Calls settled before
this revision have none; their scorability verdict (``scorable``) still hides them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("non_engagement_reason", sa.String(length=200), nullable=True))
    op.create_index(
        "ix_calls_org_kind_from_started", "calls", ["org_id", "kind", "from_number", "started_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_calls_org_kind_from_started", table_name="calls")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("non_engagement_reason")
