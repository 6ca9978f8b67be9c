"""data lifecycle: purged recordings, legal hold on calls, the org's retention policy

Revision ID: 0017
Revises: 0015
Create Date: 2026-11-29 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from adapters.sqlalchemy.tables import UTCDateTime

revision: str = "0017"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retention_days", sa.Integer(), nullable=True))
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("legal_hold_held_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("legal_hold_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("legal_hold_held_at", UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purged_at", UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("purge_reason", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("audio_deleted_at", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_column("audio_deleted_at")
        batch_op.drop_column("purge_reason")
        batch_op.drop_column("purged_at")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("legal_hold_held_at")
        batch_op.drop_column("legal_hold_reason")
        batch_op.drop_column("legal_hold_held_by")
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_column("retention_days")
