"""approval_responses.review_digest: the digest of what the decider was shown (issue 16, item 1)

Nullable: decisions made before this revision, and decisions no human made (a timeout, a cancellation,
a policy's own), have none.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 19:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approval_responses") as batch:
        batch.add_column(sa.Column("review_digest", sa.String(80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approval_responses") as batch:
        batch.drop_column("review_digest")
