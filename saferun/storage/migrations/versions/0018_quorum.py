"""M-of-N quorum (issue 16, item 2): identities' team and groups, a request's quorum rule, its votes

- ``identities.team``: for a quorum's "different teams" rule (NULL: no team);
- ``identity_groups``: which groups an identity is in (the groups that vote);
- ``approval_requests.quorum``: the rule a request is decided by (NULL: one person decides, as before);
- ``approval_votes``: one row per vote, unique per (request, voter), bound to the audit chain.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 21:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import saferun.storage.schema
from saferun.storage.schema import JSONType

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("identities") as batch:
        batch.add_column(sa.Column("team", sa.String(100), nullable=True))
    with op.batch_alter_table("approval_requests") as batch:
        batch.add_column(sa.Column("quorum", JSONType, nullable=True))
    op.create_table(
        "identity_groups",
        sa.Column("group_name", sa.String(length=100), nullable=False),
        sa.Column("identity_id", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.identity_id"],
            name=op.f("fk_identity_groups_identity_id_identities"),
        ),
        sa.PrimaryKeyConstraint("group_name", "identity_id", name=op.f("pk_identity_groups")),
    )
    op.create_index("ix_identity_groups_identity", "identity_groups", ["identity_id"])
    op.create_table(
        "approval_votes",
        sa.Column("vote_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("voter", sa.String(length=200), nullable=False),
        sa.Column("vote", sa.String(length=16), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("team", sa.String(length=100), nullable=True),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["approval_requests.request_id"],
            name=op.f("fk_approval_votes_request_id_approval_requests"),
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.workflow_id"], name=op.f("fk_approval_votes_workflow_id_workflows")
        ),
        sa.PrimaryKeyConstraint("vote_id", name=op.f("pk_approval_votes")),
        sa.UniqueConstraint("request_id", "voter", name=op.f("uq_approval_votes_request_id_voter")),
    )
    op.create_index(op.f("ix_approval_votes_workflow_id"), "approval_votes", ["workflow_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_approval_votes_workflow_id"), table_name="approval_votes")
    op.drop_table("approval_votes")
    op.drop_index("ix_identity_groups_identity", table_name="identity_groups")
    op.drop_table("identity_groups")
    with op.batch_alter_table("approval_requests") as batch:
        batch.drop_column("quorum")
    with op.batch_alter_table("identities") as batch:
        batch.drop_column("team")
