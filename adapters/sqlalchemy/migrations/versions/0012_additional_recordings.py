"""additional recordings: several recordings per call, and why one was discarded

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28 22:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("discard_reason", sa.String(length=32), nullable=True))
        batch_op.drop_constraint(batch_op.f("uq_recordings_call_id"), type_="unique")
        batch_op.create_index(batch_op.f("ix_recordings_call_id"), ["call_id"], unique=False)


def downgrade() -> None:
    # Only possible while no call has more than one recording.
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recordings_call_id"))
        batch_op.create_unique_constraint(batch_op.f("uq_recordings_call_id"), ["call_id"])
        batch_op.drop_column("discard_reason")
