"""A bare DB-API cursor for the few hot reads where SQLAlchemy's per-call cost is most of the time.

LangGraph's ``SqliteSaver`` reads through one long-lived ``sqlite3`` connection; a warm ``get_state`` there
is two indexed SELECTs. The same read through the pool (checkout, reset-on-return, events) cost SafeRun's
saver ~0.1 ms of a ~0.3 ms call. On a SQLite file this hands each thread its own long-lived connection,
opened read-only (``PRAGMA query_only``) so a bug can never write around the engine's transaction
discipline. In autocommit mode each SELECT reads the latest committed state (WAL: readers never wait for
the writer). Anything else — PostgreSQL, an in-memory database — gets a pooled connection as before.

A connection belongs to the thread and process that opened it: a forked child or another thread opens its
own, and ``Database.dispose`` closes none of these (they hold no write lock and no snapshot between calls).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from saferun.storage.database import BUSY_TIMEOUT_MS, Database

_local = threading.local()


def _sqlite_path(db: Database) -> str | None:
    url = db.engine.url
    if url.get_backend_name() != "sqlite":
        return None
    path = url.database or ""
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return path


def _thread_connection(db: Database, path: str) -> sqlite3.Connection:
    conns: weakref.WeakKeyDictionary[Database, tuple[int, sqlite3.Connection]] | None = getattr(
        _local, "conns", None
    )
    if conns is None:
        conns = _local.conns = weakref.WeakKeyDictionary()
    held = conns.get(db)
    if held is not None and held[0] == os.getpid():
        return held[1]
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only=1")
    conns[db] = (os.getpid(), conn)
    return conn


@contextmanager
def bare_cursor(db: Database) -> Iterator[Any]:
    """A DB-API cursor (``?`` placeholders on SQLite, ``%s`` on PostgreSQL: see ``placeholder``) for
    read-only statements that need no transaction spanning them."""
    path = _sqlite_path(db)
    if path is not None:
        cur = _thread_connection(db, path).cursor()
        try:
            yield cur
        finally:
            cur.close()
        return
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
