"""Stored double-entry ledger: postings become rows in ``ledger_transactions`` and ``ledger_legs``.

Balances are never stored, only derived (``SUM`` over legs), so there is no second copy of the truth
to drift. Every function takes the caller's ``Connection`` and never commits: a workflow's state change
and its postings commit together or not at all.

``post`` enforces two rules:

* **Idempotency.** A posting is written once per idempotency key. Re-posting the same content under the
  same key returns the first transaction's id and writes nothing, which is what makes "release
  milestone 2" safe to retry; the same key with different content is a bug, ``IdempotencyConflict``.
* **No overdraft.** After the legs are inserted, every non-source account the posting touched must
  still have a balance >= 0, else ``LedgerError`` is raised. The rows are already inserted at that
  point: it is the caller's transaction rollback (``Database.transaction()`` rolls back on any
  exception) that discards them, so a caller must not catch ``LedgerError`` and commit anyway.

Concurrency: on SQLite every writer already holds the database write lock (``BEGIN IMMEDIATE``). On
PostgreSQL (READ COMMITTED), two transactions could each see the other's debit as uncommitted and both
overdraw, so ``post`` takes a transaction-scoped advisory lock per debited non-source account, in a
fixed order, before checking; the second writer waits, then sees the first one's committed legs. The
idempotency insert uses ``ON CONFLICT DO NOTHING`` so a concurrent writer of the same key waits for the
first and then compares instead of failing the whole transaction on a unique violation.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import Connection, func, select

from saferun.domain.audit import posting_digest
from saferun.domain.ledger import (
    EscrowPosition,
    Leg,
    Posting,
    escrow_account,
    is_source,
    lock_key,
    position_from_escrow_deltas,
)
from saferun.domain.money import MAX_MICRO
from saferun.errors import IdempotencyConflict, InvalidAmount, InvalidInput, LedgerError
from saferun.storage.schema import ledger_legs, ledger_transactions, utcnow

_MAX_KEY_LENGTH = 300


def new_txn_id() -> str:
    return "txn_" + uuid4().hex[:20]


def post(
    conn: Connection,
    posting: Posting,
    *,
    idempotency_key: str,
    workflow_id: str | None,
    field: str = "amount",
) -> str:
    """Write ``posting`` once under ``idempotency_key`` and return its transaction id.

    Raises ``IdempotencyConflict`` when the key was used for a different posting, and ``LedgerError``
    when a non-source account would go negative (the caller's rollback then discards the insert).
    """
    posting.validate()
    if not isinstance(idempotency_key, str) or not idempotency_key:
        raise InvalidInput("idempotency_key", "must be a non-empty string")
    if len(idempotency_key) > _MAX_KEY_LENGTH:
        raise InvalidInput("idempotency_key", f"must be at most {_MAX_KEY_LENGTH} characters")

    existing = _existing(conn, posting, idempotency_key, workflow_id)
    if existing is not None:
        return existing

    debited = sorted({leg.account for leg in posting.legs if leg.amount < 0 and not is_source(leg.account)})
    if conn.dialect.name == "postgresql":
        for account in debited:
            conn.execute(select(func.pg_advisory_xact_lock(_advisory_key(account))))

    _check_balances_fit(conn, posting, field)
    txn_id = new_txn_id()
    values = {
        "txn_id": txn_id,
        "idempotency_key": idempotency_key,
        "workflow_id": workflow_id,
        "kind": posting.kind,
        "memo": posting.memo,
        "created_at": utcnow(),
    }
    # RETURNING, not rowcount: psycopg reports -1 for ON CONFLICT inserts, while a RETURNING row is exact
    inserted = conn.execute(
        _insert_ignoring_duplicate_key(conn).values(**values).returning(ledger_transactions.c.txn_id)
    ).first()
    if inserted is None:
        # a concurrent transaction committed the same key between our check and our insert
        existing = _existing(conn, posting, idempotency_key, workflow_id)
        if existing is None:  # pragma: no cover - the conflicting row must be visible once it blocked us
            raise LedgerError(f"idempotency key {idempotency_key!r} collided but cannot be read back")
        return existing

    conn.execute(
        ledger_legs.insert(),
        [{"txn_id": txn_id, "account": leg.account, "amount_micro": leg.amount} for leg in posting.legs],
    )

    touched = sorted({leg.account for leg in posting.legs if not is_source(leg.account)})
    if touched:
        overdrawn = conn.execute(
            select(ledger_legs.c.account, func.sum(ledger_legs.c.amount_micro))
            .where(ledger_legs.c.account.in_(touched))
            .group_by(ledger_legs.c.account)
            .having(func.sum(ledger_legs.c.amount_micro) < 0)
            .order_by(ledger_legs.c.account)
        ).all()
        if overdrawn:
            account, bal = overdrawn[0][0], int(overdrawn[0][1])
            raise LedgerError(
                f"{posting.kind} posting would leave {account} at {bal} micro-units; "
                "non-source accounts must never go negative (roll back the transaction)",
                account=account,
                balance=bal,
                kind=posting.kind,
                idempotency_key=idempotency_key,
            )
    return txn_id


def _check_balances_fit(conn: Connection, posting: Posting, field: str) -> None:
    """Refuse, before anything is written, a posting that would take any account's balance beyond what
    a 64-bit integer holds. Each leg fits on its own (``Posting.validate``), but many maximal postings
    into one account (an executor paid by many workflows, a poster's funding source) would overflow the
    database's SUM (SQLite raises; PostgreSQL's numeric would hand back a balance no column can hold).
    One grouped read of the posting's accounts."""
    delta: dict[str, int] = {}
    for leg in posting.legs:
        delta[leg.account] = delta.get(leg.account, 0) + leg.amount
    rows = conn.execute(
        select(ledger_legs.c.account, func.sum(ledger_legs.c.amount_micro))
        .where(ledger_legs.c.account.in_(sorted(delta)))
        .group_by(ledger_legs.c.account)
    ).all()
    current = {account: int(total or 0) for account, total in rows}
    for account in sorted(delta):
        after = current.get(account, 0) + delta[account]
        if abs(after) > MAX_MICRO:
            raise InvalidAmount(
                field,
                f"this {posting.kind} posting would take account {account} to {after} micro-units, beyond "
                f"the largest balance a 64-bit integer holds ({MAX_MICRO}); nothing was written",
                account=account,
            )


def exists(conn: Connection, idempotency_key: str) -> bool:
    """Whether a posting was already written under this key (lets callers skip their side effects)."""
    found = conn.execute(
        select(ledger_transactions.c.txn_id).where(ledger_transactions.c.idempotency_key == idempotency_key)
    ).first()
    return found is not None


def balance(conn: Connection, account: str) -> int:
    """Current balance in micro-units, as seen by this connection's transaction (0 if never used)."""
    total = conn.execute(
        select(func.coalesce(func.sum(ledger_legs.c.amount_micro), 0)).where(ledger_legs.c.account == account)
    ).scalar_one()
    return int(total)


def escrow_position(conn: Connection, workflow_id: str, before: datetime | None = None) -> EscrowPosition:
    """Locked / released / refunded / held of one workflow, summed per posting kind on its escrow (as it
    stood just before ``before``, when given: what a replayed policy saw at that moment)."""
    query = (
        select(ledger_transactions.c.kind, func.sum(ledger_legs.c.amount_micro))
        .join(ledger_transactions, ledger_transactions.c.txn_id == ledger_legs.c.txn_id)
        .where(ledger_legs.c.account == escrow_account(workflow_id))
        .group_by(ledger_transactions.c.kind)
    )
    if before is not None:
        query = query.where(ledger_transactions.c.created_at < before)
    rows = conn.execute(query).all()
    return position_from_escrow_deltas({kind: int(total) for kind, total in rows})


def lock_source(conn: Connection, workflow_id: str) -> str | None:
    """The account a workflow's escrow was locked from (the poster's, or an x402 payer's), if locked."""
    row = conn.execute(
        select(ledger_legs.c.account)
        .join(ledger_transactions, ledger_transactions.c.txn_id == ledger_legs.c.txn_id)
        .where(
            ledger_transactions.c.idempotency_key == lock_key(workflow_id),
            ledger_legs.c.amount_micro < 0,
        )
    ).first()
    return None if row is None else str(row[0])


def payments(conn: Connection, workflow_id: str) -> dict[str, int]:
    """What each account other than the escrow received from the workflow's postings (refunds included)."""
    rows = conn.execute(
        select(ledger_legs.c.account, func.sum(ledger_legs.c.amount_micro))
        .join(ledger_transactions, ledger_transactions.c.txn_id == ledger_legs.c.txn_id)
        .where(
            ledger_transactions.c.workflow_id == workflow_id,
            ledger_legs.c.amount_micro > 0,
            ledger_legs.c.account != escrow_account(workflow_id),
        )
        .group_by(ledger_legs.c.account)
        .order_by(ledger_legs.c.account)
    ).all()
    return {account: int(total) for account, total in rows}


def entries(conn: Connection, workflow_id: str) -> list[dict[str, Any]]:
    """A workflow's postings in the order they were written, each with its legs (for audit and UI)."""
    rows = conn.execute(
        select(
            ledger_transactions.c.txn_id,
            ledger_transactions.c.idempotency_key,
            ledger_transactions.c.kind,
            ledger_transactions.c.memo,
            ledger_transactions.c.created_at,
            ledger_legs.c.account,
            ledger_legs.c.amount_micro,
        )
        .join(ledger_legs, ledger_legs.c.txn_id == ledger_transactions.c.txn_id)
        .where(ledger_transactions.c.workflow_id == workflow_id)
        # leg ids are monotonic per insert, so they order transactions even when created_at ties
        .order_by(ledger_legs.c.id)
    ).all()
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = out.get(row.txn_id)
        if entry is None:
            entry = out[row.txn_id] = {
                "txn_id": row.txn_id,
                "idempotency_key": row.idempotency_key,
                "kind": row.kind,
                "memo": row.memo,
                "created_at": row.created_at,
                "legs": [],
            }
        entry["legs"].append({"account": row.account, "amount_micro": int(row.amount_micro)})
    return list(out.values())


def digest(conn: Connection, txn_id: str) -> str | None:
    """The posting's hash as stored (``domain.audit.posting_digest``), None when the txn id is unknown.
    Called in the transaction that wrote it, so the audit event binds exactly the rows committed with it."""
    query = select(ledger_transactions).where(ledger_transactions.c.txn_id == txn_id)
    txn = conn.execute(query).mappings().first()
    if txn is None:
        return None
    legs = conn.execute(
        select(ledger_legs.c.account, ledger_legs.c.amount_micro).where(ledger_legs.c.txn_id == txn_id)
    ).mappings()
    return posting_digest(txn, legs)


def _existing(conn: Connection, posting: Posting, key: str, workflow_id: str | None) -> str | None:
    """The txn id already written under ``key`` for the same posting, None if the key is unused."""
    row = conn.execute(
        select(
            ledger_transactions.c.txn_id, ledger_transactions.c.kind, ledger_transactions.c.workflow_id
        ).where(ledger_transactions.c.idempotency_key == key)
    ).first()
    if row is None:
        return None
    legs = conn.execute(
        select(ledger_legs.c.account, ledger_legs.c.amount_micro).where(ledger_legs.c.txn_id == row.txn_id)
    ).all()
    stored = sorted((account, int(amount)) for account, amount in legs)
    if row.kind != posting.kind or row.workflow_id != workflow_id or stored != _leg_key(posting.legs):
        raise IdempotencyConflict(key)
    return str(row.txn_id)


def _leg_key(legs: tuple[Leg, ...]) -> list[tuple[str, int]]:
    """Legs as an order-free multiset, so a rebuilt posting compares equal to the stored one."""
    return sorted((leg.account, leg.amount) for leg in legs)


def _insert_ignoring_duplicate_key(conn: Connection) -> Any:
    # the dialect's module is imported here, not at the top: importing sqlalchemy.dialects.postgresql
    # costs every SQLite process ~18 ms at start (issue 12, target 5); after the first call it is cached
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(ledger_transactions).on_conflict_do_nothing(
            index_elements=[ledger_transactions.c.idempotency_key]
        )
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(ledger_transactions).on_conflict_do_nothing(
            index_elements=[ledger_transactions.c.idempotency_key]
        )
    return ledger_transactions.insert()  # other dialects: a duplicate fails loudly instead


def _advisory_key(account: str) -> int:
    """A stable signed 64-bit lock id per account (Python's hash() is salted per process)."""
    digest = hashlib.sha256(b"saferun-ledger-account:" + account.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
