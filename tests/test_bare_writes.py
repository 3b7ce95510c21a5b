"""``storage.bare_writes``: the driver-level write transaction keeps ``Database.transaction``'s promises
(all or nothing, SQLAlchemy's exception classes, passing faults as ``StoreUnavailable``) on both
databases, including PostgreSQL's pipeline mode, where a statement's error only arrives at the COMMIT."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from saferun.errors import StoreUnavailable
from saferun.storage.bare_writes import bare_transaction
from saferun.storage.database import Database, lock_wait
from saferun.storage.driver_sql import Insert, KeyLookup
from saferun.storage.schema import blobs, utcnow

RETURNING = Insert(blobs, ["sha256"], returning="sha256")
PLAIN = Insert(blobs, ["sha256"])


def _blob(key: str, data: bytes = b"x") -> dict[str, object]:
    size = len(data)
    return {
        "sha256": key,
        "kind": "chunk",
        "codec": "raw",
        "raw_size": size,
        "stored_size": size,
        "data": data,
        "created_at": utcnow(),
    }


def _keys(db: Database) -> list[str]:
    with db.read() as conn:
        return sorted(conn.execute(select(blobs.c.sha256)).scalars())


def test_commits_returns_rows_and_reads_its_own_writes(db: Database) -> None:
    with bare_transaction(db) as conn:
        assert sorted(RETURNING.execute(conn, [_blob("a"), _blob("b")])) == ["a", "b"]
        assert RETURNING.execute(conn, [_blob("a"), _blob("c")]) == ["c"]  # a was there: not returned
        PLAIN.execute(conn, [_blob("d"), _blob("e")])  # executemany, nothing to wait for
        found = KeyLookup("blobs", "sha256", ["sha256"]).rows(conn, ["a", "d", "zz"])
        assert sorted(k for (k,) in found) == ["a", "d"]
    assert _keys(db) == ["a", "b", "c", "d", "e"]


def test_an_exception_in_the_block_writes_nothing(db: Database) -> None:
    with pytest.raises(RuntimeError), bare_transaction(db) as conn:
        PLAIN.execute(conn, [_blob("a")])
        raise RuntimeError("the caller failed after writing")
    assert _keys(db) == []
    with bare_transaction(db) as conn:  # the pooled connection is clean for the next transaction
        PLAIN.execute(conn, [_blob("b")])
    assert _keys(db) == ["b"]


def test_a_failing_statement_is_sqlalchemys_error_and_writes_nothing(db: Database) -> None:
    with bare_transaction(db) as conn:
        PLAIN.execute(conn, [_blob("a")])
    # a plain INSERT of an existing key: on PostgreSQL the statement is pipelined and its error comes
    # with the COMMIT; on SQLite it comes at once. Either way: IntegrityError, and "b" is not written.
    with pytest.raises(IntegrityError), bare_transaction(db) as conn:
        PLAIN.execute(conn, [_blob("b")])
        conn.exec_driver_sql(
            "INSERT INTO blobs (sha256, kind, codec, raw_size, stored_size, data, created_at) "
            + (
                "VALUES (%(k)s, 'chunk', 'raw', 1, 1, %(d)s, now())"
                if db.dialect == "postgresql"
                else "VALUES (:k, 'chunk', 'raw', 1, 1, :d, '2026-01-01 00:00:00')"
            ),
            {"k": "a", "d": b"y"},
        )
    assert _keys(db) == ["a"]
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(blobs)).scalar_one() == 1


def test_a_held_sqlite_lock_is_store_unavailable_locked(tmp_path: Path) -> None:
    from conftest import new_sqlite_database

    db = new_sqlite_database(tmp_path / "locked.db")
    other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable) as caught, lock_wait(50), bare_transaction(db) as conn:
            PLAIN.execute(conn, [_blob("a")])
        assert caught.value.reason == "locked"
        other.execute("ROLLBACK")
        with bare_transaction(db) as conn:  # the wait was this context's, not the connection's for good
            PLAIN.execute(conn, [_blob("a")])
        assert _keys(db) == ["a"]
    finally:
        other.close()
        db.dispose()


class RoundTrips:
    """Counts what makes psycopg wait for the server inside a pipeline: a Sync (a transaction's end, or
    psycopg's own BEGIN) and a flush to fetch a statement's rows."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from psycopg import _pipeline_base

        self.syncs = 0
        self.fetches = 0
        self._syncing = False  # the fetch that follows a Sync is that Sync's answer, not a trip of its own
        base = _pipeline_base.BasePipeline
        sync, fetch = base._enqueue_sync, base._fetch_gen

        def counted_sync(pipeline: object) -> None:
            self.syncs += 1
            self._syncing = True
            sync(pipeline)

        def counted_fetch(pipeline: object, *, flush: bool):  # type: ignore[no-untyped-def]
            if flush and pipeline.result_queue and not self._syncing:  # type: ignore[attr-defined]
                self.fetches += 1
            self._syncing = False
            return fetch(pipeline, flush=flush)

        monkeypatch.setattr(base, "_enqueue_sync", counted_sync)
        monkeypatch.setattr(base, "_fetch_gen", counted_fetch)


@pytest.mark.postgres
def test_a_postgres_transaction_of_plain_statements_is_one_round_trip(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEGIN, the INSERTs (one multi-row statement each) and COMMIT go out together and are answered at
    the pipeline's one closing Sync. psycopg's own transaction handling would add two: its BEGIN syncs
    before the first statement, and ``commit()`` syncs again before the pipeline's exit does."""
    trips = RoundTrips(monkeypatch)
    with bare_transaction(pg_db) as conn:
        PLAIN.execute(conn, [_blob("a"), _blob("b"), _blob("c")])
        PLAIN.execute(conn, [_blob("d")])
    assert (trips.syncs, trips.fetches) == (1, 0)
    assert _keys(pg_db) == ["a", "b", "c", "d"]
    trips.syncs = 0
    with bare_transaction(pg_db) as conn:  # a statement whose rows are needed waits for them, once
        assert RETURNING.execute(conn, [_blob("e"), _blob("a")]) == ["e"]
        PLAIN.execute(conn, [_blob("f")])
    assert (trips.syncs, trips.fetches) == (1, 1)


@pytest.mark.postgres
def test_a_pooled_postgres_connection_goes_back_transactional_whatever_happened(pg_db: Database) -> None:
    """The pipelined transaction runs its connection in autocommit (it sends its own BEGIN); after a
    commit, a failing statement or the caller's exception the connection is back in psycopg's
    transactional mode, so the next user of the pool (a ``Database.transaction``) is not left bare."""

    def pooled_autocommit() -> bool:
        fairy = pg_db.engine.raw_connection()
        try:
            return bool(fairy.dbapi_connection.autocommit)
        finally:
            fairy.close()

    pg_db.engine.dispose()
    with bare_transaction(pg_db) as conn:
        PLAIN.execute(conn, [_blob("a")])
    assert pooled_autocommit() is False
    with pytest.raises(IntegrityError), bare_transaction(pg_db) as conn:
        PLAIN.execute(conn, [_blob("b")])
        conn.exec_driver_sql(
            "INSERT INTO blobs (sha256, kind, codec, raw_size, stored_size, data, created_at) "
            "VALUES (%(k)s, 'chunk', 'raw', 1, 1, %(d)s, now())",
            {"k": "a", "d": b"y"},
        )
    assert pooled_autocommit() is False
    with pytest.raises(RuntimeError), bare_transaction(pg_db) as conn:
        PLAIN.execute(conn, [_blob("c")])
        raise RuntimeError("the caller failed after writing")
    assert pooled_autocommit() is False
    assert _keys(pg_db) == ["a"]
    # and a transaction through SQLAlchemy on the same pool still rolls back as a transaction should
    with pytest.raises(RuntimeError), pg_db.transaction() as sa_conn:
        PLAIN.execute(sa_conn, [_blob("d")])
        raise RuntimeError("rolled back")
    assert _keys(pg_db) == ["a"]


def test_combined_statements_go_as_one_and_a_read_opens_a_real_transaction(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``combine``: on PostgreSQL the INSERTs of a transaction go as one statement (a writable ``WITH``;
    atomic on its own, so no BEGIN/COMMIT), as PostgresSaver's autocommit writes go. A statement that
    returns rows opens a real transaction first, so a probe's lock lasts until the commit (the GC relies
    on it). Errors are SQLAlchemy's and write nothing; SQLite runs as always."""
    sent: list[str] = []
    if db.dialect == "postgresql":
        import psycopg

        real = psycopg.Cursor.execute

        def spy(self: object, query: object, params: object = None, **kw: object) -> object:
            sent.append(str(query).split()[0].upper())
            return real(self, query, params, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(psycopg.Cursor, "execute", spy)
    pg = db.dialect == "postgresql"
    with bare_transaction(db, combine=True) as conn:
        PLAIN.execute(conn, [_blob("a")])
    assert sent == (["INSERT"] if pg else [])
    sent.clear()
    with bare_transaction(db, combine=True) as conn:
        PLAIN.execute(conn, [_blob("b"), _blob("c")])
        PLAIN.execute(conn, [_blob("d")])
    assert sent == (["WITH"] if pg else [])
    sent.clear()
    with bare_transaction(db, combine=True) as conn:
        PLAIN.execute(conn, [_blob("e")])
        found = KeyLookup("blobs", "sha256", ["sha256"]).rows(conn, ["a", "e"])
        PLAIN.execute(conn, [_blob("f")])
    assert sorted(k for (k,) in found) == ["a", "e"]  # the read saw the held INSERT: sent before it
    assert sent == (["BEGIN", "INSERT", "SELECT", "INSERT", "COMMIT"] if pg else [])
    assert _keys(db) == ["a", "b", "c", "d", "e", "f"]

    duplicate = "INSERT INTO blobs (sha256, kind, codec, raw_size, stored_size, data, created_at) " + (
        "VALUES (%(k)s, 'chunk', 'raw', 1, 1, %(d)s, now())"
        if pg
        else "VALUES (:k, 'chunk', 'raw', 1, 1, :d, '2026-01-01 00:00:00')"
    )
    with pytest.raises(IntegrityError), bare_transaction(db, combine=True) as conn:
        PLAIN.execute(conn, [_blob("g")])
        conn.exec_driver_sql(duplicate, {"k": "a", "d": b"y"})
    with pytest.raises(RuntimeError), bare_transaction(db, combine=True) as conn:
        PLAIN.execute(conn, [_blob("h")])
        raise RuntimeError("the caller failed after writing")
    assert _keys(db) == ["a", "b", "c", "d", "e", "f"]  # neither g nor h
    with bare_transaction(db) as conn:  # the pooled connection is fine for the next transaction
        PLAIN.execute(conn, [_blob("i")])
    assert _keys(db)[-1] == "i"


@pytest.mark.postgres
@pytest.mark.parametrize("combine", [False, True])
def test_a_lost_postgres_connection_is_store_unavailable_and_the_next_write_works(
    pg_db: Database, combine: bool
) -> None:
    """The server drops the pooled connection before a write: the pipelined transaction, combined or
    not, fails as ``StoreUnavailable`` with nothing written, and the pool serves the next write."""
    with bare_transaction(pg_db, combine=combine) as conn:
        PLAIN.execute(conn, [_blob("a")])
    fairy = pg_db.engine.raw_connection()
    pid = fairy.dbapi_connection.info.backend_pid
    fairy.close()  # back to the pool: the next transaction takes this connection
    import psycopg

    libpq = pg_db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as admin:  # not from the pool: it would be that one
        admin.execute("select pg_terminate_backend(%s)", (pid,))
        # the signal is asynchronous: wait until the backend is gone, or the write below may still reach it
        for _ in range(500):
            if not admin.execute("select 1 from pg_stat_activity where pid = %s", (pid,)).fetchone():
                break
            time.sleep(0.01)
    with pytest.raises(StoreUnavailable), bare_transaction(pg_db, combine=combine) as conn:
        PLAIN.execute(conn, [_blob("b"), _blob("c")])
        PLAIN.execute(conn, [_blob("d")])
    with bare_transaction(pg_db, combine=combine) as conn:
        PLAIN.execute(conn, [_blob("e")])
    assert _keys(pg_db) == ["a", "e"]


def test_positional_numbers_each_statements_parameters_once_and_unescapes_percent() -> None:
    from saferun.storage.bare_writes import _positional

    one, order = _positional(("UPDATE t SET a = %(a)s, b = %(b)s WHERE a = %(a)s AND c LIKE 'x%%'",))
    assert one == "UPDATE t SET a = $1, b = $2 WHERE a = $1 AND c LIKE 'x%'"
    assert order == ((0, "a"), (0, "b"))
    two, order = _positional(("INSERT INTO t VALUES (%(a)s)", "INSERT INTO u VALUES (%(a)s, %(b)s)"))
    assert two == "WITH q0 AS (INSERT INTO t VALUES ($1)) INSERT INTO u VALUES ($2, $3)"
    assert order == ((0, "a"), (1, "a"), (1, "b"))  # the same name in two statements: two values


@pytest.mark.postgres
@pytest.mark.parametrize("combine", [False, True])
def test_a_statement_psycopg_would_not_cache_goes_with_numbered_parameters(
    pg_db: Database, combine: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg converts ``%(name)s`` with a regex on every execute of a statement over 4 KiB or 50
    parameters (its cache's limits): a LangGraph ``put`` combined is over both, and that conversion was
    ~0.5 ms per put. Such statements go through a ``RawCursor`` with ``$n``, converted once; if
    psycopg's uncached conversion ran, this fails."""
    import psycopg
    from psycopg import _queries

    def refuse(*_args: object) -> None:
        raise AssertionError("psycopg converted a statement without its cache")

    monkeypatch.setattr(_queries, "_query2pg_nocache", refuse)
    sent: list[str] = []
    real = psycopg.Cursor.execute

    def spy(self: object, query: object, params: object = None, **kw: object) -> object:
        sent.append(str(query))
        return real(self, query, params, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(psycopg.Cursor, "execute", spy)
    rows = [_blob(f"k{i:02}") for i in range(10)]  # 10 rows x 7 columns: 70 parameters
    for _ in range(2):  # the second time from the conversion cache
        with bare_transaction(pg_db, combine=combine) as conn:
            PLAIN.execute(conn, rows[:8])
            PLAIN.execute(conn, rows[8:])
    statements = [s for s in sent if s.split()[0] not in ("BEGIN", "COMMIT")]
    assert statements[0].startswith("WITH" if combine else "INSERT") and "$56" in statements[0]
    assert _keys(pg_db) == [f"k{i:02}" for i in range(10)]
