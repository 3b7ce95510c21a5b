"""Rows of ``jobs`` and ``job_events``: the x402 Jobs primitive on the embedded platform.

A job (a workflow's main job, an approval sub-job per checkpoint, ...) has one current ``status`` on its
row, why it has it (``status_reason``), and a history in ``job_events``: every status it was ever given,
in order, including the first. The database writes the history: a trigger on ``jobs`` copies each status
written (and its reason) into ``job_events`` in the same statement (revision 0024), so no code path can
change a status without its event, and a status change costs one statement.

An approval request's sub-job is written by the database too, from the request's row (its ``job_id``),
and completed by the decision's row: see ``saferun/storage/migrations/versions/0024_derived_rows.py``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, insert, select, update

from saferun.domain.ids import new_id
from saferun.errors import NotFound
from saferun.storage.schema import job_events, jobs, utcnow

_INSERT = insert(jobs)
_SET_STATUS = update(jobs).where(jobs.c.job_id == bindparam("b_job"))


def create(
    conn: Connection,
    *,
    job_type: str,
    workflow_id: str | None,
    data: dict[str, Any],
    parent_job_id: str | None = None,
    status: str = "open",
) -> str:
    job_id = new_id("job")
    now = utcnow()
    conn.execute(
        _INSERT,
        {
            "job_id": job_id,
            "parent_job_id": parent_job_id,
            "job_type": job_type,
            "workflow_id": workflow_id,
            "status": status,
            "status_reason": "created",
            "data": data,
            "created_at": now,
            "updated_at": now,
        },
    )
    return job_id


def set_status(conn: Connection, job_id: str, status: str, reason: str = "") -> None:
    now = utcnow()
    conn.execute(_SET_STATUS, {"b_job": job_id, "status": status, "status_reason": reason, "updated_at": now})


def get(conn: Connection, job_id: str) -> RowMapping:
    row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"job {job_id!r} does not exist", job_id=job_id)
    return row


def history(conn: Connection, job_id: str) -> list[RowMapping]:
    """The job's statuses, oldest first."""
    query = select(job_events).where(job_events.c.job_id == job_id).order_by(job_events.c.id)
    return list(conn.execute(query).mappings())


def children(conn: Connection, job_id: str) -> list[RowMapping]:
    query = select(jobs).where(jobs.c.parent_job_id == job_id).order_by(jobs.c.created_at, jobs.c.job_id)
    return list(conn.execute(query).mappings())


def for_workflow(conn: Connection, workflow_id: str) -> list[RowMapping]:
    return list(
        conn.execute(
            select(jobs).where(jobs.c.workflow_id == workflow_id).order_by(jobs.c.created_at)
        ).mappings()
    )
