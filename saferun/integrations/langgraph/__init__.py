"""SafeRun approvals inside LangGraph graphs, on LangGraph's own human-in-the-loop API.

A node (or a tool the graph calls) asks for approval with LangGraph's ``interrupt()``; the graph pauses
and its state stays in the graph's checkpointer. ``run_graph`` drives the graph inside a ``supervised()``
run: every SafeRun interrupt becomes a SafeRun checkpoint (state captured, a reviewer asked, escrow and
saga as for any checkpoint), and the graph is resumed with ``Command(resume=...)`` carrying the decision.
The node then continues with the reviewer's parameters, or gets ``ApprovalRejected`` (after the run's
compensations ran) which it may catch to route elsewhere.

    from saferun.integrations.langgraph import approval, approval_node, approval_tool, run_graph

    def order(state):                                    # a node
        decision = approval("Review food order", parameters={"pizza_count": state["pizzas"]})
        return {"ordered": place(decision.parameters["pizza_count"])}

    graph = builder.compile(checkpointer=InMemorySaver())
    async with supervised(config) as run:
        final = await run_graph(graph, {"people": 10}, run)

Why interrupt rather than awaiting the decision inside the node: the graph's progress is then saved by
LangGraph at the pause, LangGraph's own tools (streaming, ``get_state``, Studio) see a paused graph, and
sync nodes and tools need no event loop to wait on. As with any ``interrupt``, a node runs again from its
start when resumed, so effects before ``approval()`` in the same node happen twice; put them after it or
in an earlier node.

LangGraph is an optional extra (``pip install 'saferun[langgraph]'``): this module imports it only when a
function here is called, and says how to install it when it is missing.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from saferun.core.state_machine.models import ApprovalDecision, ExecutionState
from saferun.domain import parameter_schema as param_schema
from saferun.domain.canonical import check_json
from saferun.domain.modifications import merge_patch
from saferun.errors import ApprovalRejected, InvalidInput
from saferun.integrations.decorator import BoundCall, NoSupervisedRun, SummaryArg
from saferun.supervised import Decision, SupervisedRun, current_run

INTERRUPT_KEY = "saferun_approval"  # marks an interrupt value as a SafeRun approval request
RESUME_KEY = "saferun_decision"  # marks a resume value as a SafeRun decision

INSTALL_HINT = "LangGraph is not installed: pip install 'saferun[langgraph]' (or pip install langgraph)"


def _langgraph_types() -> ModuleType:
    """``langgraph.types``, imported on first use so SafeRun itself never needs LangGraph."""
    try:
        import langgraph.types as types
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return types


@dataclass(frozen=True)
class GraphDecision:
    """The reviewer's decision as a node sees it: the parameters to use now and who decided why."""

    decision: ApprovalDecision
    parameters: dict[str, Any]
    rationale: str
    approved_by: str
    modifications: dict[str, Any] | None
    request_id: str | None

    @property
    def approved(self) -> bool:
        return self.decision in (ApprovalDecision.APPROVED, ApprovalDecision.MODIFIED)


# ---------------------------------------------------------------------------------------- inside the graph
def approval(
    checkpoint: str | None = None,
    *,
    parameters: Mapping[str, Any] | None = None,
    summary: str | None = None,
    context: Mapping[str, Any] | None = None,
    recommendation: str | None = None,
    confidence: float | None = None,
    risk: Mapping[str, Any] | None = None,
    alerts: Sequence[Mapping[str, Any]] | None = None,
    parameter_schema: Mapping[str, Any] | None = None,
) -> GraphDecision:
    """Ask for approval from inside a node or tool; returns the decision or raises ``ApprovalRejected``.

    ``checkpoint`` names a checkpoint of the run's workflow (None: its next one); ``parameters`` are what
    the reviewer may change, and ``parameter_schema`` (a JSON Schema) how: the reviewer's form, the
    server's check and the graph's resume all hold to it. Everything given must be plain JSON, checked
    here so a mistake surfaces in the node that made it.
    """
    if parameter_schema is not None:
        parameter_schema = param_schema.check_declared(parameter_schema)
    request = {
        "checkpoint": checkpoint,
        "parameters": dict(parameters or {}),
        "summary": summary,
        "context": dict(context or {}),
        "recommendation": recommendation,
        "confidence": confidence,
        "risk": dict(risk or {}),
        "alerts": [dict(a) for a in alerts or []],
        "parameter_schema": parameter_schema,
    }
    check_json(request, "approval")
    value = _langgraph_types().interrupt({INTERRUPT_KEY: request})
    return _decision_from(value)


