"""The suite's fresh databases are copies of one migrated per session (``conftest``): they must be exactly
what the migrations make, or every test would run on a schema no user has.

PostgreSQL: a schema replayed from the template's ``pg_dump`` and a schema migrated by Alembic from
revision 0001 dump to the same SQL (tables, indexes, constraints, triggers, functions, the revision row).
SQLite: the copied file holds the same schema objects as a migrated one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

import tests.conftest as fixtures
from saferun.storage.database import Database


def _dump(schema: str) -> list[str]:
    return [line.replace(schema, "SCHEMA") for line in fixtures.pg_dump_lines(schema)]


def test_a_postgresql_schema_from_the_template_is_what_the_migrations_make(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fixtures.require_postgres()
    if shutil.which("pg_dump") is None or os.environ.get("SAFERUN_TEST_NO_TEMPLATE"):
        pytest.skip("no template (pg_dump missing or SAFERUN_TEST_NO_TEMPLATE): every schema is migrated")
    assert fixtures._pg_template() is not None
    copied, copied_schema = fixtures.make_pg_database()
    copied.dispose()
    monkeypatch.setitem(fixtures._template_state, "sql", None)  # the next schema is migrated by Alembic
    migrated, migrated_schema = fixtures.make_pg_database()
    migrated.dispose()
    try:
        from_template, from_migrations = _dump(copied_schema), _dump(migrated_schema)
        assert any("CREATE TABLE" in line for line in from_template)
        assert any("CREATE TRIGGER" in line for line in from_template)
        assert from_template == from_migrations
    finally:
        fixtures.drop_pg_schema(copied_schema)
        fixtures.drop_pg_schema(migrated_schema)


def test_a_sqlite_file_from_the_template_is_what_the_migrations_make(tmp_path: Path) -> None:
    def objects(db: Database) -> list[tuple[str, str, str]]:
        with db.read() as conn:
            rows = conn.execute(text("select type, name, sql from sqlite_master order by type, name")).all()
            version = conn.execute(text("select version_num from alembic_version")).scalar_one()
        return [(str(t), str(n), str(s)) for t, n, s in rows] + [("revision", version, "")]

    copied = fixtures.new_sqlite_database(tmp_path / "copied.db")
    migrated = Database(f"sqlite:///{tmp_path / 'migrated.db'}")
    try:
        assert any(kind == "trigger" for kind, _, _ in objects(copied))
        assert objects(copied) == objects(migrated)
    finally:
        copied.dispose()
        migrated.dispose()
