"""Checkpoints and approval requests: how a workflow pauses for a human, and how a decision lands.

Split from ``orchestrator.py`` along the hot path: everything a checkpoint -> decision cycle runs is here
(``pause`` is one transaction, ``submit_approval`` another; see tests/test_hot_path_counts.py for what
each costs). ``WorkflowOrchestrator`` mixes this in and provides the lock, the role checks and the views.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import Connection, RowMapping

from saferun.core import decision_effects, decisions, mirror, parties, quorum, transitions
from saferun.core.checkpoints.capture import CheckpointCapture
from saferun.core.policy_gate import PolicyGate
from saferun.core.review import ReviewCheck, policy_of
from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    CheckpointConfig,
    CheckpointItem,
    CheckpointSnapshot,
    ExecutionState,
    WorkflowConfig,
    WorkflowExecution,
)
from saferun.core.state_machine.pause_input import Review, checked_items, item_review, parts_of
from saferun.domain import parameter_schema as param_schema
from saferun.domain.audit import bind
from saferun.domain.canonical import check_json
from saferun.domain.ids import new_id
from saferun.domain.states import Event, WorkflowState
from saferun.errors import InvalidInput
from saferun.storage import approvals, audit, snapshots
from saferun.storage.database import Database
from saferun.storage.schema import utcnow

if TYPE_CHECKING:
    from saferun.core.state_machine.access import RequestView


_POLICY_DECISIONS = {"auto_approve": ApprovalDecision.APPROVED, "forbid": ApprovalDecision.REJECTED}


class WorkflowPauses:
    """Capture, pause, decide. Needs the orchestrator's store, lock and checks (declared below)."""

    db: Database
    capture: CheckpointCapture
    actor: str
    identity_checks: parties.IdentityChecks
    io_in_threads: bool
    policy_gate: PolicyGate

    if TYPE_CHECKING:  # provided by WorkflowOrchestrator and WorkflowReads

        def _locked(self, workflow_id: str) -> AbstractContextManager[tuple[Connection, RowMapping]]: ...
        def _require(self, row: RowMapping, state: WorkflowState, action: str) -> None: ...
        def _require_executor(self, conn: Connection, row: RowMapping, action: str) -> None: ...
        def _config(self, row: Any) -> WorkflowConfig: ...
        def _fresh(self, conn: Connection, workflow_id: str) -> WorkflowExecution: ...
        def _snapshot(self, row: Any, state: ExecutionState | None = None) -> CheckpointSnapshot: ...
        def locked_check(
            self, conn: Connection, authorize: Callable[[RequestView], None]
        ) -> Callable[[Mapping[str, Any], Mapping[str, Any]], None]: ...

    async def create_checkpoint(self, workflow_id: str, state: ExecutionState) -> CheckpointSnapshot:
        """Store the state as an artifact; a checkpoint that needs no approval passes at once."""
        if self.io_in_threads:
            return await anyio.to_thread.run_sync(self.create_checkpoint_sync, workflow_id, state)
        return self.create_checkpoint_sync(workflow_id, state)

    def create_checkpoint_sync(self, workflow_id: str, state: ExecutionState) -> CheckpointSnapshot:
        parts = parts_of(state)  # refuses non-JSON state before any write
        with self._locked(workflow_id) as (conn, row):
            return self._capture(conn, row, state, parts)

    def request_approval(
        self,
        workflow_id: str,
        snapshot_id: str,
        summary: str,
        context: dict[str, Any] | None = None,
        *,
        decision_needed: str | None = None,
        recommendation: str | None = None,
        confidence: float | None = None,
        risk: dict[str, Any] | None = None,
        alerts: list[dict[str, Any]] | None = None,
        parameters: dict[str, Any] | None = None,
        parameter_schema: dict[str, Any] | None = None,
    ) -> ApprovalRequest:
        """Pause the workflow for a human (EXECUTING -> AWAITING_APPROVAL) and open an approval sub-job."""
        review = Review.checked(
            summary, context, decision_needed, recommendation, confidence, risk, alerts, parameter_schema
        )
        with self._locked(workflow_id) as (conn, row):
            snap = snapshots.get(conn, snapshot_id)
            if snap["workflow_id"] != workflow_id:
                raise InvalidInput("snapshot_id", f"snapshot {snapshot_id!r} belongs to another workflow")
            self._require(row, WorkflowState.EXECUTING, "request approval for")
            if parameters is None:
                parameters = self.capture.load_field(conn, snap["artifact_uri"], "parameters") or {}
            return self._open_request(conn, row, snap, review, parameters)

    async def pause(
        self,
        workflow_id: str,
        state: ExecutionState,
        summary: str,
        context: dict[str, Any] | None = None,
        **review: Any,
    ) -> tuple[CheckpointSnapshot, ApprovalRequest | None]:
        """``create_checkpoint`` and ``request_approval`` in one transaction: what an agent does at every
        checkpoint, at the cost of one commit. No request is opened when the checkpoint needs no approval."""
        if self.io_in_threads:
            return await anyio.to_thread.run_sync(
                functools.partial(self.pause_sync, workflow_id, state, summary, context, **review)
            )
        return self.pause_sync(workflow_id, state, summary, context, **review)

    def pause_sync(
        self,
        workflow_id: str,
        state: ExecutionState,
        summary: str,
        context: dict[str, Any] | None = None,
        **review: Any,
    ) -> tuple[CheckpointSnapshot, ApprovalRequest | None]:
        """``pause`` for callers in a worker thread (the server's routes) or without an event loop."""
        parts = parts_of(state)
        checked = Review.checked(summary, context, **review)
        with self._locked(workflow_id) as (conn, row):
            snapshot = self._capture(conn, row, state, parts)
            if snapshot.status == "passed":
                return snapshot, None
            snap_row = {"snapshot_id": snapshot.snapshot_id, "checkpoint_id": snapshot.checkpoint_id}
            row = {**row, "state": WorkflowState.EXECUTING.value}
            return snapshot, self._open_request(conn, row, snap_row, checked, dict(state.parameters))

    async def pause_items(
        self,
        workflow_id: str,
        state: ExecutionState,
        summary: str,
        items: list[CheckpointItem] | list[dict[str, Any]],
        context: dict[str, Any] | None = None,
        **review: Any,
    ) -> tuple[CheckpointSnapshot, list[ApprovalRequest]]:
        """``pause`` asking several things at once (parallel tool calls, a LangGraph step's interrupts):
        one snapshot, one request per item, all in one transaction. See ``pause_items_sync``."""
        if self.io_in_threads:
            return await anyio.to_thread.run_sync(
                functools.partial(
                    self.pause_items_sync, workflow_id, state, summary, items, context, **review
                )
            )
        return self.pause_items_sync(workflow_id, state, summary, items, context, **review)

    def pause_items_sync(
        self,
        workflow_id: str,
        state: ExecutionState,
        summary: str,
        items: list[CheckpointItem] | list[dict[str, Any]],
        context: dict[str, Any] | None = None,
        **review: Any,
    ) -> tuple[CheckpointSnapshot, list[ApprovalRequest]]:
        """Open one request per item at one checkpoint, sharing its snapshot (a *group*).

        The stored state's ``parameters`` become ``{item key: that item's parameters}``, so a modification
        of one item merges into its own entry when the group completes. Each item is decided on its own;
        the checkpoint completes (pays once, resumes the workflow) when the last one is approved or
        modified, and any rejection rejects it at once, closing the siblings still pending
        (``saferun/core/decisions.py``). Every item is checked before anything is written; an error names
        the item (``items.1.key``). No request is opened when the checkpoint needs no approval."""
        checked = checked_items(items)
        if state.parameters:
            raise InvalidInput("state.parameters", "with items, each item carries its own parameters")
        shared = Review.checked(summary, context, **review)
        reviews = [item_review(i, item, shared) for i, item in enumerate(checked)]
        parameters = {item.key: dict(item.parameters) for item in checked}
        for i, item in enumerate(checked):
            check_json(item.parameters, f"items.{i}.parameters")
        state = state.model_copy(update={"parameters": parameters})
        parts = parts_of(state)
        with self._locked(workflow_id) as (conn, row):
            snapshot = self._capture(conn, row, state, parts)
            if snapshot.status == "passed":
                return snapshot, []
            snap_row = {"snapshot_id": snapshot.snapshot_id, "checkpoint_id": snapshot.checkpoint_id}
            row = {**row, "state": WorkflowState.EXECUTING.value}
            opened = [(r, parameters[item.key], item.key) for r, item in zip(reviews, checked, strict=True)]
            return snapshot, self._open_requests(conn, row, snap_row, opened, new_id("grp"))

    def _capture(
        self, conn: Connection, row: RowMapping, state: ExecutionState, parts: dict[str, bytes]
    ) -> CheckpointSnapshot:
        workflow_id = row["workflow_id"]
        self._require(row, WorkflowState.EXECUTING, "create a checkpoint for")
        self._require_executor(conn, row, "create a checkpoint")
        cp = self._bind_checkpoint(conn, row, state.checkpoint_id)
        stored = self.capture.store_state(
            conn, parts, {"workflow_id": workflow_id, "checkpoint_id": cp.checkpoint_id}
        )
        status = "captured" if cp.requires_approval else "passed"
        snap = snapshots.insert_for(
            conn,
            workflow_id,
            cp.checkpoint_id,
            state.checkpoint_id,
            status,
            stored,
            parent_snapshot_id=row["last_approved_snapshot_id"],
            probe=not cp.requires_approval,  # passing now: was it paid before? (the INSERT says)
        )
        mirror.checkpoint_state(conn, row, snap["snapshot_id"], cp.checkpoint_id, stored.uri)
        audit.append(
            conn,
            workflow_id,
            "checkpoint_captured",
            row["executor_id"],
            {
                "snapshot_id": snap["snapshot_id"],
                "checkpoint_id": cp.checkpoint_id,
                "label": state.checkpoint_id,
                "artifact_uri": stored.uri,
                "raw_size_bytes": stored.raw_size,
                "compressed_size_bytes": stored.compressed_size,
                "new_bytes": stored.new_bytes,
                "bind": [bind("snapshots", "row", snap), bind("snapshots", "status", snap)],
            },
        )
        if not cp.requires_approval:
            decision_effects.complete_checkpoint(
                conn,
                row,
                cp.checkpoint_id,
                snap["snapshot_id"],
                row["supervisor_id"],
                self.actor,
                passed_before=snap["passed_before"],
            )
        return self._snapshot(snap, state)

    def _open_request(
        self, conn: Connection, row: Any, snap: Any, review: Review, parameters: dict[str, Any]
    ) -> ApprovalRequest:
        check_json(parameters, "parameters")
        return self._open_requests(conn, row, snap, [(review, parameters, None)], None)[0]

    def _open_requests(
        self,
        conn: Connection,
        row: Any,
        snap: Any,
        opened: list[tuple[Review, dict[str, Any], str | None]],
        group_id: str | None,
    ) -> list[ApprovalRequest]:
        """Insert the requests (one, or a group's items), then pause the workflow once for all of them."""
        workflow_id = row["workflow_id"]
        cp = self._config(row).checkpoint(snap["checkpoint_id"])
        assert cp is not None  # snapshots are only ever bound to configured checkpoints
        now = utcnow()
        rows, verdicts = [], []
        for i, (review, parameters, item_key) in enumerate(opened):
            field = "" if group_id is None else f"items.{i}."
            values = self._request_values(conn, row, cp, snap, review, parameters, now, field)
            if group_id is not None:  # a microsecond apart: the items list in the order they were asked
                values.update(
                    group_id=group_id, item_key=item_key, created_at=now + timedelta(microseconds=i)
                )
            # approval policy as code (saferun/core/policy_gate.py): judged as the request opens
            active = self.policy_gate.active
            verdict = self.policy_gate.verdict(conn, row, cp.name, values) if active else None
            values["quorum"] = quorum.rule_for(conn, row, cp, verdict, self.identity_checks)
            approvals.insert_request(conn, **values)
            verdicts.append(verdict)
            request_id = values["request_id"]
            mirror.approval_subjob(
                conn,
                row,
                request_id,
                cp.checkpoint_id,
                values["supervisor_id"],
                {"request_id": request_id, "snapshot_id": snap["snapshot_id"], "summary": review.summary},
            )
            rows.append(values)
        first, verdict = rows[0], verdicts[0]
        payload: dict[str, Any] = {
            "request_id": first["request_id"],
            "snapshot_id": snap["snapshot_id"],
            "checkpoint_id": cp.checkpoint_id,
            "approval_job_id": first["job_id"],
        }
        if group_id is None:
            if verdict is not None:
                payload["policy"] = verdict.as_dict()
        else:
            payload["group_id"] = group_id
            payload["items"] = [
                {
                    "request_id": v["request_id"],
                    "item_key": v["item_key"],
                    "approval_job_id": v["job_id"],
                    **({"policy": vd.as_dict()} if vd is not None else {}),
                }
                for v, vd in zip(rows, verdicts, strict=True)
            ]
        # what the reviewer is asked, bound as written (read paths refuse a row that differs)
        payload["bind"] = [
            entry
            for v in rows
            for entry in (
                bind("approval_requests", "row", v),
                bind("approval_requests", "review", {**v, "status": "pending"}),
            )
        ]
        transitions.apply(
            conn,
            row,
            Event.CHECKPOINT_REACHED,
            actor=row["executor_id"],
            reason=opened[0][0].summary if group_id is None else f"{len(rows)} items: {opened[0][0].summary}",
            audit_payload=payload,
        )
        statuses = ["pending"] * len(rows)
        for i, (values, verdict) in enumerate(zip(rows, verdicts, strict=True)):
            if verdict is None or verdict.action == "require_approval" or statuses[i] != "pending":
                continue
            # decided by the rule, in this transaction, recorded as the policy's (never as a person's)
            decision = _POLICY_DECISIONS[verdict.action]
            decisions.decide(
                conn,
                self.capture,
                workflow_id=workflow_id,
                request_id=values["request_id"],
                decision=decision,
                rationale=verdict.because,
                approved_by=verdict.actor,
                modifications=None,
                automatic=True,
                claim_status="decided",
            )
            statuses[i] = "decided"
            if decision == ApprovalDecision.REJECTED:  # the siblings still pending were closed with it
                statuses = ["closed" if st == "pending" else st for st in statuses]
        return [ApprovalRequest(status=st, **v) for st, v in zip(statuses, rows, strict=True)]

    def _request_values(
        self,
        conn: Connection,
        row: Any,
        cp: CheckpointConfig,
        snap: Any,
        review: Review,
        parameters: dict[str, Any],
        now: Any,
        field: str,
    ) -> dict[str, Any]:
        """One request's row; ``field`` prefixes error names."""
        declared = review.parameter_schema or cp.parameter_schema
        if declared:
            try:  # the proposal must fit its own schema
                param_schema.check_proposed(declared, parameters)
            except InvalidInput as exc:
                if not field:
                    raise
                raise InvalidInput(f"{field}{exc.field}", str(exc).split(": ", 1)[-1]) from None
        schema = param_schema.effective(declared, parameters)
        request_id = new_id("req")
        supervisor = row["supervisor_id"]
        # the approval sub-job (x402 Jobs): the database writes it from the request's row, with this id, its
        # history and its "waiting" notice (revision 0024, storage/jobs.py)
        job_id = new_id("job")
        return {
            "request_id": request_id,
            "workflow_id": row["workflow_id"],
            "snapshot_id": snap["snapshot_id"],
            "checkpoint_id": cp.checkpoint_id,
            "checkpoint_name": cp.name,
            "summary": review.summary,
            "decision_needed": review.decision_needed
            or cp.description
            or f"Approve '{cp.name}' and continue?",
            "context": review.context,
            "parameters": parameters,
            "parameter_schema": schema,
            "recommendation": review.recommendation,
            "confidence": review.confidence,
            "risk": review.risk,
            "alerts": review.alerts,
            "supervisor_id": supervisor,
            "job_id": job_id,
            "on_timeout": cp.on_timeout,
            "created_at": now,
            "expires_at": now + timedelta(seconds=cp.timeout_seconds),
            # the first rung of the checkpoint's escalation ladder, if it has one (saferun/core/escalation.py)
            "escalation_step": 0,
            "next_escalation_at": (
                now + timedelta(seconds=cp.escalation[0].after_seconds) if cp.escalation else None
            ),
        }

    def submit_approval(
        self,
        workflow_id: str | None,
        response: ApprovalResponse,
        authorize: Callable[[RequestView], None] | None = None,
    ) -> WorkflowExecution:
        """Decide a request exactly once. A second decision, or one after expiry, raises DecisionConflict.
        Returns the workflow after it, with its counts.

        ``authorize``: the caller's access check (the API's routes), run on the request and its workflow as
        this transaction reads them under the workflow's lock, checked against the audit chain first
        (``WorkflowAccess.locked_view``), before anything is written: no separate read before the
        decision, and no gap between the check and the claim for an escalation to slip into.

        The counts (snapshots, requests, decisions: they grow with the workflow's history) are read after
        the commit, outside the writers' lock; a caller that needs only the new state calls
        ``decide_request``, which reads none."""
        outcome = self.decide_request(response, workflow_id=workflow_id, authorize=authorize)
        with self.db.read() as conn:
            return self._fresh(conn, outcome.workflow_id)

    def decide_request(
        self,
        response: ApprovalResponse,
        *,
        workflow_id: str | None = None,
        authorize: Callable[[RequestView], None] | None = None,
    ) -> decisions.Outcome:
        """``submit_approval``'s decision, one transaction, answering what it did (the workflow's new state,
        the response, the snapshot approved) instead of the workflow re-read: what the API, the dashboard
        and the CLI answer with. Nothing in it grows with the workflow's history."""
        with self.db.transaction() as conn:
            return decisions.decide(
                conn,
                self.capture,
                workflow_id=workflow_id,
                request_id=response.request_id,
                decision=response.decision,
                rationale=response.rationale,
                approved_by=response.approved_by,
                modifications=response.modifications,
                response_id=response.response_id,
                approver_checks=self.identity_checks,
                reviewed=ReviewCheck(response.review_digest, policy_of(self.policy_gate)),
                authorize=None if authorize is None else self.locked_check(conn, authorize),
            )

    def _bind_checkpoint(self, conn: Connection, row: RowMapping, checkpoint_id: str) -> CheckpointConfig:
        """Which configured checkpoint a state belongs to.

        An exact id match wins. Otherwise (the seed's examples label states freely, e.g. "research_review")
        the state belongs to the first configured checkpoint not yet passed, or to the last one when all
        have passed (an agent may pass a repeating review more than once; it pays only once).
        """
        config = self._config(row)
        exact = config.checkpoint(checkpoint_id)
        if exact is not None:
            return exact
        ids = [cp.checkpoint_id for cp in config.checkpoints]
        open_id = snapshots.first_open(conn, row["workflow_id"], ids)
        return config.checkpoint(open_id) if open_id is not None else config.checkpoints[-1]
