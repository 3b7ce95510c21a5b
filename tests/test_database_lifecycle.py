"""A ``Database`` lives as long as someone holds it, and a forked child never reuses its parent's pool.

Both rest on the fork hook (``storage.database._fork_safe``): it must dispose the pool in a child, and it
must not keep the engine alive — fork hooks cannot be unregistered, and a strong reference kept every
engine the process ever made (the test suite grew past 5 GB before this was weak).
"""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from saferun.config import get_settings
from saferun.storage.database import Database


def test_a_dropped_database_and_its_engine_are_freed(tmp_path: Path) -> None:
    refs = []
    for i in range(5):
        db = Database(f"sqlite:///{tmp_path / f'd{i}.db'}")
        with db.transaction() as conn:
            conn.exec_driver_sql("select 1")
        refs.append((weakref.ref(db), weakref.ref(db.engine)))
        db.dispose()
        del db, conn
    gc.collect()
    assert [(d(), e()) for d, e in refs] == [(None, None)] * 5
    assert not any(isinstance(o, Engine) and str(tmp_path) in str(o.url) for o in gc.get_objects())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_starts_with_an_empty_pool(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'f.db'}")
    with db.read() as conn:
        conn.exec_driver_sql("select 1")
    assert db.engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
    pid = os.fork()
    if pid == 0:  # the child: the hook ran, so nothing of the parent's pool is handed out
        os._exit(0 if db.engine.pool.checkedin() == 0 else 1)  # type: ignore[attr-defined]
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert db.engine.pool.checkedin() >= 1  # type: ignore[attr-defined] # the parent's pool is untouched
    db.dispose()


@pytest.mark.postgres
def test_a_postgres_pool_keeps_the_connections_concurrency_opened(pg_db: Database) -> None:
    """Issue 12, target 3: a pool that kept 5 connections and opened and closed up to 10 more around them
    reconnected every few cycles under 8 agents (a new backend each time). The pool now opens connections
    as concurrency needs them, up to ``SAFERUN_DB_POOL_SIZE``, and keeps them: a second burst of the same
    concurrency opens none."""
    import threading

    from sqlalchemy import event, text

    opened: list[object] = []

    def on_connect(conn: object, _record: object) -> None:
        opened.append(conn)

    event.listen(pg_db.engine, "connect", on_connect)
    try:

        def burst(width: int) -> None:
            inside = threading.Barrier(width)

            def one() -> None:
                with pg_db.transaction() as conn:
                    conn.execute(text("SELECT 1"))
                    inside.wait(30)  # all ``width`` transactions hold a connection at once

            threads = [threading.Thread(target=one) for _ in range(width)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)

        burst(9)
        first = len(opened)
        assert first >= 8  # (one may have been pooled before the burst)
        burst(9)
        burst(9)
        assert len(opened) == first  # kept, not closed and opened again
        assert pg_db.engine.pool.size() == get_settings().db_pool_size
    finally:
        event.remove(pg_db.engine, "connect", on_connect)
