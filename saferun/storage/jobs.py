"""Rows of ``jobs``: the x402 Jobs primitive on the embedded platform (main job, approval sub-jobs)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping, bindparam, insert, select, update

from saferun.domain.ids import new_id
from saferun.storage.schema import jobs, utcnow

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
            "data": data,
            "created_at": now,
            "updated_at": now,
        },
    )
    return job_id


def set_status(conn: Connection, job_id: str, status: str) -> None:
    conn.execute(_SET_STATUS, {"b_job": job_id, "status": status, "updated_at": utcnow()})


def for_workflow(conn: Connection, workflow_id: str) -> list[RowMapping]:
    return list(
        conn.execute(
            select(jobs).where(jobs.c.workflow_id == workflow_id).order_by(jobs.c.created_at)
        ).mappings()
    )
