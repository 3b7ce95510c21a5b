"""Rows of ``snapshots``: which artifact holds the state captured at which checkpoint."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping, func, insert, select, update

from saferun.domain.ids import new_id
from saferun.errors import SnapshotNotFound, WorkflowNotFound
from saferun.storage.artifacts import StoredArtifact
from saferun.storage.schema import snapshots, utcnow, workflows


def next_sequence(conn: Connection, workflow_id: str) -> int:
    last = conn.execute(
        select(func.max(snapshots.c.sequence)).where(snapshots.c.workflow_id == workflow_id)
    ).scalar()
    return (last or 0) + 1


def insert_snapshot(conn: Connection, **values: Any) -> None:
    conn.execute(insert(snapshots).values(created_at=utcnow(), **values))


def insert_for(
    conn: Connection,
    workflow_id: str,
    checkpoint_id: str,
    label: str,
    status: str,
    stored: StoredArtifact,
    *,
    parent_snapshot_id: str | None,
) -> str:
    """Record a snapshot of a just-stored artifact as the workflow's next one; returns its id."""
    snapshot_id = new_id("snap")
    insert_snapshot(
        conn,
        snapshot_id=snapshot_id,
        workflow_id=workflow_id,
        sequence=next_sequence(conn, workflow_id),
        checkpoint_id=checkpoint_id,
        label=label,
        status=status,
        artifact_uri=stored.uri,
        raw_size_bytes=stored.raw_size,
        compressed_size_bytes=stored.compressed_size,
        new_bytes=stored.new_bytes,
        parent_snapshot_id=parent_snapshot_id,
    )
    return snapshot_id


def get(conn: Connection, snapshot_id: str) -> RowMapping:
    row = conn.execute(select(snapshots).where(snapshots.c.snapshot_id == snapshot_id)).mappings().first()
    if row is None:
        raise SnapshotNotFound(snapshot_id)
    return row


def set_status(conn: Connection, snapshot_id: str, status: str) -> None:
    conn.execute(update(snapshots).where(snapshots.c.snapshot_id == snapshot_id).values(status=status))


def list_for(conn: Connection, workflow_id: str) -> list[RowMapping]:
    return list(
        conn.execute(
            select(snapshots).where(snapshots.c.workflow_id == workflow_id).order_by(snapshots.c.sequence)
        ).mappings()
    )


def latest(conn: Connection, workflow_id: str) -> RowMapping | None:
    return (
        conn.execute(
            select(snapshots)
            .where(snapshots.c.workflow_id == workflow_id)
            .order_by(snapshots.c.sequence.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )


def count(conn: Connection, workflow_id: str) -> int:
    return conn.execute(
        select(func.count()).select_from(snapshots).where(snapshots.c.workflow_id == workflow_id)
    ).scalar_one()


PASSED = ("approved", "modified", "passed")


def checkpoint_passed(
    conn: Connection, workflow_id: str, checkpoint_id: str, *, exclude: str | None = None
) -> bool:
    """Has this configured checkpoint been approved (or passed) before? One indexed probe."""
    stmt = select(snapshots.c.snapshot_id).where(
        snapshots.c.workflow_id == workflow_id,
        snapshots.c.checkpoint_id == checkpoint_id,
        snapshots.c.status.in_(PASSED),
    )
    if exclude:
        stmt = stmt.where(snapshots.c.snapshot_id != exclude)
    return conn.execute(stmt.limit(1)).first() is not None


def passed_checkpoints(conn: Connection, workflow_id: str) -> set[str]:
    rows = conn.execute(
        select(snapshots.c.checkpoint_id)
        .distinct()
        .where(snapshots.c.workflow_id == workflow_id, snapshots.c.status.in_(PASSED))
    )
    return {r[0] for r in rows}


def last_approved_uri(conn: Connection, workflow_id: str) -> str | None:
    """The artifact of the workflow's last approved snapshot, in one query; NotFound for unknown ids."""
    row = conn.execute(
        select(workflows.c.workflow_id, snapshots.c.artifact_uri)
        .select_from(
            workflows.outerjoin(snapshots, snapshots.c.snapshot_id == workflows.c.last_approved_snapshot_id)
        )
        .where(workflows.c.workflow_id == workflow_id)
    ).first()
    if row is None:
        raise WorkflowNotFound(workflow_id)
    return row.artifact_uri
