"""Fork from a checkpoint (issue 16, item 6): a new workflow from an approved state, the source untouched.

On SQLite and PostgreSQL (the ``db`` fixture).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from saferun import attach
from saferun.core.bundles import TABLES
from saferun.core.state_machine.models import CheckpointConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.states import WorkflowState
from saferun.errors import Conflict, InvalidInput, WorkflowNotFound
from saferun.storage.database import Database
from saferun.storage.schema import workflows
from tests.helpers import decide, make_config, pause, started


async def _source(orch: WorkflowOrchestrator) -> str:
    """cp1 modified (budget 100 -> 80), cp2 approved, cp3 rejected and rolled back, still running."""
    wf = started(orch, make_config(n=4))
    decide(
        orch,
        await pause(orch, wf, "cp1", {"budget": 100}, agent_memory={"notes": ["a"]}),
        "MODIFIED",
        modifications={"budget": 80},
    )
    decide(orch, await pause(orch, wf, "cp2", {"budget": 80}, agent_memory={"notes": ["a", "b"]}), "APPROVED")
    orch.register_step(wf, "order", "cancel_order", {"id": 1})
    decide(
        orch,
        await pause(orch, wf, "cp3", {"budget": 80}, agent_memory={"notes": ["a", "b", "c"]}),
        "REJECTED",
    )
    orch.complete_rollback(wf)
    return wf


def _snapshot_of_source(db: Database, wf: str) -> dict[str, Any]:
    """Every row of the source, table by table: what 'never changed' is checked against."""
    out: dict[str, Any] = {}
    with db.transaction() as conn:
        for name, table in TABLES.items():
            if "workflow_id" in table.c:
                rows = conn.execute(select(table).where(table.c.workflow_id == wf)).mappings().all()
                out[name] = sorted((dict(r) for r in rows), key=repr)
    return out


async def test_a_fork_starts_from_the_approved_state_and_the_source_is_untouched(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    src = await _source(orch)
    before = _snapshot_of_source(db, src)
    fork = orch.fork_workflow(src, "cp2", actor="poster", escrow_amount="30.00")
    assert _snapshot_of_source(db, src) == before  # not one row of the source changed, chain included
    assert fork.workflow_id != src and fork.current_state == WorkflowState.EXECUTING
    assert [cp.checkpoint_id for cp in fork.config.checkpoints] == ["cp3", "cp4"]  # only the work left
    link = fork.config.metadata["forked_from"]
    assert (link["workflow_id"], link["checkpoint_id"]) == (src, "cp2")
    assert link["source_audit_head"] == orch.audit_anchor(src)[1]
    state = orch.latest_approved_state(fork.workflow_id)
    assert (
        state is not None
        and state.agent_memory == {"notes": ["a", "b"]}
        and state.parameters == {"budget": 80}
    )
    assert orch.escrow_position(fork.workflow_id).locked == 30_000_000  # its own escrow
    count, broken = orch.verify_audit(fork.workflow_id)
    assert broken is None and count >= 3
    assert orch.verify_audit(src)[1] is None
    # the fork's agent attaches, resumes where the state was, and runs the remaining checkpoints
    async with attach(fork.workflow_id, orch) as run:
        assert run.workflow_id == fork.workflow_id
        for cp in ("cp3", "cp4"):
            snap = await orch.create_checkpoint(
                fork.workflow_id, state.model_copy(update={"checkpoint_id": cp})
            )
            req = orch.request_approval(fork.workflow_id, snap.snapshot_id, cp, {})
            decide(orch, req.request_id, "APPROVED")
    done = orch.get_workflow(fork.workflow_id)
    assert done.current_state == WorkflowState.COMPLETED
    assert orch.escrow_position(fork.workflow_id).released == 30_000_000


async def test_a_fork_with_modified_parameters_checks_them_like_a_reviewer_s(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    src = await _source(orch)
    fork = orch.fork_workflow(src, "cp1", actor="poster", modifications={"budget": 60})
    assert orch.latest_approved_state(fork.workflow_id).parameters == {"budget": 60}
    assert [cp.checkpoint_id for cp in fork.config.checkpoints] == ["cp2", "cp3", "cp4"]
    assert [e["kind"] for e in orch.audit_events(fork.workflow_id)][-1] == "forked_from"
    with pytest.raises(InvalidInput, match="forked from"):  # a fork's own starting state is its source's
        orch.fork_workflow(fork.workflow_id, "cp1", actor="poster")
    with pytest.raises(InvalidInput) as bad:
        orch.fork_workflow(src, "cp1", actor="poster", modifications={"budget": "lots"})
    assert bad.value.field == "modifications.budget"
    with pytest.raises(InvalidInput) as unknown:
        orch.fork_workflow(src, "cp1", actor="poster", modifications={"colour": "red"})
    assert unknown.value.field == "modifications.colour"


async def test_forks_that_must_not_happen_create_nothing(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    src = await _source(orch)

    def count() -> int:
        with db.transaction() as conn:
            return int(conn.execute(select(func.count()).select_from(workflows)).scalar_one())

    n = count()
    with pytest.raises(Conflict, match="never approved"):
        orch.fork_workflow(src, "cp3", actor="poster")  # rejected: not an approved state
    with pytest.raises(InvalidInput, match="no checkpoint"):
        orch.fork_workflow(src, "cp9", actor="poster")
    with pytest.raises(WorkflowNotFound):
        orch.fork_workflow("wf_never", "cp1", actor="poster")
    with pytest.raises(InvalidInput) as amount:
        orch.fork_workflow(src, "cp1", actor="poster", escrow_amount="1e30")
    assert amount.value.field == "escrow_amount"
    with pytest.raises(InvalidInput, match="modifications"):
        orch.fork_workflow(src, "cp1", actor="poster", modifications={})
    last = started(orch, make_config(checkpoints=[CheckpointConfig(name="Only", checkpoint_id="only")]))
    decide(orch, await pause(orch, last, "only"), "APPROVED")
    n = count()
    with pytest.raises(InvalidInput, match="nothing to run"):
        orch.fork_workflow(last, "only", actor="poster")
    assert count() == n


async def test_fork_over_http_with_the_sdk_and_from_the_cli(db: Database) -> None:
    from typer.testing import CliRunner

    from saferun.cli.main import app as cli
    from saferun.client import SafeRunClient, ServerError
    from saferun.errors import Conflict as ConflictError
    from tests.test_client import serving

    orch = WorkflowOrchestrator(database=db)
    src = await _source(orch)
    with serving(db, auth="open") as url, SafeRunClient(url) as client:
        fork = client.fork_workflow(src, "cp2", escrow_amount="12.50", modifications={"budget": 70})
        assert fork["status"] == "executing" and fork["workflow_id"] != src
        with pytest.raises((ConflictError, ServerError)):
            client.fork_workflow(src, "cp3")  # rejected checkpoint: 409
        with pytest.raises(InvalidInput):
            client.fork_workflow(src, "cp2", modifications={"budget": "lots"})
    assert orch.latest_approved_state(fork["workflow_id"]).parameters == {"budget": 70}
    assert orch.escrow_position(fork["workflow_id"]).locked == 12_500_000
    url = db.engine.url.render_as_string(hide_password=False)
    out = CliRunner().invoke(
        cli,
        [
            "--database-url",
            url,
            "workflows",
            "fork",
            src,
            "--from",
            "cp1",
            "--set",
            "budget=50",
            "--by",
            "poster",
        ],
    )
    assert out.exit_code == 0 and "Forked" in out.output, out.output
    bad = CliRunner().invoke(cli, ["--database-url", url, "workflows", "fork", src, "--from", "cp3"])
    assert bad.exit_code == 1 and "never approved" in bad.output
