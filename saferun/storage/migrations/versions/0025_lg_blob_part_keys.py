"""``lg_blobs.part_key``: the blob key of a channel version's part, so a read fetches it directly

A channel version's row named only its artifact, so reading a checkpoint's values took the artifacts'
manifests first (one statement, a round trip on PostgreSQL) and then the parts they list (another). The
part's key (the sha256 of its bytes, as the manifest lists it) is now on the row: a read fetches the part
by its key and checks the bytes against it, which is what reading it through the manifest established
about them; the manifest stays for the artifact's other readers (exports, garbage collection). NULL in
rows written before this revision, which are read through their manifests as before.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07 23:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("lg_blobs", sa.Column("part_key", sa.String(64), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE lg_blobs DROP COLUMN part_key")  # SQLite >= 3.35 too, keeping the table as is
