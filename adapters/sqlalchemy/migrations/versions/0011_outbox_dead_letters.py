"""outbox dead letters; calls' from/to wide enough for SIP and client addresses

The in-process relay stops retrying a message after a bounded number of attempts (``dead_at``).
Twilio's From/To may be ``sip:…`` or ``client:…`` addresses longer than an E.164 number.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import adapters.sqlalchemy.tables

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("dead_at", adapters.sqlalchemy.tables.UTCDateTime(timezone=True)))
    with op.batch_alter_table("calls") as batch:
        for column in ("from_number", "to_number"):
            batch.alter_column(
                column, type_=sa.String(255), existing_type=sa.String(32), existing_nullable=False
            )


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        for column in ("from_number", "to_number"):
            batch.alter_column(
                column, type_=sa.String(32), existing_type=sa.String(255), existing_nullable=False
            )
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("dead_at")
