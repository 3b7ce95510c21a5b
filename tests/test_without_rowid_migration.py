"""Migration 0021 rebuilds ``artifacts``, ``lg_blobs`` and ``lg_writes`` as SQLite ``WITHOUT ROWID``
tables, ``lg_blobs`` keyed version before channel: the rows already stored come through unchanged, the
other tables and their indexes are untouched, and the downgrade restores ordinary tables with the same
rows."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from saferun.storage.database import Database, upgrade

TABLES = ("artifacts", "lg_blobs", "lg_writes")
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
        return {t: [tuple(r) for r in conn.exec_driver_sql(f"select * from {t} order by 1")] for t in ROWS}


def test_the_rows_survive_the_rebuild_both_ways(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    upgrade(engine, "0020")
    with engine.begin() as conn:
        for table, values in ROWS.items():
            conn.exec_driver_sql(f"insert into {table} values {values}")
    before = _rows(engine)
    assert all(len(rows) == 1 for rows in before.values())

    upgrade(engine, "0021")
    tables = _tables(engine)
    assert all(tables[t].rstrip().endswith("WITHOUT ROWID") for t in TABLES)
    # chunk payloads and the appended checkpoints keep their rowid tables
    assert not any(tables[t].rstrip().endswith("WITHOUT ROWID") for t in ("blobs", "lg_checkpoints"))
    assert "PRIMARY KEY (thread_id, checkpoint_ns, version, channel)" in tables["lg_blobs"]
    assert _rows(engine) == before
    with engine.connect() as conn:
        indexes = {n for (n,) in conn.exec_driver_sql("select name from sqlite_master where type = 'index'")}
        plan = " ".join(
            str(r[-1])
            for r in conn.exec_driver_sql(
                "explain query plan select * from lg_checkpoints where run_id = 'r1'"
            )
        )
    assert "ix_lg_checkpoints_run_id" in indexes and "ix_lg_checkpoints_run_id" in plan

    from alembic import command

    from saferun.storage.database import alembic_config

    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0020")
    assert not any(_tables(engine)[t].rstrip().endswith("WITHOUT ROWID") for t in TABLES)
    assert "PRIMARY KEY (thread_id, checkpoint_ns, channel, version)" in _tables(engine)["lg_blobs"]
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


def test_postgresql_rekeys_lg_blobs_both_ways(pg_db: Database) -> None:
    from alembic import command

    from saferun.storage.database import alembic_config

    def key() -> list[str]:
        with pg_db.engine.connect() as conn:
            return list(
                conn.exec_driver_sql(
                    "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid "
                    "and a.attnum = any(i.indkey) where i.indrelid = 'lg_blobs'::regclass and i.indisprimary "
                    "order by array_position(i.indkey::int2[], a.attnum)"
                ).scalars()
            )

    assert key() == ["thread_id", "checkpoint_ns", "version", "channel"]
    with pg_db.engine.begin() as conn:
        conn.exec_driver_sql(f"insert into lg_blobs values {ROWS['lg_blobs']}")
    for target, order in (("0020", ["channel", "version"]), ("head", ["version", "channel"])):
        with pg_db.engine.begin() as conn:
            cfg = alembic_config(pg_db.engine)
            cfg.attributes["connection"] = conn
            (command.downgrade if target == "0020" else command.upgrade)(cfg, target)
        assert key() == ["thread_id", "checkpoint_ns", *order]
        with pg_db.engine.connect() as conn:
            assert conn.exec_driver_sql("select count(*) from lg_blobs").scalar() == 1
