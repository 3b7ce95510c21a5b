"""Work queues in a table, shared by every SafeRun process: the platform outbox and notification deliveries.

A queue row has ``id``, ``status`` (``pending`` until its work is done), ``next_attempt_at`` and
``attempts``. A process claims a due row by moving its ``next_attempt_at`` a lease ahead with a
conditional UPDATE (one winner, on SQLite and PostgreSQL alike); a crashed process's row comes back when
the lease runs out. Backoff is exponential with full jitter, so replicas retrying one broken receiver do
not hammer it in step.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, RowMapping, Table, select, update

from saferun.domain.backoff import full_jitter

PENDING = "pending"
FAILED = "failed"


def due(conn: Connection, table: Table, now: datetime, limit: int) -> list[RowMapping]:
    """Pending rows whose time has come, oldest first."""
    query = (
        select(table)
        .where(table.c.status == PENDING, table.c.next_attempt_at <= now)
        .order_by(table.c.id)
        .limit(limit)
    )
    return list(conn.execute(query).mappings())


def claim(conn: Connection, table: Table, row: RowMapping, lease: timedelta, now: datetime) -> bool:
    """Take ``row`` for ``lease`` (and count the attempt) unless another process took it first."""
    result = conn.execute(
        update(table)
        .where(
            table.c.id == row["id"],
            table.c.status == PENDING,
            table.c.next_attempt_at == row["next_attempt_at"],
        )
        .values(next_attempt_at=now + lease, attempts=table.c.attempts + 1)
    )
    return result.rowcount == 1


def requeue_failed(conn: Connection, table: Table, now: datetime, *where: ColumnElement[bool]) -> int:
    """Put ``failed`` rows (matching ``where``) back in the queue with a fresh attempt budget, after an
    operator fixed what made them fail; answers how many."""
    query = update(table).where(table.c.status == FAILED, *where)
    return conn.execute(query.values(status=PENDING, attempts=0, next_attempt_at=now)).rowcount


def backoff(attempts: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> timedelta:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempts-1))] seconds."""
    return timedelta(seconds=full_jitter(attempts, base, cap, rng=rng))
