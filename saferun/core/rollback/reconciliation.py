"""Saga compensations: a registry of named undo actions and the runner that applies them on rejection.

Agents record each side effect as a *step* with the name of its compensation and JSON arguments
(``orchestrator.register_step(wf, "place_order", "cancel_order", {"order_id": "o-1"})``). Names, not
function objects, are stored, so any process that registered the same names (e.g. through
``SAFERUN_COMPENSATIONS=myapp.compensations``) can finish a rollback after the agent's process died.

The runner undoes the steps since the last approved checkpoint, newest first. Each step is claimed with
a conditional UPDATE before it runs, so no two processes run the same compensation; a failing one is
retried with exponential backoff and jitter, and after the last attempt the workflow goes to FAILED
with that step named. A step whose claimant vanished mid-run (process killed) is retaken after
``stale_claim_seconds``, under a new claim generation: the vanished runner's result, should it still
arrive, is refused (``ClaimLost``), so each step has exactly one recorded outcome. The side effect itself
may have landed before the process died, so every run of a step's compensation gets the same
``idempotency_key`` (``compensation_key``: stable across takeovers) when its function declares an
``idempotency_key`` parameter; passed on to the outside system (a refund API's idempotency header, a
unique key in a table), it makes the undo happen once however often it is attempted.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from saferun.domain.backoff import full_jitter

log = logging.getLogger(__name__)

Compensation = Callable[..., Any] | Callable[..., Awaitable[Any]]


class CompensationRegistry:
    """Name -> callable. One process-wide default (``registry``); tests and embedders may make their own."""

    def __init__(self) -> None:
        self._fns: dict[str, Compensation] = {}

    def register(self, name: str, fn: Compensation | None = None) -> Any:
        """``registry.register("cancel_order", fn)`` or ``@registry.register("cancel_order")``."""
        if not name or not isinstance(name, str):
            raise ValueError("a compensation needs a non-empty name")

        def add(f: Compensation) -> Compensation:
            existing = self._fns.get(name)
            if existing is not None and existing is not f:
                log.warning("compensation %r re-registered; the newest definition wins", name)
            self._fns[name] = f
            return f

        return add(fn) if fn is not None else add

    def resolve(self, name: str) -> Compensation | None:
        return self._fns.get(name)

    def names(self) -> list[str]:
        return sorted(self._fns)

    def import_modules(self, modules: str) -> None:
        """Import comma-separated modules whose import registers compensations."""
        for mod in filter(None, (m.strip() for m in modules.split(","))):
            importlib.import_module(mod)


registry = CompensationRegistry()


def compensation(name: str) -> Callable[[Compensation], Compensation]:
    """Decorator registering a compensation on the default registry."""
    return registry.register(name)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    initial_delay: float = 0.05
    max_delay: float = 2.0
    multiplier: float = 2.0

    def delay(self, attempt: int) -> float:
        """Full jitter: a random wait up to the exponential bound, so retries of many steps spread out."""
        return full_jitter(attempt, self.initial_delay, self.max_delay, self.multiplier)


def compensation_key(workflow_id: str, step_id: str) -> str:
    """The idempotency key of one step's compensation: the same for every runner and every takeover."""
    return f"saferun:{workflow_id}:{step_id}"


def takes_idempotency_key(fn: Compensation) -> bool:
    """Whether ``fn`` declares an ``idempotency_key`` parameter (older compensations do not get one)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no readable signature
        return False
    param = params.get("idempotency_key")
    return param is not None and param.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


async def run_compensation(
    fn: Compensation, args: dict[str, Any], policy: RetryPolicy, idempotency_key: str | None = None
) -> tuple[bool, str]:
    """Run one compensation with retries; (True, "") on success, (False, last error) after the last try.

    ``idempotency_key`` is passed when the function declares that parameter and the step's own arguments
    do not already name one (the agent's choice then wins: it is stored, so just as stable)."""
    kwargs = dict(args)
    if idempotency_key is not None and "idempotency_key" not in kwargs and takes_idempotency_key(fn):
        kwargs["idempotency_key"] = idempotency_key
    last = ""
    for attempt in range(1, policy.attempts + 1):
        try:
            result = fn(**kwargs)
            if inspect.isawaitable(result):
                await result
            return True, ""
        except Exception as exc:  # a compensation's own failure is data for the audit trail
            last = f"{type(exc).__name__}: {exc}"
            log.warning("compensation attempt %d/%d failed: %s", attempt, policy.attempts, last)
            if attempt < policy.attempts:
                await asyncio.sleep(policy.delay(attempt))
    return False, last


@dataclass
class RollbackReport:
    workflow_id: str
    compensated: list[str] = field(default_factory=list)
    failed: str | None = None
    error: str | None = None
    restored_snapshot_id: str | None = None
    restored_checkpoint_id: str | None = None
    final_state: str = ""

    @property
    def succeeded(self) -> bool:
        return self.failed is None and self.error is None


def __getattr__(name: str) -> Any:
    # The seed's Advanced Pattern 4 imports ReconciliationAgent from here.
    if name == "ReconciliationAgent":
        from saferun.agents.reconciliation.agent import ReconciliationAgent

        return ReconciliationAgent
    if name in ("CompensatingTransaction", "RollbackManager"):  # the original's in-process API
        from saferun.core.rollback import compensating

        return getattr(compensating, name)
    raise AttributeError(name)
