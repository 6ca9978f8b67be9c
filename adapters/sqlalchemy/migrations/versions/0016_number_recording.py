"""organizations: each number's own recording setting (on, off or inherit) and who set it, when

Revision ID: 0016
Revises: 0020
Create Date: 2026-11-29 06:00:00.000000

A JSON object keyed by number; a number without an entry inherits the org toggle, so every existing
org records exactly as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("number_recording", sa.Text(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("number_recording")
