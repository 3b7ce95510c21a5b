"""Migration 0021 rebuilds the saver's tables and ``artifacts`` as SQLite ``WITHOUT ROWID`` tables: the
rows already stored come through unchanged, the secondary index comes back, and the downgrade restores
ordinary tables with the same rows."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from saferun.storage.database import Database, upgrade

TABLES = ("artifacts", "lg_checkpoints", "lg_blobs", "lg_writes")
ROWS = {
    "artifacts": "('sr://a/1', 'langgraph.channel', '{}', 10, 5, '2026-12-07T05:00:00.000000+00:00')",
    "lg_checkpoints": "('t', '', 'c1', NULL, 'r1', 'msgpack', x'01', 'msgpack', x'02')",
    "lg_blobs": "('t', '', 'messages', '0001.5', 'msgpack', 'sr://a/1')",
    "lg_writes": "('t', '', 'c1', 'task', 0, 'messages', 'msgpack', x'03', '')",
}


def _tables(engine) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return {
            name: sql
            for name, sql in conn.exec_driver_sql("select name, sql from sqlite_master where type = 'table'")
        }


def _rows(engine) -> dict[str, list[tuple]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return {t: [tuple(r) for r in conn.exec_driver_sql(f"select * from {t} order by 1")] for t in TABLES}


def test_the_rows_survive_the_rebuild_both_ways(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    upgrade(engine, "0020")
    with engine.begin() as conn:
        for table, values in ROWS.items():
            conn.exec_driver_sql(f"insert into {table} values {values}")
    before = _rows(engine)
    assert all(len(rows) == 1 for rows in before.values())

    upgrade(engine, "head")
    tables = _tables(engine)
    assert all(tables[t].rstrip().endswith("WITHOUT ROWID") for t in TABLES)
    assert not tables["blobs"].rstrip().endswith("WITHOUT ROWID")  # chunk payloads keep their rowid table
    assert _rows(engine) == before
    with engine.connect() as conn:
        indexes = {n for (n,) in conn.exec_driver_sql("select name from sqlite_master where type = 'index'")}
        plan = " ".join(
            str(r[-1])
            for r in conn.exec_driver_sql("explain query plan select * from lg_checkpoints where run_id = 'r1'")
        )
    assert "ix_lg_checkpoints_run_id" in indexes and "ix_lg_checkpoints_run_id" in plan

    from alembic import command

    from saferun.storage.database import alembic_config

    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0020")
    assert not any(_tables(engine)[t].rstrip().endswith("WITHOUT ROWID") for t in TABLES)
    assert _rows(engine) == before
    engine.dispose()


def test_a_new_database_has_them_and_the_saver_and_artifacts_work_on_them(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'new.db'}")
    tables = _tables(db.engine)
    assert all(tables[t].rstrip().endswith("WITHOUT ROWID") for t in TABLES)
    with db.transaction() as conn:
        stored = db.artifacts.put(conn, {"content": b"x" * 5000}, artifact_type="report", metadata={"a": 1})
        again = db.artifacts.put(conn, {"content": b"x" * 5000}, artifact_type="report", metadata={"a": 1})
    assert again.uri == stored.uri
    with db.read() as conn:
        assert db.artifacts.get(conn, stored.uri) == {"content": b"x" * 5000}
    db.dispose()
