"""The SafeRun LangGraph saver's SQL: statements built once per dialect, the bare-driver column list,
and the per-database write lock. Split from ``checkpoint`` so the saver reads as LangGraph's contract."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any

from sqlalchemy import Connection, bindparam, select, tuple_

from saferun.storage.database import Database
from saferun.storage.driver_sql import Insert
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
    """The saver's reads, built once per dialect (building a Core statement costs more than running it),
    with bind parameters so SQLAlchemy's compiled cache serves every call after the first. Its writes are
    the ``Insert`` statements below."""
    key = (conn.dialect.name, purpose)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        c, b, w = lg_checkpoints.c, lg_blobs.c, lg_writes.c
        same = (c.thread_id == bindparam("thread_id"), c.checkpoint_ns == bindparam("ns"))

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
        }[purpose]()
        _STATEMENTS[key] = stmt
    return stmt


# The saver's writes, as driver SQL text (``storage.driver_sql``: ~100 µs less per statement than a Core
# INSERT, and a step writes three)
INSERT_BLOBS = Insert(lg_blobs, ("thread_id", "checkpoint_ns", "version", "channel"))
UPSERT_CHECKPOINT = Insert(lg_checkpoints, _CHECKPOINT_KEYS, update=True)
INSERT_WRITES = Insert(lg_writes, _WRITE_KEYS)
UPSERT_WRITES = Insert(lg_writes, _WRITE_KEYS, update=True)


Slot = tuple[str, str, str | None, str | None]  # channel, value_type, artifact_uri, part_key
_SlotKey = tuple[str, str, tuple[tuple[str, Any], ...]]  # thread, namespace, (channel, version) pairs


class SlotCache:
    """Where each (thread, namespace, channel, version) of a checkpoint is stored, once read.

    The ``lg_blobs`` row of a channel version is insert-only, so the answer cannot change while the row
    exists; ``forget`` drops a thread's answers when this process deletes, prunes or copies rows (a
    thread deleted elsewhere has no checkpoint left that names its versions, and versions carry a random
    part, so a re-created thread never reuses one). Bounded: the least recently used checkpoints go.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[_SlotKey, list[Slot]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(thread_id: str, ns: str, versions: dict[str, Any]) -> _SlotKey:
        # in the checkpoint's own order, unsorted: a warm ``get_state`` builds this key every call, and
        # the same checkpoint always decodes to the same order (another order only costs one more entry)
        return (thread_id, ns, tuple(versions.items()))

    def lookup(self, thread_id: str, ns: str, versions: dict[str, Any]) -> list[Slot] | None:
        key = self._key(thread_id, ns, versions)
        with self._lock:
            slots = self._entries.get(key)
            if slots is not None:
                self._entries.move_to_end(key)
            return slots

    def remember(self, thread_id: str, ns: str, versions: dict[str, Any], slots: list[Slot]) -> None:
        key = self._key(thread_id, ns, versions)
        with self._lock:
            self._entries[key] = slots
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, thread_ids: set[str] | None = None) -> None:
        """Drop the answers for ``thread_ids`` (all of them when None)."""
        with self._lock:
            if thread_ids is None:
                self._entries.clear()
                return
            for key in [k for k in self._entries if k[0] in thread_ids]:
                del self._entries[key]


def decode_checkpoint(serde: Any, row: Any, stored_versions: dict[str, Any] | None) -> Any:
    """A checkpoint from its row: the serialized bytes, plus the channel versions when the row keeps
    them in their own column (PostgreSQL, migration 0022) instead of in the bytes."""
    checkpoint = serde.loads_typed((row["checkpoint_type"], bytes(row["checkpoint"])))
    if stored_versions is not None:
        checkpoint["channel_versions"] = dict(stored_versions)
    return checkpoint


class FirstReads:
    """The (thread, namespace) pairs a saver has not read yet, so its first read of each can also fetch
    the blobs of the checkpoint's parts in the same statement (PostgreSQL: one round trip instead of two;
    a later read finds its parts in the verified cache and would only carry them for nothing).
    Bounded: past ``max_entries`` the least recently read pairs count as unread again."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._read: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def first(self, thread_id: str, ns: str) -> bool:
        """Whether this is the first read of the pair (and, from now on, it is not)."""
        key = (thread_id, ns)
        with self._lock:
            if key in self._read:
                self._read.move_to_end(key)
                return False
            self._read[key] = None
            while len(self._read) > self.max_entries:
                self._read.popitem(last=False)
            return True
