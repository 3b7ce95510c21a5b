"""remote x402 platform: transactional outbox and the platform each workflow's money lives on

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 08:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import saferun.storage.schema

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("platform_url", sa.String(length=500), nullable=True))
    op.create_table(
        "platform_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("arguments", _json(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", _json(), nullable=True),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.Column("delivered_at", saferun.storage.schema.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_outbox")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_platform_outbox_idempotency_key")),
    )
    with op.batch_alter_table("platform_outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_platform_outbox_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_platform_outbox_workflow_id"), ["workflow_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("platform_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_platform_outbox_workflow_id"))
        batch_op.drop_index(batch_op.f("ix_platform_outbox_status"))
    op.drop_table("platform_outbox")
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_column("platform_url")
