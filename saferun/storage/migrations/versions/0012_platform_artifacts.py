"""platform_artifacts: which platform identity stored an artifact through /x402 (issue 9, finding 2)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 18:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import saferun.storage.schema

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "platform_artifacts",
        sa.Column("uri", sa.String(length=200), nullable=False),
        sa.Column("platform_id", sa.String(length=200), nullable=False),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uri", "platform_id", name=op.f("pk_platform_artifacts")),
    )


def downgrade() -> None:
    op.drop_table("platform_artifacts")
