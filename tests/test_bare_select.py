"""``storage.bare_select``: the engine's hottest read on the bare cursor gives what the transactional one
gives, with the same checks (issue 12, target 1: the warm latest-state load)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event

from saferun import WorkflowOrchestrator
from saferun.storage import bare_reads, snapshots, workflows
from saferun.storage.database import Database
from tests.helpers import decide, pause, started


async def _approved(tmp_path: Path) -> tuple[Database, WorkflowOrchestrator, str]:
    db = Database(f"sqlite:///{tmp_path / 'bare.db'}")
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    decide(orch, await pause(orch, wf, "cp1", parameters={"n": 1}, agent_memory={"notes": ["a"]}), "APPROVED")
    return db, orch, wf


async def test_a_bare_row_is_the_core_row(tmp_path: Path) -> None:
    """Every column typed as SQLAlchemy types it: aware timestamps, decoded JSON, integers, booleans."""
    db, _, wf = await _approved(tmp_path)
    with db.read() as conn:
        row, snap = snapshots.last_approved(conn, wf)
    got = bare_reads.bare_read(db, lambda cur: snapshots.last_approved_bare(db.engine.dialect, cur, wf))
    assert got is not None
    assert got[0] == dict(row) and got[1] == dict(snap)  # type: ignore[arg-type]
    assert got[0]["created_at"].tzinfo is not None and isinstance(got[0]["config"], dict)
    dialect = db.engine.dialect
    assert bare_reads.bare_read(db, lambda cur: workflows.GET_BARE.first(dialect, cur, {"b_wf": "x"})) is None
    db.dispose()


async def test_a_warm_latest_state_runs_no_engine_statement_and_follows_new_commits(tmp_path: Path) -> None:
    db, orch, wf = await _approved(tmp_path)
    first = orch.latest_approved_state(wf)  # verifies chain and parts in this process
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        again = orch.latest_approved_state(wf)
        assert again == first and again is not None and again.parameters == {"n": 1}
        assert statements == []  # the bare cursor, the verified chain prefix, the verified parts
        # a decision committed since (the anchor moved past what this process verified): the events
        # appended since are verified from the prefix on, and the new state's parts fetched and
        # hash-checked, on the same bare cursor (the resume right after a decision)
        decide(orch, await pause(orch, wf, "cp2", parameters={"n": 2}), "APPROVED")
        statements.clear()
        newer = orch.latest_approved_state(wf)
        assert newer is not None and newer.parameters == {"n": 2}
        assert statements == []
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    db.dispose()


def _rewrite_last_event(db: Database, wf: str) -> None:
    """Rewrite who the chain's last event says acted, keeping its stored hash (a forgery the link-by-link
    check must catch)."""
    from sqlalchemy import text

    last = "(SELECT max(seq) FROM audit_events WHERE workflow_id = :wf)"
    with db.transaction() as conn:
        changed = conn.execute(
            text(f"UPDATE audit_events SET actor = actor || '!' WHERE workflow_id = :wf AND seq = {last}"),
            {"wf": wf},
        ).rowcount
    assert changed == 1


async def test_a_forged_event_after_the_verified_prefix_is_tampered(tmp_path: Path) -> None:
    """The events appended since the verified prefix are checked link by link on the bare path too: one
    rewritten in the database is refused (the transactional read names it), never served as a state."""
    import pytest

    from saferun.errors import Tampered

    db, orch, wf = await _approved(tmp_path)
    orch.latest_approved_state(wf)  # the chain so far is verified in this process
    decide(orch, await pause(orch, wf, "cp2", parameters={"n": 2}), "APPROVED")
    _rewrite_last_event(db, wf)
    with pytest.raises(Tampered):
        orch.latest_approved_state(wf)
    db.dispose()


async def test_the_events_past_the_verified_prefix_are_checked_link_by_link(tmp_path: Path) -> None:
    """An event appended after the prefix that binds nothing the served rows show (a saga step's): only
    the link-by-link check of the events since the prefix can find it rewritten."""
    import pytest

    from saferun.errors import Tampered

    db, orch, wf = await _approved(tmp_path)
    assert orch.latest_approved_state(wf) is not None  # the chain so far is verified in this process
    orch.register_step(wf, "send", "undo_send", {"to": "a"})  # the workflow row's anchor moves on
    _rewrite_last_event(db, wf)  # the step's event
    with pytest.raises(Tampered):
        orch.latest_approved_state(wf)
    db.dispose()
