"""What a route reads before it answers about, or acts on, one approval request: in one read transaction.

A remote agent's cycle is three requests (checkpoint, decision, long-poll). Each used to read the request,
its workflow and its decision as separate read transactions, every one re-reading and re-checking the
workflow's audit chain: nine checked reads per cycle, most of a cycle's server time (issue 12, target 3).
``request_view`` reads the request, the workflow row and the decision together and checks them against the
chain once; ``wait_for_view`` is the long-poll around it, so a long-poll is one checked read before it
waits and one after the notice that woke it.

The checks are the same as before, only batched: the workflow row against its chain (a forged party or
state is ``Tampered``), the request and the decision against the events that bound them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import Connection

from saferun.core import notify, quorum, review, views
from saferun.core.state_machine.models import ApprovalRequest, ApprovalResponse, WorkflowConfig
from saferun.storage import approvals, audit
from saferun.storage import quorum as quorum_store
from saferun.storage import workflows as wf_store
from saferun.storage.database import Database
from saferun.storage.schema import utcnow

if TYPE_CHECKING:
    from saferun.core.policy_gate import PolicyGate

log = logging.getLogger("saferun.core.state_machine.orchestrator")  # the name operators filter on


@dataclass(frozen=True)
class RequestView:
    """A request as one consistent, chain-checked read saw it: with its decision (when asked for and
    made) and the facts about its workflow an access check needs."""

    request: ApprovalRequest
    response: ApprovalResponse | None
    config: WorkflowConfig  # the workflow's parties (poster, executor, platform) and checkpoints
    supervisor_id: str | None  # the workflow's supervisor (named, or assigned by the marketplace)
    expires_at: Any


def _check_request(
    conn: Connection, req: Mapping[str, Any], row: Mapping[str, Any], resp: Mapping[str, Any] | None
) -> list[Any] | None:
    """Check a request, its workflow row and its decision (when given) against the workflow's audit chain,
    with a quorum request's votes, which are served with it (docs/quorum.md): ``Tampered`` for a forged
    row. Returns the votes it read, None for a request without a quorum."""
    request_id = req["request_id"]
    rows: dict[str, list[Any]] = {"approval_requests": [req]}
    votes: list[Any] | None = None
    if req["quorum"] is not None:
        votes = rows["approval_votes"] = quorum_store.votes_for(conn, request_id)
    audit.check_read(
        conn,
        req["workflow_id"],
        rows,
        [resp] if resp else [],
        workflow=row,
        votes_of=request_id if votes is not None else None,
    )
    return votes


@dataclass(frozen=True)
class RequestGate:
    """What a long-poll needs before it waits: whether the request is still pending, when it expires, and
    the workflow's parties for the access check. One indexed read, no chain check: nothing of it is served
    (the answer is always a checked ``RequestView``, and the access check runs again on that)."""

    status: str
    expires_at: Any
    config: WorkflowConfig
    supervisor_id: str | None


@dataclass(frozen=True)
class WorkflowView:
    """A workflow as an access check needs it, read and checked against its chain: its parties and
    checkpoints (``config``), its supervisor and its state."""

    workflow_id: str
    config: WorkflowConfig
    supervisor_id: str | None
    state: str


class WorkflowAccess:
    """Checked reads for the routes; mixed into ``WorkflowOrchestrator``."""

    db: Database
    policy_gate: PolicyGate
    io_in_threads: bool

    if TYPE_CHECKING:  # provided by WorkflowWaits

        def sweep_expired(self, now: Any = None, *, only: str | None = None) -> list[str]: ...

    def workflow_view(self, workflow_id: str) -> WorkflowView:
        """What ``get_workflow`` checks, without what only an answer about the workflow needs (its counts of
        snapshots, requests and decisions, the full model): the routes that act on a workflow check the
        caller against this, then act in their own transaction."""
        with self.db.read() as conn:
            row = wf_store.get(conn, workflow_id)
            audit.check_read(conn, workflow_id, workflow=row)
            return WorkflowView(workflow_id, views.config(row), row["supervisor_id"], row["state"])

    def request_view(self, request_id: str, *, decision: bool = True, digest: bool = True) -> RequestView:
        """The request, its workflow and (with ``decision``) its decision, checked against the workflow's
        audit chain in one pass; ``ApprovalRequestNotFound`` for an unknown id, ``Tampered`` for a forged
        row. ``digest``: also what the reviewer is shown (``review_digest``) while the request is pending,
        which costs two more reads; a caller that only acts on the request does not need it."""
        with self.db.read() as conn:
            req, row, resp = approvals.with_context(conn, request_id)
            if not decision:
                resp = None
            votes = _check_request(conn, req, row, resp)
            request = views.request(req)
            if votes is not None:
                mode = self.identity_checks  # type: ignore[attr-defined]
                progress = quorum.progress(conn, req, row, mode, votes)
                request = request.model_copy(update=progress)
            if digest and req["status"] == "pending":
                request.review_digest = review.current(conn, req, review.policy_of(self.policy_gate)).digest
            return RequestView(
                request=request,
                response=views.response(resp) if resp else None,
                config=views.config(row),
                supervisor_id=row["supervisor_id"],
                expires_at=req["expires_at"],
            )

    async def wait_for_view(
        self,
        request_id: str,
        timeout: float,
        check: Callable[[RequestView | RequestGate], None] = lambda _: None,
        poll_interval: float = 0.25,
    ) -> RequestView:
        """``request_view`` once the request is decided, or as it stands when ``timeout`` seconds passed.

        ``check`` is an access check: it raises for a caller who may not see the request. It runs on the
        first read, before anything waits (so a foreign id is refused at once, as an unknown one), and
        again on the view that is served. While the request is pending and time is left, that first read
        is a ``request_gate`` (one light read), not a checked view: the view read before a wait was thrown
        away by the view read after it, and was a tenth of a server's cycle (issue 12, target 3). The wait
        is ``wait_for_decision``'s: the watch is registered before the first read, so a decision committed
        after it wakes this at once (any process on PostgreSQL, this one on SQLite); polling backs off from
        50 ms to ``poll_interval`` as the fallback, and a request past its expiry is resolved here by its
        on_timeout policy.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # a decision made through this server (its API, its dashboard) wakes the watch at once, on SQLite
        # too; polls only find one made by another process on the same SQLite file (the CLI), so they
        # start at 50 ms rather than 5: under load each poll was a thread hop for nothing
        delay = 0.05
        woken_by = "first read"
        notifier = notify.notifier_for(self.db)
        pending = functools.partial(self._still_pending, request_id)
        with notifier.watch("decision", request_id) as watch:
            changed = True  # read the request in full: first, after a notice, when a poll saw it move
            gate_first = True  # the first read, while it finds the request pending, is the light one
            while True:
                # the answer's digest matters only when it goes out pending (no decision, time is up)
                final = loop.time() >= deadline
                if changed or final:
                    watch.clear()  # right before the read: a notice from now on is not lost
                    expires_at = None
                    if gate_first and not final:
                        gate_first = False
                        gate = await self._in_thread(functools.partial(self.request_gate, request_id))
                        check(gate)
                        if gate.status == "pending" and gate.expires_at > utcnow():
                            expires_at = gate.expires_at
                    if expires_at is None:
                        read = functools.partial(self.request_view, request_id, digest=final)
                        view: RequestView = await self._in_thread(read)
                        check(view)
                        if view.response is not None:
                            extra = {"request_id": request_id, "woken_by": woken_by}
                            log.debug("decision on %s found by %s", request_id, woken_by, extra=extra)
                            return view
                        if final or view.request.status != "pending":
                            return view
                        expires_at = view.expires_at
                until_expiry = (expires_at - utcnow()).total_seconds()
                if until_expiry <= 0:
                    await self._in_thread(functools.partial(self.sweep_expired, only=request_id))
                    woken_by, changed = "expiry", True
                    continue
                step = min(poll_interval if notifier.listening else delay, until_expiry + 0.001)
                step = min(step, max(deadline - loop.time(), 0.0))
                if await watch.wait(step):
                    woken_by, changed = "notice", True
                else:
                    # a poll (a decision by another process on SQLite, or a listener reconnecting) asks one
                    # indexed question; the chain is read and checked only once the answer has moved. The
                    # watch is cleared before the question, never after: a notice that arrives while it
                    # is asked stays set and wakes the next wait at once.
                    watch.clear()
                    woken_by, changed = "poll", not await self._in_thread(pending)
                    delay = min(poll_interval, delay * 2)

    def locked_check(
        self, conn: Connection, authorize: Callable[[RequestView], None]
    ) -> Callable[[Mapping[str, Any], Mapping[str, Any]], None]:
        """``authorize`` as a decision's in-transaction check (``decisions.decide(authorize=...)``): the
        request and workflow rows the decision read under the workflow's lock are checked against the audit
        chain as ``request_view`` checks them (``_check_request``), then handed to ``authorize``
        as a ``RequestView`` (without a decision: there is none while it is pending)."""

        def check(req: Mapping[str, Any], row: Mapping[str, Any]) -> None:
            _check_request(conn, req, row, None)
            view = RequestView(
                request=views.request(req),
                response=None,
                config=views.config(row),
                supervisor_id=row["supervisor_id"],
                expires_at=req["expires_at"],
            )
            authorize(view)

        return check

    def request_gate(self, request_id: str) -> RequestGate:
        """The request's status and expiry with its workflow's parties (``RequestGate``); unchecked, so
        only for deciding whether to wait. ``ApprovalRequestNotFound`` for an unknown id."""
        with self.db.read() as conn:
            row = approvals.gate(conn, request_id)
            return RequestGate(row["status"], row["expires_at"], views.config(row), row["supervisor_id"])

    def _still_pending(self, request_id: str) -> bool:
        """Whether the request is still pending: a poll's one indexed read, not a chain check."""
        return approvals.is_pending(self.db.engine, request_id)

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        if self.io_in_threads:
            return await anyio.to_thread.run_sync(fn)
        return fn()
