"""The agent author's API: ``async with supervised(...)`` and ``await run.checkpoint(...)``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from saferun import ApprovalRejected, CompensationRegistry, WorkflowOrchestrator, attach, supervised
from saferun.core.rollback.reconciliation import RetryPolicy
from saferun.core.state_machine.models import WorkflowConfig
from saferun.storage.database import Database
from tests.helpers import decide, make_config


async def reviewer(orch: WorkflowOrchestrator, wf: str, plan: list[tuple[str, dict | None]]) -> None:
    for decision, mods in plan:
        while not (pending := orch.pending_approvals(wf)):
            await asyncio.sleep(0.005)
        decide(orch, pending[0].request_id, decision, modifications=mods)


async def test_the_pizza_order_is_caught_and_corrected(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    config = make_config(n=1, escrow="12.00")
    ordered: list[int] = []

    async def agent() -> None:
        async with supervised(config, orch) as run:
            decision = await run.checkpoint(
                "Review 1", parameters={"pizza_count": 100}, summary="Order 100 pizzas for $1,200?"
            )
            ordered.append(decision.parameters["pizza_count"])
            run.result["ordered"] = decision.parameters["pizza_count"]

    await asyncio.gather(agent(), reviewer(orch, config.workflow_id, [("MODIFIED", {"pizza_count": 10})]))
    assert ordered == [10]
    wf = orch.get_workflow(config.workflow_id)
    assert wf.current_state.value == "completed"
    pos = orch.escrow_position(config.workflow_id)
    assert (pos.released, pos.refunded, pos.held) == (12_000_000, 0, 0)


async def test_rejection_compensates_then_raises_with_the_last_approved_state(db: Database) -> None:
    reg = CompensationRegistry()
    undone: list[str] = []
    reg.register("cancel_order", lambda order_id: undone.append(order_id))
    orch = WorkflowOrchestrator(database=db, registry=reg, retry=RetryPolicy(initial_delay=0.001))
    config = make_config(n=2)
    caught: list[ApprovalRejected] = []

    async def agent() -> None:
        async with supervised(config, orch) as run:
            await run.checkpoint("Review 1", parameters={"plan": "A"})
            await run.step("order", compensation="cancel_order", args={"order_id": "o-7"})
            try:
                await run.checkpoint("Review 2", parameters={"plan": "B"})
            except ApprovalRejected as exc:
                caught.append(exc)
                # resume from the restored state and try again
                await run.checkpoint("Review 2", parameters={"plan": "B2"})

    await asyncio.gather(
        agent(),
        reviewer(orch, config.workflow_id, [("APPROVED", None), ("REJECTED", None), ("APPROVED", None)]),
    )
    assert undone == ["o-7"]
    exc = caught[0]
    assert exc.rejected_checkpoint_id == "cp2" and exc.last_approved_checkpoint == "cp1"
    assert exc.restored_state.parameters == {"plan": "A"} and exc.workflow_state == "executing"
    assert orch.get_workflow(config.workflow_id).current_state.value == "completed"


async def test_an_exception_in_the_block_fails_the_workflow_and_refunds(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    config = make_config(n=2)
    with pytest.raises(RuntimeError):
        async with supervised(config, orch):
            raise RuntimeError("model provider down")
    wf = orch.get_workflow(config.workflow_id)
    assert wf.current_state.value == "failed" and "model provider down" in (wf.error_message or "")
    assert orch.escrow_position(config.workflow_id).refunded == 100_000_000


async def test_an_agent_attaches_to_a_workflow_a_poster_created(db: Database) -> None:
    from saferun import attach

    orch = WorkflowOrchestrator(database=db)
    config = make_config(n=1)
    orch.initialize_workflow(config)  # the poster's side

    async def agent() -> None:
        async with attach(config.workflow_id, orch) as run:
            decision = await run.checkpoint(parameters={"plan": "A"})
            assert decision.approved

    await asyncio.gather(agent(), reviewer(orch, config.workflow_id, [("APPROVED", None)]))
    assert orch.get_workflow(config.workflow_id).current_state.value == "completed"


# --- an agent that died while its reviewer was reading ----------------------------------------------


async def _first_agent_dies_waiting(orch: WorkflowOrchestrator, config: Any) -> str:
    """An attached agent opens cp1's request, then its process dies (the task is cancelled mid-wait)."""

    async def agent() -> None:
        async with attach(config.workflow_id, orch) as run:
            await run.step("held a room", compensation="release", args={"room": "4B"})
            await run.checkpoint("cp1", parameters={"pizza_count": 100})

    task = asyncio.ensure_future(agent())
    while not orch.pending_approvals(config.workflow_id):
        assert not task.done(), task.exception()
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return orch.pending_approvals(config.workflow_id)[0].request_id


async def test_a_decision_made_while_no_agent_ran_is_the_answer_when_its_code_runs_again(
    db: Database,
) -> None:
    orch = WorkflowOrchestrator(database=db)
    config = make_config(n=2)
    orch.initialize_workflow(config)
    request_id = await _first_agent_dies_waiting(orch, config)
    decide(orch, request_id, "MODIFIED", modifications={"pizza_count": 10})  # nobody is waiting

    async with attach(config.workflow_id, orch) as run:  # the agent's code, from the top
        decision = await run.checkpoint("cp1", parameters={"pizza_count": 100})
        assert decision.request_id == request_id and decision.parameters == {"pizza_count": 10}
        assert any("decided while away" in t for t in run.trace)
        await run.step("ordered pizza", compensation="refund", args={"n": 10})
        second = asyncio.ensure_future(run.checkpoint("cp2"))
        while not orch.pending_approvals(config.workflow_id):
            await asyncio.sleep(0.005)
        decide(orch, orch.pending_approvals(config.workflow_id)[0].request_id, "APPROVED")
        assert (await second).request_id != request_id  # later checkpoints ask as usual
    history = [
        (r.checkpoint_id, resp.decision.value) for r, resp in orch.approval_history(config.workflow_id)
    ]
    assert history == [("cp1", "MODIFIED"), ("cp2", "APPROVED")]  # cp1 was asked once


