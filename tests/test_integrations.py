"""The integrations: ``@requires_approval`` and the LangGraph adapter, on a real store with a reviewer
deciding from another task, and the integration examples run as a user runs them."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.types import Command, interrupt

from saferun import (
    ApprovalDecision,
    ApprovalRejected,
    ApprovalRequest,
    ApprovalResponse,
    CheckpointConfig,
    CompensationRegistry,
    WorkflowConfig,
    WorkflowOrchestrator,
    WorkflowState,
    attach,
    current_run,
    supervised,
)
from saferun.errors import InvalidInput, StateNotSerializable
from saferun.integrations import NoSupervisedRun, StandaloneWorkflow, requires_approval, supervised_tool
from saferun.integrations.langgraph import approval, approval_node, approval_tool, run_graph
from saferun.storage.database import Database

REVIEWER = "reviewer"
Verdict = tuple[str, str, dict[str, Any] | None]


def config(*checkpoints: str, escrow: str = "10.00", **kwargs: Any) -> WorkflowConfig:
    return WorkflowConfig(
        name="integration test",
        checkpoints=[CheckpointConfig(name=n) for n in checkpoints],
        escrow_amount=escrow,
        poster_id="poster",
        executor_id="agent",
        supervisor_id=REVIEWER,
        **kwargs,
    )


@pytest.fixture
def registry() -> CompensationRegistry:
    return CompensationRegistry()


@pytest.fixture
def orch(db: Database, registry: CompensationRegistry) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=db, registry=registry)


async def reviewed(
    orch: WorkflowOrchestrator, agent: Awaitable[Any], decide: Callable[[ApprovalRequest], Verdict]
) -> tuple[Any, list[ApprovalRequest]]:
    """Run the agent while a reviewer decides every request it opens; returns its result and the requests.

    The agent's exception, if any, propagates once the reviewer has stopped.
    """
    task = asyncio.ensure_future(agent)
    seen: list[ApprovalRequest] = []
    while not task.done():
        for request in orch.pending_approvals():
            seen.append(request)
            decision, rationale, modifications = decide(request)
            orch.submit_approval(
                request.workflow_id,
                ApprovalResponse(
                    request_id=request.request_id,
                    decision=ApprovalDecision(decision),
                    rationale=rationale,
                    approved_by=REVIEWER,
                    modifications=modifications,
                ),
            )
        await asyncio.sleep(0.005)
    return task.result(), seen


def approve(_: ApprovalRequest) -> Verdict:
    return ("APPROVED", "fine", None)


# ================================================================================= the decorator
async def test_a_gated_function_runs_with_the_arguments_the_reviewer_left(orch: WorkflowOrchestrator) -> None:
    placed: list[tuple[str, int]] = []

    @requires_approval("Review order", summary="Order {count} x {item}?", context=lambda p: {"unit": 12})
    async def order(item: str, count: int) -> str:
        placed.append((item, count))
        return f"{count} {item}"

    cfg = config("Review order")

    async def agent() -> str:
        async with supervised(cfg, orch):
            return await order("pizza", 100)

    result, seen = await reviewed(orch, agent(), lambda r: ("MODIFIED", "ten people", {"count": 10}))
    assert result == "10 pizza" and placed == [("pizza", 10)]
    [request] = seen
    assert request.parameters == {"item": "pizza", "count": 100}
    assert request.summary == "Order 100 x pizza?"
    assert request.context["unit"] == 12 and request.context["function"].endswith("order")
    assert orch.get_workflow(cfg.workflow_id).current_state == WorkflowState.COMPLETED
    assert orch.escrow_position(cfg.workflow_id).released == 10_000_000


async def test_a_rejected_call_never_runs_and_a_rejection_undoes_the_steps_since_the_last_approval(
    orch: WorkflowOrchestrator, registry: CompensationRegistry
) -> None:
    store: set[str] = set()
    registry.register("forget", lambda key: store.discard(key))

    @requires_approval(
        "Review write", compensation="forget", compensation_args=lambda result, p: {"key": result}
    )
    async def write(key: str) -> str:
        store.add(key)
        return key

    cfg = config("Review write")

    async def agent() -> str | None:
        async with supervised(cfg, orch):
            await write("a")
            assert store == {"a"}
            try:
                await write("b")
            except ApprovalRejected as rejected:
                return rejected.rationale
        return None

    verdicts = iter([("APPROVED", "ok", None), ("REJECTED", "not b", None)])
    rationale, seen = await reviewed(orch, agent(), lambda r: next(verdicts))
    assert rationale == "not b" and [r.parameters for r in seen] == [{"key": "a"}, {"key": "b"}]
    assert store == set()  # b never ran; a's effect came after the last approval, so it was undone
    steps = orch.saga_steps(cfg.workflow_id)
    assert [(s["name"], s["compensation"], s["args"], s["status"]) for s in steps] == [
        (write.__qualname__, "forget", {"key": "a"}, "compensated")
    ]


async def test_when_false_skips_the_question_but_keeps_the_step(
    orch: WorkflowOrchestrator, registry: CompensationRegistry
) -> None:
    credits: list[int] = []
    registry.register("void", lambda amount: None)

    @requires_approval("Review credit", when=lambda p: p["amount"] > 100, compensation="void")
    async def credit(amount: int) -> None:
        credits.append(amount)

    cfg = config("Review credit")

    async def agent() -> None:
        async with supervised(cfg, orch):
            await credit(50)
            await credit(500)

    _, seen = await reviewed(orch, agent(), approve)
    assert credits == [50, 500] and [r.parameters for r in seen] == [{"amount": 500}]
    assert [s["args"] for s in orch.saga_steps(cfg.workflow_id)] == [{"amount": 50}, {"amount": 500}]


class Client:
    """Not JSON: a gated function's argument that the reviewer never sees."""


