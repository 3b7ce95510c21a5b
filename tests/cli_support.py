"""What the CLI tests share: a paused workflow to operate on, and the ``saferun`` runner.

Kept out of ``tests/test_cli.py`` on purpose: importing a test module from another test file loads it a
second time under another name (tests/ is not a package), re-running its module-level compensation
registration with a list the first copy's tests never see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from typer.testing import CliRunner

from saferun.cli.main import app
from saferun.core.state_machine.models import CheckpointConfig, ExecutionState, WorkflowConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database

runner = CliRunner()


@dataclass
class Pending:
    orch: WorkflowOrchestrator
    workflow_id: str
    request_id: str


def pending_workflow(
    db: Database, *, can_rollback: bool = True, step: str | None = None, quorum: dict[str, Any] | None = None
) -> Pending:
    """A workflow paused at its first checkpoint, proposing ``{"pizza_count": 100}`` (``quorum``: that
    checkpoint's M-of-N rule, docs/quorum.md)."""
    orch = WorkflowOrchestrator(database=db)
    config = WorkflowConfig(
        name="Pizza party",
        checkpoints=[
            CheckpointConfig(name="Order pizza", can_rollback=can_rollback, quorum=quorum),
            CheckpointConfig(name="Deliver"),
        ],
        escrow_amount=100.0,
        poster_id="poster_1",
        executor_id="agent_1",
        supervisor_id="alice",
    )
    wf = orch.initialize_workflow(config)
    orch.start_execution(wf.workflow_id)
    if step:
        orch.register_step(wf.workflow_id, "place_order", step, {"order_id": "o-1"})
    state = ExecutionState(checkpoint_id=config.checkpoints[0].checkpoint_id, parameters={"pizza_count": 100})
    snap = orch.create_checkpoint_sync(wf.workflow_id, state)
    req = orch.request_approval(
        wf.workflow_id, snap.snapshot_id, "Order 100 pizzas?", recommendation="approve", confidence=0.8
    )
    return Pending(orch, wf.workflow_id, req.request_id)


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))
