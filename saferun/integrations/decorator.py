"""Put any Python function or tool behind a human's approval.

    @requires_approval("Review trade", summary="Buy {quantity} {symbol} at {limit_price}",
                       compensation="unwind_trade", compensation_args=lambda result, params: {...})
    async def buy(symbol: str, quantity: int, limit_price: float) -> dict: ...

    async with supervised(config) as run:
        await buy("ACME", 1000, 50.0)     # a checkpoint opens with the arguments as its parameters

Calling the function opens a checkpoint of the current ``supervised()`` run whose parameters are the
call's arguments, waits for the decision, and then runs the function with the arguments the reviewer
left (a MODIFIED decision changes them: ``quantity=500``), or raises ``ApprovalRejected`` after the
run's compensations ran. The function's side effect is recorded as a saga step when a compensation is
named. Like any step, it becomes permanent at the run's next approval; until then a rejection (of any
checkpoint) rolls back to the last approved state and so runs its compensation.

Why a decorator: the approval belongs to the action, not to every place that calls it. An agent's tool
(place an order, send a contract) gets its gate once, and every caller, including frameworks that only
see a plain function, goes through it.

Sync functions work too. Called from a worker thread (``asyncio.to_thread``, LangGraph's sync nodes,
a thread pool) they block that thread until the decision arrives on the run's event loop. Called on the
event loop's own thread they cannot wait without freezing the loop that must receive the decision, so
they refuse with a message saying how to call them. Outside any run, a function decorated with
``standalone=StandaloneWorkflow(...)`` gets a one-checkpoint workflow of its own for each call.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar, cast

from saferun.core.state_machine.models import CheckpointConfig, WorkflowConfig
from saferun.domain.canonical import check_json
from saferun.errors import SafeRunError, StateNotSerializable
from saferun.supervised import Decision, Orchestrator, SupervisedRun, current_run, supervised

F = TypeVar("F", bound=Callable[..., Any])

SummaryArg = str | Callable[[dict[str, Any]], str] | None
ContextArg = Callable[[dict[str, Any]], dict[str, Any]] | None


class NoSupervisedRun(SafeRunError):
    """A gated function was called where no decision can be had: outside a run, or on the run's loop."""

    http_status = 409


@dataclass(frozen=True)
class StandaloneWorkflow:
    """Who takes part when a gated function runs outside any ``supervised()`` block: each call becomes
    a workflow of its own with one checkpoint (and ``escrow_amount``, 0 by default, paid on approval)."""

    poster_id: str
    executor_id: str
    supervisor_id: str | None = None
    escrow_amount: Decimal | float | str = 0
    timeout_seconds: int = 300
    orchestrator: Orchestrator | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def config(self, checkpoint: str, function: str) -> WorkflowConfig:
        return WorkflowConfig(
            name=f"Approval of {function}",
            description=f"one call of {function}, behind the checkpoint {checkpoint!r}",
            checkpoints=[CheckpointConfig(name=checkpoint, timeout_seconds=self.timeout_seconds)],
            escrow_amount=self.escrow_amount,
            poster_id=self.poster_id,
            executor_id=self.executor_id,
            supervisor_id=self.supervisor_id,
            metadata={"function": function, **self.metadata},
        )


class BoundCall:
    """One call's arguments split into what a reviewer sees (JSON parameters) and what passes untouched.

    ``reviewable`` names the arguments to show; by default every argument whose value is plain JSON
    (a client object or a callback is passed through as is and listed in the context instead).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        reviewable: set[str] | None,
    ) -> None:
        self.signature = inspect.signature(fn)
        self.bound = self.signature.bind(*args, **kwargs)
        self.bound.apply_defaults()
        self.parameters: dict[str, Any] = {}
        self.hidden: list[str] = []
        for name, value in self.bound.arguments.items():
            shown = _as_json(value)
            if (reviewable is None or name in reviewable) and shown is not _NOT_JSON:
                self.parameters[name] = shown
            else:
                if reviewable is not None and name in reviewable:
                    raise StateNotSerializable(
                        f"parameters.{name}", f"argument {name!r} is not plain JSON and cannot be reviewed"
                    )
                self.hidden.append(name)

    def with_parameters(self, parameters: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's ``(args, kwargs)`` after the reviewer's changes (a removed one gets its default)."""
        arguments = dict(self.bound.arguments)
        for name in self.parameters:
            if name not in parameters:
                arguments.pop(name, None)
                continue
            value = parameters[name]
            kind = self.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL or isinstance(self.bound.arguments[name], tuple):
                value = tuple(value)
            arguments[name] = value
        rebound = inspect.BoundArguments(self.signature, arguments)  # type: ignore[arg-type]
        rebound.apply_defaults()
        return rebound.args, rebound.kwargs


