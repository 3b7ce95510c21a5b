"""counters: counts of workflows, requests and decisions kept by triggers (issue 12 target 4, issue 14)

``GET /api/stats``, a list's true ``total`` and the queue badge counted rows: about a second at 100,000
workflows. Triggers on ``workflows``, ``approval_requests`` and ``approval_responses`` now keep the counts in
the transaction that changes the rows, whoever writes them (the engine, the bulk path, a fork, a sweep,
a later feature), so a count is exact after any commit or crash and costs the application no statement.

PostgreSQL: a change appends signed delta rows (``INSERT``: no row lock, so concurrent writers never
queue on a hot counter or deadlock on opposite transitions); inserts use statement-level triggers over
the new rows (one delta per kind and key for a 2,000-row bulk ``INSERT``), updates row-level triggers
whose ``WHEN`` skips the function when no counted column changed (the audit anchor's UPDATEs). SQLite
(one writer at a time): row triggers keep one row per kind and key, updated in place.

The kinds (``saferun/storage/counters.py`` reads them, and recounts them from the rows in tests):
workflows/<state>, requests/<status>, responses/<decision>, executor/<id> and supervisor/<id> (workflows
not ended), pending_supervisor/<id or ''> and pending_risk/<level or 'none'> (pending requests).

The migration creates the triggers first, then backfills from the rows: on PostgreSQL ``CREATE TRIGGER``
locks out writers until this transaction commits, so no change falls between the backfill and the
triggers. Note for later migrations: a SQLite ``batch_alter_table`` on one of these tables rebuilds it and
drops its triggers; re-create them (``tests/test_counters.py`` checks they exist and agree).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 22:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "{r}.state NOT IN ('completed', 'failed')"
# table -> (columns whose change may move a count, [(kind, key expression, condition)]); {r} is the row
COUNTED: dict[str, tuple[tuple[str, ...], list[tuple[str, str, str]]]] = {
    "workflows": (
        ("state", "executor_id", "supervisor_id"),
        [
            ("workflows", "{r}.state", "1 = 1"),
            ("executor", "{r}.executor_id", LIVE),
            ("supervisor", "{r}.supervisor_id", LIVE + " AND {r}.supervisor_id IS NOT NULL"),
        ],
    ),
    "approval_requests": (
        ("status", "supervisor_id", "risk_level"),
        [
            ("requests", "{r}.status", "1 = 1"),
            ("pending_supervisor", "COALESCE({r}.supervisor_id, '')", "{r}.status = 'pending'"),
            ("pending_risk", "COALESCE({r}.risk_level, 'none')", "{r}.status = 'pending'"),
        ],
    ),
    "approval_responses": (("decision",), [("responses", "{r}.decision", "1 = 1")]),
}


def _contributions(table: str, r: str, sign: int) -> str:
    """A SELECT of (kind, key, n) rows: what the rows of ``r`` add to (sign 1) or take from the counts."""
    return " UNION ALL ".join(
        f"SELECT '{kind}' AS kind, {key.format(r=r)} AS key, {sign} AS n FROM {r} WHERE {cond.format(r=r)}"
        for kind, key, cond in COUNTED[table][1]
    )


def _changed(table: str, distinct: str) -> str:
    return " OR ".join(f"OLD.{c} {distinct} NEW.{c}" for c in COUNTED[table][0])


def _postgresql(table: str) -> list[str]:
    fold = "GROUP BY d.kind, d.key HAVING SUM(d.n) <> 0"
    values = ", ".join(
        f"('{kind}', {key.format(r=side)}, CASE WHEN {cond.format(r=side)} THEN {sign} ELSE 0 END)"
        for kind, key, cond in COUNTED[table][1]
        for side, sign in (("OLD", -1), ("NEW", 1))
    )
    bodies = {
        "ins": f"SELECT d.kind, d.key, SUM(d.n) FROM ({_contributions(table, 'new_rows', 1)}) AS d {fold}",
        "del": f"SELECT d.kind, d.key, SUM(d.n) FROM ({_contributions(table, 'old_rows', -1)}) AS d {fold}",
        "upd": f"SELECT d.kind, d.key, SUM(d.n) FROM (VALUES {values}) AS d(kind, key, n) "
        f"WHERE d.key IS NOT NULL {fold}",
    }
    out = []
    for what, select in bodies.items():
        fn = f"counters_{table}_{what}"
        out.append(
            f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"INSERT INTO counters (kind, key, n) {select}; RETURN NULL; END $$"
        )
    out.append(
        f"CREATE TRIGGER counters_{table}_ins AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION counters_{table}_ins()"
    )
    out.append(
        f"CREATE TRIGGER counters_{table}_del AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION counters_{table}_del()"
    )
    out.append(
        f"CREATE TRIGGER counters_{table}_upd AFTER UPDATE ON {table} FOR EACH ROW "
        f"WHEN ({_changed(table, 'IS DISTINCT FROM')}) EXECUTE FUNCTION counters_{table}_upd()"
    )
    return out


def _sqlite_bump(kind: str, key: str, cond: str, sign: int) -> str:
    """Add ``sign`` to the one (kind, key) row when ``cond`` holds, making the row first if needed."""
    row = f"SELECT min(id) FROM counters WHERE kind = '{kind}' AND key = {key}"
    return (
        f"INSERT INTO counters (kind, key, n) SELECT '{kind}', {key}, 0 WHERE ({cond}) AND NOT EXISTS "
        f"(SELECT 1 FROM counters WHERE kind = '{kind}' AND key = {key}); "
        f"UPDATE counters SET n = n + ({sign}) WHERE ({cond}) AND id = ({row}); "
    )


def _sqlite(table: str) -> list[str]:
    spec = COUNTED[table][1]

    def steps(side: str, sign: int) -> str:
        return "".join(_sqlite_bump(k, key.format(r=side), c.format(r=side), sign) for k, key, c in spec)

    return [
        f"CREATE TRIGGER counters_{table}_ins AFTER INSERT ON {table} BEGIN {steps('NEW', 1)}END",
        f"CREATE TRIGGER counters_{table}_del AFTER DELETE ON {table} BEGIN {steps('OLD', -1)}END",
        f"CREATE TRIGGER counters_{table}_upd AFTER UPDATE ON {table} WHEN {_changed(table, 'IS NOT')} "
        f"BEGIN {steps('OLD', -1)}{steps('NEW', 1)}END",
    ]


def _backfill(table: str) -> str:
    parts = " UNION ALL ".join(
        f"SELECT '{kind}' AS kind, {key.format(r='t')} AS key, COUNT(*) AS n FROM {table} t "
        f"WHERE {cond.format(r='t')} GROUP BY {key.format(r='t')}"
        for kind, key, cond in COUNTED[table][1]
    )
    return (
        f"INSERT INTO counters (kind, key, n) SELECT kind, key, n FROM ({parts}) AS d WHERE key IS NOT NULL"
    )


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_counters")),
    )
    op.create_index("ix_counters_kind_key", "counters", ["kind", "key"])
    dialect = op.get_bind().dialect.name
    for table in COUNTED:
        for statement in _postgresql(table) if dialect == "postgresql" else _sqlite(table):
            op.execute(statement)
    for table in COUNTED:
        op.execute(_backfill(table))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in COUNTED:
        for what in ("ins", "del", "upd"):
            on = f" ON {table}" if dialect == "postgresql" else ""
            op.execute(f"DROP TRIGGER IF EXISTS counters_{table}_{what}{on}")
            if dialect == "postgresql":
                op.execute(f"DROP FUNCTION IF EXISTS counters_{table}_{what}()")
    op.drop_index("ix_counters_kind_key", table_name="counters")
    op.drop_table("counters")
