"""calls.recording_state: the list's recording filter as a range of an index

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29 04:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ENDED = ("completed", "busy", "failed", "no-answer", "canceled")

# What application.views.recording_view said of each call's recording when this was written.
_BACKFILL = f"""
UPDATE calls SET recording_state = CASE
    WHEN NOT calls.recorded THEN 'not_recorded'
    ELSE coalesce(
        (SELECT CASE
            WHEN r.status IN ('archived', 'twilio_deleted') AND r.storage_key IS NOT NULL THEN 'available'
            WHEN r.status = 'absent' THEN 'not_recorded'
            WHEN r.status = 'failed' THEN 'failed'
            ELSE 'processing' END
         FROM recordings r WHERE r.id = calls.recording_id),
        CASE WHEN calls.status IN ({", ".join(f"'{s}'" for s in _ENDED)}) THEN 'not_recorded'
             ELSE 'processing' END)
END
"""


def upgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recording_state", sa.String(length=16), nullable=True))
    op.execute(_BACKFILL)
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.alter_column("recording_state", existing_type=sa.String(length=16), nullable=False)
        batch_op.create_index(
            "ix_calls_org_kind_recording_state",
            ["org_id", "kind", "recording_state", "started_at", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index("ix_calls_org_kind_recording_state")
        batch_op.drop_column("recording_state")
