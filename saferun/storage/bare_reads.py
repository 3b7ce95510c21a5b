"""A bare DB-API cursor for the few hot reads where SQLAlchemy's per-call cost is most of the time.

LangGraph's ``SqliteSaver`` and ``PostgresSaver`` read through one long-lived connection; a warm
``get_state`` there is one or two indexed SELECTs. The same read through SQLAlchemy's pool costs a
checkout, events and a reset-on-return (on PostgreSQL a ROLLBACK round trip after the implicit BEGIN):
~0.1 ms of a ~0.3 ms call on SQLite, a round trip of two or three on PostgreSQL.

So each thread gets its own long-lived connection per database, in autocommit mode, where every SELECT
reads the latest committed state and no snapshot or lock is held between calls:
- SQLite (a file): ``sqlite3`` with ``PRAGMA query_only`` — it can never write around the engine's
  transaction discipline; WAL readers never wait for the writer.
- PostgreSQL: ``psycopg`` with the engine's own connect arguments (host, schema ``options``, ...), in a
  read-only session (``default_transaction_read_only``). A connection the server dropped (restart,
  failover, idle timeout) is replaced and the read tried once more.
Anything else (an in-memory SQLite database) gets a pooled connection, as before.

Only for reads that need no transaction spanning them (each statement sees committed data on its own).
A connection belongs to the thread and process that opened it: a forked child or another thread opens
its own; they close when their thread ends or the ``Database`` is garbage-collected.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from saferun.storage.database import BUSY_TIMEOUT_MS, Database

T = TypeVar("T")
_local = threading.local()


def _sqlite_path(db: Database) -> str | None:
    path = db.engine.url.database or ""
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return path


def _open(db: Database) -> Any | None:
    """A new autocommit, read-only connection to ``db``, or None where a pooled one must do."""
    backend = db.engine.url.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_path(db)
        if path is None:
            return None
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only=1")
        return conn
    if backend == "postgresql" and db.engine.dialect.driver == "psycopg":
        import psycopg

        cargs, cparams = db.engine.dialect.create_connect_args(db.engine.url)
        cparams.pop("context", None)  # SQLAlchemy's adapters map; plain psycopg types are what we read
        conn = psycopg.connect(*cargs, **cparams, autocommit=True)
        conn.execute("SET default_transaction_read_only = on")
        return conn
    return None


def _held(db: Database) -> weakref.WeakKeyDictionary[Database, tuple[int, Any]]:
    held = getattr(_local, "conns", None)
    if held is None:
        held = _local.conns = weakref.WeakKeyDictionary()
    return held


def _connection(db: Database) -> Any | None:
    held = _held(db)
    entry = held.get(db)
    if entry is not None and entry[0] == os.getpid():
        return entry[1]
    conn = _open(db)
    if conn is not None:
        held[db] = (os.getpid(), conn)
    return conn


def close_thread_connection(db: Database) -> None:
    """Close this thread's bare connection to ``db``, if it has one; the next read opens a new one (after
    a dropped connection; the saver benchmark's first reads, as a new process would)."""
    entry = _held(db).pop(db, None)
    if entry is not None and entry[0] == os.getpid():
        with contextlib.suppress(Exception):  # a broken connection may fail to close; dropped either way
            entry[1].close()


# called with the database before every bare read: these reads bypass the pool, so the engine's events
# never see them (tests/test_event_loop_free.py registers a check that no event loop runs on the thread)
observers: list[Callable[[Database], None]] = []


def bare_read(db: Database, read: Callable[[Any], T]) -> T:
    """``read(cursor)`` on this thread's long-lived connection (see the module docstring); on PostgreSQL a
    connection found dead is replaced and ``read`` runs once more. ``read`` must only SELECT."""
    for observe in observers:
        observe(db)
    conn = _connection(db)
    if conn is None:
        with _pooled_cursor(db) as cur:
            return read(cur)
    try:
        return _run(conn, read)
    except Exception as exc:
        if not _is_disconnect(exc):
            raise
        close_thread_connection(db)
        conn = _connection(db)
        assert conn is not None
        return _run(conn, read)


def _run(conn: Any, read: Callable[[Any], T]) -> T:
    cur = conn.cursor()
    try:
        return read(cur)
    finally:
        cur.close()


def _is_disconnect(exc: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):  # raised through a bare_writes.BareConnection on the cursor
        if exc.connection_invalidated:
            return True
        exc = exc.orig
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    if isinstance(exc, psycopg.OperationalError):
        return True
    return isinstance(exc, psycopg.InterfaceError) and "closed" in str(exc)


@contextmanager
def _pooled_cursor(db: Database) -> Iterator[Any]:
    conn = db.engine.raw_connection()
    try:
        cur = conn.cursor()
        try:
            yield cur
        finally:
            cur.close()
    finally:
        conn.close()


def placeholder(db: Database) -> str:
    """The driver's positional placeholder: ``?`` (sqlite3) or ``%s`` (psycopg)."""
    return "?" if db.engine.dialect.paramstyle == "qmark" else "%s"


def thread_connection(db: Database) -> Any | None:
    """This thread's bare connection to ``db`` (tests trace its statements), or None for a pooled one."""
    return _connection(db)
