"""``saferun approvals approve/reject`` on a checkpoint that asked several things at once: each line names
the item and its checkpoint, an item whose siblings still wait says so, ``--workflow`` decides them all,
and an item closed by a sibling's rejection is reported as such (issue 14 item 3)."""

from __future__ import annotations

from saferun.core.state_machine.models import CheckpointConfig, ExecutionState, WorkflowConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.cli_support import cli

ITEMS = [
    {"key": "call_1", "summary": "Refund order 1", "parameters": {"amount": "5.00"}},
    {"key": "call_2", "summary": "Refund order 2", "parameters": {"amount": "7.50"}},
]


def paused(db: Database) -> tuple[WorkflowOrchestrator, str, list[str]]:
    orch = WorkflowOrchestrator(database=db)
    config = WorkflowConfig(
        name="Refunds",
        checkpoints=[CheckpointConfig(name="Refund batch")],
        escrow_amount="20.00",
        poster_id="poster_1",
        executor_id="agent_1",
        supervisor_id="alice",
    )
    orch.initialize_workflow(config)
    orch.start_execution(config.workflow_id)
    cp = config.checkpoints[0].checkpoint_id
    _, reqs = orch.pause_items_sync(
        config.workflow_id, ExecutionState(checkpoint_id=cp), "two refunds", ITEMS
    )
    return orch, config.workflow_id, [r.request_id for r in reqs]


def test_approving_items_names_each_and_the_last_resumes_the_workflow(database_env: Database) -> None:
    orch, wf, reqs = paused(database_env)
    first = cli("approvals", "approve", reqs[0], "--by", "alice")
    assert first.exit_code == 0, first.output
    assert "(item 'call_1' of 'Refund batch')" in first.output
    assert "1 other item of this checkpoint still wait" in first.output
    rest = cli("approvals", "approve", "--workflow", wf, "--by", "alice")
    assert rest.exit_code == 0, rest.output
    assert "(item 'call_2' of 'Refund batch')" in rest.output and "is now executing" in rest.output
    assert orch.get_workflow(wf).status == "executing"


def test_rejecting_one_item_closes_the_other(database_env: Database) -> None:
    orch, wf, reqs = paused(database_env)
    out = cli("approvals", "reject", reqs[1], reqs[0], "--by", "alice", "--rationale", "duplicate refunds")
    assert out.exit_code == 1, out.output  # one of the two could not be decided: it was closed
    assert "(item 'call_2' of 'Refund batch')" in out.output
    assert "closed: item 'call_1' of checkpoint 'Refund batch' was closed" in out.output.replace("\n", " ")
    assert sorted(r.status for r, _ in orch.approval_history(wf)) == ["closed", "decided"]
