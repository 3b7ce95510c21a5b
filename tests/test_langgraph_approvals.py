"""A graph on SafeRunSaver whose interrupts are SafeRun approvals: subgraphs, a kill -9 of the graph's
process while the reviewer reads, and a restart on changed graph code (a redeploy) that resumes with the
reviewer's decision."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from saferun import (
    ApprovalDecision,
    ApprovalResponse,
    CheckpointConfig,
    WorkflowConfig,
    WorkflowOrchestrator,
    WorkflowState,
    supervised,
)
from saferun.integrations.langgraph import approval, run_graph
from saferun.integrations.langgraph.checkpoint import SafeRunSaver
from saferun.storage.database import Database

REVIEWER = "reviewer"


class Order(TypedDict, total=False):
    count: int
    ordered: int


def _config(*names: str) -> WorkflowConfig:
    return WorkflowConfig(
        name="langgraph on saferun",
        checkpoints=[CheckpointConfig(name=n) for n in names],
        escrow_amount="10.00",
        poster_id="poster",
        executor_id="agent",
        supervisor_id=REVIEWER,
    )


def _decide(orch: WorkflowOrchestrator, request: Any, count: int) -> None:
    orch.submit_approval(
        request.workflow_id,
        ApprovalResponse(
            request_id=request.request_id,
            decision=ApprovalDecision.MODIFIED,
            approved_by=REVIEWER,
            modifications={"count": count},
        ),
    )


async def test_an_interrupt_inside_a_subgraph_is_an_approval_and_resumes_there(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)

    def order(state: Order) -> Order:
        decision = approval("Review order", parameters={"count": state["count"]})
        return {"ordered": decision.parameters["count"]}

    inner = StateGraph(Order)
    inner.add_node("order", order)
    inner.add_edge(START, "order")
    inner.add_edge("order", END)
    outer = StateGraph(Order)
    outer.add_node("shop", inner.compile())  # the subgraph shares the parent's checkpointer
    outer.add_edge(START, "shop")
    outer.add_edge("shop", END)
    graph = outer.compile(checkpointer=SafeRunSaver(db))
    cfg = _config("Review order")

    async def agent() -> Any:
        async with supervised(cfg, orch) as run:
            return await run_graph(graph, {"count": 100}, run)

    task = asyncio.ensure_future(agent())
    while not orch.pending_approvals(cfg.workflow_id):
        assert not task.done(), task.exception()
        await asyncio.sleep(0.01)
    [request] = orch.pending_approvals(cfg.workflow_id)
    assert request.parameters == {"count": 100}
    # the subgraph's own checkpoints are in SafeRun's store under their namespace
    saver = SafeRunSaver(db)
    namespaces = {t.config["configurable"]["checkpoint_ns"] for t in saver.list(None)}
    assert any(ns.startswith("shop:") for ns in namespaces)
    _decide(orch, request, 7)
    assert await task == {"count": 100, "ordered": 7}
    assert orch.get_workflow(cfg.workflow_id).current_state == WorkflowState.COMPLETED


AGENT = """
import asyncio, sys
from typing import TypedDict
from langgraph.graph import END, START, StateGraph
from saferun import CheckpointConfig, WorkflowConfig, WorkflowOrchestrator, attach
from saferun.integrations.langgraph import approval, run_graph
from saferun.integrations.langgraph.checkpoint import SafeRunSaver
from saferun.storage.database import Database

class Order(TypedDict, total=False):
    count: int
    ordered: int
    note: str

VERSION = "{version}"

def {node_fn}(state):
    decision = approval("Review order", parameters={{"count": state["count"]}})
    return {{"ordered": decision.parameters["count"], "note": "placed by " + VERSION}}

async def main():
    db = Database(sys.argv[1])
    orch = WorkflowOrchestrator(database=db)
    builder = StateGraph(Order)
    builder.add_node("order", {node_fn})
    builder.add_edge(START, "order")
    builder.add_edge("order", END)
    graph = builder.compile(checkpointer=SafeRunSaver(db))
    async with attach(sys.argv[2], orch) as run:
        print("RESULT", await run_graph(graph, {{"count": 100}}, run), flush=True)

