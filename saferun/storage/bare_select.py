"""A Core SELECT run on a ``bare_reads`` cursor, its rows typed exactly as SQLAlchemy types them.

Why: the engine's hottest read, the state a resumed agent continues from (``latest_approved_state``),
is two primary-key SELECTs. Through SQLAlchemy's pool, a read transaction and Core's execution path cost
~0.18 ms on SQLite where LangGraph's ``get_state`` costs 0.05 (benchmarks/bench_checkpoints.py, Table 3).
The statement stays the Core one (written once, in its storage module): it is compiled once per dialect
to its SQL text, run on the per-thread read connection, and each column's value goes through the
column type's own result processing (``UTCDateTime``'s time zone, JSON through the engine's decoder), so
a row read here is the row ``conn.execute(...).mappings()`` would give.

SQLite only: there the driver hands back what SQLAlchemy's processors expect. A plain psycopg connection
decodes JSON and timestamps itself, and on PostgreSQL the saving would be a round trip, not Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Dialect

_Plan = tuple[str, tuple[str, ...] | None, list[str], list[Callable[[Any], Any] | None]]


class BareSelect:
    """``stmt`` (a Core ``select`` with named bind parameters) for a bare cursor."""

    def __init__(self, stmt: Select[Any]) -> None:
        self.stmt = stmt
        self._plans: dict[str, _Plan] = {}

    def _plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is None:
            compiled = self.stmt.compile(dialect=dialect)
            columns = list(self.stmt.selected_columns)
            order = tuple(compiled.positiontup) if compiled.positiontup is not None else None
            processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
            plan = self._plans[dialect.name] = (compiled.string, order, [c.key for c in columns], processors)
        return plan

    def first(self, dialect: Dialect, cursor: Any, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row as a dict keyed like the Core result's mapping, or None."""
        keys, processors = self._execute(dialect, cursor, params)
        row = cursor.fetchone()
        return None if row is None else _typed(keys, processors, row)

    def all(self, dialect: Dialect, cursor: Any, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every row, as ``first`` gives one."""
        keys, processors = self._execute(dialect, cursor, params)
        return [_typed(keys, processors, row) for row in cursor.fetchall()]

    def _execute(
        self, dialect: Dialect, cursor: Any, params: Mapping[str, Any]
    ) -> tuple[list[str], list[Callable[[Any], Any] | None]]:
        sql, order, keys, processors = self._plan(dialect)
        cursor.execute(sql, [params[name] for name in order] if order is not None else dict(params))
        return keys, processors


def _typed(keys: list[str], processors: list[Callable[[Any], Any] | None], row: Any) -> dict[str, Any]:
    """A driver row keyed and typed as Core's mapping would be."""
    return {
        key: (process(value) if process is not None and value is not None else value)
        for key, process, value in zip(keys, processors, row, strict=True)
    }
