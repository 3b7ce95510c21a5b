"""platform_grants: which platform identities a poster lets lock escrow from its funding account
(issue 9, finding 2)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 18:55:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import saferun.storage.schema

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "platform_grants",
        sa.Column("poster_id", sa.String(length=200), nullable=False),
        sa.Column("platform_id", sa.String(length=200), nullable=False),
        sa.Column("granted_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["poster_id"], ["identities.identity_id"], name=op.f("fk_platform_grants_poster_id_identities")
        ),
        sa.ForeignKeyConstraint(
            ["platform_id"],
            ["identities.identity_id"],
            name=op.f("fk_platform_grants_platform_id_identities"),
        ),
        sa.PrimaryKeyConstraint("poster_id", "platform_id", name=op.f("pk_platform_grants")),
    )


def downgrade() -> None:
    op.drop_table("platform_grants")