asyncio.run(main())
"""


def test_kill_9_while_an_interrupt_waits_then_a_redeploy_resumes_with_the_decision(tmp_path: Path) -> None:
    """The graph's process is killed (SIGKILL) while its interrupt waits; the reviewer decides while
    nothing runs; a new process on *changed code* (another function, another module file: what a deploy
    changes) carries the graph on from its stored pause with that decision."""
    url = f"sqlite:///{tmp_path / 'saferun.db'}"
    db = Database(url)
    orch = WorkflowOrchestrator(database=db)
    cfg = _config("Review order")
    orch.initialize_workflow(cfg)
    v1 = tmp_path / "agent_v1.py"
    v1.write_text(textwrap.dedent(AGENT.format(version="v1", node_fn="order_v1")))
    v2 = tmp_path / "agent_v2.py"
    v2.write_text(textwrap.dedent(AGENT.format(version="v2", node_fn="place_order")))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    first = subprocess.Popen([sys.executable, str(v1), url, cfg.workflow_id], env=env)
    try:
        deadline = time.monotonic() + 120
        while not orch.pending_approvals(cfg.workflow_id):
            assert first.poll() is None, "the agent exited before asking"
            assert time.monotonic() < deadline, "the agent never asked"
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    [request] = orch.pending_approvals(cfg.workflow_id)
    paused = SafeRunSaver(db).get_tuple({"configurable": {"thread_id": cfg.workflow_id}})
    assert paused is not None and any(w[1] == "__interrupt__" for w in paused.pending_writes)
    # the request names the graph checkpoint it paused at, which is in the same store
    assert request.context["langgraph_checkpoint_id"] == paused.config["configurable"]["checkpoint_id"]
    assert paused.checkpoint["channel_values"]["count"] == 100
    _decide(orch, request, 10)
    second = subprocess.run(
        [sys.executable, str(v2), url, cfg.workflow_id], env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr
    assert "RESULT {'count': 100, 'ordered': 10, 'note': 'placed by v2'}" in second.stdout
    assert [r.request_id for r, _ in orch.approval_history(cfg.workflow_id)] == [request.request_id]
    assert orch.get_workflow(cfg.workflow_id).current_state == WorkflowState.COMPLETED


async def test_two_interrupts_in_one_step_are_two_requests_and_the_graph_gets_both(db: Database) -> None:
    """Parallel branches both interrupt in one superstep, naming two different checkpoints: each is its
    own SafeRun request, asked one checkpoint after the other, and the graph resumes once with both.
    (Interrupts naming the same checkpoint are asked together: tests/test_langgraph_parallel.py.)"""
    orch = WorkflowOrchestrator(database=db)

    class Trip(TypedDict, total=False):
        hotel: int
        flight: int

    def hotel(state: Trip) -> Trip:
        decision = approval("Review hotel", parameters={"hotel": state["hotel"]})
        return {"hotel": decision.parameters["hotel"]}

    def flight(state: Trip) -> Trip:
        decision = approval("Review flight", parameters={"flight": state["flight"]})
        return {"flight": decision.parameters["flight"]}

    builder = StateGraph(Trip)
    builder.add_node("hotel", hotel)
    builder.add_node("flight", flight)
    builder.add_edge(START, "hotel")
    builder.add_edge(START, "flight")
    builder.add_edge("hotel", END)
    builder.add_edge("flight", END)
    saver = SafeRunSaver(db)
    graph = builder.compile(checkpointer=saver)
    cfg = _config("Review hotel", "Review flight")

    async def agent() -> Any:
        async with supervised(cfg, orch) as run:
            return await run_graph(graph, {"hotel": 300, "flight": 900}, run)

    task = asyncio.ensure_future(agent())
    seen: list[str] = []
    while not task.done():
        for request in orch.pending_approvals(cfg.workflow_id):
            seen.append(request.checkpoint_id)
            [(key, value)] = request.parameters.items()
            orch.submit_approval(
                request.workflow_id,
                ApprovalResponse(
                    request_id=request.request_id,
                    decision=ApprovalDecision.MODIFIED,
                    approved_by=REVIEWER,
                    modifications={key: value // 3},
                ),
            )
        await asyncio.sleep(0.01)
    assert task.result() == {"hotel": 100, "flight": 300}
    assert len(seen) == 2 and len(set(seen)) == 2
    # both answers reached the graph's stored state
    history = list(saver.list({"configurable": {"thread_id": cfg.workflow_id, "checkpoint_ns": ""}}))
    assert history[0].checkpoint["channel_values"] == {"hotel": 100, "flight": 300}
    assert orch.get_workflow(cfg.workflow_id).current_state == WorkflowState.COMPLETED


async def test_a_declared_schema_holds_for_the_reviewer_and_the_resume(db: Database) -> None:
    """``approval(parameter_schema=...)``: a decision outside the schema is refused and the graph stays
    paused; a resume value outside it (a forged resume) is refused inside the graph too."""
    import pytest

    from saferun.errors import InvalidInput
    from saferun.integrations.langgraph import RESUME_KEY, _decision_from

    orch = WorkflowOrchestrator(database=db)
    schema = {"type": "object", "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 50}}}

    def review(state: Order) -> Order:
        decision = approval("Review order", parameters={"count": state["count"]}, parameter_schema=schema)
        return {"ordered": decision.parameters["count"]}

    builder = StateGraph(Order)
    builder.add_node("review", review)
    builder.add_edge(START, "review")
    builder.add_edge("review", END)
    graph = builder.compile(checkpointer=SafeRunSaver(db))
    cfg = _config("Review order")
    forged: list[str] = []

    async def agent() -> Any:
        async with supervised(cfg, orch) as run:
            result = await run_graph(graph, {"count": 20}, run)
            value = {RESUME_KEY: True, "decision": "MODIFIED", "parameters": {"count": 60}}
            with pytest.raises(InvalidInput) as raised:
                _decision_from({**value, "request_id": forged[0]})
            assert raised.value.field == "resume.parameters.count"
            return result

    task = asyncio.ensure_future(agent())
    while not orch.pending_approvals(cfg.workflow_id):
        await asyncio.sleep(0.01)
    [request] = orch.pending_approvals(cfg.workflow_id)
    assert request.parameter_schema == schema
    with pytest.raises(InvalidInput) as refused:
        _decide(orch, request, 60)
    assert "must be at most 50, got 60" in str(refused.value)
    assert orch.get_approval_request(request.request_id).status == "pending"  # the graph stays paused
    forged.append(request.request_id)
    _decide(orch, request, 12)
    assert (await task)["ordered"] == 12
