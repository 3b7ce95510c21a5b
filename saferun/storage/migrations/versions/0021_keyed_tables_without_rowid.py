"""SQLite: the LangGraph saver's tables and ``artifacts`` become ``WITHOUT ROWID`` tables

Each of these tables is looked up only by its (text) primary key. As an ordinary SQLite table it is two
b-trees: the rows, in rowid order, and an automatic index on the key. Every insert then dirties a page of
each, and a commit writes every dirty page to the WAL and syncs it. Counted on a LangGraph step
(``SafeRunSaver.put`` + ``put_writes``): 17.2 WAL pages per step, of which 4.9 were these tables' row
pages. A ``WITHOUT ROWID`` table stores the rows in the key's b-tree (one structure, one page per insert),
as SQLite recommends for tables with a non-integer primary key and small rows
(https://www.sqlite.org/withoutrowid.html). ``blobs`` keeps its rowid: its rows carry chunk payloads of
up to tens of KiB, which that page recommends against.

PostgreSQL has no rowid: nothing to do there. Secondary indexes are re-created as they were; these tables
have no triggers and no foreign keys point at them.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 05:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("artifacts", "lg_checkpoints", "lg_blobs", "lg_writes")


def upgrade() -> None:
    for table in TABLES:
        _rebuild(table, rowid=False)


def downgrade() -> None:
    for table in TABLES:
        _rebuild(table, rowid=True)


def _rebuild(table: str, *, rowid: bool) -> None:
    """SQLite's documented way to change a table's definition: create the new one, copy the rows, drop the
    old, rename, re-create its indexes (https://www.sqlite.org/lang_altertable.html, "otheralter")."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    create = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    indexes = [
        sql
        for (sql,) in bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,)
        )
    ]
    body = create.rstrip().removesuffix("WITHOUT ROWID").rstrip()
    _, sep, rest = body.partition("(")
    new = f"{table}__rebuilt"
    ddl = f"CREATE TABLE {new} {sep}{rest}" + ("" if rowid else " WITHOUT ROWID")
    bind.exec_driver_sql(ddl)
    bind.exec_driver_sql(f"INSERT INTO {new} SELECT * FROM {table}")
    bind.exec_driver_sql(f"DROP TABLE {table}")
    bind.exec_driver_sql(f"ALTER TABLE {new} RENAME TO {table}")
    for sql in indexes:
        bind.exec_driver_sql(sql)
