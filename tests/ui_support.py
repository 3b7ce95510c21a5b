"""Dashboard test helpers: realistic workflows paused for review, and a real server in a thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI

from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalResponse,
    CheckpointConfig,
    ExecutionState,
    WorkflowConfig,
)
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from tests.serving import serve_app

PIZZA_PARAMETERS: dict[str, Any] = {
    "pizza_count": 100,
    "vendor": "Tony's Pizzeria",
    "delivery_time": "12:30",
    "include_drinks": True,
    "toppings": ["margherita", "pepperoni", "veggie"],
}


def new_workflow(
    orch: WorkflowOrchestrator,
    name: str,
    checkpoints: list[str],
    *,
    escrow: str = "120.00",
    supervisor_id: str | None = "reviewer",
    poster_id: str = "poster",
    executor_id: str = "agent",
    description: str = "",
) -> str:
    config = WorkflowConfig(
        name=name,
        description=description,
        checkpoints=[
            CheckpointConfig(name=cp, checkpoint_id=f"cp{i + 1}", timeout_seconds=3600)
            for i, cp in enumerate(checkpoints)
        ],
        escrow_amount=escrow,
        poster_id=poster_id,
        executor_id=executor_id,
        supervisor_id=supervisor_id,
    )
    orch.initialize_workflow(config)
    orch.start_execution(config.workflow_id)
    return config.workflow_id


def pause(
    orch: WorkflowOrchestrator,
    workflow_id: str,
    checkpoint_id: str,
    summary: str,
    *,
    state: dict[str, Any] | None = None,
    **review: Any,
) -> str:
    """Checkpoint a state and open its approval request (sync, from any thread); returns the request id."""
    snap = orch.create_checkpoint_sync(
        workflow_id, ExecutionState(checkpoint_id=checkpoint_id, **(state or {}))
    )
    req = orch.request_approval(workflow_id, snap.snapshot_id, summary, review.pop("context", None), **review)
    return req.request_id


def approve(
    orch: WorkflowOrchestrator, request_id: str, by: str = "reviewer", rationale: str = "looks right"
) -> None:
    orch.submit_approval(
        None,
        ApprovalResponse(
            request_id=request_id, decision=ApprovalDecision.APPROVED, rationale=rationale, approved_by=by
        ),
    )


def pizza_workflow(orch: WorkflowOrchestrator) -> tuple[str, str]:
    """The seed's cautionary tale: an agent about to order 100 pizzas for a team of 10.

    The first checkpoint (vendor selection) is approved; the second (the order) waits for review, with
    alerts, a risk assessment and a recommendation to modify. Returns (workflow id, request id).
    """
    wf = new_workflow(
        orch,
        "Team lunch order",
        ["Vendor selection", "Place order", "Pay and confirm"],
        description="Order lunch for the Friday team meeting (10 people, budget $150).",
    )
    first = pause(
        orch,
        wf,
        "cp1",
        "Picked Tony's Pizzeria from 4 nearby vendors",
        state={
            "agent_memory": {"facts_learned": {"team_size": 10, "budget_usd": 150}},
            "api_calls": [
                {"method": "GET", "endpoint": "/v1/places/search", "status": 200, "ms": 212},
                {"method": "GET", "endpoint": "/v1/places/tonys/menu", "status": 200, "ms": 96},
            ],
            "intermediate_outputs": {"vendors_considered": 4, "chosen_vendor": "Tony's Pizzeria"},
            "decision_trace": ["Searched vendors within 2 km", "Ranked by rating and delivery time"],
            "resource_consumption": {"llm_tokens": 6210, "api_calls": 2, "cost_usd": 0.12},
            "parameters": {"vendor": "Tony's Pizzeria"},
        },
        recommendation="approve",
        confidence=0.93,
    )
    approve(orch, first)
    orch.register_step(wf, "create_cart", "delete_cart", {"cart_id": "cart_8841"})
    orch.register_step(wf, "add_items", "empty_cart", {"cart_id": "cart_8841", "items": 100})
    request_id = pause(
        orch,
        wf,
        "cp2",
        "Order 100 pizzas from Tony's Pizzeria for $1,200",
        state={
            "agent_memory": {
                "conversation_history": ["User asked to order lunch for the team", "Agent chose Tony's"],
                "facts_learned": {"team_size": 10, "budget_usd": 150, "vendor": "Tony's Pizzeria"},
                "current_context": "Cart filled, ready to place the order",
            },
            "api_calls": [
                {"method": "GET", "endpoint": "/v1/places/search", "status": 200, "ms": 212},
                {"method": "GET", "endpoint": "/v1/places/tonys/menu", "status": 200, "ms": 96},
                {"method": "POST", "endpoint": "/v1/cart", "status": 201, "ms": 143},
                {"method": "POST", "endpoint": "/v1/cart/items", "status": 200, "ms": 388},
                {"method": "GET", "endpoint": "/v1/cart/quote", "status": 200, "ms": 121},
            ],
            "intermediate_outputs": {
                "cart_id": "cart_8841",
                "quote": {"subtotal_usd": 1150.0, "delivery_usd": 50.0, "total_usd": 1200.0},
                "chosen_vendor": "Tony's Pizzeria",
            },
            "decision_trace": [
                "Searched vendors within 2 km",
                "Ranked by rating and delivery time",
                "Read 'order pizzas for the team' as 10 per person",
                "Filled the cart with 100 pizzas",
            ],
            "resource_consumption": {
                "llm_tokens": 18452,
                "api_calls": 5,
                "wall_time_s": 42.5,
                "cost_usd": 0.37,
            },
            "inputs": {"request": "Order lunch for the Friday team meeting", "team_size": 10},
            "planned_next_steps": ["Place the order", "Pay with the team card", "Send the receipt"],
            "parameters": dict(PIZZA_PARAMETERS),
            "confidence_scores": {"vendor_choice": 0.93, "quantity": 0.41},
            "risk_assessment": {"level": "high", "reason": "cost is 8x the budget"},
        },
        recommendation="modify",
        confidence=0.62,
        decision_needed="Place this order as is, change the quantity, or stop?",
        risk={"level": "high", "estimated_cost_usd": 1200, "budget_usd": 150},
        alerts=[
            {"level": "high", "message": "Order total $1,200 is 8x the $150 budget"},
            {"level": "warning", "message": "100 pizzas for a team of 10"},
        ],
        context={"meeting": "Friday all-hands", "requested_by": "poster"},
    )
    return wf, request_id


def data_workflow(orch: WorkflowOrchestrator, name: str = "Customer data analysis") -> tuple[str, str]:
    """A low-risk checkpoint the agent recommends approving. Returns (workflow id, request id)."""
    wf = new_workflow(orch, name, ["Data collection", "Analysis", "Report"], escrow="60.00")
    request_id = pause(
        orch,
        wf,
        "cp1",
        "Fetched 1,000 customer records from customers_2024",
        state={
            "agent_memory": {"facts_learned": {"data_source": "customers_2024", "total_records": 1000}},
            "api_calls": [
                {"method": "GET", "endpoint": "/api/customers?page=1", "status": 200, "records": 500},
                {"method": "GET", "endpoint": "/api/customers?page=2", "status": 200, "records": 500},
            ],
            "intermediate_outputs": {"records_fetched": 1000, "columns": ["id", "region", "spend"]},
            "decision_trace": ["Found the customers_2024 table", "Paged through 2 pages of 500"],
            "resource_consumption": {"llm_tokens": 2400, "api_calls": 2, "cost_usd": 0.05},
            "parameters": {"sample_size": 1000, "include_pii": False},
        },
        recommendation="approve",
        confidence=0.91,
        risk={"level": "low"},
    )
    return wf, request_id


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port in a thread; yields its base URL."""
    with serve_app(app, lifespan="on") as url:
        yield url
