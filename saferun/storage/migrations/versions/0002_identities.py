"""identities, API keys and dashboard sessions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 05:59:26.621571
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import saferun.storage.schema

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("identity_id", sa.String(length=200), nullable=False),
        sa.Column("display_name", sa.String(length=500), nullable=False),
        sa.Column(
            "roles",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("identity_id", name=op.f("pk_identities")),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("identity_id", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.Column("last_used_at", saferun.storage.schema.UTCDateTime(), nullable=True),
        sa.Column("revoked_at", saferun.storage.schema.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.identity_id"], name=op.f("fk_api_keys_identity_id_identities")
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_identity_id"), ["identity_id"], unique=False)

    op.create_table(
        "sessions",
        sa.Column("session_id_hash", sa.String(length=64), nullable=False),
        sa.Column("identity_id", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.Column("expires_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.identity_id"], name=op.f("fk_sessions_identity_id_identities")
        ),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.key_id"], name=op.f("fk_sessions_key_id_api_keys")),
        sa.PrimaryKeyConstraint("session_id_hash", name=op.f("pk_sessions")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_identity_id"), ["identity_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_key_id"), ["key_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_key_id"))
        batch_op.drop_index(batch_op.f("ix_sessions_identity_id"))
        batch_op.drop_index(batch_op.f("ix_sessions_expires_at"))
    op.drop_table("sessions")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_identity_id"))
    op.drop_table("api_keys")
    op.drop_table("identities")
