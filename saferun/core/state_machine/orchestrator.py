"""``WorkflowOrchestrator``: the seed's API over SafeRun's durable engine.

Every call is one database transaction (state change + ledger + audit commit together) against the
configured store, so any number of orchestrators, in any number of processes, see one truth, and a
process that restarts carries on where the last one stopped. Method names and sync/async shapes are the
seed's (``initialize_workflow`` is sync, ``create_checkpoint`` is async); additions are named for what
they do (``register_step``, ``wait_for_decision``, ``rollback``, ``sweep``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, RowMapping

from saferun.config import get_settings
from saferun.core import decisions, escrow, mirror, notify, parties, quorum, transitions, views
from saferun.core.checkpoints.capture import CheckpointCapture
from saferun.core.policy_gate import PolicyGate
from saferun.core.rollback import saga as saga_ops
from saferun.core.rollback.reconciliation import (
    CompensationRegistry,
    RetryPolicy,
    RollbackReport,
)
from saferun.core.rollback.reconciliation import (
    registry as default_registry,
)
from saferun.core.rollback.saga import SagaRunner
from saferun.core.rollback.stuck import StuckWarner
from saferun.core.state_machine.access import WorkflowAccess
from saferun.core.state_machine.models import (
    ApprovalRequest,
    WorkflowConfig,
    WorkflowExecution,
)
from saferun.core.state_machine.pausing import WorkflowPauses
from saferun.core.state_machine.reads import WorkflowReads
from saferun.core.state_machine.stuck_ops import StuckOperations
from saferun.core.state_machine.waiting import SweepReport, WorkflowWaits
from saferun.domain.approval_policy import Policy
from saferun.domain.audit import BINDS_MARK, bind
from saferun.domain.canonical import canonical_bytes, check_json
from saferun.domain.ids import new_id
from saferun.domain.money import to_micro
from saferun.domain.monitor_rules import MonitorConfig
from saferun.domain.policy import Caller
from saferun.domain.states import FAILURE_EVENT, Event, WorkflowState
from saferun.errors import (
    Conflict,
    DecisionConflict,
    InvalidInput,
    InvalidTransition,
    WorkflowNotFound,
)
from saferun.platform.base import Platform
from saferun.platform.delivery import DeliveryReport, OutboxDelivery
from saferun.platform.embedded import EmbeddedPlatform
from saferun.storage import approvals, audit, jobs, saga
from saferun.storage import workflows as wf_store
from saferun.storage.database import Database, get_database
from saferun.storage.schema import utcnow
from saferun.storage.visibility import visible_ids

if TYPE_CHECKING:
    from saferun.api.x402.client import X402Integration

log = logging.getLogger(__name__)


class WorkflowOrchestrator(WorkflowPauses, WorkflowWaits, WorkflowReads, WorkflowAccess, StuckOperations):
    """Drives workflows through the seven states. Cheap to create; all state lives in the database."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # The original's form, ``WorkflowOrchestrator(x402_integration)`` without ``database=``, gets the
        # original's answers (True/False, lists) around this strict orchestrator (seed_compat.py).
        seed_form = args or "x402_integration" in kwargs
        if cls is WorkflowOrchestrator and seed_form and "database" not in kwargs:
            from saferun.core.state_machine.seed_compat import SeedOrchestrator

            return SeedOrchestrator(*args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        x402_integration: X402Integration | None = None,
        *,
        database: Database | None = None,
        registry: CompensationRegistry | None = None,
        retry: RetryPolicy | None = None,
        actor: str = "saferun:orchestrator",
        identity_checks: str | parties.IdentityChecks | None = None,
        approval_policy: Policy | None = None,
    ) -> None:
        self.x402 = x402_integration
        self.db = database or getattr(x402_integration, "database", None) or get_database()
        self.registry = registry or default_registry
        self.retry = retry or RetryPolicy()
        self.capture = CheckpointCapture(self.db.artifacts)
        self.actor = actor
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        settings = get_settings()
        if settings.compensation_modules:
            self.registry.import_modules(settings.compensation_modules)
        self.rollback_grace = timedelta(seconds=settings.rollback_grace_seconds)
        self.stuck_warner = StuckWarner(timedelta(seconds=settings.stuck_warn_seconds))
        self.stale_claim_seconds = settings.stale_claim_seconds  # a compensation claim older is taken over
        self.identity_checks = parties.parse_mode(identity_checks or settings.identity_checks)
        self.policy_gate = PolicyGate(approval_policy, settings.approval_policy)
        self._delivery: OutboxDelivery | None = None
        # True in the server: the async methods run their database work in a worker thread, so no
        # transaction (and no fsync) ever blocks the event loop. An agent's own loop may block on its own
        # checkpoint (False, the default): one thread hop less per call.
        self.io_in_threads = False
        # workflows this orchestrator creates keep their jobs and money on this platform (None: embedded)
        self.platform_url: str | None = (
            x402_integration.api_url
            if x402_integration is not None and x402_integration.mode == "remote"
            else None
        )

    # ------------------------------------------------------------------ lifecycle (seed API)
    def initialize_workflow(self, config: WorkflowConfig, *, actor: str | None = None) -> WorkflowExecution:
        """Create the workflow, its main job and its escrow lock in one transaction (INITIALIZED).

        The parties are checked in their roles first; a workflow that names no supervisor gets the
        marketplace's best eligible one; a workflow funded through x402 locks nothing yet (its escrow
        arrives with the poster's payment, and it cannot start before).
        """
        actor = actor or config.poster_id
        amount = to_micro(config.escrow_amount, "escrow_amount")
        cfg = config.model_dump(mode="json")
        check_json(cfg, "config")
        MonitorConfig.from_metadata(config.metadata.get("monitor"))  # refuse impossible rules now
        with self.db.transaction() as conn:
            self._initialize_in(conn, config, cfg, amount, actor)
            return self._fresh(conn, config.workflow_id)

    def _initialize_in(
        self, conn: Connection, config: WorkflowConfig, cfg: dict[str, Any], amount: int, actor: str
    ) -> None:
        """``initialize_workflow``'s writes inside the caller's transaction (also the bulk path's:
        ``saferun.core.bulk`` writes exactly these rows for many workflows per transaction)."""
        if wf_store.exists(conn, config.workflow_id):
            raise Conflict(f"workflow {config.workflow_id!r} already exists", workflow_id=config.workflow_id)
        parties.check_config_parties(
            conn, config.poster_id, config.executor_id, config.supervisor_id, self.identity_checks
        )
        for i, cp in enumerate(config.checkpoints):  # a quorum its group could never reach: refused now
            if cp.quorum is not None:
                quorum.require_feasible(
                    conn,
                    cp.quorum,
                    poster_id=config.poster_id,
                    executor_id=config.executor_id,
                    mode=self.identity_checks,
                    field=f"checkpoints.{i}.quorum.of",
                )
        assigned = None  # the marketplace's pick, when the config names no supervisor
        if config.supervisor_id is None:
            assigned = parties.pick_supervisor(conn, cfg, config.poster_id, config.executor_id)
        supervisor = config.supervisor_id or assigned
        wf_store.insert_workflow(
            conn,
            workflow_id=config.workflow_id,
            name=config.name,
            description=config.description,
            state=WorkflowState.INITIALIZED.value,
            config=cfg,
            poster_id=config.poster_id,
            executor_id=config.executor_id,
            supervisor_id=supervisor,
            escrow_micro=amount,
            escrow_id=f"escrow_{config.workflow_id}",
            platform_url=self.platform_url,
        )
        job_id = jobs.create(
            conn,
            job_type="supervised_workflow",
            workflow_id=config.workflow_id,
            data={
                "workflow_id": config.workflow_id,
                "executor_id": config.executor_id,
                "escrow_amount": str(config.escrow_amount),
            },
        )
        wf_store.update_fields(conn, config.workflow_id, job_id=job_id)
        notify.publish(conn, "workflow", config.workflow_id)
        audit.append(  # the database writes the first ``transitions`` row (none -> initialized) from it
            conn,
            config.workflow_id,
            "workflow_created",
            actor,
            # every row of this workflow is bound to its chain (domain.audit.BINDS_MARK)
            {"name": config.name, "config": cfg, "job_id": job_id, BINDS_MARK: 1},
        )
        if assigned is not None:
            parties.record_assignment(conn, config.workflow_id, assigned, "saferun:marketplace")
        row = wf_store.get(conn, config.workflow_id)
        mirror.main_job(conn, row)
        if config.funding == "ledger":
            escrow.lock(conn, row, actor)

    def fork_workflow(
        self,
        source_id: str,
        checkpoint: str,
        *,
        actor: str | None = None,
        escrow_amount: Any = None,
        name: str | None = None,
        modifications: dict[str, Any] | None = None,
        workflow_id: str | None = None,
    ) -> WorkflowExecution:
        """A new workflow starting from the source's approved state at ``checkpoint``
        (``saferun.core.fork``): new escrow, own chain linking to the source, the source unchanged."""
        from saferun.core.fork import fork_workflow

        return fork_workflow(
            self,
            source_id,
            checkpoint,
            actor=actor or self.actor,
            escrow_amount=escrow_amount,
            name=name,
            modifications=modifications,
            workflow_id=workflow_id,
        )

    def start_execution(self, workflow_id: str, *, actor: str | None = None) -> WorkflowExecution:
        with self._locked(workflow_id) as (conn, row):
            self._start_in(conn, row, actor)
            return self._fresh(conn, workflow_id)

    def _start_in(self, conn: Connection, row: RowMapping, actor: str | None) -> None:
        """``start_execution``'s writes on a locked row, inside the caller's transaction (and the bulk
        path's)."""
        self._require_executor(conn, row, "start the workflow")
        if row["state"] == WorkflowState.INITIALIZED.value:
            escrow.require_funded(conn, row)
        transitions.apply(conn, row, Event.START, actor=actor or row["executor_id"], started_at=utcnow())
        if row["job_id"]:
            jobs.set_status(conn, row["job_id"], "running")

    def settle_workflow(
        self, workflow_id: str, result: dict[str, Any] | None = None, *, actor: str | None = None
    ) -> WorkflowExecution:
        """EXECUTING -> SETTLING; the result is kept as an artifact beside the checkpoints."""
        body = canonical_bytes(result or {}, "result")
        with self._locked(workflow_id) as (conn, row):
            self._require(row, WorkflowState.EXECUTING, "settle")
            self._require_executor(conn, row, "settle the workflow")
            stored = self.capture.store.put_bytes(
                conn, body, artifact_type="workflow_result", metadata={"workflow_id": workflow_id}
            )
            total = len(row["config"]["checkpoints"])
            transitions.apply(
                conn,
                row,
                Event.SETTLE,
                actor=actor or row["executor_id"],
                result_uri=stored.uri,
                audit_payload={
                    "result_uri": stored.uri,
                    "completed_checkpoints": row["current_checkpoint"],
                    "total_checkpoints": total,
                },
            )
            return self._fresh(conn, workflow_id)

    def complete_workflow(self, workflow_id: str, *, actor: str | None = None) -> WorkflowExecution:
        """SETTLING -> COMPLETED: milestones were paid as approved; what the escrow still holds goes back."""
        with self._locked(workflow_id) as (conn, row):
            self._require(row, WorkflowState.SETTLING, "complete")
            escrow.refund_held(
                conn, row, "unearned share returned at settlement", self.actor, outcome="completed"
            )
            transitions.apply(
                conn, row, Event.SETTLEMENT_SUCCEEDED, actor=actor or self.actor, completed_at=utcnow()
            )
            escrow.close_jobs(conn, row, "completed", "settled")
            parties.record_quality(conn, row, self.actor)
            return self._fresh(conn, workflow_id)

    def fail_workflow(self, workflow_id: str, error: str, *, actor: str | None = None) -> WorkflowExecution:
        """Fail from EXECUTING, ROLLING_BACK or SETTLING: approved milestones stay paid, the rest is refunded.

        A workflow awaiting approval cannot be failed by its agent: the pending decision belongs to the
        reviewer (or to the checkpoint's timeout policy).
        """
        with self._locked(workflow_id) as (conn, row):
            state = WorkflowState(row["state"])
            event = FAILURE_EVENT.get(state)
            if event is None:
                raise InvalidTransition(
                    workflow_id,
                    state.value,
                    "fail",
                    "only EXECUTING, ROLLING_BACK or SETTLING workflows can be failed",
                )
            escrow.close_failed(conn, row, event, error, actor or row["executor_id"])
            return self._fresh(conn, workflow_id)

    def _require_role(self, conn: Connection, user_id: str, role: parties.Role, action: str) -> None:
        parties.require_role(conn, user_id, role, self.identity_checks, action)

    def _require_executor(self, conn: Connection, row: RowMapping, action: str) -> None:
        """The executor's role check; on a row ``_locked`` read, with the identity it carries (no query)."""
        if "x_executor_id" not in row:  # a row read some other way (the bulk path's): look it up
            self._require_role(conn, row["executor_id"], parties.Role.EXECUTOR, action)
            return
        identity = wf_store.executor_identity(row)
        parties.require_identity(
            identity, row["executor_id"], parties.Role.EXECUTOR, self.identity_checks, action
        )

    # ------------------------------------------------------------------ saga
    def register_step(
        self, workflow_id: str, name: str, compensation: str, args: dict[str, Any] | None = None
    ) -> str:
        """Record a side effect the agent just performed and how to undo it."""
        args = dict(args or {})
        check_json(args, "args")
        if not compensation:
            raise InvalidInput("compensation", "a step needs the name of its compensation")
        with self._locked(workflow_id) as (conn, row):
            self._require(row, WorkflowState.EXECUTING, "register a step for")
            step_id = new_id("step")
            seq = saga.add(
                conn,
                step_id=step_id,
                workflow_id=workflow_id,
                name=name,
                compensation=compensation,
                args=args,
            )
            audit.append(
                conn,
                workflow_id,
                "step_registered",
                row["executor_id"],
                {
                    "step_id": step_id,
                    "seq": seq,
                    "name": name,
                    "compensation": compensation,
                    "args": args,
                    "bind": [
                        bind(
                            "saga_steps",
                            "row",
                            {
                                "step_id": step_id,
                                "workflow_id": workflow_id,
                                "seq": seq,
                                "name": name,
                                "compensation": compensation,
                                "args": args,
                            },
                        )
                    ],
                },
            )
            return step_id

    async def arollback(
        self, workflow_id: str, *, stale_claim_seconds: float | None = None
    ) -> RollbackReport:
        """Undo the steps since the last approved checkpoint and resume from it (ROLLING_BACK -> ...).

        Raises CompensationError, changing nothing, when a compensation name does not resolve in this
        process; another process that knows it (or the sweep there) can finish the rollback. A claim older
        than ``stale_claim_seconds`` (default ``self.stale_claim_seconds``: ``SAFERUN_STALE_CLAIM_SECONDS``)
        is taken over.
        """
        stale = stale_claim_seconds if stale_claim_seconds is not None else self.stale_claim_seconds
        runner = SagaRunner(self.db, self.registry, self.retry, owner=self.owner, actor=self.actor)
        return await runner.run(workflow_id, stale_claim_seconds=stale)

    # The saga's step protocol, for agents whose compensations run in another process (the HTTP client).
    def steps_to_undo(self, workflow_id: str) -> list[dict[str, Any]]:
        return saga_ops.steps_to_undo(self.db, workflow_id)

    def claim_compensation(
        self, workflow_id: str, step_id: str, owner: str, stale_claim_seconds: float = 300.0
    ) -> int | None:
        """The claim's generation (pass it to ``finish_compensation``), or None when not claimed."""
        return saga_ops.claim_step(self.db, workflow_id, step_id, owner, stale_claim_seconds)

    def finish_compensation(
        self,
        workflow_id: str,
        step_id: str,
        ok: bool,
        error: str = "",
        actor: str | None = None,
        generation: int | None = None,
    ) -> str:
        """Record a claimed step's outcome; ``ClaimLost`` when ``generation`` was taken over since."""
        return saga_ops.finish_step(self.db, workflow_id, step_id, ok, error, actor or self.actor, generation)

    def complete_rollback(self, workflow_id: str, compensated: list[str] | None = None) -> RollbackReport:
        report = RollbackReport(workflow_id, compensated=list(compensated or []))
        return saga_ops.complete_rollback(self.db, workflow_id, self.actor, report)

    def cancel_workflow(self, workflow_id: str, reason: str, *, actor: str) -> WorkflowExecution:
        """Stop a workflow for good (the poster's call): a pending request is closed as a rejection without
        rollback; approved milestones stay paid and the rest of the escrow is refunded."""
        message = f"cancelled by {actor}: {reason}" if reason else f"cancelled by {actor}"
        with self._locked(workflow_id) as (conn, row):
            state = WorkflowState(row["state"])
            if state in (WorkflowState.COMPLETED, WorkflowState.FAILED):
                raise InvalidTransition(workflow_id, state.value, "cancel", "the workflow has already ended")
            if state == WorkflowState.AWAITING_APPROVAL:
                groups: set[str] = set()  # cancelling one item of a group cancels its siblings with it
                for req in approvals.pending(conn, workflow_id):
                    if req["group_id"] is None or req["group_id"] not in groups:
                        decisions.cancel_pending(conn, self.capture, req["request_id"], message)
                        groups.add(req["group_id"])
                return self._fresh(conn, workflow_id)
            if state == WorkflowState.INITIALIZED:
                # Diagram 1 has no INITIALIZED -> FAILED arrow: start, then fail, both recorded
                transitions.apply(conn, row, Event.START, actor=actor, reason=message, started_at=utcnow())
                row = wf_store.get(conn, workflow_id)
                state = WorkflowState.EXECUTING
            escrow.close_failed(conn, row, FAILURE_EVENT[state], message, actor)
            return self._fresh(conn, workflow_id)

    def rollback(self, workflow_id: str) -> RollbackReport:
        """Sync twin of ``arollback`` for the CLI and the sweep (must not be called inside an event loop)."""
        return asyncio.run(self.arollback(workflow_id))

    # ------------------------------------------------------------------ agents' notes (monitor, reconciler)
    def add_alerts(
        self, request_id: str, alerts: list[dict[str, Any]], *, actor: str | None = None
    ) -> ApprovalRequest:
        """Add alerts to a pending request, so its reviewer sees what the monitor found while they read.

        Alerts already on the request are not added twice (a monitor may report the same finding again).
        A decided or expired request is closed: DecisionConflict, nothing changed.
        """
        alerts = list(alerts)
        if not all(isinstance(a, dict) for a in alerts):
            raise InvalidInput("alerts", "each alert is a JSON object")
        check_json(alerts, "alerts")
        with self.db.read() as conn:
            workflow_id = approvals.get(conn, request_id)["workflow_id"]
        with self._locked(workflow_id) as (conn, _row):
            req = approvals.get(conn, request_id)
            if req["status"] != "pending":
                raise DecisionConflict(request_id, req["status"])
            current = list(req["alerts"] or [])
            new = [a for i, a in enumerate(alerts) if a not in current and a not in alerts[:i]]
            if new:
                approvals.set_alerts(conn, request_id, current + new)
                review = {**req, "alerts": current + new}
                payload = {
                    "request_id": request_id,
                    "alerts": new,
                    "bind": [bind("approval_requests", "review", review)],
                }
                audit.append(conn, workflow_id, "alerts_added", actor or self.actor, payload)
                notify.publish(conn, "workflow", workflow_id)
            return self._request(approvals.get(conn, request_id))

    def record_reconciliation(self, workflow_id: str, report: dict[str, Any], *, actor: str) -> None:
        """Put a reconciliation's outcome (what was undone, cleaned up, or was not) on the audit chain."""
        check_json(report, "report")
        with self._locked(workflow_id) as (conn, _row):
            audit.append(conn, workflow_id, "reconciliation_report", actor, report)

    @property
    def platform(self) -> Platform:
        """The x402 platform this orchestrator's workflows live on (embedded unless configured remote)."""
        if self.platform_url is not None and self.x402 is not None:
            return self.x402.platform
        return EmbeddedPlatform(self.db, strict_identities=False)

    async def rate_supervisor(
        self, workflow_id: str, rating: int, review: str = "", *, rated_by: str | None = None
    ) -> dict[str, Any]:
        """The poster's rating of the workflow's supervisor, once the workflow has ended.

        One rating per workflow (idempotency key ``rating:<workflow_id>``: the same rating again is a
        no-op, a different one a conflict); it moves the supervisor's reputation on the platform.
        """
        wf = await self._io(self.get_workflow, workflow_id)
        if wf.current_state not in (WorkflowState.COMPLETED, WorkflowState.FAILED):
            raise InvalidTransition(
                workflow_id, wf.current_state.value, "rate", "supervisors are rated once the workflow ended"
            )
        if wf.supervisor_id is None:
            raise Conflict(f"workflow {workflow_id!r} had no supervisor to rate", workflow_id=workflow_id)
        result = await self.platform.rate_supervisor(
            wf.supervisor_id, workflow_id, rating, review, idempotency_key=f"rating:{workflow_id}"
        )
        await self._io(self._record_rating, workflow_id, rated_by or wf.config.poster_id, wf, rating, review)
        return result

    def _record_rating(
        self, workflow_id: str, actor: str, wf: WorkflowExecution, rating: int, review: str
    ) -> None:
        with self.db.transaction() as conn:
            payload = {"supervisor_id": wf.supervisor_id, "rating": rating, "review": review}
            audit.append(conn, workflow_id, "supervisor_rated", actor, payload)

    async def deliver_platform_calls(self) -> DeliveryReport | None:
        """Send what this store owes the remote x402 platform (``saferun.platform.delivery``).

        None when this orchestrator uses the embedded platform, which needs no delivery. The server's
        sweeper calls this every second; an agent process without a server can await it itself.
        """
        if self.platform_url is None or self.x402 is None:
            return None
        if self._delivery is None:
            self._delivery = OutboxDelivery(self.db, self.x402.platform)
        return await self._delivery.deliver_due()

    # ------------------------------------------------------------------ reads that may write
    def pending_approvals(
        self, workflow_id: str | None = None, visible_to: Caller | None = None
    ) -> list[ApprovalRequest]:
        """Pending requests, oldest first; with ``visible_to`` only those of workflows that caller may see."""
        self.sweep_expired()
        where = visible_ids(visible_to) if visible_to is not None else None
        with self.db.read() as conn:
            return [self._request(r) for r in approvals.pending(conn, workflow_id, where)]

    # ------------------------------------------------------------------ helpers
    def _locked(self, workflow_id: str) -> AbstractContextManager[tuple[Connection, RowMapping]]:
        return wf_store.locked(self.db, workflow_id)

    @staticmethod
    def _require(row: RowMapping, state: WorkflowState, action: str) -> None:
        if row["state"] != state.value:
            raise InvalidTransition(
                row["workflow_id"], row["state"], action.split()[0], f"must be {state.value} to {action} it"
            )

    @staticmethod
    def _config(row: Any) -> WorkflowConfig:
        return views.config(row)


__all__ = ["SweepReport", "WorkflowNotFound", "WorkflowOrchestrator"]
