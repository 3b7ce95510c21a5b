"""``ExecutorAgent``: does the work and records what an ``ExecutionState`` needs while doing it.

    agent = ExecutorAgent("researcher_1")                    # offline provider unless configured
    async with agent:                                         # verifies the provider before any work
        research = await agent.execute_task("Gather competitor data", {"market": "EU"})
        rows = await agent.call_api("/api/data/query", {"table": "customers"}, query_db)
        state = agent.snapshot("research_review", parameters={"next": "analysis"})

Every model call (``execute_task``) and every tool or API call made through the agent (``call_api``, or
a function wrapped with ``tool``) is recorded by its ``Recorder`` with timing, summaries, tokens, cost
and errors; ``snapshot`` turns that record into the ``ExecutionState`` a checkpoint captures. The model
is a pluggable provider (``providers.py``): ``provider=`` (a name or a ``Provider``), else
``SAFERUN_EXECUTOR_PROVIDER``, else the offline deterministic one.

A bad provider configuration fails at the start, never mid-task: an unknown name or a missing key when
the agent is built, a refused key or an unknown model at ``start()`` — which ``execute_task``,
``call_api`` and ``async with`` all run first. Call ``await agent.start()`` before opening a supervised
workflow to fail before any escrow is locked.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from saferun.agents.executor.pricing import ModelPrice
from saferun.agents.executor.providers import (
    Completion,
    OfflineProvider,
    Provider,
    ProviderCheck,
    make_provider,
)
from saferun.agents.executor.recorder import Recorder, jsonable, started_at, summarize
from saferun.core.state_machine.models import ExecutionState
from saferun.errors import InvalidInput

__all__ = ["DEFAULT_SYSTEM_PROMPT", "Completion", "ExecutorAgent", "OfflineProvider", "Provider"]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_SYSTEM_PROMPT = (
    "You are an executor agent whose work a human reviews at checkpoints. Do the task with the context "
    "given; be concrete and brief. End your answer with one line 'Confidence: X', X between 0 and 1: "
    "how sure you are that the answer is correct and complete."
)
_CONFIDENCE = re.compile(r"^\s*confidence\s*[:=]\s*(\d+(?:\.\d+)?)\s*(%?)\s*$", re.IGNORECASE)
_KEY_LIMIT = 120


class ExecutorAgent:
    """An agent whose work is recorded for checkpoints, with a pluggable model provider.

    ``agent_id`` is the seed's positional argument. ``provider`` is a name (``offline``, ``anthropic``,
    or one added with ``register_provider``) or a ``Provider`` object; ``model`` and ``price`` are passed
    to a provider built by name. ``max_tokens`` caps each answer; ``system_prompt`` asks the model for a
    ``Confidence:`` line, which is parsed into ``confidence_scores``.
    """

    def __init__(
        self,
        agent_id: str,
        provider: str | Provider | dict[str, Any] | None = None,
        *,
        model: str | None = None,
        price: ModelPrice | None = None,
        max_tokens: int = 1024,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        agent_config: dict[str, Any] | None = None,
    ) -> None:
        # the original's ``ExecutorAgent(agent_id, agent_config)``: a dict second argument is the config
        if isinstance(provider, dict):
            agent_config, provider = provider, None
        self.config: dict[str, Any] = agent_config or {}
        self.checkpoint_callback: Callable[..., Awaitable[dict[str, Any]]] | None = None
        if not isinstance(agent_id, str) or not agent_id.strip():
            raise InvalidInput("agent_id", "must be a non-empty string")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidInput("max_tokens", f"must be a positive integer, got {max_tokens!r}")
        self.agent_id = agent_id
        if provider is None or isinstance(provider, str):
            self.provider: Provider = make_provider(provider, model=model, price=price)
        elif callable(getattr(provider, "complete", None)):
            self.provider = provider
        else:
            raise InvalidInput(
                "provider", f"must be a provider name or a Provider object, not {type(provider).__name__}"
            )
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self.recorder = Recorder()
        self._started = False
        self._start_lock = asyncio.Lock()

    # ------------------------------------------------------------------------------- lifecycle
    @property
    def started(self) -> bool:
        return self._started

    async def start(self) -> None:
        """Verify the provider once (a refused key or unknown model raises ``InvalidInput`` here)."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            begun, at = time.perf_counter(), started_at()
            with self.recorder.active():
                try:
                    check = await self.provider.verify()
                except BaseException as exc:
                    self._record_check(None, begun, at, exc)
                    raise
                if check is not None:
                    self._record_check(check, begun, at, None)
            self._started = True

    async def aclose(self) -> None:
        await self.provider.aclose()

    async def __aenter__(self) -> ExecutorAgent:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _record_check(
        self, check: ProviderCheck | None, begun: float, at: str, error: BaseException | None
    ) -> None:
        p = self.provider
        self.recorder.call(
            kind="provider_check",
            endpoint=check.endpoint if check else p.endpoint,
            method=check.method if check else "VERIFY",
            payload={"provider": p.name, "model": p.model},
            started_at=at,
            duration=time.perf_counter() - begun,
            response=check.summary if check else None,
            error=error,
            status=check.status if check else None,
        )
        if error is None:
            self.recorder.note(f"Checked the {p.name} provider: {check.summary if check else 'ok'}")
        else:
            self.recorder.note(f"The {p.name} provider check failed: {type(error).__name__}")

    # ------------------------------------------------------------------------------- the work
    async def execute_task(
        self, task: str, context: Mapping[str, Any] | None = None, *, key: str | None = None
    ) -> dict[str, Any]:
        """Run one task through the provider and record it.

        Returns the seed's task result: ``{"task", "result", "agent_id"}`` plus ``provider``, ``model``,
        ``confidence``, ``input_tokens``, ``output_tokens`` and ``cost_usd`` (exact decimal string, or
        ``None`` for an unpriced model). The answer is stored in ``intermediate_outputs[key]`` (``key``
        defaults to the task text) and the context in ``inputs[key]``.

        With a ``checkpoint_callback`` set, the plan is reviewed first (``checkpoint_id="plan_review"``;
        not approved raises ``Exception("Plan not approved")`` before any model call). A ``context`` with
        ``"steps": [{"id", "description", "critical"}]`` runs the original's plan: one call per step, the
        callback after each critical step, and the original's result shape (``status``,
        ``steps_completed``, ``results``, ``summary``).
        """
        if not isinstance(task, str) or not task.strip():
            raise InvalidInput("task", "must be a non-empty string")
        if context is not None and not isinstance(context, Mapping):
            raise InvalidInput("context", f"must be a dict, not {type(context).__name__}")
        if key is not None and (not isinstance(key, str) or not key.strip()):
            raise InvalidInput("key", "must be a non-empty string")
        steps = _plan_steps(context)
        await self.start()
        if self.checkpoint_callback is not None:
            # the original's plan review: the callback sees the state before any model call
            state = self.snapshot("plan_review")
            answer = await self.checkpoint_callback(
                checkpoint_id="plan_review", state=state, summary=f"Review execution plan: {task}"
            )
            if not (answer or {}).get("approved"):
                self.recorder.note("The plan was not approved")
                raise Exception("Plan not approved")
        if steps is None:
            return await self._complete_once(task, context, key)
        return await self._run_plan(task, dict(context or {}), steps)

    async def _run_plan(
        self, task: str, context: dict[str, Any], steps: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The original's plan execution: one model call per step, and after each *critical* step the
        checkpoint callback (``checkpoint_id="step_<id>"``). A step the reviewer did not approve gets the
        returned ``modifications`` applied to it after the fact and execution carries on, as the original
        did; the trace says so, so the reviewer's answer is never silently lost."""
        context = {k: v for k, v in context.items() if k != "steps"}
        self.recorder.output("plan", {"summary": task, "steps": steps})
        results: list[dict[str, Any]] = []
        for step in steps:
            sid = step["id"]
            outcome = await self._complete_once(
                f"{task}: step {sid}: {step['description']}",
                {**context, "step": dict(step)},
                f"step_{sid}",
            )
            results.append({"step_id": sid, **outcome})
            if step.get("critical") and self.checkpoint_callback is not None:
                answer = await self.checkpoint_callback(
                    checkpoint_id=f"step_{sid}",
                    state=self.snapshot(f"step_{sid}"),
                    summary=f"Review critical step {sid}: {step['description']}",
                )
                if not (answer or {}).get("approved"):
                    changes = (answer or {}).get("modifications") or {}
                    step.update(changes)
                    self.recorder.output("plan", {"summary": task, "steps": steps})
                    self.recorder.note(
                        f"Critical step {sid} was not approved; applied {sorted(changes)} and carried on"
                    )
        self.recorder.output("results", results)
        return {
            "status": "completed",
            "steps_completed": len(results),
            "results": results,
            "summary": "Task completed successfully",
            "task": task,
            "agent_id": self.agent_id,
        }

    async def _complete_once(
        self, task: str, context: Mapping[str, Any] | None, key: str | None
    ) -> dict[str, Any]:
        """One recorded model call: the seed README's ``execute_task`` (and one step of a plan)."""
        p, rec = self.provider, self.recorder
        with rec.active():
            key = key or self._output_key(task)
            ctx = jsonable(dict(context or {}))
            if ctx:
                rec.inputs[key] = ctx
            prompt = build_prompt(task, ctx)
            rec.say("task", task)
            rec.note(f"Asked the {p.name} provider ({p.model}) to: {summarize(task, 120)}")
            begun, at = time.perf_counter(), started_at()
            payload = {
                "model": p.model,
                "task": task,
                "context_keys": sorted(ctx),
                "prompt_chars": len(prompt),
            }

            def record(**outcome: Any) -> dict[str, Any]:
                return rec.call(
                    kind="model",
                    endpoint=p.endpoint,
                    method=p.method,
                    payload=payload,
                    started_at=at,
                    duration=time.perf_counter() - begun,
                    **outcome,
                )

            try:
                completion = await p.complete(prompt, system=self.system_prompt, max_tokens=self.max_tokens)
            except BaseException as exc:
                record(error=exc, model=p.model)
                rec.note(f"The {p.name} provider failed: {type(exc).__name__}")
                raise
            text, confidence = split_confidence(completion.text)
            cost = None if completion.cost_usd is None else str(completion.cost_usd)
            record(
                response=text,
                status=200,
                model=completion.model,
                input_tokens=completion.input_tokens,
                output_tokens=completion.output_tokens,
                cost_usd=cost,
                stop_reason=completion.stop_reason,
                request_id=completion.request_id,
            )
            rec.say("result", text)
            rec.output(key, text)
            if confidence is not None:
                rec.confidence[key] = confidence
            rec.note(
                f"Got {len(text)} characters from {completion.model} "
                f"({completion.input_tokens} in / {completion.output_tokens} out tokens, "
                f"{'$' + cost if cost is not None else 'unpriced'}"
                f"{'' if confidence is None else f', confidence {confidence:.2f}'})"
            )
            if completion.stop_reason == "max_tokens":
                rec.note(f"The answer was cut at max_tokens={self.max_tokens}")
        return {
            "task": task,
            "result": text,
            "agent_id": self.agent_id,
            "provider": p.name,
            "model": completion.model,
            "confidence": confidence,
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
            "cost_usd": cost,
        }

    async def call_api(
        self,
        name: str,
        payload: Mapping[str, Any] | None,
        fn: Callable[..., Awaitable[T] | T],
        *,
        method: str = "CALL",
    ) -> T:
        """Call ``fn(**payload)`` (sync or async) and record it: endpoint ``name``, summaries of payload
        and response (secrets redacted), duration, status, and the error if it raised (then re-raised)."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("name", "must be a non-empty string naming the API or tool")
        if payload is not None and not isinstance(payload, Mapping):
            raise InvalidInput(
                "payload", f"must be a dict of keyword arguments, not {type(payload).__name__}"
            )
        if not callable(fn):
            raise InvalidInput("fn", "must be callable")
        args = dict(payload or {})
        return await self._recorded(name, method, args, lambda: fn(**args))

    def tool(self, fn: Callable[P, Awaitable[T] | T] | None = None, *, name: str | None = None) -> Any:
        """Wrap ``fn`` so every call goes through ``call_api``'s recording (``@agent.tool`` or
        ``agent.tool(fn, name="search")``). The wrapper is always async."""

        def wrap(func: Callable[P, Awaitable[T] | T]) -> Callable[P, Awaitable[T]]:
            label = name or getattr(func, "__name__", "tool")

            @functools.wraps(func)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                payload: dict[str, Any] = dict(kwargs)
                if args:
                    payload["args"] = list(args)
                return await self._recorded(label, "CALL", payload, lambda: func(*args, **kwargs))

            return wrapper

        return wrap if fn is None else wrap(fn)

    async def _recorded(
        self, name: str, method: str, payload: dict[str, Any], thunk: Callable[[], Awaitable[T] | T]
    ) -> T:
        await self.start()
        rec = self.recorder
        with rec.active():
            begun, at = time.perf_counter(), started_at()

            def record(**outcome: Any) -> dict[str, Any]:
                return rec.call(
                    kind="tool",
                    endpoint=name,
                    method=method,
                    payload=payload,
                    started_at=at,
                    duration=time.perf_counter() - begun,
                    **outcome,
                )

            try:
                result = thunk()
                if inspect.isawaitable(result):
                    result = await result
            except BaseException as exc:
                entry = record(error=exc)
                rec.note(f"Called {name}: failed ({entry['status']}, {type(exc).__name__})")
                raise
            entry = record(response=result)
            rec.note(f"Called {name}: {entry['status']}")
            return result  # type: ignore[return-value]

    # ------------------------------------------------------------------------------- by hand
    def remember(self, key: str, value: Any) -> None:
        """Add a fact to ``agent_memory["facts"]``."""
        self.recorder.remember(key, value)

    def note(self, step: str) -> None:
        """Add a reasoning step to the decision trace."""
        self.recorder.note(step)

    def output(self, key: str, value: Any) -> None:
        """Record an intermediate result the agent produced itself."""
        self.recorder.output(key, value)

    def set_confidence(self, name: str, score: float) -> None:
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise InvalidInput("score", f"a confidence is a number between 0 and 1, got {score!r}")
        self.recorder.confidence[name] = float(score)

    # ------------------------------------------------------------------------------- reading
    def snapshot(self, checkpoint_id: str, **extra: Any) -> ExecutionState:
        """The state recorded so far, for ``create_checkpoint`` or ``run.checkpoint(state=...)``.

        A deep copy: recording more later does not change a captured state. ``extra`` adds (or replaces)
        fields such as ``parameters``, ``planned_next_steps`` or ``risk_assessment``.
        """
        return self.recorder.to_state(checkpoint_id, **extra)

    def restore(self, state: ExecutionState) -> None:
        """Continue from a captured state, e.g. ``ApprovalRejected.restored_state`` after a rollback."""
        self.recorder.restore(state)

    @property
    def resource_consumption(self) -> dict[str, float]:
        return self.recorder.resource_consumption()

    @property
    def cost_usd(self) -> Decimal:
        """Exact dollars spent on priced model calls so far."""
        return self.recorder.cost_usd()

    @property
    def memory(self) -> dict[str, Any]:
        return self.recorder.memory

    @property
    def api_calls(self) -> list[dict[str, Any]]:
        return self.recorder.api_calls

    @property
    def decision_trace(self) -> list[str]:
        return self.recorder.trace

    @decision_trace.setter
    def decision_trace(self, value: list[str]) -> None:
        self.recorder.trace = list(value)

    # --- the original SafeRun-X402's names for the same record (plain, assignable) -------------------
    @property
    def execution_context(self) -> dict[str, Any]:
        return self.recorder.memory

    @execution_context.setter
    def execution_context(self, value: dict[str, Any]) -> None:
        self.recorder.memory = dict(value)

    @property
    def api_call_history(self) -> list[dict[str, Any]]:
        return self.recorder.api_calls

    @api_call_history.setter
    def api_call_history(self, value: list[dict[str, Any]]) -> None:
        self.recorder.api_calls = list(value)

    @property
    def intermediate_outputs(self) -> dict[str, Any]:
        return self.recorder.outputs

    @intermediate_outputs.setter
    def intermediate_outputs(self, value: dict[str, Any]) -> None:
        self.recorder.outputs = dict(value)

    def set_checkpoint_callback(self, callback: Callable[..., Awaitable[dict[str, Any]]] | None) -> None:
        self.checkpoint_callback = callback

    def capture_current_state(self, checkpoint_id: str) -> ExecutionState:
        """The original's name for ``snapshot``: the recorded state as an ``ExecutionState``."""
        return self.snapshot(checkpoint_id)

    def restore_state(self, execution_state: ExecutionState) -> None:
        """The original's ``restore``: the five attributes become copies of the state's fields, exactly."""
        self.restore(execution_state)
        self.recorder.memory = dict(execution_state.agent_memory)

    def apply_modifications(self, modifications: dict[str, Any]) -> None:
        """A reviewer's changes: a key already in the context or the outputs is overwritten there;
        any other key is ignored (the original's rule)."""
        for key, value in modifications.items():
            if key in self.recorder.memory:
                self.recorder.memory[key] = value
            elif key in self.recorder.outputs:
                self.recorder.outputs[key] = value

    def get_status(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "context": self.execution_context,
            "api_calls_made": len(self.recorder.api_calls),
            "decisions_made": len(self.recorder.trace),
            "outputs_generated": len(self.recorder.outputs),
            "resources_consumed": self.resource_consumption,
        }

    @property
    def outputs(self) -> dict[str, Any]:
        return self.recorder.outputs

    @property
    def tokens_used(self) -> int:
        return int(self.recorder.resource_consumption()["tokens_used"])

    def _output_key(self, task: str) -> str:
        base = " ".join(task.split())
        if len(base) > _KEY_LIMIT:
            base = base[: _KEY_LIMIT - 1] + "…"
        key, n = base, 2
        while key in self.recorder.outputs:
            key, n = f"{base} #{n}", n + 1
        return key