_NOT_JSON = object()


def _as_json(value: Any) -> Any:
    try:
        check_json(value, "argument")
    except StateNotSerializable:
        return _NOT_JSON
    return list(value) if isinstance(value, tuple) else value


def _summary(summary: SummaryArg, name: str, parameters: dict[str, Any]) -> str:
    if callable(summary):
        return summary(parameters)
    if isinstance(summary, str):
        return summary.format(**parameters)
    shown = ", ".join(f"{k}={v!r}" for k, v in parameters.items())
    return f"Call {name}({shown})?"


@dataclass(frozen=True)
class Gate:
    """What ``requires_approval`` was told: how to describe a call to a reviewer and how to undo it."""

    checkpoint: str | None
    summary: SummaryArg
    reviewable: set[str] | None
    context: ContextArg
    when: Callable[[dict[str, Any]], bool] | None
    compensation: str | None
    compensation_args: Callable[[Any, dict[str, Any]], dict[str, Any]] | None
    standalone: StandaloneWorkflow | None

    def checkpoint_name(self, fn: Callable[..., Any]) -> str:
        return self.checkpoint or f"Approve {fn.__name__}"

    async def ask(self, run: SupervisedRun, fn: Callable[..., Any], call: BoundCall) -> Decision:
        context = dict(self.context(call.parameters)) if self.context else {}
        context.setdefault("function", fn.__qualname__)
        if call.hidden:
            context.setdefault("not_reviewable", call.hidden)
        run.trace.append(f"{fn.__qualname__} asks for approval")
        return await run.checkpoint(
            self.checkpoint,
            parameters=call.parameters,
            summary=_summary(self.summary, fn.__name__, call.parameters),
            context=context,
        )

    def record(self, run: SupervisedRun, fn: Callable[..., Any], result: Any, params: dict[str, Any]) -> None:
        """Record the side effect just performed, so a later rejection runs its compensation.

        Synchronous on purpose (``register_step`` is one committed write), so a sync tool in a worker
        thread records its step without a round trip through the run's event loop.
        """
        if self.compensation is None:
            return
        args = self.compensation_args(result, params) if self.compensation_args else dict(params)
        run.trace.append(f"step: {fn.__qualname__}")
        run.orchestrator.register_step(run.workflow_id, fn.__qualname__, self.compensation, args)


def requires_approval(
    checkpoint: str | Callable[..., Any] | None = None,
    *,
    summary: SummaryArg = None,
    parameters: Iterable[str] | None = None,
    context: ContextArg = None,
    when: Callable[[dict[str, Any]], bool] | None = None,
    compensation: str | None = None,
    compensation_args: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None,
    standalone: StandaloneWorkflow | None = None,
) -> Any:
    """Gate a function (sync or async) behind a checkpoint of the current supervised run.

    - ``checkpoint``: the configured checkpoint's name (or id); None uses the run's next checkpoint.
      Usable bare too: ``@requires_approval``.
    - ``summary``: what the reviewer reads, a format string over the parameters or a function of them.
    - ``parameters``: the argument names a reviewer sees and may change (default: every JSON argument).
    - ``context``: extra facts for the reviewer, computed from the parameters.
    - ``when``: ask only when this returns True for the parameters (e.g. low confidence); otherwise
      the function runs at once, as proposed.
    - ``compensation`` / ``compensation_args``: the registered compensation that undoes the function's
      effect and its JSON arguments, computed from ``(result, parameters)`` (default: the parameters).
    - ``standalone``: the parties of a one-call workflow, used when there is no current run.
    """
    if callable(checkpoint):
        return requires_approval()(checkpoint)
    gate = Gate(
        checkpoint,
        summary,
        set(parameters) if parameters is not None else None,
        context,
        when,
        compensation,
        compensation_args,
        standalone,
    )

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            return cast(F, _async_wrapper(fn, gate))
        return cast(F, _sync_wrapper(fn, gate))

    return decorate