async def test_a_sync_tool_in_a_worker_thread_waits_and_gets_non_json_arguments_untouched(
    orch: WorkflowOrchestrator,
) -> None:
    calls: list[tuple[Client, list[str], str]] = []

    @supervised_tool("Review send")
    def send(client: Client, to: list[str], *tags: str, subject: str = "hi") -> int:
        calls.append((client, to, subject))
        assert isinstance(tags, tuple)
        return len(to) + len(tags)

    cfg = config("Review send")
    client = Client()

    async def agent() -> int:
        async with supervised(cfg, orch):
            return await asyncio.to_thread(send, client, ["a", "b", "c"], "x", "y")

    sent, [request] = await reviewed(
        orch, agent(), lambda r: ("MODIFIED", "no c", {"to": ["a", "b"], "tags": ["x"]})
    )
    assert request.parameters == {"to": ["a", "b", "c"], "tags": ["x", "y"], "subject": "hi"}
    assert request.context["not_reviewable"] == ["client"]
    assert sent == 3 and calls == [(client, ["a", "b"], "hi")] and calls[0][0] is client


async def test_a_sync_tool_called_on_the_event_loop_refuses_instead_of_freezing_it(
    orch: WorkflowOrchestrator,
) -> None:
    @requires_approval("Review")
    def blocking(x: int) -> int:
        return x

    cfg = config("Review")
    async with supervised(cfg, orch):
        with pytest.raises(NoSupervisedRun, match=r"asyncio\.to_thread"):
            blocking(1)
        assert orch.pending_approvals(cfg.workflow_id) == []


async def test_outside_a_run_a_gated_function_refuses_and_does_nothing() -> None:
    ran: list[int] = []

    @requires_approval  # the bare form: the run's next checkpoint
    async def act(x: int) -> None:
        ran.append(x)

    with pytest.raises(NoSupervisedRun, match="outside a supervised run"):
        await act(1)
    assert ran == [] and current_run() is None


