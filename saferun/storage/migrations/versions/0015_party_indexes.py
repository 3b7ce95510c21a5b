"""Indexes on the workflow's parties: /api/stats' active executors and supervisors, and visibility (issue 12)

``COUNT(DISTINCT executor_id)`` over the workflows that have not ended read every workflow row (their JSON
config included): seconds at 100,000 workflows. With (executor_id, state) and (supervisor_id, state) it
reads an index; poster_id joins them for the visibility rule's "mine" terms.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 19:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_workflows_executor_state", "workflows", ["executor_id", "state"])
    op.create_index("ix_workflows_supervisor_state", "workflows", ["supervisor_id", "state"])
    op.create_index("ix_workflows_poster", "workflows", ["poster_id"])


def downgrade() -> None:
    op.drop_index("ix_workflows_poster", table_name="workflows")
    op.drop_index("ix_workflows_supervisor_state", table_name="workflows")
    op.drop_index("ix_workflows_executor_state", table_name="workflows")
