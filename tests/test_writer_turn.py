"""SQLite writers of one process take turns on a Python lock before ``BEGIN IMMEDIATE`` (issue 12, target 3).

SQLite's busy handler sleeps a waiting writer for growing intervals instead of queueing it, so several
writers of one server slept through the moments the lock came free. ``writer_turn`` queues them in the
process; these tests pin what must not change with it: the wait budget (``lock_wait``) still ends in a
``StoreUnavailable`` 503 ``locked`` with nothing written, reads never wait for the turn, a thread that
nests writers does not deadlock on it, and many concurrent writers all get through.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from saferun.errors import StoreUnavailable
from saferun.storage.database import Database, lock_wait, writer_turn


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'turn.db'}", migrate=False)
    with database.transaction() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)"))
    yield database
    database.dispose()


def rows(db: Database) -> list[str]:
    with db.read() as conn:
        return [r[0] for r in conn.execute(text("SELECT who FROM t ORDER BY id"))]


def hold_a_write(db: Database) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """A thread inside a write transaction until ``release`` is set."""
    inside, release = threading.Event(), threading.Event()

    def run() -> None:
        with db.transaction() as conn:
            conn.execute(text("INSERT INTO t (who) VALUES ('holder')"))
            inside.set()
            release.wait(60)

    thread = threading.Thread(target=run)
    thread.start()
    assert inside.wait(60)
    return thread, inside, release


def test_a_writer_past_its_budget_is_store_unavailable_locked_and_writes_nothing(db: Database) -> None:
    holder, _, release = hold_a_write(db)
    outcome: list[BaseException | None] = []

    def late_writer() -> None:
        try:
            with lock_wait(100), db.transaction() as conn:  # an HTTP request's budget, made short
                conn.execute(text("INSERT INTO t (who) VALUES ('late')"))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        other = threading.Thread(target=late_writer)
        other.start()
        other.join(60)
        assert len(outcome) == 1
        assert isinstance(outcome[0], StoreUnavailable) and outcome[0].reason == "locked"
        assert rows(db) == []  # reads do not wait for the turn, and see nothing uncommitted
    finally:
        release.set()
        holder.join(60)
    assert rows(db) == ["holder"]
    with lock_wait(100), db.transaction() as conn:  # the turn is free again
        conn.execute(text("INSERT INTO t (who) VALUES ('after')"))
    assert rows(db) == ["holder", "after"]


def test_the_turn_is_re_entrant_and_released_on_failure(db: Database) -> None:
    with writer_turn(db), writer_turn(db):  # a nested holder is not deadlocked by the turn itself
        pass
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute(text("INSERT INTO t (who) VALUES ('rolled back')"))
        raise RuntimeError("fails inside the transaction")
    done = threading.Event()

    def writer() -> None:
        with lock_wait(1000), db.transaction() as conn:
            conn.execute(text("INSERT INTO t (who) VALUES ('next')"))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join(60)
    assert done.is_set() and rows(db) == ["next"]


def test_many_concurrent_writers_all_get_through(db: Database) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(25):
                with lock_wait(30_000), db.transaction() as conn:
                    conn.execute(text("INSERT INTO t (who) VALUES (:w)"), {"w": f"{n}:{i}"})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(rows(db)) == sorted(f"{n}:{i}" for n in range(8) for i in range(25))


def test_the_turn_passes_on_at_the_commit_not_at_the_check_in(db: Database) -> None:
    """What waits for a commit (the event log's lines, the wake-ups) runs when the pool checks the
    connection in; the next writer must not wait for it. Under load it was a third of a held turn."""
    import sqlite3

    from sqlalchemy import event

    seen: list[tuple[bool, list[str]]] = []

    def on_checkin(_dbapi_conn: object, _record: object) -> None:
        got: list[bool] = []
        probe = threading.Thread(target=lambda: got.append(writer_turn_free(db)))
        probe.start()
        probe.join()
        with sqlite3.connect(str(db.engine.url.database)) as other:  # outside the pool: no check-in
            committed = [r[0] for r in other.execute("SELECT who FROM t")]
        seen.append((got == [True], committed))

    event.listen(db.engine, "checkin", on_checkin)
    try:
        with db.transaction() as conn:
            conn.execute(text("INSERT INTO t (who) VALUES ('committed')"))
    finally:
        event.remove(db.engine, "checkin", on_checkin)
    # at the write's check-in the row is committed and another thread gets the turn at once
    assert seen == [(True, ["committed"])]


def test_a_failed_writer_releases_the_turn_too(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute(text("INSERT INTO t (who) VALUES ('undone')"))
        raise RuntimeError("boom")
    got: list[bool] = []
    probe = threading.Thread(target=lambda: got.append(writer_turn_free(db)))
    probe.start()
    probe.join()
    assert got == [True]
    assert rows(db) == []


def writer_turn_free(db: Database) -> bool:
    """Whether another thread gets the writer turn within 50 ms."""
    try:
        with lock_wait(50), writer_turn(db):
            return True
    except StoreUnavailable:
        return False
