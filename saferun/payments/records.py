"""Rows of ``x402_payments`` (payments that settled, or may have) and ``x402_funding_claims``.

A payment is identified by what its payer signed: one EIP-3009 authorization, i.e. ``(network, asset,
payer, nonce)``, UNIQUE in ``x402_payments``. A claim is the one payment a workflow is settling right
now (the workflow id is the claim's primary key). Every function takes the caller's ``Connection`` and
never commits; writers hold the workflow's row lock (``saferun.storage.workflows.locked``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from saferun.domain.audit import bind
from saferun.payments.settings import normalize
from saferun.storage.schema import utcnow, x402_funding_claims, x402_payments

CREDITED = "credited"
UNAPPLIED = "unapplied"
UNCONFIRMED = "unconfirmed"

P = x402_payments
C = x402_funding_claims


@dataclass(frozen=True, slots=True)
class PaymentIdentity:
    """One signed authorization; addresses and nonce lower-case so equal payments compare equal."""

    network: str
    asset: str
    payer: str
    nonce: str

    @classmethod
    def of(cls, network: str, asset: str, payer: str, nonce: str) -> PaymentIdentity:
        return cls(network, normalize(asset), normalize(payer), nonce.lower())

    def where(self, table: Any) -> tuple[Any, ...]:
        return (
            table.c.network == self.network,
            table.c.asset == self.asset,
            table.c.payer == self.payer,
            table.c.nonce == self.nonce,
        )

    def as_dict(self) -> dict[str, str]:
        return {"network": self.network, "asset": self.asset, "payer": self.payer, "nonce": self.nonce}


# --- payments -----------------------------------------------------------------------------------------


def find(conn: Connection, identity: PaymentIdentity) -> RowMapping | None:
    return conn.execute(select(P).where(*identity.where(P))).mappings().first()


def for_workflow(conn: Connection, workflow_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(P).where(P.c.workflow_id == workflow_id).order_by(P.c.created_at, P.c.payment_id)
    ).mappings()
    return [dict(r) for r in rows]


def record(
    conn: Connection,
    identity: PaymentIdentity,
    *,
    workflow_id: str,
    pay_to: str,
    amount_micro: int,
    status: str,
    tx_hash: str | None,
    receipt: dict[str, Any] | None,
    ledger_txn_id: str | None = None,
    reason: str | None = None,
) -> str:
    """Insert or update the payment's row and return its id. A credited payment is never downgraded."""
    now = utcnow()
    values = {
        "workflow_id": workflow_id,
        "pay_to": normalize(pay_to),
        "amount_micro": amount_micro,
        "status": status,
        "tx_hash": tx_hash or None,
        "ledger_txn_id": ledger_txn_id,
        "receipt": receipt,
        "reason": reason,
        "updated_at": now,
    }
    existing = find(conn, identity)
    if existing is not None:
        if existing["status"] == CREDITED and status != CREDITED:
            return str(existing["payment_id"])
        conn.execute(update(P).where(P.c.payment_id == existing["payment_id"]).values(**values))
        return str(existing["payment_id"])
    payment_id = "pay_" + uuid4().hex[:20]
    conn.execute(insert(P).values(payment_id=payment_id, created_at=now, **identity.as_dict(), **values))
    return payment_id


def binding(conn: Connection, payment_id: str) -> list[list[Any]]:
    """The payment row as just written, as an audit event's ``bind`` list: the event that records a
    payment binds its row, so a changed amount, status or payer no longer matches the chain."""
    row = conn.execute(select(P).where(P.c.payment_id == payment_id)).mappings().one()
    return [bind("x402_payments", "row", row)]


def public(row: RowMapping | dict[str, Any]) -> dict[str, Any]:
    """A payment as the API shows it."""
    return {
        "payment_id": row["payment_id"],
        "workflow_id": row["workflow_id"],
        "status": row["status"],
        "network": row["network"],
        "asset": row["asset"],
        "payer": row["payer"],
        "nonce": row["nonce"],
        "pay_to": row["pay_to"],
        "amount_micro": int(row["amount_micro"]),
        "transaction": row["tx_hash"],
        "ledger_txn_id": row["ledger_txn_id"],
        "reason": row["reason"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


# --- claims -------------------------------------------------------------------------------------------


def claim_of(conn: Connection, workflow_id: str) -> RowMapping | None:
    return conn.execute(select(C).where(C.c.workflow_id == workflow_id)).mappings().first()


def claim_identity(row: RowMapping) -> PaymentIdentity:
    return PaymentIdentity(row["network"], row["asset"], row["payer"], row["nonce"])


def add_claim(conn: Connection, workflow_id: str, identity: PaymentIdentity, expires_at: datetime) -> None:
    conn.execute(
        insert(C).values(
            workflow_id=workflow_id, expires_at=expires_at, created_at=utcnow(), **identity.as_dict()
        )
    )


def drop_claim(conn: Connection, workflow_id: str, identity: PaymentIdentity | None = None) -> bool:
    """Remove the workflow's claim (only if it is ``identity``'s, when given); True when one was removed."""
    stmt = delete(C).where(C.c.workflow_id == workflow_id)
    if identity is not None:
        stmt = stmt.where(*identity.where(C))
    return bool(conn.execute(stmt).rowcount)