def build_prompt(task: str, context: Mapping[str, Any]) -> str:
    """The task, then its context as JSON (sorted, so the same inputs give the same prompt)."""
    if not context:
        return task
    return f"{task}\n\nContext (JSON):\n{json.dumps(context, indent=2, sort_keys=True, ensure_ascii=False)}"


def split_confidence(text: str) -> tuple[str, float | None]:
    """Take a trailing ``Confidence: 0.85`` (or ``85%``) line off an answer; ``None`` when absent."""
    lines = text.rstrip().splitlines()
    if not lines:
        return text, None
    match = _CONFIDENCE.match(lines[-1])
    if not match:
        return text, None
    value = float(match.group(1)) / (100 if match.group(2) else 1)
    if not 0 <= value <= 1:
        return text, None
    return "\n".join(lines[:-1]).rstrip(), value


def _plan_steps(context: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    """The explicit plan in ``context["steps"]`` (the original's ``[{"id", "description", "critical"}]``),
    checked before anything runs; ``None`` when the task has no plan (one model call, the seed's form).

    The original asked the model for the plan; SafeRun takes it from the caller, so what runs and which
    steps stop for review is decided by code a reviewer can read, not by a model's answer."""
    if context is None or not isinstance(context, Mapping) or "steps" not in context:
        return None
    raw = context["steps"]
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("context.steps", "must be a non-empty list of {id, description, critical}")
    steps: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        field = f"context.steps[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(field, f"must be an object, not {type(item).__name__}")
        sid, description = item.get("id"), item.get("description")
        if isinstance(sid, bool) or not isinstance(sid, (str, int)) or str(sid).strip() == "":
            raise InvalidInput(f"{field}.id", "must be a non-empty string or an integer")
        if str(sid) in seen:
            raise InvalidInput(f"{field}.id", f"{sid!r} is used by an earlier step")
        seen.add(str(sid))
        if not isinstance(description, str) or not description.strip():
            raise InvalidInput(f"{field}.description", "must be a non-empty string")
        if not isinstance(item.get("critical", False), bool):
            raise InvalidInput(f"{field}.critical", "must be true or false")
        steps.append(dict(item))
    return steps
