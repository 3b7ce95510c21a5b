"""workflows.escrow_id: VARCHAR(64) -> VARCHAR(80), room for ``"escrow_"`` plus a 64-character workflow id

The escrow id is ``"escrow_" + workflow_id`` and a workflow id may be 64 characters (the API's and the
model's ``max_length``), so a workflow id over 57 characters was a 500 on PostgreSQL (``value too long for
type character varying(64)``) and a 201 on SQLite, which does not enforce ``VARCHAR(n)``. Found by
Schemathesis at the full budget on PostgreSQL. Widening loses nothing and needs no rewrite of the rows.

SQLite does not enforce the length, but the declared schema must say it too (``tests/test_architecture``
compares the migrated schema with ``schema.py``). A ``batch_alter_table`` would rebuild the table and drop
the counters' triggers of 0017, so the declared type is edited in place instead, by SQLite's documented
procedure for schema changes that leave the stored rows as they are (``PRAGMA writable_schema``, then a
new ``schema_version``; https://www.sqlite.org/lang_altertable.html, "otheralter"): ``VARCHAR(64)`` and
``VARCHAR(80)`` both have TEXT affinity, so no row changes meaning.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 22:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _width(64, 80)


def downgrade() -> None:
    _width(80, 64)


def _width(old: int, new: int) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.alter_column("workflows", "escrow_id", type_=sa.String(new), existing_type=sa.String(old))
        return
    version = int(bind.exec_driver_sql("PRAGMA schema_version").scalar() or 0)
    bind.exec_driver_sql("PRAGMA writable_schema=ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' AND name = 'workflows'",
        (f"escrow_id VARCHAR({old})", f"escrow_id VARCHAR({new})"),
    )
    bind.exec_driver_sql(f"PRAGMA schema_version={version + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema=OFF")
