"""The SafeRun LangGraph saver's SQL: statements built once per dialect, the bare-driver column list,
and the per-database write lock. Split from ``checkpoint`` so the saver reads as LangGraph's contract."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from sqlalchemy import Connection, bindparam, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from saferun.storage.database import Database
from saferun.storage.schema import lg_blobs, lg_checkpoints, lg_writes

_WRITE_LOCKS: weakref.WeakKeyDictionary[Database, threading.Lock] = weakref.WeakKeyDictionary()
_WRITE_LOCKS_GUARD = threading.Lock()


def write_lock(db: Database) -> threading.Lock:
    """One lock per SQLite database handle, shared by every saver on it."""
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(db)
        if lock is None:
            lock = _WRITE_LOCKS[db] = threading.Lock()
        return lock


CP_COLUMN_NAMES = (
    "thread_id",
    "checkpoint_ns",
    "checkpoint_id",
    "parent_checkpoint_id",
    "checkpoint_type",
    "checkpoint",
    "metadata_type",
    "metadata",
)
CP_COLUMNS = ", ".join(CP_COLUMN_NAMES)
_STATEMENTS: dict[tuple[str, str], Any] = {}
_CHECKPOINT_KEYS = ("thread_id", "checkpoint_ns", "checkpoint_id")
_WRITE_KEYS = (*_CHECKPOINT_KEYS, "task_id", "idx")


def statement(conn: Connection, purpose: str) -> Any:
    """Statements built once per dialect (building a Core statement costs more than running it), with
    bind parameters so SQLAlchemy's compiled cache serves every call after the first."""
    key = (conn.dialect.name, purpose)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        make = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        c, b, w = lg_checkpoints.c, lg_blobs.c, lg_writes.c
        same = (c.thread_id == bindparam("thread_id"), c.checkpoint_ns == bindparam("ns"))

        def upsert(table: Any, keys: tuple[str, ...]) -> Any:
            base = make(table)
            return base.on_conflict_do_update(
                index_elements=list(keys),
                set_={col.name: base.excluded[col.name] for col in table.c if col.name not in keys},
            )

        stmt = {
            "checkpoint": lambda: select(lg_checkpoints).where(
                *same, c.checkpoint_id == bindparam("checkpoint_id")
            ),
            "latest": lambda: select(lg_checkpoints).where(*same).order_by(c.checkpoint_id.desc()).limit(1),
            "blobs": lambda: select(b.channel, b.value_type, b.artifact_uri).where(
                b.thread_id == bindparam("thread_id"),
                b.checkpoint_ns == bindparam("ns"),
                tuple_(b.channel, b.version).in_(bindparam("pairs", expanding=True)),
            ),
            "writes": lambda: (
                select(w.task_id, w.channel, w.value_type, w.value)
                .where(
                    w.thread_id == bindparam("thread_id"),
                    w.checkpoint_ns == bindparam("ns"),
                    w.checkpoint_id == bindparam("checkpoint_id"),
                )
                .order_by(w.task_path, w.task_id, w.idx)
            ),
            "insert_blobs": lambda: make(lg_blobs).on_conflict_do_nothing(
                index_elements=["thread_id", "checkpoint_ns", "channel", "version"]
            ),
            "upsert_checkpoint": lambda: upsert(lg_checkpoints, _CHECKPOINT_KEYS),
            "insert_writes": lambda: make(lg_writes).on_conflict_do_nothing(index_elements=list(_WRITE_KEYS)),
            "upsert_writes": lambda: upsert(lg_writes, _WRITE_KEYS),
        }[purpose]()
        _STATEMENTS[key] = stmt
    return stmt
