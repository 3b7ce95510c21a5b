"""Issue 10, finding 6: a workflow settled but never completed (agent killed between the two
transactions) is finished by a restarted agent (``attach``), the sweep, or ``saferun workflows finish``."""

from __future__ import annotations

from datetime import timedelta

from typer.testing import CliRunner

from saferun import WorkflowOrchestrator, attach
from saferun.cli.main import app
from saferun.core.state_machine.models import ExecutionState, WorkflowState
from saferun.storage.database import Database
from saferun.storage.schema import utcnow
from tests.helpers import decide, make_config


def _settled_not_completed(db: Database) -> tuple[WorkflowOrchestrator, str]:
    """A workflow with one approved milestone (released) left in SETTLING, escrow still held."""
    orch = WorkflowOrchestrator(database=db)
    config = make_config(n=2, escrow="100.00")
    wf = orch.initialize_workflow(config).workflow_id
    orch.start_execution(wf)

    snap = orch.create_checkpoint_sync(wf, ExecutionState(checkpoint_id="cp1"))
    req = orch.request_approval(wf, snap.snapshot_id, "first milestone")
    decide(orch, req.request_id, "APPROVED")
    orch.settle_workflow(wf, {"ok": True})  # ... and the agent is killed here
    assert orch.get_workflow(wf).current_state == WorkflowState.SETTLING
    assert orch.escrow_position(wf).held > 0
    return orch, wf


def _assert_finished(orch: WorkflowOrchestrator, wf: str) -> None:
    assert orch.get_workflow(wf).current_state == WorkflowState.COMPLETED
    pos = orch.escrow_position(wf)
    assert pos.held == 0 and pos.released + pos.refunded == pos.locked
    assert pos.released == 50_000_000  # the approved milestone only, paid once


async def test_a_restarted_agent_attaching_finishes_a_settling_workflow(db: Database) -> None:
    orch, wf = _settled_not_completed(db)
    async with attach(wf, orch):
        pass
    _assert_finished(orch, wf)


def test_the_sweep_finishes_a_settling_workflow_after_the_grace(db: Database) -> None:
    orch, wf = _settled_not_completed(db)
    assert orch.sweep().completed == []  # inside the grace the agent may still be completing it
    report = orch.sweep(utcnow() + orch.rollback_grace + timedelta(seconds=1))
    assert report.completed == [wf]
    _assert_finished(orch, wf)
    assert orch.sweep(utcnow() + orch.rollback_grace + timedelta(seconds=1)).completed == []


def test_cli_workflows_finish(db: Database) -> None:
    orch, wf = _settled_not_completed(db)
    runner = CliRunner()
    out = runner.invoke(
        app,
        ["--database-url", db.engine.url.render_as_string(hide_password=False), "workflows", "finish", wf],
    )
    assert out.exit_code == 0, out.output
    assert "completed" in out.output
    _assert_finished(orch, wf)
    again = runner.invoke(
        app,
        ["--database-url", db.engine.url.render_as_string(hide_password=False), "workflows", "finish", wf],
    )
    assert again.exit_code == 0 and "already completed" in again.output
