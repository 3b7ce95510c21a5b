"""A write transaction on the pooled driver connection, for callers whose statements are all driver SQL.

Why: the LangGraph saver's step is two short transactions (``put``, ``put_writes``) of driver-SQL
statements (``storage.driver_sql``). Through SQLAlchemy's ``Connection`` each transaction costs ~60 µs of
begin/commit bookkeeping and events, and each statement ~35 µs more of execution context and result
setup, while SQLite needs ~15 µs to run it: about a third of a step, measured. LangGraph's ``SqliteSaver``
pays none of it (one ``sqlite3`` connection).

``bare_transaction`` keeps everything that makes ``Database.transaction`` safe and drops only the
wrapping:
- the same pooled connection (so the connect-time PRAGMAs, fork safety and the PostgreSQL idle check
  apply), the same ``writer_turn`` queue and lock-wait budget, ``BEGIN IMMEDIATE`` on SQLite;
- commit on success, rollback (nothing written) on any exception;
- driver errors come out as SQLAlchemy's exception classes (``IntegrityError``, ``OperationalError``),
  and passing faults (disk full, read-only, locked, lost connection) as ``StoreUnavailable``, exactly as
  from ``Database.transaction``.

What it does not have: Core statements, before-commit hooks and SQLAlchemy's statement events (the
statement-counting tests count ``Database.transaction``'s paths; the saver's are counted by
``tests/test_langgraph_saver.py`` through the driver's own trace). A ``BareConnection`` offers what
``driver_sql.Insert`` and ``KeyLookup`` use: ``dialect`` and ``exec_driver_sql``; the saver also reads
artifacts through one on a ``bare_reads`` cursor.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from saferun.storage.database import Database, apply_lock_wait, writer_turn


class BareResult:
    """The rows a statement returned (fetched at once: the cursor is reused by the next statement)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]


class BareConnection:
    """One driver cursor inside an open transaction; statements as driver SQL text with named
    parameters (``:name`` for sqlite3, ``%(name)s`` for psycopg), a list of dicts for executemany."""

    def __init__(self, dialect: Dialect, cursor: Any, *, pipelined: bool = False) -> None:
        self.dialect = dialect
        self._cur = cursor
        # psycopg's pipeline mode: a statement is sent without waiting for its answer, which comes back
        # when one is needed (a SELECT or RETURNING fetched here, or the COMMIT); errors surface there
        self._pipelined = pipelined
        self._raw: Any = None  # a psycopg RawCursor, made by _execute_positional

    def exec_driver_sql(
        self, sql: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
    ) -> BareResult:
        return self._run(sql, params)

    def _run(
        self, sql: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
    ) -> BareResult:
        """Run a statement now (a ``_Combined`` connection holds some back; its own sends come here)."""
        cur = self._cur
        try:
            if isinstance(params, Sequence):
                cur.executemany(sql, params)
            elif self._pipelined and _uncached_by_psycopg(sql, params):
                cur = self._execute_positional((sql,), (params,))  # type: ignore[arg-type]
            else:
                cur.execute(sql, params or {})
            if self._pipelined:  # no description before the answer: whether to wait is read off the SQL
                rows = cur.fetchall() if _returns_rows(sql) else []
            else:
                rows = cur.fetchall() if cur.description is not None else []
        except self.dialect.loaded_dbapi.Error as exc:
            raise _wrap(self.dialect, cur.connection, cur, sql, params, exc) from exc
        return BareResult(rows)

    def _execute_positional(self, texts: tuple[str, ...], params: Sequence[Mapping[str, Any]]) -> Any:
        """Run ``texts`` (one statement, or several combined: ``_positional``) with ``params[i]`` as the
        i-th statement's parameters, on a psycopg ``RawCursor`` (``$n`` placeholders, no conversion, made
        once per connection); returns that cursor."""
        sql, order = _positional(texts)
        if self._raw is None:
            import psycopg

            self._raw = psycopg.RawCursor(self._cur.connection)
        self._raw.execute(sql, [params[i][name] for i, name in order])
        return self._raw

    def close(self) -> None:
        self._cur.close()
        if self._raw is not None:
            self._raw.close()


@functools.lru_cache(maxsize=512)  # the statements are a few dozen texts built once (driver_sql)
def _returns_rows(sql: str) -> bool:
    head = sql.lstrip()[:6].upper()
    return head == "SELECT" or " RETURNING " in sql.upper()


