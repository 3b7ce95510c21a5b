"""Saga steps: each side effect an agent performed, with the compensation that undoes it.

Status flow: ``pending`` (undoable) -> ``committed`` when an approval makes it permanent, or
``pending -> compensating -> compensated | failed`` during a rollback. ``claim`` is a conditional
UPDATE, so two processes rolling back the same workflow never both hold one step.

``attempts`` counts the claims of a step and is its *claim generation* (a fencing token): a claim taken
over from a vanished runner increments it, and ``finish`` only records a result from the runner holding
the current generation, so a stale runner that wakes up late cannot overwrite the outcome.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, func, insert, or_, select, update

from saferun.errors import NotFound
from saferun.storage.schema import saga_steps, utcnow


def add(
    conn: Connection, *, step_id: str, workflow_id: str, name: str, compensation: str, args: dict[str, Any]
) -> int:
    seq = (
        conn.execute(
            select(func.max(saga_steps.c.seq)).where(saga_steps.c.workflow_id == workflow_id)
        ).scalar()
        or 0
    ) + 1
    conn.execute(
        insert(saga_steps).values(
            step_id=step_id,
            workflow_id=workflow_id,
            seq=seq,
            name=name,
            compensation=compensation,
            args=args,
            status="pending",
            attempts=0,
            created_at=utcnow(),
        )
    )
    return seq


# An approval makes every step before it permanent (a later rejection no longer undoes them): the database
# sets ``pending`` steps ``committed`` when the workflow's ``last_approved_snapshot_id`` changes (revision
# 0024's trigger), in the transaction that approves.


def to_compensate(conn: Connection, workflow_id: str) -> list[RowMapping]:
    """Steps a rollback still has to undo, newest first (reverse order, saga style)."""
    return list(
        conn.execute(
            select(saga_steps)
            .where(
                saga_steps.c.workflow_id == workflow_id, saga_steps.c.status.in_(["pending", "compensating"])
            )
            .order_by(saga_steps.c.seq.desc())
        ).mappings()
    )


def claim(
    conn: Connection, workflow_id: str, step_id: str, owner: str, now: datetime, stale_before: datetime
) -> int | None:
    """Take a step for compensation: free ones, or ones whose claimant vanished (claim too old).

    Returns the claim's generation (the step's new ``attempts``), or None when the step was not free.
    The step is matched WITH its workflow, so a caller entitled to one workflow's rollback cannot take
    another workflow's step through its own workflow's URL (issue 9, finding 4).
    """
    stmt = (
        update(saga_steps)
        .where(
            saga_steps.c.workflow_id == workflow_id,
            saga_steps.c.step_id == step_id,
            or_(
                saga_steps.c.status == "pending",
                (saga_steps.c.status == "compensating") & (saga_steps.c.claimed_at < stale_before),
            ),
        )
        .values(status="compensating", claimed_by=owner, claimed_at=now, attempts=saga_steps.c.attempts + 1)
    )
    if conn.execute(stmt).rowcount != 1:
        return None
    return int(
        conn.execute(select(saga_steps.c.attempts).where(saga_steps.c.step_id == step_id)).scalar_one()
    )


def get(conn: Connection, step_id: str, workflow_id: str | None = None) -> RowMapping:
    """The step; with ``workflow_id``, only if it is that workflow's: another workflow's step is
    ``NotFound`` exactly like an unknown one (a URL naming one workflow never reaches another's step)."""
    query = select(saga_steps).where(saga_steps.c.step_id == step_id)
    if workflow_id is not None:
        query = query.where(saga_steps.c.workflow_id == workflow_id)
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"saga step {step_id!r} does not exist", step_id=step_id)
    return row


def finish(
    conn: Connection, step_id: str, status: str, error: str | None = None, generation: int | None = None
) -> bool:
    """Record a claimed step's outcome; with ``generation``, only if that claim is still the step's.

    False (nothing written) when the step is no longer being compensated or was claimed again since.
    """
    cond = [saga_steps.c.step_id == step_id, saga_steps.c.status == "compensating"]
    if generation is not None:
        cond.append(saga_steps.c.attempts == generation)
    done = conn.execute(
        update(saga_steps).where(*cond).values(status=status, last_error=error, finished_at=utcnow())
    )
    return done.rowcount == 1


def finish_by_hand(conn: Connection, step_id: str, status: str, note: str) -> bool:
    """An operator's outcome for an open step (pending, or claimed by a runner that may have vanished):
    written whatever claim it had, so a runner that wakes up later finds it no longer compensating and its
    own result (fenced by ``finish``'s generation) is refused."""
    done = conn.execute(
        update(saga_steps)
        .where(saga_steps.c.step_id == step_id, saga_steps.c.status.in_(("pending", "compensating")))
        .values(status=status, last_error=note, finished_at=utcnow())
    )
    return done.rowcount == 1


def list_for(conn: Connection, workflow_id: str) -> list[RowMapping]:
    return list(
        conn.execute(
            select(saga_steps).where(saga_steps.c.workflow_id == workflow_id).order_by(saga_steps.c.seq)
        ).mappings()
    )