def approval_node(
    checkpoint: str | None = None,
    *,
    keys: Iterable[str],
    summary: str | Callable[[Any], str] | None = None,
    context: Callable[[Any], Mapping[str, Any]] | None = None,
    then: str | None = None,
    on_reject: str | None = None,
    rejection_key: str | None = None,
    parameter_schema: Mapping[str, Any] | None = None,
) -> Callable[[Any], Any]:
    """A ready-made review node: the state's ``keys`` go to the reviewer, their decided values come back.

    Add it with ``builder.add_node("review", approval_node("Review order", keys=["pizza_count"]))``.
    Approved or modified, the node writes the decided values back into the state. With ``then`` it routes
    there itself (``Command(goto=then)``), and may then route a rejection to ``on_reject`` (writing the
    rationale into ``rejection_key`` when given) instead of raising ``ApprovalRejected``. Without
    ``then``, wire its outgoing edge as usual; a rejection raises.
    """
    keys = list(keys)
    if on_reject is not None and then is None:
        raise InvalidInput("then", "routing a rejection (on_reject) needs the approved route too (then)")

    def review(state: Any) -> Any:
        types = _langgraph_types()
        proposed = {key: _state_value(state, key) for key in keys}
        text = summary(state) if callable(summary) else summary.format(**proposed) if summary else None
        try:
            decision = approval(
                checkpoint,
                parameters=proposed,
                summary=text,
                context=context(state) if context else None,
                parameter_schema=parameter_schema,
            )
        except ApprovalRejected as exc:
            if on_reject is None:
                raise
            return types.Command(
                goto=on_reject, update={rejection_key: exc.rationale} if rejection_key else {}
            )
        update = {key: decision.parameters[key] for key in keys if key in decision.parameters}
        return types.Command(goto=then, update=update) if then is not None else update

    review.__name__ = f"review_{'_'.join(keys)}"
    return review


