"""Decisions: exactly once, what each one does to state, money and the audit trail."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from saferun.core.state_machine.models import CheckpointConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import DecisionConflict, InvalidInput, InvalidTransition
from saferun.storage.database import Database
from saferun.storage.schema import utcnow
from tests.helpers import decide, make_config, pause, started


@pytest.fixture
def orch(db: Database) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=db)


async def test_approval_resumes_and_pays_the_milestone_90_10(orch: WorkflowOrchestrator) -> None:
    wf = started(orch)
    req = await pause(orch, wf)
    assert orch.get_workflow(wf).current_state.value == "awaiting_approval"
    assert decide(orch, req, "APPROVED").current_state.value == "executing"
    legs = {
        leg["account"]: leg["amount_micro"]
        for e in orch.ledger_entries(wf)
        if e["kind"] == "release"
        for leg in e["legs"]
    }
    assert legs == {"escrow:" + wf: -50_000_000, "wallet:agent": 45_000_000, "wallet:reviewer": 5_000_000}


async def test_a_second_decision_is_a_conflict_and_changes_nothing(orch: WorkflowOrchestrator) -> None:
    wf = started(orch)
    req = await pause(orch, wf)
    decide(orch, req, "APPROVED")
    before = (orch.get_workflow(wf), orch.ledger_entries(wf), len(orch.audit_events(wf)))
    for decision in ("APPROVED", "REJECTED"):
        with pytest.raises(DecisionConflict) as info:
            decide(orch, req, decision)
        assert info.value.status == "decided"
    assert (orch.get_workflow(wf), orch.ledger_entries(wf), len(orch.audit_events(wf))) == before


async def test_concurrent_decisions_yield_exactly_one_winner(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    req = await pause(orch, wf)
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def attempt(i: int) -> None:
        mine = WorkflowOrchestrator(database=Database(db.url))
        barrier.wait()
        try:
            decide(mine, req, "APPROVED" if i % 2 else "REJECTED", by=f"r{i}")
            outcomes.append("won")
        except DecisionConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 5 + ["won"]
    assert orch.get_workflow(wf).approval_responses == 1


async def test_modified_merges_parameters_into_the_state_the_agent_gets_back(
    orch: WorkflowOrchestrator,
) -> None:
    wf = started(orch)
    req = await pause(
        orch, wf, parameters={"pizza_count": 100, "topping": "cheese"}, agent_memory={"order": "pizza"}
    )
    decide(orch, req, "MODIFIED", modifications={"pizza_count": 10})
    state = orch.latest_approved_state(wf)
    assert state is not None
    assert state.parameters == {"pizza_count": 10, "topping": "cheese"}
    assert state.agent_memory == {"order": "pizza"}
    snaps = orch.list_snapshots(wf)
    assert [s.status for s in snaps] == ["superseded", "modified"]
    assert snaps[1].parent_snapshot_id == snaps[0].snapshot_id


async def test_modifications_are_checked_against_the_proposed_parameters(orch: WorkflowOrchestrator) -> None:
    wf = started(orch)
    req = await pause(orch, wf, parameters={"pizza_count": 100})
    with pytest.raises(InvalidInput) as info:
        decide(orch, req, "MODIFIED", modifications={"pizza_cuont": 10})
    assert info.value.field == "modifications.pizza_cuont"
    with pytest.raises(InvalidInput) as info:
        decide(orch, req, "MODIFIED", modifications={"pizza_count": "ten"})
    assert info.value.field == "modifications.pizza_count"
    assert orch.get_approval_request(req).status == "pending"  # nothing decided
    decide(orch, req, "MODIFIED", modifications={"pizza_count": 10})


async def test_rejection_without_rollback_fails_and_refunds(orch: WorkflowOrchestrator) -> None:
    cps = [
        CheckpointConfig(name="A", checkpoint_id="cp1"),
        CheckpointConfig(name="B", checkpoint_id="cp2", can_rollback=False),
    ]
    wf = started(orch, make_config(checkpoints=cps, escrow="100.01"))
    decide(orch, await pause(orch, wf, "cp1"), "APPROVED")
    wf_after = decide(orch, await pause(orch, wf, "cp2"), "REJECTED")
    assert wf_after.current_state.value == "failed"
    assert "cannot roll back" in (wf_after.error_message or "")
    pos = orch.escrow_position(wf)
    assert (pos.locked, pos.released, pos.refunded, pos.held) == (100_010_000, 50_005_000, 50_005_000, 0)


async def test_expired_requests_apply_their_policy_once(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    cps = [
        CheckpointConfig(name="A", checkpoint_id="cp1", timeout_seconds=1, on_timeout="approve"),
        CheckpointConfig(name="B", checkpoint_id="cp2", timeout_seconds=1),
    ]
    wf = started(orch, make_config(checkpoints=cps))
    req = await pause(orch, wf, "cp1")
    later = utcnow() + timedelta(seconds=2)
    other = WorkflowOrchestrator(database=Database(db.url))
    assert orch.sweep_expired(later) == [req]
    assert other.sweep_expired(later) == []  # exactly one process resolves it
    assert orch.get_workflow(wf).current_state.value == "executing"
    response = orch.get_approval_response(req)
    assert response is not None and response.automatic and response.approved_by == "saferun:timeout"
    with pytest.raises(DecisionConflict) as info:
        decide(orch, req, "REJECTED")
    assert info.value.status == "expired"

    req2 = await pause(orch, wf, "cp2")  # default policy: reject (silence is not consent)
    orch.sweep_expired(utcnow() + timedelta(seconds=2))
    assert orch.get_workflow(wf).current_state.value == "rolling_back"
    assert orch.get_approval_request(req2).status == "expired"


async def test_a_decision_after_expiry_is_refused_even_before_any_sweep(orch: WorkflowOrchestrator) -> None:
    cps = [CheckpointConfig(name="A", checkpoint_id="cp1", timeout_seconds=1)]
    wf = started(orch, make_config(checkpoints=cps))
    req = await pause(orch, wf)
    import asyncio

    await asyncio.sleep(1.1)
    with pytest.raises(DecisionConflict):
        decide(orch, req, "APPROVED")
    assert orch.get_workflow(wf).current_state.value in ("awaiting_approval", "rolling_back")


async def test_wait_for_decision_returns_the_expiry_outcome(orch: WorkflowOrchestrator) -> None:
    cps = [CheckpointConfig(name="A", checkpoint_id="cp1", timeout_seconds=1)]
    wf = started(orch, make_config(checkpoints=cps))
    req = await pause(orch, wf)
    response = await orch.wait_for_decision(req, timeout=10)
    assert response.decision.value == "REJECTED" and response.automatic


async def test_actions_in_the_wrong_state_raise_typed_errors_and_write_nothing(
    orch: WorkflowOrchestrator,
) -> None:
    config = make_config()
    orch.initialize_workflow(config)
    wf = config.workflow_id
    events = len(orch.audit_events(wf))
    with pytest.raises(InvalidTransition):
        orch.settle_workflow(wf)
    with pytest.raises(InvalidTransition):
        orch.complete_workflow(wf)
    with pytest.raises(InvalidTransition):
        await pause(orch, wf)
    orch.start_execution(wf)
    with pytest.raises(InvalidTransition):
        orch.start_execution(wf)
    req = await pause(orch, wf)
    with pytest.raises(InvalidTransition):
        orch.fail_workflow(wf, "agent gave up")  # the pending decision belongs to the reviewer
    with pytest.raises(InvalidTransition):
        await pause(orch, wf, "cp2")
    assert orch.get_approval_request(req).status == "pending"
    assert len(orch.audit_events(wf)) == events + 3  # start, capture, request: the refusals wrote nothing