async def test_a_standalone_function_gets_a_workflow_per_call(orch: WorkflowOrchestrator) -> None:
    purged: list[str] = []

    @requires_approval(
        "Purge",
        summary="Purge {who}?",
        standalone=StandaloneWorkflow("dpo", "agent", REVIEWER, escrow_amount="2.00", orchestrator=orch),
    )
    def purge(who: str) -> str:
        purged.append(who)
        return who

    verdicts = iter([("APPROVED", "ok", None), ("REJECTED", "legal hold", None)])
    assert (await reviewed(orch, asyncio.to_thread(purge, "alice"), lambda r: next(verdicts)))[0] == "alice"
    with pytest.raises(ApprovalRejected, match="legal hold"):
        await reviewed(orch, asyncio.to_thread(purge, "bob"), lambda r: next(verdicts))
    assert purged == ["alice"]
    runs = sorted(orch.list_workflows(), key=lambda wf: wf.created_at)
    assert [(wf.config.name, wf.current_state) for wf in runs] == [
        (
            "Approval of test_a_standalone_function_gets_a_workflow_per_call.<locals>.purge",
            WorkflowState.COMPLETED,
        ),
        (
            "Approval of test_a_standalone_function_gets_a_workflow_per_call.<locals>.purge",
            WorkflowState.FAILED,
        ),
    ]
    assert [orch.escrow_position(wf.workflow_id).released for wf in runs] == [2_000_000, 0]


async def test_naming_a_non_json_argument_as_reviewable_is_refused_before_anything_opens(
    orch: WorkflowOrchestrator,
) -> None:
    @requires_approval("Review", parameters=["client"])
    async def act(client: Client) -> None: ...

    cfg = config("Review")
    async with supervised(cfg, orch):
        with pytest.raises(StateNotSerializable):
            await act(Client())
        assert orch.pending_approvals(cfg.workflow_id) == []


# ================================================================================= LangGraph
class Order(TypedDict, total=False):
    count: int
    ordered: int
    by: str
    why: str
    name: str


def one_node_graph(node: Callable[[Order], Any]) -> Any:
    builder = StateGraph(Order)
    builder.add_node("order", node)
    builder.add_edge(START, "order")
    builder.add_edge("order", END)
    return builder.compile(checkpointer=InMemorySaver())


async def test_an_interrupt_in_a_node_becomes_an_approval_and_the_graph_resumes_with_the_decision(
    orch: WorkflowOrchestrator,
) -> None:
    def order(state: Order) -> Order:
        decision = approval("Review order", parameters={"count": state["count"]}, summary="Order?")
        return {"ordered": decision.parameters["count"], "by": decision.approved_by}

    graph = one_node_graph(order)
    cfg = config("Review order")

    async def agent() -> Any:
        async with supervised(cfg, orch) as run:
            return await run_graph(graph, {"count": 100}, run)

    final, [request] = await reviewed(orch, agent(), lambda r: ("MODIFIED", "ten", {"count": 10}))
    assert final == {"count": 100, "ordered": 10, "by": REVIEWER}
    assert request.summary == "Order?" and request.parameters == {"count": 100}
    saved = await graph.aget_state({"configurable": {"thread_id": cfg.workflow_id}})
    paused = saved.parent_config["configurable"]["checkpoint_id"]  # the pause, one step before the end
    assert request.context == {
        "langgraph_node": "order",
        "langgraph_thread_id": cfg.workflow_id,
        "langgraph_checkpoint_id": paused,
    }
    assert orch.get_workflow(cfg.workflow_id).current_state == WorkflowState.COMPLETED
    saved = await graph.aget_state({"configurable": {"thread_id": cfg.workflow_id}})
    assert saved.values["ordered"] == 10 and not saved.interrupts


