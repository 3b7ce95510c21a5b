"""SQLite's counter triggers as one UPSERT each (revision 0017's counts, unchanged)

Revision 0017's SQLite triggers keep one ``counters`` row per (kind, key) with two statements per count
they touch (make the row if absent, then add to it): twelve statements in a workflow's UPDATE trigger,
11.5 KB of trigger text in all. Both costs are paid all the time:

- SQLite parses the whole schema on a connection's first statement, and those triggers were half of
  that parse (~330 of ~650 µs, measured): every new connection, and so a LangGraph saver's first
  ``get_state``, paid it;
- a checkpoint -> decision cycle fires them five times (two workflow updates, a request insert and update,
  a decision insert): 56 -> 31 µs for those four kinds of statement, measured on a bare table set.

Now each trigger is one ``INSERT ... SELECT ... ON CONFLICT (kind, key) DO UPDATE`` over the rows'
contributions, folded by (kind, key) so an update that moves nothing counted writes nothing. The conflict
target is a unique index on ``counters (kind, key)``, which SQLite can have because it keeps one row per
count (the rows are folded first, in case a bulk load left more). PostgreSQL is untouched: there each
change appends a delta row, so concurrent writers never wait on a hot counter.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 20:00:00.000000
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHAT = ("ins", "del", "upd")
# revision 0017's COUNTED: table -> (columns whose change may move a count, [(kind, key, condition)])
Counted = dict[str, tuple[tuple[str, ...], list[tuple[str, str, str]]]]


def _counted() -> ModuleType:
    """Revision 0017, for what it counts (``COUNTED``) and, on downgrade, its triggers' old form."""
    path = Path(__file__).with_name("0017_counters.py")
    spec = importlib.util.spec_from_file_location("saferun_migration_0017", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _upsert(
    counted: Counted,
    table: str,
    sides: list[tuple[str, int]],
) -> str:
    """One statement adding each side's contributions (``NEW`` +1, ``OLD`` -1) to their counts."""
    rows = " UNION ALL ".join(
        f"SELECT '{kind}' AS kind, {key.format(r=side)} AS key, {sign} AS n WHERE {cond.format(r=side)}"
        for side, sign in sides
        for kind, key, cond in counted[table][1]
    )
    # the WHERE before ON CONFLICT also keeps SQLite from reading ON as a join's constraint
    return (
        f"INSERT INTO counters (kind, key, n) SELECT kind, key, SUM(n) FROM ({rows}) "
        "WHERE key IS NOT NULL GROUP BY kind, key HAVING SUM(n) <> 0 "
        "ON CONFLICT (kind, key) DO UPDATE SET n = n + excluded.n;"
    )


def triggers(counted: Counted) -> list[str]:
    out = []
    for table, (columns, _) in counted.items():
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)
        out += [
            f"CREATE TRIGGER counters_{table}_ins AFTER INSERT ON {table} "
            f"BEGIN {_upsert(counted, table, [('NEW', 1)])} END",
            f"CREATE TRIGGER counters_{table}_del AFTER DELETE ON {table} "
            f"BEGIN {_upsert(counted, table, [('OLD', -1)])} END",
            f"CREATE TRIGGER counters_{table}_upd AFTER UPDATE ON {table} WHEN {changed} "
            f"BEGIN {_upsert(counted, table, [('OLD', -1), ('NEW', 1)])} END",
        ]
    return out


def _drop_triggers(counted: ModuleType) -> None:
    for table in counted.COUNTED:
        for what in WHAT:
            op.execute(f"DROP TRIGGER IF EXISTS counters_{table}_{what}")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    counted = _counted()
    _drop_triggers(counted)
    # one row per (kind, key), as SQLite's triggers always kept them (folded anyway: the index needs it)
    op.execute(
        "UPDATE counters SET n = (SELECT SUM(c.n) FROM counters AS c WHERE c.kind = counters.kind "
        "AND c.key = counters.key) WHERE id IN (SELECT min(id) FROM counters GROUP BY kind, key)"
    )
    op.execute("DELETE FROM counters WHERE id NOT IN (SELECT min(id) FROM counters GROUP BY kind, key)")
    op.create_index("ux_counters_kind_key", "counters", ["kind", "key"], unique=True)
    for statement in triggers(counted.COUNTED):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    counted = _counted()
    _drop_triggers(counted)
    op.drop_index("ux_counters_kind_key", table_name="counters")
    for table in counted.COUNTED:
        for statement in counted._sqlite(table):
            op.execute(statement)
