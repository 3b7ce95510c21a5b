"""The agent author's API: ``async with supervised(...)`` and ``await run.checkpoint(...)``."""

from __future__ import annotations

import asyncio

import pytest

from saferun import ApprovalRejected, CompensationRegistry, WorkflowOrchestrator, supervised
from saferun.core.rollback.reconciliation import RetryPolicy
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
