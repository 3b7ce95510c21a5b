"""Migration 0023 rewrites SQLite's counter triggers as one UPSERT each: the counts they keep are the same
as revision 0017's (folded first, if a count had several rows), the trigger text is half as long (SQLite
parses it on every connection's first statement), and the downgrade brings 0017's triggers back."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from saferun.storage.database import alembic_config, upgrade

VERSIONS = Path(__file__).parents[1] / "saferun" / "storage" / "migrations" / "versions"
WORKFLOW = (
    "insert into workflows (workflow_id, name, description, state, config, poster_id, executor_id,"
    " supervisor_id, escrow_micro, current_checkpoint, version, created_at, updated_at) values"
    " ('w{i}', 'w', '', 'executing', '{{}}', 'poster', 'agent{i}', {supervisor}, 0, 0, 1,"
    " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
)


def _counts(path: Path) -> dict[tuple[str, str], int]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("select kind, key, sum(n) from counters group by kind, key").fetchall()
    return {(k, key): int(n) for k, key, n in rows if n}


def _trigger_text(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(
            conn.execute("select sum(length(sql)) from sqlite_master where type = 'trigger'").fetchone()[0]
        )


def _exercise(path: Path, first: int) -> None:
    """Rows through every trigger: inserts, updates that move a count (and one that moves none), a delete."""
    with sqlite3.connect(path) as conn:
        for i in range(first, first + 3):
            conn.execute(WORKFLOW.format(i=i, supervisor="NULL" if i % 3 == 2 else "'sup'"))
        conn.execute(f"update workflows set state = 'awaiting_approval' where workflow_id = 'w{first}'")
        conn.execute(f"update workflows set name = 'renamed' where workflow_id = 'w{first + 1}'")
        conn.execute(f"update workflows set state = 'completed' where workflow_id = 'w{first + 2}'")
        conn.execute(f"delete from workflows where workflow_id = 'w{first + 1}'")


def _truth(path: Path) -> dict[tuple[str, str], int]:
    """The counts from the rows (what the triggers must keep), for the workflow kinds exercised here."""
    with sqlite3.connect(path) as conn:
        out: dict[tuple[str, str], int] = {}
        for state, n in conn.execute("select state, count(*) from workflows group by state"):
            out[("workflows", state)] = n
        live = "state not in ('completed', 'failed')"
        for who, n in conn.execute(f"select executor_id, count(*) from workflows where {live} group by 1"):
            out[("executor", who)] = n
        for who, n in conn.execute(
            f"select supervisor_id, count(*) from workflows where {live} and supervisor_id is not null"
            " group by 1"
        ):
            out[("supervisor", who)] = n
    return out


def _workflow_counts(path: Path) -> dict[tuple[str, str], int]:
    return {k: n for k, n in _counts(path).items() if k[0] in ("workflows", "executor", "supervisor")}


def test_the_triggers_become_upserts_that_keep_the_same_counts_and_come_back(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine, "0022")
    _exercise(path, 0)
    assert _workflow_counts(path) == _truth(path)
    with sqlite3.connect(path) as conn:  # a count kept in two rows (as a bulk load could leave it)
        conn.execute("insert into counters (kind, key, n) values ('workflows', 'executing', 0)")
    before, text_before = _counts(path), _trigger_text(path)

    upgrade(engine, "0023")
    assert _counts(path) == before  # folded, not changed
    with sqlite3.connect(path) as conn:
        rows = conn.execute("select kind, key, count(*) from counters group by kind, key having count(*) > 1")
        assert rows.fetchall() == []
    assert _trigger_text(path) < text_before / 2
    _exercise(path, 10)
    assert _workflow_counts(path) == _truth(path)

    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0022")
    assert _trigger_text(path) == text_before
    _exercise(path, 20)
    assert _workflow_counts(path) == _truth(path)
    engine.dispose()


def test_the_upsert_triggers_are_generated_from_revision_0017s_list_of_counts() -> None:
    """One list of what is counted (0017's ``COUNTED``), so the two forms cannot count different things."""
    spec = importlib.util.spec_from_file_location("m0023", VERSIONS / "0023_sqlite_counter_upserts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counted = module._counted().COUNTED
    made = module.triggers(counted)
    assert len(made) == 3 * len(counted)
    for table, (_, kinds) in counted.items():
        upd = next(t for t in made if t.startswith(f"CREATE TRIGGER counters_{table}_upd"))
        assert all(f"'{kind}'" in upd for kind, _, _ in kinds)
