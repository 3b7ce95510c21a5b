"""langgraph checkpoints: SafeRun as a LangGraph checkpointer (checkpoints, channel versions, writes)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 16:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BLOB = sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "lg_checkpoints",
        sa.Column("thread_id", sa.String(length=255), nullable=False),
        sa.Column("checkpoint_ns", sa.String(length=255), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=64), nullable=False),
        sa.Column("parent_checkpoint_id", sa.String(length=64), nullable=True),
        sa.Column("run_id", sa.String(length=255), nullable=True),
        sa.Column("checkpoint_type", sa.String(length=32), nullable=False),
        sa.Column("checkpoint", _BLOB, nullable=False),
        sa.Column("metadata_type", sa.String(length=32), nullable=False),
        sa.Column("metadata", _BLOB, nullable=False),
        sa.PrimaryKeyConstraint(
            "thread_id", "checkpoint_ns", "checkpoint_id", name=op.f("pk_lg_checkpoints")
        ),
    )
    op.create_index(op.f("ix_lg_checkpoints_run_id"), "lg_checkpoints", ["run_id"], unique=False)
    op.create_table(
        "lg_blobs",
        sa.Column("thread_id", sa.String(length=255), nullable=False),
        sa.Column("checkpoint_ns", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=255), nullable=False),
        sa.Column("value_type", sa.String(length=32), nullable=False),
        sa.Column("artifact_uri", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("thread_id", "checkpoint_ns", "channel", "version", name=op.f("pk_lg_blobs")),
    )
    op.create_table(
        "lg_writes",
        sa.Column("thread_id", sa.String(length=255), nullable=False),
        sa.Column("checkpoint_ns", sa.String(length=255), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=255), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=255), nullable=False),
        sa.Column("value_type", sa.String(length=32), nullable=False),
        sa.Column("value", _BLOB, nullable=False),
        sa.Column("task_path", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx", name=op.f("pk_lg_writes")
        ),
    )


def downgrade() -> None:
    op.drop_table("lg_writes")
    op.drop_table("lg_blobs")
    op.drop_index(op.f("ix_lg_checkpoints_run_id"), table_name="lg_checkpoints")
    op.drop_table("lg_checkpoints")