async def test_a_graph_whose_agent_died_mid_approval_carries_on_with_the_same_request(
    orch: WorkflowOrchestrator,
) -> None:
    """The agent's task dies while the reviewer reads (the graph's pause is in its checkpointer, the
    request in SafeRun); a new agent runs the same code: the graph is not started over and the open
    request is waited on, not asked again."""
    starts: list[int] = []
    runs: list[Any] = []

    def order(state: Order) -> Order:
        starts.append(state["count"])
        decision = approval("Review order", parameters={"count": state["count"]})
        return {"ordered": decision.parameters["count"]}

    graph = one_node_graph(order)  # one checkpointer, as a persistent one survives the process
    cfg = config("Review order")
    orch.initialize_workflow(cfg)

    async def agent() -> Any:
        async with attach(cfg.workflow_id, orch) as run:
            runs.append(run)
            return await run_graph(graph, {"count": 100}, run)

    first = asyncio.ensure_future(agent())
    while not orch.pending_approvals(cfg.workflow_id):
        assert not first.done(), first.exception()
        await asyncio.sleep(0.01)
    [request] = orch.pending_approvals(cfg.workflow_id)
    first.cancel()  # the process dies mid-wait
    with pytest.raises(asyncio.CancelledError):
        await first
    second = asyncio.ensure_future(agent())
    while not (len(runs) == 2 and any("resumed waiting" in t for t in runs[1].trace)):
        assert not second.done(), second.exception()
        await asyncio.sleep(0.01)
    orch.submit_approval(
        cfg.workflow_id,
        ApprovalResponse(
            request_id=request.request_id,
            decision=ApprovalDecision.MODIFIED,
            approved_by=REVIEWER,
            modifications={"count": 10},
        ),
    )
    assert await second == {"count": 100, "ordered": 10}
    assert [r.request_id for r, _ in orch.approval_history(cfg.workflow_id)] == [request.request_id]
    assert starts == [100, 100]  # the node ran to its interrupt once, and once more when resumed
    assert orch.get_workflow(cfg.workflow_id).current_state == WorkflowState.COMPLETED


async def test_a_graph_decided_while_its_agent_was_down_resumes_with_that_decision(
    orch: WorkflowOrchestrator,
) -> None:
    def order(state: Order) -> Order:
        decision = approval("Review order", parameters={"count": state["count"]})
        return {"ordered": decision.parameters["count"]}

    graph = one_node_graph(order)
    cfg = config("Review order")
    orch.initialize_workflow(cfg)

    async def agent() -> Any:
        async with attach(cfg.workflow_id, orch) as run:
            return await run_graph(graph, {"count": 100}, run)

    first = asyncio.ensure_future(agent())
    while not orch.pending_approvals(cfg.workflow_id):
        assert not first.done(), first.exception()
        await asyncio.sleep(0.01)
    [request] = orch.pending_approvals(cfg.workflow_id)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    orch.submit_approval(  # decided while no agent runs
        cfg.workflow_id,
        ApprovalResponse(
            request_id=request.request_id,
            decision=ApprovalDecision.MODIFIED,
            approved_by=REVIEWER,
            modifications={"count": 10},
        ),
    )
    assert await agent() == {"count": 100, "ordered": 10}
    assert [r.request_id for r, _ in orch.approval_history(cfg.workflow_id)] == [request.request_id]
    assert orch.get_workflow(cfg.workflow_id).current_state == WorkflowState.COMPLETED