async def _rejected_while_no_agent_ran(
    db: Database, n: int
) -> tuple[WorkflowOrchestrator, WorkflowConfig, str, list[str]]:
    """A workflow of ``n`` checkpoints whose first agent died waiting at cp1, then cp1 rejected ("the
    meeting moved") with no agent running; ``released`` records the compensation's runs."""
    orch = WorkflowOrchestrator(database=db)
    released: list[str] = []
    registry = CompensationRegistry()
    registry.register("release", lambda room: released.append(room))
    orch.registry = registry
    config = make_config(n=n)
    orch.initialize_workflow(config)
    request_id = await _first_agent_dies_waiting(orch, config)
    decide(orch, request_id, "REJECTED", rationale="the meeting moved")
    return orch, config, request_id, released


async def test_a_rejection_made_while_no_agent_ran_rolls_back_and_is_raised_again(db: Database) -> None:
    orch, config, _, released = await _rejected_while_no_agent_ran(db, n=1)

    with pytest.raises(ApprovalRejected) as rejected:
        async with attach(config.workflow_id, orch) as run:
            await run.checkpoint("cp1", parameters={"pizza_count": 100})
    assert rejected.value.rationale == "the meeting moved" and released == ["4B"]  # compensated once
    assert len(orch.approval_history(config.workflow_id)) == 1


async def test_an_agent_that_acted_after_the_decision_is_asked_again(db: Database) -> None:
    """Progress recorded after the decision means the agent saw it; a new checkpoint call is a new ask."""
    orch = WorkflowOrchestrator(database=db)
    config = make_config(n=1)
    orch.initialize_workflow(config)
    request_id = await _first_agent_dies_waiting(orch, config)
    decide(orch, request_id, "APPROVED")
    orch.register_step(config.workflow_id, "sent the order", "refund", {"n": 100})

    async with attach(config.workflow_id, orch) as run:
        again = asyncio.ensure_future(run.checkpoint("cp1", parameters={"pizza_count": 100}))
        while not orch.pending_approvals(config.workflow_id):
            assert not again.done(), again.exception()
            await asyncio.sleep(0.005)
        decide(orch, orch.pending_approvals(config.workflow_id)[0].request_id, "APPROVED")
        assert (await again).request_id != request_id


async def test_an_agent_asking_again_mid_rollback_gets_the_rejection_not_a_failed_workflow(
    db: Database,
) -> None:
    """The kill -9 harness's finding: an agent restarted while its workflow was still ROLLING_BACK asked
    a checkpoint the replay did not match (here: cp2, after cp1 was rejected), its pause was refused, and
    leaving the block failed a workflow whose rollback would have succeeded. It now finishes the rollback
    and gets ApprovalRejected with the restored state; the workflow is EXECUTING, compensated once."""
    orch, config, request_id, released = await _rejected_while_no_agent_ran(db, n=2)
    assert orch.get_workflow(config.workflow_id).current_state.value == "rolling_back"

    async with attach(config.workflow_id, orch) as run:
        with pytest.raises(ApprovalRejected) as rejected:
            await run.checkpoint("cp2", parameters={"pizza_count": 10})
        assert rejected.value.rationale == "the meeting moved"
        assert rejected.value.rejected_checkpoint_id == "cp1"
        assert rejected.value.workflow_state == "executing"
        assert released == ["4B"]  # compensated once
        assert orch.get_workflow(config.workflow_id).current_state.value == "executing"
        # the agent redoes the work from the restored state and asks again: a new request, approved
        again = asyncio.ensure_future(run.checkpoint("cp1", parameters={"pizza_count": 10}))
        while not orch.pending_approvals(config.workflow_id):
            assert not again.done(), again.exception()
            await asyncio.sleep(0.005)
        decide(orch, orch.pending_approvals(config.workflow_id)[0].request_id, "APPROVED")
        assert (await again).request_id != request_id
    assert orch.get_workflow(config.workflow_id).current_state.value != "failed"


async def test_checkpoint_many_mid_rollback_gets_the_rejection_too(db: Database) -> None:
    """``checkpoint_many`` shares the answer: asked while the workflow still rolls back from cp1's
    rejection, it finishes that rollback and raises ApprovalRejected, compensated once."""
    orch, config, _, released = await _rejected_while_no_agent_ran(db, n=2)

    async with attach(config.workflow_id, orch) as run:
        with pytest.raises(ApprovalRejected) as rejected:
            await run.checkpoint_many("cp2", items=[{"key": "a", "summary": "A", "parameters": {"n": 1}}])
        assert rejected.value.rejected_checkpoint_id == "cp1"
        assert rejected.value.workflow_state == "executing"
        assert released == ["4B"]
        assert orch.get_workflow(config.workflow_id).current_state.value == "executing"
