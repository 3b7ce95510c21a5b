"""Migration 0022 adds ``lg_checkpoints.channel_versions`` (the PostgreSQL saver's one-statement reads): rows
already stored keep their bytes and get NULL (so they are read the previous way), and the downgrade drops
the column and keeps the rows."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from saferun.storage.database import alembic_config, upgrade

ROW = "('t', '', 'c1', NULL, 'r1', 'msgpack', x'01', 'msgpack', x'02')"


def _columns(engine) -> list[str]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return [r[1] for r in conn.exec_driver_sql("pragma table_info(lg_checkpoints)")]


def _rows(engine) -> list[tuple]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql("select * from lg_checkpoints")]


def test_the_column_is_added_empty_and_dropped_again(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0021")
    with engine.begin() as conn:
        conn.exec_driver_sql(f"insert into lg_checkpoints values {ROW}")
    before = _rows(engine)
    assert "channel_versions" not in _columns(engine)

    upgrade(engine, "0022")
    assert _columns(engine)[-1] == "channel_versions"
    assert _rows(engine) == [(*before[0], None)]

    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0021")
    assert "channel_versions" not in _columns(engine)
    assert _rows(engine) == before
    engine.dispose()
