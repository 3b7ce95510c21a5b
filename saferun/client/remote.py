"""``RemoteOrchestrator``: the orchestrator methods an agent uses, over HTTP against a SafeRun server.

    async with supervised(config, RemoteOrchestrator("http://saferun:8000", api_key=KEY)) as run:
        ...   # exactly the code that runs against an in-process WorkflowOrchestrator

Same method names, signatures and return types as ``WorkflowOrchestrator`` (pydantic models built from the
server's JSON). The lifecycle calls are synchronous, as locally (they block for one round trip);
``pause``, ``wait_for_decision`` and ``arollback`` are async and do not block the event loop.

Compensations run *here*, in the agent's process, from this orchestrator's registry (default: the
process-wide ``saferun.registry``, plus any modules named by ``SAFERUN_COMPENSATIONS``), through the
server's step protocol: list the steps to undo, claim each (so no two processes run it), run it with
retries, report the outcome, then let the server resume the workflow from its last approved checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from saferun.client.http import AsyncSafeRunClient, SafeRunClient
from saferun.config import get_settings
from saferun.core.rollback.reconciliation import (
    CompensationRegistry,
    RetryPolicy,
    RollbackReport,
    compensation_key,
    run_compensation,
)
from saferun.core.rollback.reconciliation import registry as default_registry
from saferun.core.state_machine.models import (
    ApprovalRequest,
    ApprovalResponse,
    CheckpointItem,
    CheckpointSnapshot,
    ExecutionState,
    WorkflowConfig,
    WorkflowExecution,
)
from saferun.domain.states import WorkflowState
from saferun.errors import ClaimLost, CompensationError, SnapshotNotFound

LONG_POLL_SECONDS = 30.0  # per call; the server allows up to 60
REVIEW_FIELDS = ("decision_needed", "recommendation", "confidence", "risk", "alerts", "parameter_schema")


class RemoteOrchestrator:
    """What ``supervised()`` needs from an orchestrator, served by a SafeRun server over HTTP.

    ``retry`` is the compensations' retry policy (as for ``WorkflowOrchestrator``); ``http_retry`` the
    policy for retrying idempotent GETs. ``actor`` arguments are accepted for compatibility and ignored:
    the server records the caller its API key identifies.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        registry: CompensationRegistry | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        http_retry: RetryPolicy | None = None,
        owner: str | None = None,
    ) -> None:
        self.base_url, self.api_key, self.timeout, self.http_retry = base_url, api_key, timeout, http_retry
        self.client = SafeRunClient(base_url, api_key, timeout=timeout, retry=http_retry)
        self.registry = registry or default_registry
        self.retry = retry or RetryPolicy()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        modules = get_settings().compensation_modules
        if modules:
            self.registry.import_modules(modules)
        self._async: AsyncSafeRunClient | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        # What the API's workflow answer does not carry, learnt once per workflow (configs never change).
        self._meta: dict[str, dict[str, Any]] = {}
        self._snapshot_uris: dict[str, str] = {}

    # ------------------------------------------------------------------ resources
    def aclient(self) -> AsyncSafeRunClient:
        """The async client of the running event loop (a new one when the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            self._async = AsyncSafeRunClient(
                self.base_url, self.api_key, timeout=self.timeout, retry=self.http_retry
            )
            self._async_loop = loop
        return self._async

    def close(self) -> None:
        self.client.close()

    async def aclose(self) -> None:
        if self._async is not None and self._async_loop is asyncio.get_running_loop():
            await self._async.aclose()
        self._async = self._async_loop = None
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ lifecycle
    def initialize_workflow(self, config: WorkflowConfig, *, actor: str | None = None) -> WorkflowExecution:
        created = self.client.create_workflow(config)
        setup = created.get("x402_setup") or {}
        self._meta[config.workflow_id] = {
            "config": config,
            "job_id": setup.get("job_id"),
            "escrow_id": setup.get("escrow_id"),
        }
        return self.get_workflow(config.workflow_id)

    def start_execution(self, workflow_id: str, *, actor: str | None = None) -> WorkflowExecution:
        return self._execution(self.client.start(workflow_id))

    def get_workflow(self, workflow_id: str) -> WorkflowExecution:
        return self._execution(self.client.get_workflow(workflow_id))

    def settle_workflow(
        self, workflow_id: str, result: dict[str, Any] | None = None, *, actor: str | None = None
    ) -> WorkflowExecution:
        return self._execution(self.client.settle(workflow_id, result))

    def complete_workflow(self, workflow_id: str, *, actor: str | None = None) -> WorkflowExecution:
        return self._execution(self.client.complete(workflow_id))

    def fail_workflow(self, workflow_id: str, error: str, *, actor: str | None = None) -> WorkflowExecution:
        return self._execution(self.client.fail(workflow_id, error))

    def cancel_workflow(
        self, workflow_id: str, reason: str, *, actor: str | None = None
    ) -> WorkflowExecution:
        return self._execution(self.client.cancel(workflow_id, reason))

    # ------------------------------------------------------------------ checkpoints and decisions
    async def create_checkpoint(self, workflow_id: str, state: ExecutionState) -> CheckpointSnapshot:
        """Store the state without asking for approval (a checkpoint that needs none passes at once)."""
        out = await self.aclient().checkpoint(workflow_id, state, request_approval=False)
        return await self._snapshot(workflow_id, state, out)

    async def pause(
        self,
        workflow_id: str,
        state: ExecutionState,
        summary: str,
        context: dict[str, Any] | None = None,
        **review: Any,
    ) -> tuple[CheckpointSnapshot, ApprovalRequest | None]:
        """Capture the state and open its approval request (none when the checkpoint needs no approval)."""
        unknown = set(review) - set(REVIEW_FIELDS)
        if unknown:
            raise TypeError(f"pause() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
        client = self.aclient()
        out = await client.checkpoint(workflow_id, state, summary=summary, context=context, **review)
        snapshot = await self._snapshot(workflow_id, state, out)
        request_id = out.get("approval_request_id")
        if not request_id:
            return snapshot, None
        request = out.get("approval_request") or (await client.get_approval(request_id))["request"]
        return snapshot, ApprovalRequest.model_validate(request)

    async def pause_items(
        self,
        workflow_id: str,
        state: ExecutionState,
        summary: str,
        items: list[Any],
        context: dict[str, Any] | None = None,
        **review: Any,
    ) -> tuple[CheckpointSnapshot, list[ApprovalRequest]]:
        """Capture the state and open one request per item (none when the checkpoint needs no approval);
        the server checks the items (``WorkflowOrchestrator.pause_items_sync``)."""
        unknown = set(review) - set(REVIEW_FIELDS)
        if unknown:
            raise TypeError(f"pause_items() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
        body = [i.model_dump(mode="json") if isinstance(i, CheckpointItem) else i for i in items]
        client = self.aclient()
        out = await client.checkpoint(
            workflow_id, state, summary=summary, context=context, items=body, **review
        )
        snapshot = await self._snapshot(workflow_id, state, out)
        return snapshot, [ApprovalRequest.model_validate(r) for r in out.get("approval_requests") or []]

    async def wait_for_decision(
        self, request_id: str, timeout: float | None = None, poll_interval: float = 0.25
    ) -> ApprovalResponse:
        """Long-poll the server until the decision exists (at most ``LONG_POLL_SECONDS`` per call).

        ``timeout`` bounds only this wait (TimeoutError); the request keeps its own expiry, which the
        server applies. ``poll_interval`` is accepted for compatibility: the server wakes the call."""
        client = self.aclient()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            wait = LONG_POLL_SECONDS
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - loop.time()))
            answer = await client.get_approval(request_id, wait=wait)
            if answer.get("decision") is not None:
                return ApprovalResponse.model_validate(answer["decision"])
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError(f"no decision on {request_id} within {timeout} s")
            if answer.get("status") != "pending":  # closed without a decision: do not spin on it
                await asyncio.sleep(poll_interval)

    def get_approval_request(self, request_id: str) -> ApprovalRequest:
        return ApprovalRequest.model_validate(self.client.get_approval(request_id)["request"])

    def get_approval_response(self, request_id: str) -> ApprovalResponse | None:
        decision = self.client.get_approval(request_id).get("decision")
        return ApprovalResponse.model_validate(decision) if decision else None

    def checkpoint_items(self, request_id: str) -> list[tuple[ApprovalRequest, ApprovalResponse | None]]:
        """The items asked at ``request_id``'s checkpoint pause, each with its decision (server order)."""
        items = self.client.checkpoint_items(request_id)["items"]
        return [
            (
                ApprovalRequest.model_validate(i["request"]),
                ApprovalResponse.model_validate(i["decision"]) if i["decision"] else None,
            )
            for i in items
        ]

    def pending_approvals(self, workflow_id: str | None = None) -> list[ApprovalRequest]:
        """Requests still waiting for a decision (all, or one workflow's), as the server sees them."""
        items = self.client.pending(workflow_id)["pending_approvals"]
        return [ApprovalRequest.model_validate(item) for item in items]

    def add_alerts(
        self, request_id: str, alerts: list[dict[str, Any]], *, actor: str | None = None
    ) -> ApprovalRequest:
        """What a MonitorAgent beside a remote agent calls; the server records it under the caller."""
        return ApprovalRequest.model_validate(self.client.add_alerts(request_id, alerts)["request"])

    def submit_approval(self, workflow_id: str | None, response: ApprovalResponse) -> WorkflowExecution:
        """Decide a request as ``response`` says (a reviewer's call; the server checks who may)."""
        self.client.submit_decision(
            response.request_id,
            response.decision,
            approved_by=response.approved_by,
            rationale=response.rationale,
            modifications=response.modifications,
            review_digest=response.review_digest,
        )
        return self.get_workflow(workflow_id or self.get_approval_request(response.request_id).workflow_id)

    # ------------------------------------------------------------------ snapshots and states
    def list_snapshots(self, workflow_id: str) -> list[CheckpointSnapshot]:
        snaps = [
            CheckpointSnapshot.model_validate(s) for s in self.client.snapshots(workflow_id)["snapshots"]
        ]
        self._snapshot_uris.update({s.snapshot_id: s.artifact_uri for s in snaps})
        return snaps

    def get_snapshot_state(self, snapshot_id: str) -> ExecutionState:
        uri = self._snapshot_uris.get(snapshot_id)
        if uri is None:  # the API reads snapshots per workflow: look in the workflows seen here
            for workflow_id in list(self._meta):
                self.list_snapshots(workflow_id)
                if snapshot_id in self._snapshot_uris:
                    break
            uri = self._snapshot_uris.get(snapshot_id)
        if uri is None:
            raise SnapshotNotFound(snapshot_id)
        return ExecutionState.model_validate(json.loads(self.client.artifact(uri)))

    def latest_approved_state(self, workflow_id: str) -> ExecutionState | None:
        state = self.client.latest_state(workflow_id).get("state")
        return ExecutionState.model_validate(state) if state is not None else None

    # ------------------------------------------------------------------ saga
    def register_step(
        self, workflow_id: str, name: str, compensation: str, args: dict[str, Any] | None = None
    ) -> str:
        return str(self.client.register_step(workflow_id, name, compensation, args)["step_id"])

    def saga_steps(self, workflow_id: str) -> list[dict[str, Any]]:
        return list(self.client.steps(workflow_id)["steps"])

    async def arollback(
        self, workflow_id: str, *, stale_claim_seconds: float | None = None
    ) -> RollbackReport:
        """Undo the steps since the last approved checkpoint, here, and resume from it on the server.

        Raises CompensationError, changing nothing, when a compensation name does not resolve in this
        process; another process that knows it (or the server's sweep) can finish the rollback.
        ``stale_claim_seconds`` is kept for parity with the in-process orchestrator; over HTTP the server's
        ``SAFERUN_STALE_CLAIM_SECONDS`` applies (a caller may not choose it, issue 9)."""
        client = self.aclient()
        steps = (await client.steps_to_undo(workflow_id))["steps"]
        missing = sorted(
            {s["compensation"] for s in steps if self.registry.resolve(s["compensation"]) is None}
        )
        if missing:
            raise CompensationError(
                f"compensation(s) {', '.join(missing)} are not registered in this process",
                workflow_id=workflow_id,
                missing=missing,
            )
        report = RollbackReport(workflow_id)
        for step in steps:
            step_id = step["step_id"]
            claimed = await client.claim_step(workflow_id, step_id, self.owner)
            if not claimed["claimed"]:
                break  # another process holds it (and goes on down the list), or the rollback ended
            fn = self.registry.resolve(step["compensation"])
            assert fn is not None
            key = claimed.get("idempotency_key") or compensation_key(workflow_id, step_id)
            ok, error = await run_compensation(fn, step["args"], self.retry, key)
            try:
                generation = claimed.get("generation")
                finished = await client.finish_step(workflow_id, step_id, ok, error, generation)
            except ClaimLost:
                break  # taken over while this process was slow: the new holder records the step
            if not ok:
                report.failed = step["name"]
                report.error = (
                    f"compensation {step['compensation']!r} of step {step['name']!r} failed: {error}"
                )
                report.final_state = finished["workflow_status"]
                return report
            report.compensated.append(step["name"])
        done = await client.complete_rollback(workflow_id, report.compensated)
        report.final_state = done["final_state"]
        report.restored_snapshot_id = done["restored_snapshot_id"]
        report.restored_checkpoint_id = done["restored_checkpoint_id"]
        return report

    # ------------------------------------------------------------------ reads
    def stats(self) -> dict[str, Any]:
        return self.client.stats()

    def audit_events(self, workflow_id: str) -> list[dict[str, Any]]:
        return list(self.client.audit(workflow_id)["events"])

    def ledger_entries(self, workflow_id: str) -> list[dict[str, Any]]:
        return list(self.client.ledger(workflow_id)["entries"])

    # ------------------------------------------------------------------ JSON -> models
    def _execution(self, detail: dict[str, Any]) -> WorkflowExecution:
        """A ``WorkflowExecution`` from ``GET /api/workflows/{id}``. The answer does not carry the config
        or the creation time; they are taken (once per workflow) from what this orchestrator created, or
        from the workflow's ``workflow_created`` audit event. Fields the answer may carry win."""
        workflow_id = detail["workflow_id"]
        meta = self._workflow_meta(workflow_id, need_created="created_at" not in detail)
        stamps = [detail.get(k) or meta.get(k) for k in ("created_at", "started_at", "completed_at")]
        values = {
            "workflow_id": workflow_id,
            "config": detail.get("config") or meta["config"],
            "current_state": WorkflowState(detail["status"]),
            "current_checkpoint": detail["current_checkpoint"],
            "total_checkpoints": detail["total_checkpoints"],
            "supervisor_id": detail.get("supervisor_id"),
            "job_id": detail.get("job_id", meta.get("job_id")),
            "escrow_id": detail.get("escrow_id", meta.get("escrow_id")),
            "last_approved_snapshot_id": detail.get("last_approved_snapshot_id"),
            "result_uri": detail.get("result_uri"),
            "error_message": detail.get("error_message"),
            "created_at": detail.get("created_at") or meta["created_at"],
            # not in the answer: the latest time the answer shows is the best available bound
            "updated_at": detail.get("updated_at") or _latest([s for s in stamps if s]),
            "started_at": detail.get("started_at"),
            "completed_at": detail.get("completed_at"),
            "snapshots": detail.get("snapshots", 0),
            "approval_requests": detail.get("approval_requests", 0),
            "approval_responses": detail.get("approval_responses", 0),
        }
        return WorkflowExecution.model_validate(values)

    def _workflow_meta(self, workflow_id: str, *, need_created: bool) -> dict[str, Any]:
        meta = self._meta.setdefault(workflow_id, {})
        if "config" in meta and ("created_at" in meta or not need_created):
            return meta
        for event in self.client.audit(workflow_id)["events"]:
            payload = event.get("payload") or {}
            if event.get("kind") == "workflow_created":
                meta.setdefault("config", WorkflowConfig.model_validate(payload["config"]))
                meta.setdefault("job_id", payload.get("job_id"))
                meta["created_at"] = event.get("at")
            if payload.get("escrow_id") and not meta.get("escrow_id"):
                meta["escrow_id"] = payload["escrow_id"]
        return meta

    async def _snapshot(
        self, workflow_id: str, state: ExecutionState, out: dict[str, Any]
    ) -> CheckpointSnapshot:
        """The snapshot a checkpoint answer names. The answer lacks its sequence, time and parent, so
        they are read from the workflow's snapshot list (unless the answer carries them)."""
        self._snapshot_uris[out["snapshot_id"]] = out["artifact_uri"]
        if "sequence" in out and "timestamp" in out:
            return CheckpointSnapshot.model_validate(
                {"workflow_id": workflow_id, **out, "execution_state": state}
            )
        listing = (await self.aclient().snapshots(workflow_id))["snapshots"]
        row = next(s for s in reversed(listing) if s["snapshot_id"] == out["snapshot_id"])
        return CheckpointSnapshot.model_validate({**row, "execution_state": state})


def _latest(values: list[Any]) -> datetime:
    """The latest of some timestamps (datetimes or ISO text), comparable whatever the store returned."""
    parsed = [
        v if isinstance(v, datetime) else datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        for v in values
    ]
    return max(parsed, key=lambda d: d if d.tzinfo else d.replace(tzinfo=UTC))
