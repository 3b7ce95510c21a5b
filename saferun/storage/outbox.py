"""Rows of ``platform_outbox``: calls owed to a remote x402 platform, written in the caller's transaction.

A row is enqueued in the same transaction as the local change it mirrors (so it exists exactly when the
change does), then claimed with a short lease, delivered and marked. Its idempotency key is unique:
enqueuing the same call twice (a replayed decision) keeps the first row.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, insert, select, update

from saferun.storage import leased
from saferun.storage.schema import platform_outbox, utcnow

PENDING = leased.PENDING
DELIVERED = "delivered"
FAILED = "failed"


def enqueue(
    conn: Connection,
    workflow_id: str,
    operation: str,
    arguments: dict[str, Any],
    idempotency_key: str,
) -> None:
    exists = conn.execute(
        select(platform_outbox.c.id).where(platform_outbox.c.idempotency_key == idempotency_key)
    ).first()
    if exists is not None:
        return
    now = utcnow()
    conn.execute(
        insert(platform_outbox).values(
            workflow_id=workflow_id,
            operation=operation,
            arguments=arguments,
            idempotency_key=idempotency_key,
            status=PENDING,
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
    )


def due(conn: Connection, now: datetime, limit: int) -> list[RowMapping]:
    return leased.due(conn, platform_outbox, now, limit)


def claim(conn: Connection, row: RowMapping, lease: timedelta, now: datetime) -> bool:
    """Take ``row`` for ``lease`` (one deliverer at a time; a crashed one's lease simply runs out)."""
    return leased.claim(conn, platform_outbox, row, lease, now)


def by_key(conn: Connection, idempotency_key: str) -> RowMapping | None:
    query = select(platform_outbox).where(platform_outbox.c.idempotency_key == idempotency_key)
    return conn.execute(query).mappings().first()


def mark_delivered(conn: Connection, row_id: int, result: Any) -> None:
    conn.execute(
        update(platform_outbox)
        .where(platform_outbox.c.id == row_id)
        .values(status=DELIVERED, result=result, last_error=None, delivered_at=utcnow())
    )


def mark_retry(conn: Connection, row_id: int, error: str, next_attempt_at: datetime) -> None:
    conn.execute(
        update(platform_outbox)
        .where(platform_outbox.c.id == row_id)
        .values(last_error=error[:2000], next_attempt_at=next_attempt_at)
    )


def mark_failed(conn: Connection, row_id: int, error: str) -> None:
    conn.execute(
        update(platform_outbox)
        .where(platform_outbox.c.id == row_id)
        .values(status=FAILED, last_error=error[:2000])
    )


def for_workflow(conn: Connection, workflow_id: str | None = None) -> list[RowMapping]:
    query = select(platform_outbox).order_by(platform_outbox.c.id)
    if workflow_id is not None:
        query = query.where(platform_outbox.c.workflow_id == workflow_id)
    return list(conn.execute(query).mappings())


def earlier_undelivered(conn: Connection, row: RowMapping) -> bool:
    """Whether a call enqueued before ``row`` for the same workflow is not delivered yet.

    A workflow's calls reach the platform in the order they happened (the lock before its releases, the
    approvals before the quality score they justify); a failed call holds back everything after it.
    """
    query = (
        select(platform_outbox.c.id)
        .where(
            platform_outbox.c.workflow_id == row["workflow_id"],
            platform_outbox.c.id < row["id"],
            platform_outbox.c.status != DELIVERED,
        )
        .limit(1)
    )
    return conn.execute(query).first() is not None


def retry_failed(conn: Connection, workflow_id: str | None = None) -> int:
    """Put failed calls back in the queue (after an operator fixed what the platform refused)."""
    where = [] if workflow_id is None else [platform_outbox.c.workflow_id == workflow_id]
    return leased.requeue_failed(conn, platform_outbox, utcnow(), *where)
