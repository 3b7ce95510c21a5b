"""Rows the database derives from others (revision 0024), on both databases.

The job history, the approval sub-job and its outcome, the outbox notices, the transitions, the saga's
commit and the approved snapshot's status are written by triggers, in the statement of the row they follow
from. These tests read them back after the engine's own calls and check they are what the engine wrote
itself before (tests/test_hot_path_counts.py counts the statements that saved), then that a row written
by any other path gets its derived rows too, and that the migration carries existing jobs over and back.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import create_engine, select, text

from saferun.core.rollback.reconciliation import CompensationRegistry, RetryPolicy
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage import jobs as job_store
from saferun.storage.database import Database, alembic_config, upgrade
from saferun.storage.schema import approval_requests, jobs, notifications, saga_steps, transitions
from tests.helpers import decide, make_config, pause, started


def orchestrator(db: Database, undone: list[Any] | None = None) -> WorkflowOrchestrator:
    reg = CompensationRegistry()
    reg.register("unsend", lambda **kw: (undone if undone is not None else []).append(kw))
    return WorkflowOrchestrator(
        database=db, registry=reg, retry=RetryPolicy(attempts=2, initial_delay=0.001, max_delay=0.002)
    )


def job_history(orch: WorkflowOrchestrator, job_id: str) -> list[tuple[str, str]]:
    with orch.db.read() as conn:
        return [(e["status"], e["reason"]) for e in job_store.history(conn, job_id)]


def notice_kinds(orch: WorkflowOrchestrator, request_id: str) -> list[str]:
    with orch.db.read() as conn:
        query = select(notifications.c.kind).where(notifications.c.request_id == request_id)
        return list(conn.execute(query.order_by(notifications.c.id)).scalars())


def transition_rows(orch: WorkflowOrchestrator, wf: str) -> list[dict[str, Any]]:
    with orch.db.read() as conn:
        query = select(transitions).where(transitions.c.workflow_id == wf).order_by(transitions.c.id)
        return [dict(r) for r in conn.execute(query).mappings()]


def request_row(orch: WorkflowOrchestrator, request_id: str) -> dict[str, Any]:
    with orch.db.read() as conn:
        query = select(approval_requests).where(approval_requests.c.request_id == request_id)
        return dict(conn.execute(query).mappings().one())


def saga_statuses(orch: WorkflowOrchestrator, wf: str) -> list[str]:
    with orch.db.read() as conn:
        query = select(saga_steps.c.status).where(saga_steps.c.workflow_id == wf).order_by(saga_steps.c.seq)
        return list(conn.execute(query).scalars())


async def test_an_approved_cycle_derives_what_the_engine_used_to_write(db: Database) -> None:
    orch = orchestrator(db)
    wf = started(orch, make_config(n=2))
    orch.register_step(wf, "drafted", "unsend", {"to": "everyone"})
    req_id = await pause(orch, wf, "cp1", {"n": 1})
    req = request_row(orch, req_id)
    assert saga_statuses(orch, wf) == ["pending"]
    decide(orch, req_id, "APPROVED", rationale="looks right")

    main = orch.get_workflow(wf)
    with db.read() as conn:
        main_job = conn.execute(
            text("select job_id from workflows where workflow_id = :w"), {"w": wf}
        ).scalar()
        sub = conn.execute(select(jobs).where(jobs.c.job_id == req["job_id"])).mappings().one()
    # the approval sub-job: written from the request's row, completed by the decision's row
    assert (sub["parent_job_id"], sub["job_type"], sub["workflow_id"]) == (main_job, "approval", wf)
    assert sub["data"] == {
        "checkpoint_id": "cp1",
        "supervisor_id": "reviewer",
        "request_id": req_id,
        "snapshot_id": req["snapshot_id"],
    }
    assert (sub["status"], sub["status_reason"]) == ("completed", "approved")
    assert sub["created_at"] == req["created_at"]
    assert job_history(orch, req["job_id"]) == [("open", "created"), ("completed", "approved")]
    assert job_history(orch, main_job) == [("open", "created"), ("running", "")]
    # the outbox notices, each with the change it announces
    assert notice_kinds(orch, req_id) == ["waiting", "decided"]
    # the approved state: the snapshot approved, the saga's steps before it permanent, paid once
    assert [s.status for s in orch.list_snapshots(wf)] == ["approved"]
    assert saga_statuses(orch, wf) == ["committed"]
    assert main.current_checkpoint == 1 and main.current_state.value == "executing"

    # the transitions are the chain's transition events (and the creation), in order, at the same instant
    events = [e for e in orch.audit_events(wf) if e["kind"] in ("workflow_created", "transition")]
    rows = transition_rows(orch, wf)
    assert [(r["from_state"], r["to_state"], r["event"], r["actor"], r["reason"]) for r in rows] == [
        (None, "initialized", "create", "poster", None),
        ("initialized", "executing", "start", "agent", None),
        ("executing", "awaiting_approval", "checkpoint_reached", "agent", "review cp1"),
        ("awaiting_approval", "executing", "approved", "reviewer", "looks right"),
    ]
    assert [r["at"] for r in rows] == [datetime.fromisoformat(e["at"]) for e in events]
    assert [r["to_state"] for r in orch.history(wf)] == [r["to_state"] for r in rows]
    assert orch.verify_audit(wf)[1] is None


async def test_a_rejection_completes_the_sub_job_and_commits_nothing(db: Database) -> None:
    undone: list[Any] = []
    orch = orchestrator(db, undone)
    wf = started(orch, make_config(n=2))
    orch.register_step(wf, "drafted", "unsend", {"to": "everyone"})
    req_id = await pause(orch, wf, "cp1")
    decide(orch, req_id, "REJECTED", rationale="no")
    req = request_row(orch, req_id)
    assert job_history(orch, req["job_id"]) == [("open", "created"), ("completed", "rejected")]
    assert notice_kinds(orch, req_id) == ["waiting", "decided"]
    assert [s.status for s in orch.list_snapshots(wf)] == ["rejected"]
    assert "committed" not in saga_statuses(orch, wf)  # the step is the rollback's to undo, not permanent
    assert [r["event"] for r in transition_rows(orch, wf)][-1] == "rejected_rollback"


async def test_a_modification_keeps_the_new_snapshots_status(db: Database) -> None:
    orch = orchestrator(db)
    wf = started(orch, make_config(n=2))
    req_id = await pause(orch, wf, "cp1", {"n": 1})
    decide(orch, req_id, "MODIFIED", modifications={"n": 2})
    assert [s.status for s in orch.list_snapshots(wf)] == ["superseded", "modified"]
    req = request_row(orch, req_id)
    assert job_history(orch, req["job_id"]) == [("open", "created"), ("completed", "modified")]
    assert orch.get_workflow(wf).current_checkpoint == 1


async def test_a_request_written_by_any_path_gets_its_sub_job_and_notices(db: Database) -> None:
    """The derived rows follow the source row, not the engine's code: a request row copied by hand (as a
    restore or a future bulk path would) has its sub-job and notice, and leaving ``pending`` its notice."""
    orch = orchestrator(db)
    wf = started(orch, make_config(n=2))
    req_id = await pause(orch, wf, "cp1")
    with db.transaction() as conn:
        row = dict(
            conn.execute(select(approval_requests).where(approval_requests.c.request_id == req_id))
            .mappings()
            .one()
        )
        row.update(request_id="req_copy", job_id="job_copy")
        conn.execute(approval_requests.insert(), row)
        conn.execute(
            approval_requests.update()
            .where(approval_requests.c.request_id == "req_copy")
            .values(status="cancelled", decided_at=row["created_at"])
        )
        conn.execute(  # not a change out of pending: no notice
            approval_requests.update()
            .where(approval_requests.c.request_id == "req_copy")
            .values(status="closed")
        )
    assert notice_kinds(orch, "req_copy") == ["waiting", "cancelled"]
    assert job_history(orch, "job_copy") == [("open", "created")]


def test_the_migration_carries_each_jobs_reason_over_and_back(tmp_path: Path) -> None:
    """0023 -> 0024 gives every job the reason of its last event; the downgrade drops the triggers and
    the column, and the upgrade again restores both (SQLite here; PostgreSQL runs 0024 in every test)."""
    path = tmp_path / "m.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine, "0023")
    with sqlite3.connect(path) as conn:
        conn.execute(
            "insert into jobs (job_id, job_type, status, data, created_at, updated_at) values "
            "('j1', 'approval', 'completed', '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00'), "
            "('j2', 'approval', 'open', '{}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
        conn.execute(
            "insert into job_events (job_id, status, reason, at) values "
            "('j1', 'open', 'created', '2026-01-01 00:00:00'), "
            "('j1', 'completed', 'approved', '2026-01-01 00:00:01')"
        )
    upgrade(engine, "0024")
    with sqlite3.connect(path) as conn:
        assert dict(conn.execute("select job_id, status_reason from jobs")) == {"j1": "approved", "j2": ""}
        conn.execute("update jobs set status = 'cancelled', status_reason = 'gone' where job_id = 'j2'")
        assert conn.execute("select status, reason from job_events where job_id = 'j2'").fetchall() == [
            ("cancelled", "gone")
        ]
    command.downgrade(alembic_config(engine), "0023")
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("select name from sqlite_master where type = 'trigger'")}
        assert not {n for n in names if n.startswith("derived_")}
        assert "status_reason" not in {r[1] for r in conn.execute("pragma table_info(jobs)")}
    upgrade(engine, "head")
    with sqlite3.connect(path) as conn:
        assert dict(conn.execute("select job_id, status_reason from jobs"))["j2"] == "gone"
    engine.dispose()