supervised_tool = requires_approval
"""The same decorator, named for agents' tools: ``@supervised_tool("Review order")``."""


def _async_wrapper(fn: Callable[..., Awaitable[Any]], gate: Gate) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = BoundCall(fn, args, kwargs, gate.reviewable)
        run = current_run()
        if gate.when is not None and not gate.when(call.parameters):
            result = await fn(*args, **kwargs)
            if run is not None:
                gate.record(run, fn, result, call.parameters)
            return result
        if run is None:
            if gate.standalone is None:
                raise _no_run(fn)
            return await _standalone(fn, gate, call)
        return await _gated(run, fn, gate, call)

    wrapper.__saferun_gate__ = gate  # type: ignore[attr-defined]
    return wrapper


def _sync_wrapper(fn: Callable[..., Any], gate: Gate) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = BoundCall(fn, args, kwargs, gate.reviewable)
        run = current_run()
        if gate.when is not None and not gate.when(call.parameters):
            result = fn(*args, **kwargs)
            if run is not None:
                gate.record(run, fn, result, call.parameters)
            return result
        if _running_loop() is not None:
            raise _on_loop(fn)
        if run is None:
            if gate.standalone is None:
                raise _no_run(fn)
            return asyncio.run(_standalone(fn, gate, call))
        if run.loop is None or run.loop.is_closed():
            raise NoSupervisedRun(f"the supervised run around {fn.__qualname__} has no running event loop")
        decision = asyncio.run_coroutine_threadsafe(gate.ask(run, fn, call), run.loop).result()
        args2, kwargs2 = call.with_parameters(decision.parameters)
        result = fn(*args2, **kwargs2)
        gate.record(run, fn, result, decision.parameters)
        return result

    wrapper.__saferun_gate__ = gate  # type: ignore[attr-defined]
    return wrapper


async def _gated(run: SupervisedRun, fn: Callable[..., Any], gate: Gate, call: BoundCall) -> Any:
    decision = await gate.ask(run, fn, call)
    args, kwargs = call.with_parameters(decision.parameters)
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    gate.record(run, fn, result, decision.parameters)
    return result


async def _standalone(fn: Callable[..., Any], gate: Gate, call: BoundCall) -> Any:
    assert gate.standalone is not None
    config = gate.standalone.config(gate.checkpoint_name(fn), fn.__qualname__)
    standalone = Gate(
        config.checkpoints[0].name,
        gate.summary,
        gate.reviewable,
        gate.context,
        None,
        gate.compensation,
        gate.compensation_args,
        None,
    )
    async with supervised(config, gate.standalone.orchestrator) as run:
        result = await _gated(run, fn, standalone, call)
        run.result["function"] = fn.__qualname__
        return result


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _no_run(fn: Callable[..., Any]) -> NoSupervisedRun:
    return NoSupervisedRun(
        f"{fn.__qualname__} requires approval but was called outside a supervised run: call it inside "
        "`async with supervised(config) as run:`, or give the decorator standalone=StandaloneWorkflow(...)"
    )


def _on_loop(fn: Callable[..., Any]) -> NoSupervisedRun:
    return NoSupervisedRun(
        f"{fn.__qualname__} is a sync function that requires approval, called on the event loop's thread: "
        "waiting for the decision there would freeze the loop that receives it. Call it with "
        f"`await asyncio.to_thread({fn.__name__}, ...)`, or make it async."
    )


__all__ = [
    "BoundCall",
    "NoSupervisedRun",
    "StandaloneWorkflow",
    "requires_approval",
    "supervised_tool",
]
