"""The hottest INSERTs and key lookups as driver SQL text, run through the SQLAlchemy connection.

Why: a checkpoint writes a handful of small rows, and SQLAlchemy's compiled-statement path (cache lookup,
parameter processing, result setup) cost ~100 µs more per statement than handing the driver its SQL text
through ``Connection.exec_driver_sql`` (measured on SQLite: 208 vs 100 µs for a LangGraph checkpoint row
and its channel rows). The text goes through the same connection, so the transaction, the writer turn,
the before-commit hooks, the statement-counting listeners and the fault handling are all unchanged.

What stays SQLAlchemy's: the column types' own bind processing (``UTCDateTime``, JSON) is applied to the
values here, so a row written this way is stored exactly as a Core INSERT stores it; and the SQL is built
from the table's columns, so it cannot drift from the schema. Named parameters (``:name`` for sqlite3,
``%(name)s`` for psycopg) are what both drivers take from a dict.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect

# rows per multi-row statement when the inserted keys must come back (RETURNING cannot ride executemany)
RETURNING_BATCH = 100
# keys per ``IN (...)`` lookup: short enough for any driver's parameter limit (SQLite's old one is 999)
IN_BATCH = 500


_UNSET = object()


def _mark(dialect: Dialect, name: str) -> str:
    return f"%({name})s" if dialect.name == "postgresql" else f":{name}"


class Insert:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` (or ``DO UPDATE`` of every other column) into ``table``,
    optionally ``RETURNING`` one column of the rows actually inserted."""

    def __init__(
        self, table: Table, conflict: Sequence[str], *, update: bool = False, returning: str | None = None
    ) -> None:
        self.table = table
        self.columns = [col.name for col in table.c]
        self.conflict = tuple(conflict)
        self.update = update
        self.returning = returning
        self._sql: dict[tuple[str, int], str] = {}
        self._processors: dict[str, list[tuple[str, Callable[[Any], Any]]]] = {}

    def _text(self, dialect: Dialect, rows: int) -> str:
        key = (dialect.name, rows)
        sql = self._sql.get(key)
        if sql is None:
            names = self.columns
            if rows == 0:  # one row, parameters named as the columns (for executemany)
                values = "(" + ", ".join(_mark(dialect, n) for n in names) + ")"
            else:
                values = ", ".join(
                    "(" + ", ".join(_mark(dialect, f"{n}_{i}") for n in names) + ")" for i in range(rows)
                )
            action = (
                "DO UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in names if n not in self.conflict)
                if self.update
                else "DO NOTHING"
            )
            sql = (
                f"INSERT INTO {self.table.name} ({', '.join(names)}) VALUES {values} "
                f"ON CONFLICT ({', '.join(self.conflict)}) {action}"
            )
            if self.returning:
                sql += f" RETURNING {self.returning}"
            self._sql[key] = sql
        return sql

    def _bind(self, dialect: Dialect) -> list[tuple[str, Callable[[Any], Any]]]:
        """The columns whose type processes bound values (``UTCDateTime``, JSON, binary), with their
        processor; the others go to the driver as given."""
        found = self._processors.get(dialect.name)
        if found is None:
            processors = [
                (col.name, col.type.dialect_impl(dialect).bind_processor(dialect)) for col in self.table.c
            ]
            found = self._processors[dialect.name] = [(n, p) for n, p in processors if p is not None]
        return found

    def _params(self, dialect: Dialect, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Each row as the driver's parameters. A value shared by the rows of one call (the transaction's
        ``created_at``, an empty metadata dict) is processed once: this ran for every column of every row
        and was a tenth of a LangGraph step."""
        names = self.columns
        processed = self._bind(dialect)
        done: dict[tuple[str, int], Any] = {}  # (column, id(value)): the rows keep each value alive
        out = []
        for row in rows:
            params = {name: row.get(name) for name in names}
            for name, process in processed:
                value = params[name]
                if value is not None:
                    key = (name, id(value))
                    result = done.get(key, _UNSET)
                    if result is _UNSET:
                        result = done[key] = process(value)
                    params[name] = result
            out.append(params)
        return out

    def execute(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Insert ``rows`` (dicts keyed by column name; a missing column is NULL); with ``returning``, the
        returned column of the rows this call inserted, else ``[]``."""
        if not rows:
            return []
        dialect = conn.dialect
        if not self.returning and (len(rows) == 1 or not self._multi_row(dialect)):
            params = self._params(dialect, rows)
            conn.exec_driver_sql(self._text(dialect, 0), params if len(params) > 1 else params[0])
            return []
        out: list[Any] = []
        for start in range(0, len(rows), RETURNING_BATCH):
            batch = rows[start : start + RETURNING_BATCH]
            params = {}
            for i, row in enumerate(self._params(dialect, batch)):
                params.update({f"{name}_{i}": value for name, value in row.items()})
            result = conn.exec_driver_sql(self._text(dialect, len(batch)), params)
            if self.returning:
                out.extend(result.scalars())
        return out

    def _multi_row(self, dialect: Dialect) -> bool:
        """Whether several rows go as one multi-row statement rather than ``executemany``.

        On PostgreSQL: psycopg sends each row of an ``executemany`` as its own command (with a flush, a
        system call, per row), where one ``VALUES (...), (...)`` statement is one command; measured, a
        third of the client's time in a LangGraph ``put``. Not for ``DO UPDATE``, which refuses to touch
        one row twice in a statement (two rows with one key, which ``executemany`` applies in turn), and
        not on SQLite, whose ``executemany`` is a loop in C."""
        return dialect.name == "postgresql" and not self.update


class KeyLookup:
    """``SELECT <columns> FROM <table> WHERE <key> IN (...)``, in batches, as driver SQL text.

    ``columns`` are SQL expressions written for both databases (a ``CASE`` is fine); values come back as
    the driver returns them (``bytes`` or ``memoryview`` for binary columns: callers convert)."""

    def __init__(self, table: str, key: str, columns: Sequence[str]) -> None:
        self.table = table
        self.key = key
        self.columns = ", ".join(columns)
        self._sql: dict[tuple[str, int], str] = {}

    def rows(self, conn: Connection, keys: Collection[str]) -> list[tuple[Any, ...]]:
        unique = list(dict.fromkeys(keys))
        out: list[tuple[Any, ...]] = []
        dialect = conn.dialect
        for start in range(0, len(unique), IN_BATCH):
            batch = unique[start : start + IN_BATCH]
            sql = self._sql.get((dialect.name, len(batch)))
            if sql is None:
                marks = ", ".join(_mark(dialect, f"k{i}") for i in range(len(batch)))
                sql = self._sql[(dialect.name, len(batch))] = (
                    f"SELECT {self.columns} FROM {self.table} WHERE {self.key} IN ({marks})"
                )
            out.extend(tuple(r) for r in conn.exec_driver_sql(sql, {f"k{i}": k for i, k in enumerate(batch)}))
        return out
