"""The original server's module globals (``saferun.api.server.orchestrator``, ``.x402``, ``active_*``,
``approval_waiters``, ``checkpoint_manager``), answered from the store.

The original kept its state in these process dicts, so a script's own orchestrator never saw the server's
workflows (the contract calls a shared durable store "desirable"). Here each global is built on first
access (importing the server stays cheap and opens nothing) and reads the same database the server uses:

- ``orchestrator``: the original's orchestrator form (``WorkflowOrchestrator(x402)``: True/False answers,
  list-shaped executions) on the configured database;
- ``x402``: ``X402Integration()`` (embedded platform, or ``X402_API_URL``);
- ``active_executors`` / ``active_supervisors`` / ``active_monitors``: workflow id → executor id /
  supervisor id / monitor id (``monitor_<workflow id>``, the original's naming) for every workflow not yet
  ended, read live when used;
- ``approval_waiters``: request id → the pending ``ApprovalRequest`` somebody is waiting on. The original
  held a Future per request; SafeRun's waiters are long-polls woken through the store, so what there is to
  show is the request itself;
- ``checkpoint_manager``: a ``CheckpointManager()`` (unused by the server, as in the original).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from saferun.core.state_machine.models import ApprovalRequest, WorkflowExecution
from saferun.domain.states import WorkflowState

NAMES = (
    "orchestrator",
    "x402",
    "checkpoint_manager",
    "active_executors",
    "active_supervisors",
    "active_monitors",
    "approval_waiters",
)
_ENDED = {WorkflowState.COMPLETED, WorkflowState.FAILED}
_PAGE = 500


class _LiveMapping(Mapping[str, Any]):
    """A read-only mapping computed from the store each time it is read (never a stale copy)."""

    def __init__(self, load: Callable[[], dict[str, Any]]) -> None:
        self._load = load

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._load()!r})"


def _active(pick: Callable[[WorkflowExecution], str | None]) -> dict[str, Any]:
    strict = _orchestrator().strict
    found: dict[str, Any] = {}
    offset = 0
    while page := strict.list_workflows(limit=_PAGE, offset=offset):
        offset += len(page)
        for wf in page:
            value = pick(wf)
            if wf.current_state not in _ENDED and value:
                found[wf.workflow_id] = value
    return found


def _waiters() -> dict[str, ApprovalRequest]:
    return {r.request_id: r for r in _orchestrator().strict.pending_approvals()}


_built: dict[str, Any] = {}


def _for_store(name: str, build: Callable[[], Any]) -> Any:
    """One instance per configured database, so a changed ``DATABASE_URL`` is followed, never shadowed."""
    from saferun.storage.database import get_database

    key = f"{name}:{get_database().url}"
    if key not in _built:
        _built[key] = build()
    return _built[key]


def _x402() -> Any:
    from saferun.api.x402.client import X402Integration

    return _for_store("x402", X402Integration)


def _orchestrator() -> Any:
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    return _for_store("orchestrator", lambda: WorkflowOrchestrator(x402_integration=_x402()))


@functools.cache
def _checkpoint_manager() -> Any:
    from saferun.core.checkpoints.capture import CheckpointManager

    return CheckpointManager()


def resolve(name: str) -> Any:
    """The global ``name``, built on first use; ``AttributeError`` for anything else."""
    builders: dict[str, Callable[[], Any]] = {
        "orchestrator": _orchestrator,
        "x402": _x402,
        "checkpoint_manager": _checkpoint_manager,
        "active_executors": lambda: _LiveMapping(lambda: _active(lambda w: w.config.executor_id)),
        "active_supervisors": lambda: _LiveMapping(
            lambda: _active(lambda w: w.supervisor_id or w.config.supervisor_id)
        ),
        "active_monitors": lambda: _LiveMapping(lambda: _active(lambda w: f"monitor_{w.workflow_id}")),
        "approval_waiters": lambda: _LiveMapping(_waiters),
    }
    if name not in builders:
        raise AttributeError(f"module 'saferun.api.server' has no attribute {name!r}")
    return builders[name]()


def reset() -> None:
    """Forget the built globals (closes nothing: they share the process's database handles)."""
    _built.clear()
    _checkpoint_manager.cache_clear()
