"""Rows of ``snapshots``: which artifact holds the state captured at which checkpoint."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping, func, insert, select, update

from saferun.domain.ids import new_id
from saferun.errors import SnapshotNotFound
from saferun.storage.artifacts import StoredArtifact
from saferun.storage.schema import snapshots, utcnow


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
