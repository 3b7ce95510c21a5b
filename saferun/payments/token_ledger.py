"""Stored token balances of the local facilitator: one row per ERC-20 Transfer in ``x402_token_transfers``.

This is SafeRun's stand-in for a chain holding an EIP-3009 token (USDC): balances are derived (``SUM`` of
what an address received minus what it sent), never stored; a mint is a transfer from the zero address,
as an ERC-20 contract logs it; an authorization nonce is consumed by the transfer that used it, and a
UNIQUE constraint makes it impossible to consume twice. Amounts are exact integers of atomic units.

Every function takes the caller's ``Connection`` and never commits. ``debit_lock`` serializes writers
that debit one address on PostgreSQL (READ COMMITTED would otherwise let two transfers each see the
other's debit as uncommitted and both overdraw); SQLite's ``BEGIN IMMEDIATE`` already serializes writers.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Connection, RowMapping, func, select
from sqlalchemy.dialects import postgresql, sqlite

from saferun.payments.settings import ZERO_ADDRESS, normalize
from saferun.storage.schema import utcnow, x402_token_transfers

T = x402_token_transfers
INT64_MAX = 2**63 - 1


def balance(conn: Connection, network: str, asset: str, address: str) -> int:
    """Atomic units ``address`` holds of ``asset`` on ``network`` (0 if it never held any)."""
    net, token, who = network, normalize(asset), normalize(address)
    received = conn.execute(
        select(func.coalesce(func.sum(T.c.amount), 0)).where(
            T.c.network == net, T.c.asset == token, T.c.to_address == who
        )
    ).scalar_one()
    sent = conn.execute(
        select(func.coalesce(func.sum(T.c.amount), 0)).where(
            T.c.network == net, T.c.asset == token, T.c.from_address == who
        )
    ).scalar_one()
    return int(received) - int(sent)


def by_authorization(
    conn: Connection, network: str, asset: str, authorizer: str, nonce: str
) -> RowMapping | None:
    """The transfer that consumed this EIP-3009 authorization, if any."""
    return (
        conn.execute(
            select(T).where(
                T.c.network == network,
                T.c.asset == normalize(asset),
                T.c.from_address == normalize(authorizer),
                T.c.nonce == nonce.lower(),
            )
        )
        .mappings()
        .first()
    )


def by_hash(conn: Connection, tx_hash: str) -> RowMapping | None:
    return conn.execute(select(T).where(T.c.tx_hash == tx_hash.lower())).mappings().first()


def debit_lock(conn: Connection, network: str, asset: str, address: str) -> None:
    """Hold, until the transaction ends, the right to debit ``address`` (PostgreSQL advisory lock)."""
    if conn.dialect.name != "postgresql":
        return
    text = f"saferun-x402-token:{network}:{normalize(asset)}:{normalize(address)}".encode()
    key = int.from_bytes(hashlib.sha256(text).digest()[:8], "big", signed=True)
    conn.execute(select(func.pg_advisory_xact_lock(key)))


def insert(
    conn: Connection,
    *,
    tx_hash: str,
    network: str,
    asset: str,
    from_address: str,
    to_address: str,
    amount: int,
    nonce: str | None,
) -> int | None:
    """Write one transfer; returns its id (the "block number"), or None when the nonce was already used.

    ``ON CONFLICT DO NOTHING``: a concurrent writer of the same authorization waits for the first one and
    then writes nothing, instead of failing the caller's whole transaction on a unique violation.
    """
    if type(amount) is not int or not 0 <= amount <= INT64_MAX:
        raise ValueError(f"a token amount must be an int between 0 and 2**63-1, got {amount!r}")
    values: dict[str, Any] = {
        "tx_hash": tx_hash.lower(),
        "network": network,
        "asset": normalize(asset),
        "from_address": normalize(from_address),
        "to_address": normalize(to_address),
        "amount": amount,
        "nonce": nonce.lower() if nonce is not None else None,
        "created_at": utcnow(),
    }
    if conn.dialect.name == "postgresql":
        stmt: Any = postgresql.insert(T).on_conflict_do_nothing()
    elif conn.dialect.name == "sqlite":
        stmt = sqlite.insert(T).on_conflict_do_nothing()
    else:  # pragma: no cover - other dialects fail loudly on a duplicate instead
        stmt = T.insert()
    row = conn.execute(stmt.values(**values).returning(T.c.id)).first()
    return None if row is None else int(row[0])


def is_mint(row: RowMapping) -> bool:
    return bool(row["from_address"] == ZERO_ADDRESS)
