"""escrow funding through x402: the local facilitator's token ledger, settled payments, funding claims

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import saferun.storage.schema

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "x402_token_transfers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("network", sa.String(length=64), nullable=False),
        sa.Column("asset", sa.String(length=42), nullable=False),
        sa.Column("from_address", sa.String(length=42), nullable=False),
        sa.Column("to_address", sa.String(length=42), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("nonce", sa.String(length=66), nullable=True),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_x402_token_transfers")),
        sa.UniqueConstraint("tx_hash", name=op.f("uq_x402_token_transfers_tx_hash")),
        sa.UniqueConstraint(
            "network",
            "asset",
            "from_address",
            "nonce",
            name=op.f("uq_x402_token_transfers_network_asset_from_address_nonce"),
        ),
    )
    with op.batch_alter_table("x402_token_transfers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_x402_token_transfers_receiver", ["network", "asset", "to_address"], unique=False
        )

    op.create_table(
        "x402_payments",
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("network", sa.String(length=64), nullable=False),
        sa.Column("asset", sa.String(length=42), nullable=False),
        sa.Column("payer", sa.String(length=42), nullable=False),
        sa.Column("nonce", sa.String(length=66), nullable=False),
        sa.Column("pay_to", sa.String(length=42), nullable=False),
        sa.Column("amount_micro", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tx_hash", sa.String(length=100), nullable=True),
        sa.Column("ledger_txn_id", sa.String(length=64), nullable=True),
        sa.Column("receipt", _json(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.Column("updated_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.workflow_id"], name=op.f("fk_x402_payments_workflow_id_workflows")
        ),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_x402_payments")),
        sa.UniqueConstraint(
            "network", "asset", "payer", "nonce", name=op.f("uq_x402_payments_network_asset_payer_nonce")
        ),
    )
    with op.batch_alter_table("x402_payments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_x402_payments_workflow_id"), ["workflow_id"], unique=False)

    op.create_table(
        "x402_funding_claims",
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("network", sa.String(length=64), nullable=False),
        sa.Column("asset", sa.String(length=42), nullable=False),
        sa.Column("payer", sa.String(length=42), nullable=False),
        sa.Column("nonce", sa.String(length=66), nullable=False),
        sa.Column("expires_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.Column("created_at", saferun.storage.schema.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.workflow_id"],
            name=op.f("fk_x402_funding_claims_workflow_id_workflows"),
        ),
        sa.PrimaryKeyConstraint("workflow_id", name=op.f("pk_x402_funding_claims")),
    )


def downgrade() -> None:
    op.drop_table("x402_funding_claims")
    with op.batch_alter_table("x402_payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_x402_payments_workflow_id"))
    op.drop_table("x402_payments")
    with op.batch_alter_table("x402_token_transfers", schema=None) as batch_op:
        batch_op.drop_index("ix_x402_token_transfers_receiver")
    op.drop_table("x402_token_transfers")
