"""The seed's pizza disaster, caught: an agent proposes 100 pizzas, a reviewer changes it to 10.

python examples/pizza_order.py               # waits for you: decide with `saferun approvals ...`
python examples/pizza_order.py --auto-review # a scripted reviewer modifies 100 -> 10 after a moment
"""

from __future__ import annotations

import asyncio
import sys

from saferun import (
    ApprovalRejected,
    ApprovalResponse,
    CheckpointConfig,
    WorkflowConfig,
    WorkflowOrchestrator,
    compensation,
    supervised,
)
from saferun.domain.money import format_micro

ORDERS: dict[str, int] = {}  # stands in for a shop's API


@compensation("cancel_pizza_order")
def cancel_pizza_order(order_id: str) -> None:
    ORDERS.pop(order_id, None)


async def agent(orchestrator: WorkflowOrchestrator, config: WorkflowConfig) -> None:
    async with supervised(config, orchestrator) as run:
        people = 10
        pizzas = people * 10  # the bug: "10 people" read as "100 pizzas"
        try:
            decision = await run.checkpoint(
                "Review food order",
                parameters={"pizza_count": pizzas},
                summary=f"Order {pizzas} pizzas at $12 for a meeting of {people}?",
                context={"people": people, "unit_price_usd": 12, "total_usd": pizzas * 12},
            )
        except ApprovalRejected as rejected:
            print(f"Rejected: {rejected.rationale}. Nothing was ordered.")
            raise
        count = decision.parameters["pizza_count"]
        ORDERS["order-1"] = count
        await run.step("place order", compensation="cancel_pizza_order", args={"order_id": "order-1"})
        run.result["pizzas_ordered"] = count
        print(f"{decision.decision.value} by {decision.approved_by}: ordered {count} pizzas (${count * 12})")


async def scripted_reviewer(orchestrator: WorkflowOrchestrator, workflow_id: str) -> None:
    while not (pending := orchestrator.pending_approvals(workflow_id)):
        await asyncio.sleep(0.05)
    request = pending[0]
    print(f"Reviewer sees: {request.summary} (parameters {request.parameters})")
    orchestrator.submit_approval(
        workflow_id,
        ApprovalResponse(
            request_id=request.request_id,
            decision="MODIFIED",
            rationale="10 people need 10 pizzas, not 100",
            approved_by="human_789",
            modifications={"pizza_count": 10},
        ),
    )


async def main() -> None:
    orchestrator = WorkflowOrchestrator()
    config = WorkflowConfig(
        name="Book meeting room and order food",
        description="Food for 10 people",
        checkpoints=[
            CheckpointConfig(
                name="Review food order",
                description="Check the order before it is placed",
                timeout_seconds=600,
            )
        ],
        escrow_amount=120.0,
        poster_id="user_123",
        executor_id="agent_456",
        supervisor_id="human_789",
    )
    print(f"Workflow {config.workflow_id}")
    if "--auto-review" in sys.argv:
        await asyncio.gather(agent(orchestrator, config), scripted_reviewer(orchestrator, config.workflow_id))
    else:
        print("Waiting for a decision: saferun approvals list")
        await agent(orchestrator, config)
    final = orchestrator.get_workflow(config.workflow_id)
    position = orchestrator.escrow_position(config.workflow_id)
    print(
        f"Workflow {final.current_state.value}; escrow locked {format_micro(position.locked)}, "
        f"released {format_micro(position.released)}, refunded {format_micro(position.refunded)}"
    )


if __name__ == "__main__":
    asyncio.run(main())
