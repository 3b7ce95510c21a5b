"""embedded x402 platform: job history, idempotent requests, supervisor marketplace

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 07:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import saferun.storage.schema

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.job_id"], name=op.f("fk_job_events_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
    )
    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_events_job_id"), ["job_id"], unique=False)

    op.create_table(
        "platform_requests",
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response", _json(), nullable=False),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key", name=op.f("pk_platform_requests")),
    )
    op.create_table(
        "supervisor_profiles",
        sa.Column("supervisor_id", sa.String(length=200), nullable=False),
        sa.Column("specialties", _json(), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("price_per_approval_micro", sa.BigInteger(), nullable=False),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.Column("updated_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["supervisor_id"],
            ["identities.identity_id"],
            name=op.f("fk_supervisor_profiles_supervisor_id_identities"),
        ),
        sa.PrimaryKeyConstraint("supervisor_id", name=op.f("pk_supervisor_profiles")),
    )
    op.create_table(
        "supervisor_ratings",
        sa.Column("supervisor_id", sa.String(length=200), nullable=False),
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("review", sa.Text(), nullable=False),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["supervisor_id"],
            ["identities.identity_id"],
            name=op.f("fk_supervisor_ratings_supervisor_id_identities"),
        ),
        sa.PrimaryKeyConstraint("supervisor_id", "workflow_id", name=op.f("pk_supervisor_ratings")),
    )
    op.create_table(
        "approval_quality",
        sa.Column("supervisor_id", sa.String(length=200), nullable=False),
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("quality_score", sa.Float(), nullable=False),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["supervisor_id"],
            ["identities.identity_id"],
            name=op.f("fk_approval_quality_supervisor_id_identities"),
        ),
        sa.PrimaryKeyConstraint("supervisor_id", "workflow_id", name=op.f("pk_approval_quality")),
    )
    op.create_table(
        "supervisor_assignments",
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("supervisor_id", sa.String(length=200), nullable=False),
        sa.Column("assigned_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["supervisor_id"],
            ["identities.identity_id"],
            name=op.f("fk_supervisor_assignments_supervisor_id_identities"),
        ),
        sa.PrimaryKeyConstraint("workflow_id", name=op.f("pk_supervisor_assignments")),
    )
    with op.batch_alter_table("supervisor_assignments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_supervisor_assignments_supervisor_id"), ["supervisor_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("supervisor_assignments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_supervisor_assignments_supervisor_id"))
    op.drop_table("supervisor_assignments")
    op.drop_table("approval_quality")
    op.drop_table("supervisor_ratings")
    op.drop_table("supervisor_profiles")
    op.drop_table("platform_requests")
    with op.batch_alter_table("job_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_events_job_id"))
    op.drop_table("job_events")