def _wrap(dialect: Dialect, conn: Any, cur: Any, sql: str, params: Any, exc: Exception) -> DBAPIError:
    """The driver's error as SQLAlchemy raises it, so callers and ``faults.classify`` see one kind."""
    return DBAPIError.instance(  # type: ignore[return-value]
        sql,
        params,
        exc,
        dialect.loaded_dbapi.Error,
        connection_invalidated=dialect.is_disconnect(exc, conn, cur),
        dialect=dialect,
    )


class _Combined(BareConnection):
    """Holds back the statements that return nothing, to send them as one (``bare_transaction(combine=
    True)``). A statement that returns rows, or an ``executemany``, opens the transaction first: BEGIN,
    then what was held, in order."""

    def __init__(self, dialect: Dialect, cursor: Any, *, begin: str) -> None:
        super().__init__(dialect, cursor, pipelined=True)
        self._begin = begin
        self._held: list[tuple[str, Mapping[str, Any]]] = []
        self.begun = False

    def exec_driver_sql(
        self, sql: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
    ) -> BareResult:
        if not isinstance(params, Sequence) and not _returns_rows(sql):
            self._held.append((sql, params or {}))
            return BareResult([])
        self._send_held()
        return self._run(sql, params)

    def _send_held(self) -> None:
        if not self.begun:
            # a read's locks must last until the commit (the store's GC waits on a probe's), so it runs
            # inside the transaction, not before it
            self.begun = True
            self._run(self._begin)
        held, self._held = self._held, []
        for sql, params in held:
            self._run(sql, params)

    def finish(self) -> None:
        """Send what is held and end the transaction: as one statement (atomic by itself: no BEGIN and
        COMMIT) when nothing opened one, else the rest and COMMIT."""
        if self.begun:
            self._send_held()
            self._run("COMMIT")
        elif self._held:
            held, self._held = self._held, []
            texts, params = tuple(text for text, _ in held), [values for _, values in held]
            try:
                self._execute_positional(texts, params)
            except self.dialect.loaded_dbapi.Error as exc:
                raise _wrap(
                    self.dialect, self._cur.connection, self._raw, _positional(texts)[0], params, exc
                ) from exc


# psycopg converts ``%(name)s`` to ``$n`` with a regex on every execute unless the text is at most this
# long with at most this many parameters (psycopg._queries: MAX_CACHED_STATEMENT_LENGTH / _PARAMS)
_PSYCOPG_CACHED_LENGTH, _PSYCOPG_CACHED_PARAMS = 4096, 50
_PARAM = re.compile(r"%\((\w+)\)s|%%")


def _uncached_by_psycopg(sql: str, params: Any) -> bool:
    return bool(params) and (len(sql) > _PSYCOPG_CACHED_LENGTH or len(params) > _PSYCOPG_CACHED_PARAMS)


@functools.lru_cache(maxsize=256)  # keyed by the statements' texts: driver_sql's, built once each
def _positional(texts: tuple[str, ...]) -> tuple[str, tuple[tuple[int, str], ...]]:
    """PostgreSQL statements (``driver_sql``'s, whose only ``%`` are their named parameters) as one,
    with ``$n`` placeholders, and which statement's parameter each ``$n`` is.

    All but the last become data-modifying ``WITH`` parts, run once, to completion, on the same snapshot,
    whether or not anything reads them. Why ``$n`` here and not psycopg's ``%(name)s``: psycopg caches
    its conversion only for statements under 4 KiB and 50 parameters, and a LangGraph ``put`` combined is
    over both, so it ran psycopg's regex split on every put (~0.5 ms per replayed put: about half of its
    difference to ``PostgresSaver``'s). Converted once here, it goes through a ``RawCursor``."""
    order: list[tuple[int, str]] = []
    seen: dict[tuple[int, str], int] = {}
    parts: list[str] = []
    for i, sql in enumerate(texts):

        def mark(match: re.Match[str], i: int = i) -> str:
            if match.group(1) is None:
                return "%"  # a literal percent sign, escaped for the pyformat style
            key = (i, match.group(1))
            if key not in seen:
                order.append(key)
                seen[key] = len(order)
            return f"${seen[key]}"

        parts.append(_PARAM.sub(mark, sql))
    *first, last = parts
    if not first:
        return last, tuple(order)
    return "WITH " + ", ".join(f"q{i} AS ({sql})" for i, sql in enumerate(first)) + " " + last, tuple(order)