def approval_tool(
    checkpoint: str | Callable[..., Any] | None = None,
    *,
    summary: SummaryArg = None,
    parameters: Iterable[str] | None = None,
    context: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
    compensation: str | None = None,
    compensation_args: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None,
) -> Any:
    """Gate a tool (sync or async) that a graph calls: its arguments become the approval's parameters.

    Works under LangGraph's ``ToolNode`` and under ``langchain_core.tools.tool`` (the signature is kept).
    The function runs once approved, with the arguments the reviewer left; with ``compensation`` its
    effect is recorded as a saga step of the current run, so a later rejection undoes it.
    """
    if callable(checkpoint):
        return approval_tool()(checkpoint)
    reviewable = set(parameters) if parameters is not None else None

    def ask(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        call = BoundCall(fn, args, kwargs, reviewable)
        if isinstance(summary, str):
            text: str | None = summary.format(**call.parameters)
        else:
            text = summary(call.parameters) if summary else None
        extra = dict(context(call.parameters)) if context else {}
        extra.setdefault("function", fn.__qualname__)
        decision = approval(checkpoint, parameters=call.parameters, summary=text, context=extra)
        args2, kwargs2 = call.with_parameters(decision.parameters)
        return args2, kwargs2, decision

    def record(fn: Callable[..., Any], result: Any, decision: GraphDecision) -> None:
        if compensation is None:
            return
        run = current_run()
        if run is None:
            raise NoSupervisedRun(f"{fn.__qualname__} names a compensation but runs outside a supervised run")
        args = compensation_args(result, decision.parameters) if compensation_args else decision.parameters
        run.trace.append(f"step: {fn.__qualname__}")
        run.orchestrator.register_step(run.workflow_id, fn.__qualname__, compensation, dict(args))

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_tool(*args: Any, **kwargs: Any) -> Any:
                args2, kwargs2, decision = ask(fn, args, kwargs)
                result = await fn(*args2, **kwargs2)
                record(fn, result, decision)
                return result

            return async_tool

        @functools.wraps(fn)
        def tool(*args: Any, **kwargs: Any) -> Any:
            args2, kwargs2, decision = ask(fn, args, kwargs)
            result = fn(*args2, **kwargs2)
            record(fn, result, decision)
            return result

        return tool

    return decorate


# ---------------------------------------------------------------------------------------- the driver
async def run_graph(
    graph: Any,
    input: Any,
    run: SupervisedRun | None = None,
    *,
    config: Mapping[str, Any] | None = None,
) -> Any:
    """Run a compiled graph to its end, turning each SafeRun interrupt into a checkpoint of ``run``.

    ``run`` defaults to the current ``supervised()`` run; the LangGraph thread defaults to the workflow
    id, so the graph's saved progress and the workflow are found under one name. Returns what
    ``graph.ainvoke`` returns at the end. An interrupt that is not SafeRun's (the graph asking its user
    something else) ends the call early with the interrupted result, for the caller to resume with
    ``Command(resume=...)``; passing that command back in as ``input`` carries on. A rejection the graph
    does not handle propagates as ``ApprovalRejected``. A graph found paused at a SafeRun approval (its
    process died while the reviewer was reading; a persistent checkpointer kept the pause) is carried on
    from there: ``input`` is not run again, and the checkpoint waits on the request already open.
    """
    types = _langgraph_types()
    run = run or current_run()
    if run is None:
        raise NoSupervisedRun("run_graph needs a supervised run: call it inside `async with supervised(...)`")
    if not getattr(graph, "checkpointer", None):
        raise InvalidInput(
            "graph",
            "compile the graph with a checkpointer (e.g. InMemorySaver()): LangGraph keeps the paused "
            "graph there while SafeRun waits for the decision",
        )
    cfg = dict(config or {})
    cfg["configurable"] = {"thread_id": run.workflow_id, **dict(cfg.get("configurable") or {})}
    thread_id = str(cfg["configurable"]["thread_id"])
    step_input = input
    # a graph already paused at a SafeRun approval (its process restarted while the reviewer read):
    # carry on with that pause instead of starting the graph over; the checkpoint finds its request
    snapshot = await graph.aget_state(cfg)
    resuming = bool(snapshot.interrupts) and all(_is_ours(i.value) for i in snapshot.interrupts)
    result: Any = None
    while True:
        if resuming:
            resuming = False
        else:
            result = await graph.ainvoke(step_input, cfg)
            snapshot = await graph.aget_state(cfg)
        pending = list(snapshot.interrupts)
        if not pending:
            return result
        if not all(_is_ours(i.value) for i in pending):
            return result
        nodes = {i.id: task.name for task in snapshot.tasks for i in task.interrupts}
        # where the paused graph's state is: with SafeRunSaver, a checkpoint in the same store
        paused_at = str((snapshot.config.get("configurable") or {}).get("checkpoint_id") or "")
        # interrupts raised together (parallel nodes, Send fan-out) that name one checkpoint are asked
        # together, one request per interrupt (its id the item key); different checkpoints go in turn
        by_checkpoint: dict[Any, list[Any]] = {}
        for intr in pending:
            by_checkpoint.setdefault(intr.value[INTERRUPT_KEY]["checkpoint"], []).append(intr)
        resume: dict[str, Any] = {}
        for together in by_checkpoint.values():
            if len(together) == 1:
                intr = together[0]
                resume[intr.id] = await _decide(
                    run, intr.value[INTERRUPT_KEY], nodes.get(intr.id), thread_id, paused_at
                )
            else:
                resume.update(await _decide_together(run, together, nodes, thread_id, paused_at))
        step_input = types.Command(resume=resume)


async def _decide(
    run: SupervisedRun, request: dict[str, Any], node: str | None, thread_id: str, paused_at: str = ""
) -> dict[str, Any]:
    """One SafeRun checkpoint for one interrupt; the decision (or rejection) as a resume value."""
    where = node or "a node"
    context = {**request["context"], "langgraph_node": where, "langgraph_thread_id": thread_id}
    if paused_at:
        context["langgraph_checkpoint_id"] = paused_at
    params = request["parameters"]
    summary = _summary(request, where)
    run.trace.append(f"langgraph: node {where} asks for approval")
    try:
        decision = await run.checkpoint(
            request["checkpoint"],
            parameters=params,
            summary=summary,
            context=context,
            recommendation=request["recommendation"],
            confidence=request["confidence"],
            risk=request["risk"] or None,
            alerts=request["alerts"] or None,
            parameter_schema=request.get("parameter_schema"),  # absent in interrupts from before it
        )
    except ApprovalRejected as exc:
        return _rejection_value(exc)
    return _decision_value(decision)


async def _decide_together(
    run: SupervisedRun, interrupts: list[Any], nodes: dict[str, str], thread_id: str, paused_at: str
) -> dict[str, dict[str, Any]]:
    """One SafeRun checkpoint for several interrupts of one step: an item each, keyed by the interrupt's
    id (LangGraph derives it from the task's path, not from the code, so a redeploy keeps it). The
    graph is resumed once all are decided; a rejection of any reaches every one of them."""
    requests = [i.value[INTERRUPT_KEY] for i in interrupts]
    items = []
    for intr, request in zip(interrupts, requests, strict=True):
        where = nodes.get(intr.id) or "a node"
        context = {**request["context"], "langgraph_node": where, "langgraph_thread_id": thread_id}
        if paused_at:
            context["langgraph_checkpoint_id"] = paused_at
        items.append(
            {
                "key": intr.id,
                "summary": _summary(request, where),
                "parameters": request["parameters"],
                "parameter_schema": request.get("parameter_schema"),
                "context": context,
            }
        )
        run.trace.append(f"langgraph: node {where} asks for approval")
    shared = {
        name: requests[0][name] or None
        for name in ("recommendation", "confidence", "risk", "alerts")
        if all(r[name] == requests[0][name] for r in requests)  # one value for all, else per item only
    }
    nodes_named = ", ".join(sorted({nodes.get(i.id) or "a node" for i in interrupts}))
    try:
        decisions = await run.checkpoint_many(
            requests[0]["checkpoint"],
            items=items,
            summary=f"LangGraph nodes {nodes_named} ask {len(items)} things at once",
            **shared,
        )
    except ApprovalRejected as exc:
        return {i.id: _rejection_value(exc) for i in interrupts}
    return {i.id: _decision_value(decisions[i.id]) for i in interrupts}


def _summary(request: dict[str, Any], where: str) -> str:
    params = request["parameters"]
    return request["summary"] or (
        f"LangGraph node {where!r} asks to continue with "
        + ", ".join(f"{k}={v!r}" for k, v in params.items())
        if params
        else f"LangGraph node {where!r} asks to continue"
    )


def _is_ours(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get(INTERRUPT_KEY), dict)


def _decision_value(decision: Decision) -> dict[str, Any]:
    return {
        RESUME_KEY: True,
        "decision": decision.decision.value,
        "parameters": decision.parameters,
        "rationale": decision.rationale,
        "approved_by": decision.approved_by,
        "modifications": decision.modifications,
        "request_id": decision.request_id,
    }


def _rejection_value(exc: ApprovalRejected) -> dict[str, Any]:
    restored = exc.restored_state
    return {
        RESUME_KEY: True,
        "decision": ApprovalDecision.REJECTED.value,
        "rationale": exc.rationale,
        "workflow_id": exc.workflow_id,
        "rejected_checkpoint_id": exc.rejected_checkpoint_id,
        "last_approved_checkpoint": exc.last_approved_checkpoint,
        "workflow_state": exc.workflow_state,
        "restored_state": restored.model_dump(mode="json") if restored is not None else None,
    }


def _decision_from(value: Any) -> GraphDecision:
    """The resume value back as a decision; a rejection raises as it would in plain SafeRun code.

    A graph resumed by hand with something else than SafeRun's decision is refused: the approval must
    not be skippable by resuming the graph directly. When the run is known, an approval is also checked
    against the decision stored for its request.
    """
    if not isinstance(value, dict) or value.get(RESUME_KEY) is not True:
        raise InvalidInput(
            "resume",
            "this graph is waiting for a SafeRun approval: resume it with saferun.integrations.langgraph."
            f"run_graph, not with {value!r}",
        )
    if value["decision"] == ApprovalDecision.REJECTED.value:
        restored = value.get("restored_state")
        raise ApprovalRejected(
            value["workflow_id"],
            value["rejected_checkpoint_id"],
            value.get("last_approved_checkpoint"),
            value.get("rationale", ""),
            restored_state=ExecutionState.model_validate(restored) if restored is not None else None,
            workflow_state=value.get("workflow_state", ""),
        )
    decision = GraphDecision(
        decision=ApprovalDecision(value["decision"]),
        parameters=dict(value.get("parameters") or {}),
        rationale=value.get("rationale", ""),
        approved_by=value.get("approved_by", ""),
        modifications=value.get("modifications"),
        request_id=value.get("request_id"),
    )
    _verify(decision)
    return decision


def _verify(decision: GraphDecision) -> None:
    """Check a decision against what SafeRun recorded for its request: same verdict, same parameters."""
    run = current_run()
    if run is None or decision.request_id is None:
        return
    orch: Any = run.orchestrator
    stored = orch.get_approval_response(decision.request_id)
    expected = None
    if stored is not None:
        request = orch.get_approval_request(decision.request_id)
        expected = merge_patch(request.parameters, stored.modifications or {})
        if request.parameter_schema:  # a resume value outside the checkpoint's schema never runs
            found = param_schema.errors(request.parameter_schema, decision.parameters)
            if found:
                where, message = next(iter(found.items()))
                raise InvalidInput(f"resume.parameters.{where}", message)
    if stored is None or stored.decision != decision.decision or expected != decision.parameters:
        raise InvalidInput(
            "resume", f"the decision on {decision.request_id} does not match the one SafeRun recorded"
        )


def _state_value(state: Any, key: str) -> Any:
    if isinstance(state, Mapping):
        return state[key]
    return getattr(state, key)


def __getattr__(name: str) -> Any:
    """``SafeRunSaver`` and ``AsyncSafeRunSaver`` from here too, imported only when asked for."""
    if name in ("SafeRunSaver", "AsyncSafeRunSaver"):
        from saferun.integrations.langgraph import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "INSTALL_HINT",
    "AsyncSafeRunSaver",
    "GraphDecision",
    "SafeRunSaver",
    "approval",
    "approval_node",
    "approval_tool",
    "run_graph",
]
