"""Rows of ``snapshots``: which artifact holds the state captured at which checkpoint."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Connection,
    RowMapping,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.selectable import Exists

from saferun.domain.ids import new_id
from saferun.errors import SnapshotNotFound
from saferun.storage.artifacts import StoredArtifact
from saferun.storage.bare_select import BareSelect
from saferun.storage.schema import artifacts, snapshots, utcnow
from saferun.storage.workflows import GET_BARE
from saferun.storage.workflows import get as get_workflow

PASSED = ("approved", "modified", "passed")
_NEXT_SEQ = select(func.max(snapshots.c.sequence)).where(snapshots.c.workflow_id == bindparam("b_wf"))
_INSERT = insert(snapshots)
_GET = select(snapshots).where(snapshots.c.snapshot_id == bindparam("b_snap"))
_SET_STATUS = update(snapshots).where(snapshots.c.snapshot_id == bindparam("b_snap"))


def passed_before(workflow_id: Any, checkpoint_id: Any, other_than: Any) -> Exists:
    """Whether a snapshot of the workflow's checkpoint other than ``other_than`` was approved, modified or
    passed, so its milestone was paid: one seek of ``ix_snapshots_workflow_checkpoint``. The arguments are
    column expressions or bound parameters, so the probe can ride in another statement (a decision's read
    under the lock, a snapshot's INSERT); its answer holds only while the workflow's lock is held."""
    earlier = snapshots.alias("earlier")
    return exists().where(
        earlier.c.workflow_id == workflow_id,
        earlier.c.checkpoint_id == checkpoint_id,
        earlier.c.status.in_(PASSED),
        earlier.c.snapshot_id != other_than,
    )


_PASSED = select(passed_before(bindparam("b_wf"), bindparam("b_cp"), bindparam("b_exclude")))
_FIELDS = [c for c in snapshots.columns if c.name != "sequence"]
# The next sequence number is computed by the INSERT itself (writers of a workflow are serialized by its
# lock), so recording a snapshot is one statement, not a MAX() and an INSERT.


# whether another snapshot of the new one's checkpoint passed before: asked by the INSERT's RETURNING (the
# new row's own values as parameters: RETURNING may not correlate a subquery with the row it inserted)
_PASSED_BEFORE = passed_before(
    bindparam("workflow_id"), bindparam("checkpoint_id"), bindparam("snapshot_id")
).label("passed_before")


def _insert_next(typed: bool, probe: bool) -> Any:
    """``typed``: CAST each value to its column's type, which PostgreSQL needs to type the parameters of
    a SELECT list; SQLite must not get them (CAST(text AS DATETIME) would store a number). ``probe``:
    also return ``_PASSED_BEFORE``."""

    def value(c: Any) -> Any:
        param = bindparam(c.name, type_=c.type)
        return cast(param, c.type) if typed else param

    return (
        insert(snapshots)
        .from_select(
            [*[c.name for c in _FIELDS], "sequence"],
            select(
                *[value(c) for c in _FIELDS],
                func.coalesce(func.max(snapshots.c.sequence), 0) + 1,
            ).where(snapshots.c.workflow_id == bindparam("workflow_id")),
        )
        .returning(snapshots.c.sequence, *([_PASSED_BEFORE] if probe else []))
    )


_INSERT_NEXT = {(t, p): _insert_next(t, p) for t in (False, True) for p in (False, True)}


def next_sequence(conn: Connection, workflow_id: str) -> int:
    last = conn.execute(_NEXT_SEQ, {"b_wf": workflow_id}).scalar()
    return (last or 0) + 1


def insert_snapshot(conn: Connection, **values: Any) -> None:
    conn.execute(_INSERT, {"created_at": utcnow(), **values})


def insert_for(
    conn: Connection,
    workflow_id: str,
    checkpoint_id: str,
    label: str,
    status: str,
    stored: StoredArtifact,
    *,
    parent_snapshot_id: str | None,
    probe: bool = False,
) -> dict[str, Any]:
    """Record a snapshot of a just-stored artifact as the workflow's next one; returns the row written
    (with ``probe``, also ``passed_before``: whether its checkpoint had passed before, in the same
    statement; the caller holds the workflow's lock)."""
    row = {
        "snapshot_id": new_id("snap"),
        "workflow_id": workflow_id,
        "checkpoint_id": checkpoint_id,
        "label": label,
        "status": status,
        "artifact_uri": stored.uri,
        "raw_size_bytes": stored.raw_size,
        "compressed_size_bytes": stored.compressed_size,
        "new_bytes": stored.new_bytes,
        "parent_snapshot_id": parent_snapshot_id,
        "created_at": utcnow(),
    }
    stmt = _INSERT_NEXT[conn.dialect.name == "postgresql", probe]
    written = conn.execute(stmt, row).one()
    row["sequence"] = written[0]
    if probe:
        return {**row, "passed_before": bool(written[1])}
    return row


def get(conn: Connection, snapshot_id: str) -> RowMapping:
    row = conn.execute(_GET, {"b_snap": snapshot_id}).mappings().first()
    if row is None:
        raise SnapshotNotFound(snapshot_id)
    return row


def set_status(conn: Connection, snapshot_id: str, status: str) -> None:
    conn.execute(_SET_STATUS, {"b_snap": snapshot_id, "status": status})


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


def checkpoint_passed(
    conn: Connection, workflow_id: str, checkpoint_id: str, *, exclude: str | None = None
) -> bool:
    """Has this configured checkpoint been approved (or passed) before? One indexed probe."""
    params = {"b_wf": workflow_id, "b_cp": checkpoint_id, "b_exclude": exclude or ""}
    return bool(conn.execute(_PASSED, params).scalar_one())


def first_open(conn: Connection, workflow_id: str, checkpoint_ids: list[str]) -> str | None:
    """The first of ``checkpoint_ids`` (in the given order) never passed, or None when all have passed.

    One statement of ``len(checkpoint_ids)`` probes of ``ix_snapshots_workflow_checkpoint``, so its cost
    does not grow with the workflow's history. (It used to read every passed snapshot of the workflow with
    ``DISTINCT``: a long-running agent labelling its states freely paid for all its earlier checkpoints
    at each new one.)"""
    if not checkpoint_ids:
        return None
    params = {"b_wf": workflow_id, **{f"b_cp{i}": cp for i, cp in enumerate(checkpoint_ids)}}
    row = conn.execute(first_open_statement(len(checkpoint_ids)), params).first()
    return None if row is None else checkpoint_ids[row[0]]


_FIRST_OPEN: dict[int, Any] = {}


def first_open_statement(count: int) -> Any:
    """The statement for ``count`` checkpoints, built once per count (configs hold a handful)."""
    stmt = _FIRST_OPEN.get(count)
    if stmt is None:
        probes = [
            select(literal_column(str(i)).label("pos")).where(
                ~exists().where(
                    snapshots.c.workflow_id == bindparam("b_wf"),
                    snapshots.c.checkpoint_id == bindparam(f"b_cp{i}"),
                    snapshots.c.status.in_(PASSED),
                )
            )
            for i in range(count)
        ]
        union = union_all(*probes).subquery()
        stmt = _FIRST_OPEN[count] = select(union.c.pos).order_by(union.c.pos).limit(1)
    return stmt


_WITH_ARTIFACT = (
    select(
        snapshots,
        artifacts.c.uri,
        artifacts.c.artifact_type,
        artifacts.c.raw_size,
        artifacts.c.compressed_size,
    )
    .outerjoin(artifacts, artifacts.c.uri == snapshots.c.artifact_uri)
    .where(snapshots.c.snapshot_id == bindparam("b_snap"))
)


def with_artifact(conn: Connection, snapshot_id: str) -> RowMapping | None:
    """The snapshot row with its ``artifacts`` row's uri, type and sizes (None when it has none), in one
    read, for the reads that check one against the other."""
    return conn.execute(_WITH_ARTIFACT, {"b_snap": snapshot_id}).mappings().first()


_WITH_ARTIFACT_BARE = BareSelect(_WITH_ARTIFACT)


def last_approved_bare(
    dialect: Dialect, cursor: Any, workflow_id: str
) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """``last_approved`` on a bare read cursor (``storage.bare_select``); None for an unknown workflow.
    Two statements, each on committed data, not one snapshot: a caller checks what it got against the
    chain and falls back to ``last_approved`` in a transaction when they disagree."""
    row = GET_BARE.first(dialect, cursor, {"b_wf": workflow_id})
    if row is None:
        return None
    snap_id = row["last_approved_snapshot_id"]
    return row, None if snap_id is None else _WITH_ARTIFACT_BARE.first(dialect, cursor, {"b_snap": snap_id})


def last_approved(conn: Connection, workflow_id: str) -> tuple[RowMapping, RowMapping | None]:
    """The workflow row and its last approved snapshot with its artifact row (``with_artifact``; None
    before any approval); NotFound for unknown ids."""
    row = get_workflow(conn, workflow_id)
    snap_id = row["last_approved_snapshot_id"]
    return row, None if snap_id is None else with_artifact(conn, snap_id)
