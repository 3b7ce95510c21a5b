"""workflows.audit_seq / audit_head: the audit chain's anchor (issue 10, item 8)

Backfilled from the events already stored, so existing chains are anchored from now on.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 20:05:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workflows") as batch:
        batch.add_column(sa.Column("audit_seq", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("audit_head", sa.String(64), nullable=True))
    op.execute(
        "UPDATE workflows SET "
        "audit_seq = COALESCE((SELECT MAX(e.seq) FROM audit_events e "
        "WHERE e.workflow_id = workflows.workflow_id), 0), "
        "audit_head = (SELECT e.hash FROM audit_events e WHERE e.workflow_id = workflows.workflow_id "
        "ORDER BY e.seq DESC LIMIT 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table("workflows") as batch:
        batch.drop_column("audit_head")
        batch.drop_column("audit_seq")
