"""Waiting for decisions and the maintenance every SafeRun process does: expiry, abandoned rollbacks,
workflows settled but never completed.

Split from ``orchestrator.py`` (the state-changing half) along the line between "change a workflow" and
"wait for, or tidy up after, changes made elsewhere"; ``WorkflowOrchestrator`` mixes this in.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from sqlalchemy import RowMapping

from saferun.core import decisions, escalation, notify
from saferun.core.checkpoints.capture import CheckpointCapture
from saferun.core.rollback.reconciliation import RollbackReport
from saferun.core.state_machine.models import ApprovalResponse, WorkflowExecution
from saferun.domain.states import WorkflowState
from saferun.errors import CompensationError, DecisionConflict, InvalidTransition
from saferun.storage import approvals, audit, counters
from saferun.storage import workflows as wf_store
from saferun.storage.database import Database
from saferun.storage.schema import utcnow

log = logging.getLogger("saferun.core.state_machine.orchestrator")  # the name operators filter on
T = TypeVar("T")


@dataclass
class SweepReport:
    expired: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)  # "request_id:rung" applied by this sweep


class WorkflowWaits:
    """Waiting and sweeping; needs the orchestrator's store, capture and the steps it calls."""

    db: Database
    capture: CheckpointCapture
    rollback_grace: timedelta
    io_in_threads: bool

    if TYPE_CHECKING:  # provided by WorkflowOrchestrator and WorkflowReads

        def rollback(self, workflow_id: str) -> RollbackReport: ...
        def complete_workflow(self, workflow_id: str, *, actor: str | None = None) -> WorkflowExecution: ...
        def _response(self, row: Any) -> ApprovalResponse: ...

    # ------------------------------------------------------------------ waiting and expiry
    async def wait_for_decision(
        self, request_id: str, timeout: float | None = None, poll_interval: float = 0.25
    ) -> ApprovalResponse:
        """Return the decision as soon as it exists; expiry (on_timeout) is applied here if nobody else did.

        Between reads it waits on the process's notifier (``core/notify``): on PostgreSQL a decision
        committed by any process wakes it at once (LISTEN/NOTIFY); on SQLite one committed in this process
        does. Polling stays as the fallback (SQLite across processes, a listener reconnecting): from 5 ms
        backing off to ``poll_interval``, or at ``poll_interval`` while the listener is up. ``timeout``
        bounds only this wait (TimeoutError); the request keeps its own expiry. A debug record on this
        module's logger says what found the decision (attribute ``woken_by``: first read, notice, poll or
        expiry).
        """

        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay = 0.005
        woken_by = "first read"
        notifier = notify.notifier_for(self.db)
        # registered before the first read, so a decision committed after that read is never missed
        with notifier.watch("decision", request_id) as watch:
            while True:
                watch.clear()
                resp, req = await self._io(self._decision_or_request, request_id)
                if resp is not None:
                    extra = {"request_id": request_id, "woken_by": woken_by}
                    log.debug("decision on %s found by %s", request_id, woken_by, extra=extra)
                    return self._response(resp)
                assert req is not None
                until_expiry = (req["expires_at"] - utcnow()).total_seconds()
                if until_expiry <= 0:
                    await self._io(functools.partial(self.sweep_expired, only=request_id))
                    woken_by = "expiry"
                    continue
                if deadline is not None and loop.time() >= deadline:
                    raise TimeoutError(f"no decision on {request_id} within {timeout} s")
                if woken_by == "first read":
                    extra = {"request_id": request_id, "listening": notifier.listening}
                    log.debug("waiting for a decision on %s", request_id, extra=extra)
                # while the listener is up a poll is only a safety net; otherwise back off from 5 ms
                step = min(poll_interval if notifier.listening else delay, until_expiry + 0.001)
                if deadline is not None:
                    step = min(step, max(deadline - loop.time(), 0.0))
                woken_by = "notice" if await watch.wait(step) else "poll"
                delay = min(poll_interval, delay * 2)

    def _decision_or_request(self, request_id: str) -> tuple[RowMapping | None, RowMapping]:
        """The decision (checked against the audit chain: the agent acts on it) or, while there is none,
        the request (for its expiry)."""
        with self.db.read() as conn:
            resp = approvals.response_for(conn, request_id)
            req = approvals.get(conn, request_id)
            if resp is None and req["group_id"] is not None and req["status"] in ("closed", "cancelled"):
                # an item closed because a sibling was rejected: that rejection is its answer (the
                # response names the sibling's request, so the agent can say which item it was)
                req, resp = _rejecting_sibling(conn, req)
            if resp is not None:  # the agent acts on it: it must be the decision the chain recorded
                audit.check_read(conn, req["workflow_id"], {"approval_requests": [req]}, [resp])
            return resp, req

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking database work: in a worker thread when ``io_in_threads``, else right here."""
        if self.io_in_threads:
            return await anyio.to_thread.run_sync(fn, *args)
        return fn(*args)

    def sweep_expired(self, now: datetime | None = None, *, only: str | None = None) -> list[str]:
        """Resolve every due request by its on_timeout policy; exactly one process wins each request."""
        now = now or utcnow()
        with self.db.read() as conn:
            due = [r["request_id"] for r in approvals.due(conn, now)] if only is None else [only]
        resolved = []
        for request_id in due:
            with self.db.transaction() as conn:
                if decisions.expire(conn, self.capture, request_id, now) is not None:
                    resolved.append(request_id)
        return resolved

    def sweep(self, now: datetime | None = None) -> SweepReport:
        """The maintenance any SafeRun process performs: expire due requests, finish abandoned rollbacks."""
        now = now or utcnow()
        escalated = escalation.sweep(self.db, now)  # ladders first: a rung due with the timeout still runs
        report = SweepReport(expired=self.sweep_expired(now), escalated=escalated)
        with self.db.read() as conn:
            candidates = wf_store.rolling_back_since(conn, now - self.rollback_grace)
        for workflow_id in candidates:
            try:
                if self.rollback(workflow_id).final_state == WorkflowState.EXECUTING.value:
                    report.rolled_back.append(workflow_id)
            except CompensationError as exc:  # said once per period below, as a stuck item
                log.debug("sweep leaves %s rolling back: %s", workflow_id, exc.message)
            except InvalidTransition:
                continue  # its rollback was finished (or failed) by another process meanwhile
        report.completed = self.finish_settling(now)
        stuck_items = self.stuck_workflows(now)  # nobody finishes these: visible, warned once per period
        report.stuck = [s.workflow_id for s in stuck_items]
        self.stuck_warner.report(stuck_items, now)
        self.compact_counters()
        return report

    def compact_counters(self) -> bool:
        """Fold the kept counts' delta rows when there are enough of them (``storage.counters``): one
        read of a small table when there are not, so every sweep pass may ask."""
        with self.db.read() as conn:
            if not counters.needs_compaction(conn):
                return False
        with self.db.transaction() as conn:
            counters.compact(conn)
        return True

    def finish_settling(self, now: datetime | None = None) -> list[str]:
        """Complete workflows settled but never completed (the agent died between the two transactions).

        Settling already stored the result; completing only refunds the unearned escrow and closes the
        workflow, so any process may do it. Whoever loses the race to the row lock just skips it."""
        now = now or utcnow()
        with self.db.read() as conn:
            candidates = wf_store.settling_since(conn, now - self.rollback_grace)
        done = []
        for workflow_id in candidates:
            try:
                self.complete_workflow(workflow_id)
            except InvalidTransition:
                continue  # completed or failed by another process meanwhile
            done.append(workflow_id)
        return done


def _rejecting_sibling(conn: Any, req: RowMapping) -> tuple[RowMapping, RowMapping]:
    """The rejected item of ``req``'s group and its decision (closing happens only with a rejection)."""
    for item in approvals.group_items(conn, req["group_id"]):
        if item["x_decision"] == "REJECTED":
            resp = approvals.response_for(conn, item["request_id"])
            assert resp is not None
            return approvals.get(conn, item["request_id"]), resp
    raise DecisionConflict(req["request_id"], req["status"], "closed without a rejected sibling")
