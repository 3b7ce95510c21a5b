"""Indexes for every list query, and approval_requests.risk_level for the queue's risk filter (issue 12)

The pending queue is read soonest-expiry first by keyset (status, expires_at, request_id), optionally for
one assignee or one risk level; workflows newest first by (created_at, workflow_id), optionally of one
state. ``ix_approval_requests_pending_expiry`` (status, expires_at) is a prefix of the new queue index and
is dropped. ``risk_level`` is backfilled from each request's ``risk`` by the same rule the engine uses.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 18:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.add_column(sa.Column("risk_level", sa.String(16), nullable=True))
    _backfill_risk_level()
    op.drop_index("ix_approval_requests_pending_expiry", table_name="approval_requests")
    op.create_index("ix_approval_requests_queue", "approval_requests", ["status", "expires_at", "request_id"])
    op.create_index(
        "ix_approval_requests_assigned_queue",
        "approval_requests",
        ["status", "supervisor_id", "expires_at", "request_id"],
    )
    op.create_index(
        "ix_approval_requests_risk_queue",
        "approval_requests",
        ["status", "risk_level", "expires_at", "request_id"],
    )
    op.create_index("ix_workflows_created", "workflows", ["created_at", "workflow_id"])
    op.create_index("ix_workflows_state_created", "workflows", ["state", "created_at", "workflow_id"])


def _backfill_risk_level() -> None:
    from saferun.domain.recommendation import risk_level
    from saferun.errors import InvalidInput

    bind = op.get_bind()
    table = sa.table(
        "approval_requests",
        sa.column("request_id", sa.String),
        sa.column("risk", sa.JSON),
        sa.column("risk_level", sa.String),
    )
    updates = []
    for request_id, risk in bind.execute(sa.select(table.c.request_id, table.c.risk)):
        try:
            level = risk_level(risk if isinstance(risk, dict) else None)
        except InvalidInput:  # a score out of range was stored before it was checked: no level
            level = None
        if level is not None:
            updates.append({"b_id": request_id, "risk_level": level})
    if updates:
        bind.execute(
            sa.update(table).where(table.c.request_id == sa.bindparam("b_id")),
            updates,
        )


def downgrade() -> None:
    op.drop_index("ix_workflows_state_created", table_name="workflows")
    op.drop_index("ix_workflows_created", table_name="workflows")
    op.drop_index("ix_approval_requests_risk_queue", table_name="approval_requests")
    op.drop_index("ix_approval_requests_assigned_queue", table_name="approval_requests")
    op.drop_index("ix_approval_requests_queue", table_name="approval_requests")
    op.create_index("ix_approval_requests_pending_expiry", "approval_requests", ["status", "expires_at"])
    with op.batch_alter_table("approval_requests") as batch:
        batch.drop_column("risk_level")
