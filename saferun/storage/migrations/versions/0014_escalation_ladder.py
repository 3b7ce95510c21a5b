"""approval_requests.escalation_step / next_escalation_at: escalation ladders (issue 16, item 3)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 19:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from saferun.storage.schema import UTCDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.add_column(sa.Column("escalation_step", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_escalation_at", UTCDateTime(), nullable=True))
    op.create_index("ix_approval_requests_escalation", "approval_requests", ["next_escalation_at"])


def downgrade() -> None:
    op.drop_index("ix_approval_requests_escalation", table_name="approval_requests")
    with op.batch_alter_table("approval_requests") as batch:
        batch.drop_column("next_escalation_at")
        batch.drop_column("escalation_step")
