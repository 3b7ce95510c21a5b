"""Where approval policy meets the engine: each opening request is judged by the configured policy.

The policy file (``SAFERUN_APPROVAL_POLICY``, or a ``Policy`` given to the orchestrator) is read when it
changes, so risk owners can ship a new version without restarting agents; a file that does not load is
an error at the next checkpoint naming the rule, never a silently ignored policy. The verdict is applied
inside the transaction that opens the request, so "approved by policy" commits with the pause itself.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from saferun.domain import approval_policy
from saferun.domain.approval_policy import Case, Policy, Verdict
from saferun.storage import ledger as book

_MICRO = Decimal(1_000_000)


class PolicyGate:
    def __init__(self, policy: Policy | None = None, path: Path | None = None) -> None:
        self._fixed = policy
        self._path = path.expanduser() if path is not None else None
        self._loaded: tuple[float, Policy] | None = None
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._fixed is not None or self._path is not None

    def policy(self) -> Policy | None:
        if self._fixed is not None or self._path is None:
            return self._fixed
        mtime = self._path.stat().st_mtime
        with self._lock:
            if self._loaded is None or self._loaded[0] != mtime:
                text = self._path.read_text()
                self._loaded = (mtime, approval_policy.load(text, "SAFERUN_APPROVAL_POLICY"))
            return self._loaded[1]

    def verdict(
        self, conn: Connection, row: Any, checkpoint_name: str, request: dict[str, Any]
    ) -> Verdict | None:
        """The policy's verdict on a request being opened (None without a policy)."""
        policy = self.policy()
        if policy is None:
            return None
        return policy.evaluate(case_for(conn, row, checkpoint_name, request))


def case_for(conn: Connection, row: Any, checkpoint_name: str, request: dict[str, Any]) -> Case:
    """What the rules see: the request as it is being opened, plus what the workflow has paid so far."""
    risk = request.get("risk")
    level = risk.get("level") if isinstance(risk, dict) else None
    released = book.escrow_position(conn, row["workflow_id"]).released
    return Case(
        checkpoint_id=request["checkpoint_id"],
        checkpoint_name=checkpoint_name,
        parameters=request.get("parameters") or {},
        confidence=request.get("confidence"),
        alerts=request.get("alerts") or (),
        risk=str(level).lower() if level is not None else None,
        spend=Decimal(released) / _MICRO,
    )
