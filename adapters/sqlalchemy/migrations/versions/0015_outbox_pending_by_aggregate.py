"""outbox: pending rows indexed by aggregate, for the relay's in-order check

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29 04:45:00.000000

The relay takes an event only when no earlier event of its aggregate is still pending. Without this
index that check read every pending row for each candidate, so a backlog (a Kafka outage, a killed
worker) made each claim cost grow with the square of the backlog.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("published_at IS NULL AND dead_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_outbox_pending_by_aggregate",
        "outbox",
        ["aggregate_id", "seq"],
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_pending_by_aggregate", table_name="outbox")
