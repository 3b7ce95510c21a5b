"""A LangGraph step that raises several interrupts at one checkpoint (parallel nodes, ``Send`` fan-out):
each interrupt is its own pending SafeRun request at the same time (item key = the interrupt's id), the
graph resumes once with ``Command(resume={id: value, ...})`` when all are decided, and a rejection of any
reaches every node that asked (issue 14 item 3, issue 15 item 3)."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from saferun import (
    ApprovalDecision,
    ApprovalRejected,
    ApprovalResponse,
    CheckpointConfig,
    WorkflowConfig,
    WorkflowOrchestrator,
    WorkflowState,
    attach,
    supervised,
)
from saferun.integrations.langgraph import approval, run_graph
from saferun.integrations.langgraph.checkpoint import SafeRunSaver
from saferun.storage.database import Database

REVIEWER = "reviewer"


def _config() -> WorkflowConfig:
    return WorkflowConfig(
        name="parallel interrupts",
        checkpoints=[CheckpointConfig(name="Review trip")],
        escrow_amount="10.00",
        poster_id="poster",
        executor_id="agent",
        supervisor_id=REVIEWER,
    )


class Trip(TypedDict, total=False):
    hotel: int
    flight: int
    notes: Annotated[list[str], operator.add]


def _trip_graph(db: Database) -> Any:
    def hotel(state: Trip) -> Trip:
        try:
            decision = approval("Review trip", parameters={"hotel": state["hotel"]}, summary="Book the hotel")
        except ApprovalRejected as exc:
            return {"notes": [f"hotel: rejected ({exc.rationale})"]}
        return {"hotel": decision.parameters["hotel"], "notes": ["hotel booked"]}

    def flight(state: Trip) -> Trip:
        try:
            decision = approval(
                "Review trip", parameters={"flight": state["flight"]}, summary="Book the flight"
            )
        except ApprovalRejected as exc:
            return {"notes": [f"flight: rejected ({exc.rationale})"]}
        return {"flight": decision.parameters["flight"], "notes": ["flight booked"]}

    builder = StateGraph(Trip)
    builder.add_node("hotel", hotel)
    builder.add_node("flight", flight)
    builder.add_edge(START, "hotel")
    builder.add_edge(START, "flight")
    builder.add_edge("hotel", END)
    builder.add_edge("flight", END)
    return builder.compile(checkpointer=SafeRunSaver(db))


async def _all_pending(
    orch: WorkflowOrchestrator, workflow_id: str, n: int, task: asyncio.Future
) -> list[Any]:
    while len(pending := orch.pending_approvals(workflow_id)) < n:
        assert not task.done(), task.exception()
        await asyncio.sleep(0.01)
    return pending


def _answer(orch: WorkflowOrchestrator, request: Any, decision: str, **kw: Any) -> Any:
    return orch.submit_approval(
        request.workflow_id,
        ApprovalResponse(
            request_id=request.request_id, decision=ApprovalDecision(decision), approved_by=REVIEWER, **kw
        ),
    )


async def test_two_parallel_interrupts_wait_together_and_resume_the_graph_once(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    graph = _trip_graph(db)
    cfg = _config()

    async def agent() -> Any:
        async with supervised(cfg, orch) as run:
            return await run_graph(graph, {"hotel": 300, "flight": 900}, run)

    task = asyncio.ensure_future(agent())
    pending = await _all_pending(orch, cfg.workflow_id, 2, task)
    # both asked at once, at one checkpoint and one snapshot, each keyed by its interrupt's id
    assert len({r.group_id for r in pending}) == 1 and len({r.snapshot_id for r in pending}) == 1
    state = await graph.aget_state({"configurable": {"thread_id": cfg.workflow_id}})
    assert {r.item_key for r in pending} == {i.id for i in state.interrupts}
    by_node = {r.context["langgraph_node"]: r for r in pending}
    assert by_node["hotel"].summary == "Book the hotel" and by_node["hotel"].parameters == {"hotel": 300}
    assert _answer(orch, by_node["hotel"], "MODIFIED", modifications={"hotel": 100}).current_state == (
        WorkflowState.AWAITING_APPROVAL
    )
    await asyncio.sleep(0.05)
    assert not task.done()  # the graph waits for its sibling
    _answer(orch, by_node["flight"], "APPROVED")
    result = await task
    assert result["hotel"] == 100 and result["flight"] == 900
    assert sorted(result["notes"]) == ["flight booked", "hotel booked"]
    wf = orch.get_workflow(cfg.workflow_id)
    assert wf.current_state == WorkflowState.COMPLETED
    assert [e["kind"] for e in orch.ledger_entries(cfg.workflow_id)].count("release") == 1
    assert orch.verify_audit(cfg.workflow_id)[1] is None


async def test_a_rejected_interrupt_reaches_every_node_that_asked(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    graph = _trip_graph(db)
    cfg = _config()

    async def agent() -> Any:
        async with supervised(cfg, orch) as run:
            return await run_graph(graph, {"hotel": 300, "flight": 900}, run)

    task = asyncio.ensure_future(agent())
    pending = await _all_pending(orch, cfg.workflow_id, 2, task)
    by_node = {r.context["langgraph_node"]: r for r in pending}
    _answer(orch, by_node["flight"], "REJECTED", rationale="too expensive")
    result = await task
    assert sorted(result["notes"]) == ["flight: rejected (too expensive)", "hotel: rejected (too expensive)"]
    statuses = {r.context["langgraph_node"]: r.status for r, _ in orch.approval_history(cfg.workflow_id)}
    assert statuses == {"hotel": "closed", "flight": "decided"}


class Fan(TypedDict, total=False):
    cities: list[str]
    booked: Annotated[list[str], operator.add]


async def test_a_send_fan_out_asks_every_branch_at_once(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)

    def fan_out(state: Fan) -> list[Send]:
        return [Send("book", {"city": c}) for c in state["cities"]]

    def book(state: dict[str, Any]) -> Fan:
        decision = approval("Review trip", parameters={"city": state["city"], "nights": 2})
        return {"booked": [f"{decision.parameters['city']}x{decision.parameters['nights']}"]}

    builder = StateGraph(Fan)
    builder.add_node("book", book)
    builder.add_conditional_edges(START, fan_out, ["book"])
    builder.add_edge("book", END)
    graph = builder.compile(checkpointer=SafeRunSaver(db))
    cfg = _config()

    async def agent() -> Any:
        async with supervised(cfg, orch) as run:
            return await run_graph(graph, {"cities": ["Oslo", "Rome", "Lima"]}, run)

    task = asyncio.ensure_future(agent())
    pending = await _all_pending(orch, cfg.workflow_id, 3, task)
    for request in pending:
        if request.parameters["city"] == "Rome":
            _answer(orch, request, "MODIFIED", modifications={"nights": 5})
        else:
            _answer(orch, request, "APPROVED")
    result = await task
    assert sorted(result["booked"]) == ["Limax2", "Oslox2", "Romex5"]
    assert orch.get_workflow(cfg.workflow_id).current_state == WorkflowState.COMPLETED


async def test_a_restarted_agent_adopts_the_pending_interrupts_and_resumes(db: Database) -> None:
    """The agent dies while both interrupts wait (its task is cancelled); one reviewer answer lands while
    no agent runs; a new ``attach`` running the same graph code waits on the same two requests."""
    graph = _trip_graph(db)
    cfg = _config()
    first = WorkflowOrchestrator(database=db)

    async def agent() -> Any:
        async with supervised(cfg, first) as run:
            return await run_graph(graph, {"hotel": 300, "flight": 900}, run)

    task = asyncio.ensure_future(agent())
    pending = await _all_pending(first, cfg.workflow_id, 2, task)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    by_node = {r.context["langgraph_node"]: r for r in pending}
    _answer(first, by_node["hotel"], "MODIFIED", modifications={"hotel": 120})

    second = WorkflowOrchestrator(database=Database(db.url))
    restarted = _trip_graph(db)  # the graph built again, as a new process would

    async def again() -> Any:
        async with attach(cfg.workflow_id, second) as run:
            return await run_graph(restarted, {"hotel": 300, "flight": 900}, run)

    resumed = asyncio.ensure_future(again())
    await asyncio.sleep(0.1)
    assert not resumed.done()
    assert [r.request_id for r in second.pending_approvals(cfg.workflow_id)] == [by_node["flight"].request_id]
    _answer(second, by_node["flight"], "APPROVED")
    result = await resumed
    assert result["hotel"] == 120 and result["flight"] == 900
    assert len(second.approval_history(cfg.workflow_id)) == 2  # nothing asked twice
    assert second.get_workflow(cfg.workflow_id).current_state == WorkflowState.COMPLETED
