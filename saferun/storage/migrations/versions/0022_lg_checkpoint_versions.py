"""``lg_checkpoints.channel_versions``: a checkpoint's channel versions, readable by the database

The saver stores a checkpoint as LangGraph's serde bytes, which PostgreSQL cannot look into, so reading a
checkpoint took three statements there: its row, then the ``lg_blobs`` rows of the versions it names,
then its pending writes, each a round trip to the server. With the versions in a JSON column (JSONB on
PostgreSQL), one statement joins all three, as LangGraph's own PostgresSaver does
(``SafeRunSaver._fast_tuple``). Written on PostgreSQL only; NULL on SQLite (whose statements cost no round
trip) and in rows written before this revision, which are read the previous way.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from saferun.storage.schema import JSONType

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("lg_checkpoints", sa.Column("channel_versions", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lg_checkpoints") as batch:
        batch.drop_column("channel_versions")
