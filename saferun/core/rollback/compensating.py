"""The original's in-process rollback API: ``CompensatingTransaction`` and ``RollbackManager``.

Code written for the original registers async undo functions by action id and runs them in reverse
order. Each transaction runs at most once (a second ``execute`` answers the first result) and never
raises; failures are reported as ``False`` and in ``rollback_history``. Durable, cross-process
compensations are the saga's job (``orchestrator.register_step`` and saferun/core/rollback/saga.py);
this class is for the original's callers, which keep their undo functions in process.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from saferun.core.state_machine.models import ExecutionState

log = logging.getLogger(__name__)

RollbackFunc = Callable[[dict[str, Any]], Awaitable[Any]]


def _now_iso() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


class CompensatingTransaction:
    def __init__(
        self,
        transaction_id: str,
        action_type: str,
        action_data: dict[str, Any],
        rollback_func: RollbackFunc | None = None,
    ) -> None:
        self.transaction_id = transaction_id
        self.action_type = action_type
        self.action_data = action_data
        self.rollback_func = rollback_func
        self.executed = False
        self.success = False

    async def execute(self) -> bool:
        """Run the undo once; later calls return the first outcome without running it again."""
        if self.executed:
            return self.success
        try:
            if self.rollback_func is not None:
                await self.rollback_func(self.action_data)
            self.success = True
        except Exception as exc:  # the contract: a failed undo is False, never an exception
            log.warning("compensation %s failed: %s", self.transaction_id, exc)
            self.success = False
        self.executed = True
        return self.success


class RollbackManager:
    def __init__(self) -> None:
        self.rollback_history: list[dict[str, Any]] = []
        self.compensating_transactions: dict[str, CompensatingTransaction] = {}

    def register_action(
        self,
        action_id: str,
        action_type: str,
        action_data: dict[str, Any],
        rollback_func: RollbackFunc | None = None,
    ) -> None:
        self.compensating_transactions[action_id] = CompensatingTransaction(
            action_id, action_type, action_data, rollback_func
        )

    async def execute_rollback(
        self, checkpoint_state: ExecutionState, actions_to_rollback: list[str]
    ) -> bool:
        """Undo the listed actions newest first; an id never registered is skipped, not a failure."""
        failures: list[str] = []
        for action_id in reversed(actions_to_rollback):
            tx = self.compensating_transactions.get(action_id)
            if tx is None:
                log.warning("rollback: no compensating transaction registered for %s", action_id)
                continue
            if not await tx.execute():
                failures.append(action_id)
        self.rollback_history.append(
            {
                "checkpoint_id": checkpoint_state.checkpoint_id,
                "timestamp": _now_iso(),
                "actions_count": len(actions_to_rollback),
                "success": not failures,
                "failures": failures,
            }
        )
        return not failures

    async def partial_rollback(self, checkpoint_state: ExecutionState, action_types: list[str]) -> bool:
        ids = [tid for tid, tx in self.compensating_transactions.items() if tx.action_type in action_types]
        return await self.execute_rollback(checkpoint_state, ids)

    def get_rollback_history(self) -> list[dict[str, Any]]:
        return self.rollback_history

    def clear_transactions(self) -> None:
        self.compensating_transactions.clear()
