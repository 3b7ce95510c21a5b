"""notifications: notices written with the change they announce, their deliveries, decision links, e-mails

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import saferun.storage.schema

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.Column("dispatched_at", saferun.storage.schema.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["approval_requests.request_id"],
            name=op.f("fk_notifications_request_id_approval_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("request_id", "kind", name=op.f("uq_notifications_request_id_kind")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notifications_dispatched_at"), ["dispatched_at"], unique=False)

    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=2000), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.Column("delivered_at", saferun.storage.schema.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_notification_deliveries_notification_id_notifications"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
        sa.UniqueConstraint(
            "notification_id",
            "channel",
            "target",
            name=op.f("uq_notification_deliveries_notification_id_channel_target"),
        ),
    )
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_notification_deliveries_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_notification_deliveries_notification_id"), ["notification_id"], unique=False
        )

    op.create_table(
        "decision_links",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("supervisor_id", sa.String(length=200), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.Column("expires_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.Column("used_at", saferun.storage.schema.UTCDateTime(), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["notification_deliveries.id"],
            name=op.f("fk_decision_links_delivery_id_notification_deliveries"),
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["approval_requests.request_id"],
            name=op.f("fk_decision_links_request_id_approval_requests"),
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_decision_links")),
    )
    with op.batch_alter_table("decision_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_decision_links_delivery_id"), ["delivery_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_decision_links_request_id"), ["request_id"], unique=False)

    op.create_table(
        "identity_emails",
        sa.Column("identity_id", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("updated_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identities.identity_id"],
            name=op.f("fk_identity_emails_identity_id_identities"),
        ),
        sa.PrimaryKeyConstraint("identity_id", name=op.f("pk_identity_emails")),
    )


def downgrade() -> None:
    op.drop_table("identity_emails")
    with op.batch_alter_table("decision_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_decision_links_request_id"))
        batch_op.drop_index(batch_op.f("ix_decision_links_delivery_id"))
    op.drop_table("decision_links")
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notification_deliveries_notification_id"))
        batch_op.drop_index("ix_notification_deliveries_due")
    op.drop_table("notification_deliveries")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifications_dispatched_at"))
    op.drop_table("notifications")