@contextmanager
def bare_transaction(db: Database, *, combine: bool = False) -> Iterator[BareConnection]:
    """``Database.transaction`` for driver-SQL statements only (see the module docstring).

    ``combine`` (PostgreSQL): the statements that return nothing are held back and sent at the end as
    one statement, which is atomic by itself, so without BEGIN and COMMIT: one command where a LangGraph
    ``put`` sent six (each a system call and a trip through the server's loop). A statement that
    returns rows (a probe) or an ``executemany`` opens a real transaction first, and everything goes as
    without ``combine``. Rows this transaction inserted are therefore not visible to its own later
    reads until then; the saver's writes never read what they wrote. SQLite runs as always."""
    dialect = db.engine.dialect
    with db.fault_guard(), writer_turn(db):
        fairy = db.engine.raw_connection()
        dbapi_conn = fairy.dbapi_connection
        conn: BareConnection | None = None
        try:
            if db.is_sqlite:
                apply_lock_wait(fairy.info, dbapi_conn)
            pipelined = not db.is_sqlite and _pipeline_supported(dbapi_conn)
            begin = _begin_statement(dbapi_conn) if pipelined else ""
            if combine and pipelined:
                conn = _Combined(dialect, dbapi_conn.cursor(), begin=begin)
            else:
                conn = BareConnection(dialect, dbapi_conn.cursor(), pipelined=pipelined)
            try:
                if db.is_sqlite:
                    conn._run("BEGIN IMMEDIATE")
                    yield conn
                    conn._run("COMMIT")
                elif pipelined:
                    # BEGIN, the statements and COMMIT travel together and are answered at the
                    # pipeline's one closing sync: one round trip for a transaction whose statements
                    # return nothing. psycopg's own transaction handling costs two more: its implicit
                    # BEGIN syncs before the first statement, and ``commit()`` syncs again before the
                    # pipeline's exit does. So the connection is in autocommit (psycopg sends no BEGIN)
                    # while this transaction sends its own, and is put back before it returns to the
                    # pool. A one-row transaction: 0.67 -> 0.39 ms, measured; a saver ``put`` 3 -> 1
                    # round trips.
                    dbapi_conn.autocommit = True
                    try:
                        with dbapi_conn.pipeline():
                            if isinstance(conn, _Combined):
                                yield conn
                                conn.finish()
                            else:
                                conn._run(begin)
                                yield conn
                                conn._run("COMMIT")
                    except dialect.loaded_dbapi.Error as exc:  # a statement's error, raised at the sync
                        raise _wrap(dialect, dbapi_conn, None, "COMMIT", None, exc) from exc
                else:
                    yield conn
                    _commit(dialect, dbapi_conn)
            except BaseException:
                _rollback(db, dbapi_conn)
                raise
        finally:
            if conn is not None:
                conn.close()
            if not db.is_sqlite and not _leave_autocommit(dbapi_conn):
                fairy.invalidate()  # never pool a connection that would run the next user's statements bare
            fairy.close()  # back to the pool, which resets (rolls back) whatever is left


def _commit(dialect: Dialect, dbapi_conn: Any) -> None:
    try:
        dbapi_conn.commit()
    except dialect.loaded_dbapi.Error as exc:
        raise _wrap(dialect, dbapi_conn, None, "COMMIT", None, exc) from exc


def _begin_statement(dbapi_conn: Any) -> str:
    """The BEGIN psycopg would send for this connection's transaction characteristics."""
    parts = ["BEGIN"]
    if dbapi_conn.isolation_level is not None:
        parts.append("ISOLATION LEVEL " + dbapi_conn.isolation_level.name.replace("_", " "))
    if dbapi_conn.read_only is not None:
        parts.append("READ ONLY" if dbapi_conn.read_only else "READ WRITE")
    return " ".join(parts)


def _leave_autocommit(dbapi_conn: Any) -> bool:
    """Put a pipelined transaction's connection back in psycopg's transactional mode; False if that is
    impossible (a broken connection, or one still inside a transaction the rollback could not end)."""
    if not dbapi_conn.autocommit:
        return True
    try:
        dbapi_conn.autocommit = False
    except Exception:
        return False
    return True


def _pipeline_supported(dbapi_conn: Any) -> bool:
    return hasattr(dbapi_conn, "pipeline") and _libpq_pipelines()


@functools.cache
def _libpq_pipelines() -> bool:
    """Whether this process's libpq has pipeline mode (asked once, not per transaction)."""
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


def _rollback(db: Database, dbapi_conn: Any) -> None:
    try:
        if db.is_sqlite:
            if dbapi_conn.in_transaction:
                dbapi_conn.execute("ROLLBACK")
        else:
            dbapi_conn.rollback()
    except Exception:  # a broken connection: the pool's reset discards it; the first error is the one
        pass