async def test_a_rejection_reaches_the_node_after_the_compensations_ran(
    orch: WorkflowOrchestrator, registry: CompensationRegistry
) -> None:
    held: set[str] = {"seat"}
    after: list[str] = []
    registry.register("unhold", lambda what: held.discard(what))

    async def hold(state: Order) -> Order:
        run = current_run()
        assert run is not None
        held.add("room")
        await run.step("hold room", compensation="unhold", args={"what": "room"})
        return {}

    def confirm(state: Order) -> Order:
        approval("Confirm", parameters={"count": state["count"]})
        after.append("confirmed")
        return {}

    builder = StateGraph(Order)
    builder.add_node("hold", hold)
    builder.add_node("confirm", confirm)
    builder.add_edge(START, "hold")
    builder.add_edge("hold", "confirm")
    builder.add_edge("confirm", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    cfg = config("Confirm")

    async def agent() -> None:
        async with supervised(cfg, orch) as run:
            await run_graph(graph, {"count": 3}, run)

    with pytest.raises(ApprovalRejected, match="moved") as caught:
        await reviewed(orch, agent(), lambda r: ("REJECTED", "the meeting moved", None))
    assert caught.value.rejected_checkpoint_id == cfg.checkpoints[0].checkpoint_id
    assert held == {"seat"} and after == []
    assert orch.get_workflow(cfg.workflow_id).current_state == WorkflowState.FAILED
    assert orch.escrow_position(cfg.workflow_id).refunded == 10_000_000


async def test_approval_node_writes_decided_values_back_and_routes_a_rejection(
    orch: WorkflowOrchestrator,
) -> None:
    builder = StateGraph(Order)
    builder.add_node(
        "review",
        approval_node(
            "Review order",
            keys=["count"],
            summary="Order {count}?",
            then="place",
            on_reject="escalate",
            rejection_key="why",
        ),
    )
    builder.add_node("place", lambda s: {"ordered": s["count"]})
    builder.add_node("escalate", lambda s: {"ordered": 0})
    builder.add_edge(START, "review")
    builder.add_edge("place", END)
    builder.add_edge("escalate", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    modified, rejected = config("Review order"), config("Review order")

    async def agent(cfg: WorkflowConfig) -> Any:
        async with supervised(cfg, orch) as run:
            return await run_graph(graph, {"count": 100}, run)

    def decide(request: ApprovalRequest) -> Verdict:
        if request.workflow_id == modified.workflow_id:
            return ("MODIFIED", "ten", {"count": 10})
        return ("REJECTED", "duplicate order", None)

    first, [request] = await reviewed(orch, agent(modified), decide)
    second, _ = await reviewed(orch, agent(rejected), decide)
    assert request.summary == "Order 100?"
    assert first == {"count": 10, "ordered": 10}
    assert second == {"count": 100, "ordered": 0, "why": "duplicate order"}
    states = [orch.get_workflow(c.workflow_id).current_state for c in (modified, rejected)]
    assert states == [WorkflowState.COMPLETED, WorkflowState.COMPLETED]  # the graph handled the rejection
    assert orch.escrow_position(rejected.workflow_id).released == 0


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


async def test_a_tool_call_under_tool_node_is_approved_with_modified_arguments(
    orch: WorkflowOrchestrator, registry: CompensationRegistry
) -> None:
    from langchain_core.tools import tool

    sent: list[tuple[str, str]] = []
    registry.register("unsend", lambda to: None)

    @tool
    @approval_tool("Review email", summary="Email {to}: {body}", compensation="unsend")
    def email(to: str, body: str) -> str:
        """Send an email."""
        sent.append((to, body))
        return f"sent to {to}"

    def model(state: Chat) -> Chat:
        call = {"name": "email", "args": {"to": "all@corp", "body": "hello"}, "id": "call-1"}
        return {"messages": [AIMessage(content="", tool_calls=[call])]}

    builder = StateGraph(Chat)
    builder.add_node("model", model)
    builder.add_node("tools", ToolNode([email]))
    builder.add_edge(START, "model")
    builder.add_edge("model", "tools")
    builder.add_edge("tools", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    cfg = config("Review email")

    async def agent() -> Any:
        async with supervised(cfg, orch) as run:
            return await run_graph(graph, {"messages": []}, run)

    final, [request] = await reviewed(
        orch, agent(), lambda r: ("MODIFIED", "not everyone", {"to": "team@corp"})
    )
    assert request.summary == "Email all@corp: hello" and request.context["langgraph_node"] == "tools"
    assert sent == [("team@corp", "hello")]
    last = final["messages"][-1]
    assert isinstance(last, ToolMessage) and last.content == "sent to team@corp"
    assert [(s["compensation"], s["args"]) for s in orch.saga_steps(cfg.workflow_id)] == [
        ("unsend", {"to": "team@corp", "body": "hello"})
    ]


async def test_other_interrupts_are_left_to_the_caller(orch: WorkflowOrchestrator) -> None:
    def ask(state: Order) -> Order:
        return {"name": interrupt("what is your name?")}

    graph = one_node_graph(ask)
    cfg = config("Unused")
    async with supervised(cfg, orch) as run:
        paused = await run_graph(graph, {"count": 1}, run)
        assert [i.value for i in paused["__interrupt__"]] == ["what is your name?"]
        final = await run_graph(graph, Command(resume="Ada"), run)
    assert final == {"count": 1, "name": "Ada"}


async def test_a_graph_resumed_past_an_approval_by_hand_is_refused(orch: WorkflowOrchestrator) -> None:
    def order(state: Order) -> Order:
        return {"ordered": approval("Review order", parameters={"count": state["count"]}).parameters["count"]}

    graph = one_node_graph(order)
    cfg = config("Review order", "Other")
    plain, replayed = ({"configurable": {"thread_id": t}} for t in ("plain", "replayed"))

    async def agent() -> None:
        async with supervised(cfg, orch) as run:
            await graph.ainvoke({"count": 100}, plain)
            with pytest.raises(InvalidInput, match="run_graph"):
                await graph.ainvoke(Command(resume={"decision": "APPROVED"}), plain)
            # a real decision on another request, replayed with other parameters, does not pass either
            decision = await run.checkpoint("Other", parameters={"count": 100})
            forged = {
                "saferun_decision": True,
                "decision": decision.decision.value,
                "parameters": {"count": 1},
                "request_id": decision.request_id,
            }
            await graph.ainvoke({"count": 100}, replayed)
            with pytest.raises(InvalidInput, match="does not match"):
                await graph.ainvoke(Command(resume=forged), replayed)

    await reviewed(orch, agent(), approve)


async def test_run_graph_needs_a_checkpointer_and_a_run(orch: WorkflowOrchestrator) -> None:
    builder = StateGraph(Order)
    builder.add_node("order", lambda s: {})
    builder.add_edge(START, "order")
    builder.add_edge("order", END)
    graph = builder.compile()
    with pytest.raises(NoSupervisedRun):
        await run_graph(graph, {})
    async with supervised(config("Review"), orch):
        with pytest.raises(InvalidInput, match="checkpointer"):
            await run_graph(graph, {})


def test_the_adapter_imports_langgraph_only_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = "import sys, saferun.integrations.langgraph; print('langgraph' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "langgraph.types", None)  # what a missing package looks like
    with pytest.raises(ImportError, match=re.escape("pip install 'saferun[langgraph]'")):
        approval("Review")


# ================================================================================= the examples
def run_example(database_env: Database, name: str, *args: str) -> str:
    env = {
        "DATABASE_URL": database_env.engine.url.render_as_string(hide_password=False),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, f"examples/{name}", "--auto-review", *args], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def workflow_ids(stdout: str) -> list[str]:
    return re.findall(r"\b(wf_[0-9a-f]+)\b", stdout)


def test_langgraph_example(database_env: Database) -> None:
    out = run_example(database_env, "langgraph_supervised.py")
    assert (
        "Reviewer sees: Refund 480.00 USD on T-1001? (parameters {'refund_cents': 48000}) -> MODIFIED" in out
    )
    assert "T-1001: refunded 48.00 USD; emails sent: 1" in out
    assert "T-1002: escalated to a human queue (already refunded when it was returned); refunded 0.00" in out
    orch = WorkflowOrchestrator(database=database_env)
    first, second = workflow_ids(out)[-2:]
    assert [orch.get_workflow(w).current_state for w in (first, second)] == [WorkflowState.COMPLETED] * 2
    assert orch.escrow_position(first).released == 4_000_000
    assert orch.escrow_position(second).refunded == 4_000_000
    assert [r.checkpoint_name for r, _ in orch.approval_history(first)] == [
        "Review refund",
        "Review customer email",
    ]


def test_decorator_example(database_env: Database) -> None:
    out = run_example(database_env, "decorator_tools.py")
    assert "credit for initech rejected: initech had a credit this quarter" in out
    assert "credit cr-1: 40 USD to acme" in out and "credit cr-2: 250 USD to globex" in out
    assert "reminders sent: 3 (acme, globex, initech)" in out
    assert "purge of umbrella rejected: legal hold on umbrella" in out
    assert "credits on the books: acme=40, globex=250; purged: nothing" in out
    orch = WorkflowOrchestrator(database=database_env)
    [main] = workflow_ids(out)
    assert orch.get_workflow(main).current_state == WorkflowState.COMPLETED
    asked = [(r.checkpoint_name, resp.decision.value) for r, resp in orch.approval_history(main) if resp]
    assert asked == [
        ("Review credit", "REJECTED"),
        ("Review credit", "MODIFIED"),
        ("Review reminder batch", "MODIFIED"),
    ]
    purges = [wf for wf in orch.list_workflows() if wf.workflow_id != main]
    assert [wf.current_state for wf in purges] == [WorkflowState.FAILED]


def test_confidence_pattern_example(database_env: Database) -> None:
    out = run_example(database_env, "pattern_confidence.py")
    assert "INV-1: high confidence (0.95), auto-proceeding as cloud" in out
    assert "INV-3: low confidence (0.55), requesting human review" in out
    assert "INV-5: rejected (no purchase order: hold for accounts payable); posting rolled back" in out
    assert "Journal: INV-1=cloud, INV-2=office supplies, INV-3=contractors, INV-4=travel" in out
    orch = WorkflowOrchestrator(database=database_env)
    [wf] = workflow_ids(out)
    assert len(orch.approval_history(wf)) == 2  # only the two unsure invoices reached a human
    passed = [s for s in orch.list_snapshots(wf) if s.status == "passed"]
    assert len(passed) == 3  # the confident ones were still captured
    assert [(s["name"], s["status"]) for s in orch.saga_steps(wf) if s["status"] == "compensated"] == [
        ("post INV-5", "compensated")
    ]
    assert orch.get_workflow(wf).current_state == WorkflowState.COMPLETED


def test_complexity_pattern_example(database_env: Database) -> None:
    out = run_example(database_env, "pattern_complexity.py")
    orch = WorkflowOrchestrator(database=database_env)
    by_name = {wf.config.name: wf for wf in orch.list_workflows()}
    expected = {"Simple": (1, 50_000_000), "Medium": (2, 100_000_000), "Complex": (4, 100_000_000)}
    for name, wf in by_name.items():
        n, locked = expected[name.split()[0]]
        assert wf.total_checkpoints == n and wf.current_state == WorkflowState.COMPLETED
        releases = [e for e in orch.ledger_entries(wf.workflow_id) if e["kind"] == "release"]
        assert len(releases) == n and orch.escrow_position(wf.workflow_id).released == locked
    assert len(by_name) == 3
    assert (
        "Complex Task: Roll out the new price plan: 4 checkpoint(s), 4 milestone release(s), completed" in out
    )
    assert "quality-reviewed rollout: 25%" in out


def test_multi_agent_pattern_example(database_env: Database, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    out = run_example(database_env, "pattern_multi_agent.py", "--workspace", str(workspace))
    assert "analysis attempt 1 rejected: the analysis ignores competitor pricing; analysis.md removed" in out
    assert sorted(p.name for p in workspace.iterdir()) == ["analysis.md", "report.md", "research.md"]
    assert "competitor pricing" in (workspace / "analysis.md").read_text()  # the redo took the note
    orch = WorkflowOrchestrator(database=database_env)
    [wf] = workflow_ids(out)
    assert orch.get_workflow(wf).current_state == WorkflowState.COMPLETED
    assert "executor 135.00, supervisor 15.00" in out
    decided = [(r.checkpoint_name, resp.decision.value) for r, resp in orch.approval_history(wf) if resp]
    assert decided == [
        ("Research Complete", "APPROVED"),
        ("Analysis Complete", "REJECTED"),
        ("Analysis Complete", "APPROVED"),
        ("Synthesis Complete", "APPROVED"),
    ]
