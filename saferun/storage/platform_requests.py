"""Rows of ``platform_requests``: what makes every mutating call of the embedded platform idempotent.

A call made with a client-supplied ``idempotency_key`` stores its answer under that key, in the same
transaction as its effects. A repeat with the same key and the same arguments gets the stored answer and
changes nothing; the same key with other arguments (or for another operation) is ``IdempotencyConflict``.

On PostgreSQL two concurrent calls with one key are serialized by a transaction-scoped advisory lock on
the key, so the second one waits for the first to commit and then replays its answer; on SQLite every
writer already holds the database's write lock.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Connection, func, insert, select

from saferun.domain.canonical import canonical_bytes
from saferun.errors import IdempotencyConflict, InvalidInput
from saferun.storage.schema import platform_requests, utcnow

MAX_KEY_LENGTH = 200


def validate_key(key: Any) -> str:
    if not isinstance(key, str) or not key.strip():
        raise InvalidInput("idempotency_key", "must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput("idempotency_key", f"must be at most {MAX_KEY_LENGTH} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise InvalidInput("idempotency_key", "must not contain control characters")
    return key


def request_hash(operation: str, arguments: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes({"op": operation, "args": arguments}, "arguments")).hexdigest()


def replay(conn: Connection, key: str, operation: str, request_digest: str) -> dict[str, Any] | None:
    """The stored answer of an earlier call under ``key``, None when the key is new.

    Locks the key first (PostgreSQL), so call it at the start of the transaction that will ``record``.
    """
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(b"saferun-platform:" + key.encode("utf-8")).digest()
        conn.execute(select(func.pg_advisory_xact_lock(int.from_bytes(digest[:8], "big", signed=True))))
    row = (
        conn.execute(select(platform_requests).where(platform_requests.c.idempotency_key == key))
        .mappings()
        .first()
    )
    if row is None:
        return None
    if row["operation"] != operation or row["request_hash"] != request_digest:
        raise IdempotencyConflict(key)
    return dict(row["response"])


def record(conn: Connection, key: str, operation: str, digest: str, response: dict[str, Any]) -> None:
    conn.execute(
        insert(platform_requests).values(
            idempotency_key=key,
            operation=operation,
            request_hash=digest,
            response=response,
            created_at=utcnow(),
        )
    )
