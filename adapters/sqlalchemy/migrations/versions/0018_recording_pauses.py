"""recordings: their pauses (sensitive moments) and when the pause in force began

Revision ID: 0018
Revises: 0015
Create Date: 2026-11-29 06:00:00.000000

``pauses`` is a JSON list of intervals, read and written with its recording (a handful per
recording); ``paused_since`` (indexed) is when the open one began, so the automatic resume finds
the recordings paused too long without reading the others.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from adapters.sqlalchemy.tables import UTCDateTime

revision: str = "0018"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pauses", sa.Text(), server_default=sa.text("'[]'"), nullable=False))
        batch_op.add_column(sa.Column("paused_since", UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_recordings_paused_since"), ["paused_since"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recordings_paused_since"))
        batch_op.drop_column("paused_since")
        batch_op.drop_column("pauses")
