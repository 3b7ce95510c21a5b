"""Bad input: each a clear typed error naming the problem, and nothing written."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from saferun.core.state_machine.models import ApprovalResponse, CheckpointConfig, ExecutionState
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import (
    ApprovalRequestNotFound,
    Conflict,
    InvalidInput,
    SnapshotNotFound,
    StateNotSerializable,
    WorkflowNotFound,
)
from saferun.storage.database import Database
from saferun.storage.schema import metadata
from tests.helpers import make_config, started


def row_counts(db: Database) -> dict[str, int]:
    with db.read() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in metadata.sorted_tables
        }


@pytest.mark.parametrize(
    "amount, message",
    [
        (-1, "must not be negative"),
        ("ten", "not a number"),
        ("1.0000001", "more than 6 decimal"),
        (float("nan"), "finite"),
        (None, "must be a number"),
        (True, "must be a number"),
    ],
)
def test_bad_escrow_amounts_name_the_field(amount: object, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        make_config(escrow=amount)
    err = info.value.errors()[0]
    assert err["loc"] == ("escrow_amount",) and message in err["msg"]


def test_empty_and_duplicate_checkpoint_lists_are_refused() -> None:
    with pytest.raises(ValidationError, match="at least one checkpoint"):
        make_config(n=0)
    dup = [CheckpointConfig(name="a", checkpoint_id="same"), CheckpointConfig(name="b", checkpoint_id="same")]
    with pytest.raises(ValidationError, match="duplicate checkpoint_id 'same'"):
        make_config(checkpoints=dup)
    with pytest.raises(ValidationError, match="timeout_seconds"):
        CheckpointConfig(name="a", timeout_seconds=0)


def test_unknown_ids_raise_not_found(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    with pytest.raises(WorkflowNotFound):
        orch.get_workflow("wf_nope")
    with pytest.raises(WorkflowNotFound):
        orch.start_execution("wf_nope")
    with pytest.raises(ApprovalRequestNotFound):
        orch.submit_approval(
            None, ApprovalResponse(request_id="req_nope", decision="APPROVED", approved_by="x")
        )
    with pytest.raises(SnapshotNotFound):
        orch.get_snapshot_state("snap_nope")
    wf = started(orch)
    with pytest.raises(SnapshotNotFound):
        orch.request_approval(wf, "snap_nope", "s", {})


async def test_malformed_state_is_refused_with_its_path_and_writes_nothing(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    before = row_counts(db)
    bad_values = [
        ({"when": {1, 2}}, "agent_memory.when"),
        ({"n": float("inf")}, "agent_memory.n"),
        ({"x": {"deep": [object()]}}, "agent_memory.x.deep[0]"),
        ({"k": {3: "int key"}}, "agent_memory.k"),
    ]
    for memory, path in bad_values:
        with pytest.raises(StateNotSerializable) as info:
            await orch.create_checkpoint(wf, ExecutionState(checkpoint_id="cp1", agent_memory=memory))
        assert info.value.field.startswith(path)
    with pytest.raises(InvalidInput) as info2:
        orch.request_approval(wf, "snap_x", "s", {"bad": {1, 2}})
    assert info2.value.field == "context.bad"
    assert row_counts(db) == before


def test_duplicate_workflow_ids_conflict_and_change_nothing(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    config = make_config()
    orch.initialize_workflow(config)
    before = row_counts(db)
    with pytest.raises(Conflict, match="already exists"):
        orch.initialize_workflow(config)
    assert row_counts(db) == before


def test_a_modified_decision_needs_modifications() -> None:
    with pytest.raises(ValidationError, match="modifications"):
        ApprovalResponse(request_id="r", decision="MODIFIED", approved_by="x")
    with pytest.raises(ValidationError, match="only a MODIFIED decision"):
        ApprovalResponse(request_id="r", decision="APPROVED", approved_by="x", modifications={"a": 1})
    with pytest.raises(ValidationError):
        ApprovalResponse(request_id="r", decision="MAYBE", approved_by="x")


def test_four_eyes_at_configuration_time() -> None:
    for party in ("poster", "agent"):
        with pytest.raises(ValidationError, match="four eyes") as caught:
            make_config(supervisor_id=party)
        assert caught.value.errors()[0]["loc"] == ("supervisor_id",)  # the field, not the whole body
