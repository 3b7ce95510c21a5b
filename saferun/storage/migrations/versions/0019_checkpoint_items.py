"""approval_requests.group_id / item_key: several pending requests at one checkpoint (issue 14 item 3)

A checkpoint pause may open N requests ("items", e.g. parallel tool calls or a LangGraph step's several
interrupts) sharing one snapshot: ``group_id`` names the group, ``item_key`` the item's stable identity
(a tool-call id, an interrupt id). Both NULL on a single-request checkpoint (a group of one), so rows
written before this revision read as they always did. The index finds a group's siblings.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 21:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.add_column(sa.Column("group_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("item_key", sa.String(200), nullable=True))
        batch.create_index("ix_approval_requests_group", ["group_id"])


def downgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.drop_index("ix_approval_requests_group")
        batch.drop_column("item_key")
        batch.drop_column("group_id")
