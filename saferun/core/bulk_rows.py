"""The bulk path's rows: what initialize -> start -> pause writes for one workflow, built in memory and
written for a whole chunk with one multi-row ``INSERT`` per table.

Each row is what the engine's own calls write (``WorkflowOrchestrator._initialize_in``, ``_start_in``,
``_capture``, ``_open_request``): the same columns, the same audit payloads hashed into the same chain by
``domain.audit`` (with the same row bindings), the same ledger posting by ``domain.ledger.lock`` with its
``posting_sha256``, the same jobs, job events, transitions, snapshot, request (its ``risk_level`` too) and
"waiting" notice. The state itself is stored by the engine's own ``CheckpointCapture.store_state``.
``tests/test_bulk_create.py`` compares a bulk workflow's rows with an engine-made one's, table by table,
and decides a bulk request, so a change to what the engine writes that is not made here fails CI.

Only the common shape takes this path (ledger funding, a named supervisor, the embedded platform, no
approval policy that could decide the request as it opens); any other item goes through the engine's
calls one by one inside the same transaction (``bulk._one``).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, insert, select, update

from saferun.core import notify
from saferun.domain import ledger as rules
from saferun.domain import parameter_schema as param_schema
from saferun.domain.audit import BINDS_MARK, GENESIS, bind, event_hash, payload_text, posting_digest
from saferun.domain.ids import new_id
from saferun.domain.money import format_micro
from saferun.domain.states import WorkflowState
from saferun.errors import Conflict
from saferun.storage import eventlog
from saferun.storage import ledger as book
from saferun.storage.approvals import level_of
from saferun.storage.artifacts import StoredArtifact
from saferun.storage.schema import (
    approval_requests,
    audit_events,
    jobs,
    ledger_legs,
    ledger_transactions,
    snapshots,
    utcnow,
    workflows,
)

if TYPE_CHECKING:
    from saferun.core.bulk import _Checked
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

# parent tables first: foreign keys hold at every statement. The job history, the approval sub-jobs, the
# notices and the transitions are written by the database from these rows (revision 0024): the chain's
# events go last, so each workflow's transitions are in its events' order.
ORDER = (
    workflows,
    jobs,
    ledger_transactions,
    ledger_legs,
    snapshots,
    approval_requests,
    audit_events,
)
JOB_STARTS = "job_starts"  # start_execution's status change of each main job: one executemany UPDATE


def fits(orch: WorkflowOrchestrator, c: _Checked) -> bool:
    """Whether the item has the shape these rows cover (else the engine's calls write it)."""
    cfg = c.item.config
    # an approval policy may decide a request as it opens (core/policy_gate): then the engine's calls do it
    gate = getattr(orch, "policy_gate", None)
    if gate is not None and gate.active:
        return False
    if any(cp.quorum is not None for cp in cfg.checkpoints):  # a quorum is checked as its request opens
        return False
    return orch.platform_url is None and cfg.supervisor_id is not None and cfg.funding == "ledger"


def check_new(conn: Connection, workflow_ids: list[str]) -> None:
    """None of these ids exists yet (one query a chunk; the engine's ``exists`` per workflow)."""
    taken = conn.execute(
        select(workflows.c.workflow_id).where(workflows.c.workflow_id.in_(workflow_ids))
    ).first()
    if taken is not None:
        raise Conflict(f"workflow {taken[0]!r} already exists", workflow_id=taken[0])


class _Chain:
    """One workflow's audit events, hashed in order as ``storage.audit.append`` does."""

    def __init__(self, conn: Connection, workflow_id: str) -> None:
        self.conn = conn
        self.workflow_id = workflow_id
        self.rows: list[dict[str, Any]] = []
        self.head = GENESIS

    def append(self, kind: str, actor: str, payload: dict[str, Any]) -> None:
        seq = len(self.rows) + 1
        at = utcnow().isoformat(timespec="microseconds")
        text = payload_text(payload)
        digest = event_hash(
            workflow_id=self.workflow_id,
            seq=seq,
            kind=kind,
            actor=actor,
            at=at,
            payload=text,
            prev_hash=self.head,
        )
        self.rows.append(
            {
                "workflow_id": self.workflow_id,
                "seq": seq,
                "kind": kind,
                "actor": actor,
                "payload": text,
                "at": at,
                "prev_hash": self.head,
                "hash": digest,
            }
        )
        self.head = digest
        eventlog.record(self.conn, self.workflow_id, kind, actor, payload)  # its log line, after the commit


def store_states(orch: WorkflowOrchestrator, conn: Connection, chunk: list[_Checked]) -> list[StoredArtifact]:
    """The chunk's checkpoint states, stored by the engine's own content-addressed store in one batch
    (``CheckpointCapture.store_states``: one probe, one multi-row INSERT of blobs, one of artifacts)."""
    return orch.capture.store_states(
        conn,
        [
            (c.parts, {"workflow_id": c.item.config.workflow_id, "checkpoint_id": c.item.state.checkpoint_id})
            for c in chunk
        ],
    )


def build(
    orch: WorkflowOrchestrator, conn: Connection, c: _Checked, actor: str | None, stored: StoredArtifact
) -> tuple[dict[Any, list[dict[str, Any]]], str]:
    """Every row of one paused workflow, by table, and its request id; ``stored`` is its state's artifact
    (:func:`store_states`)."""
    item, config = c.item, c.item.config
    wf, poster, executor, supervisor = (
        config.workflow_id,
        config.poster_id,
        config.executor_id,
        config.supervisor_id,
    )
    actor = actor or poster
    cp = config.checkpoint(item.state.checkpoint_id)
    assert cp is not None  # checked by bulk._check
    out: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    chain = _Chain(conn, wf)
    created = utcnow()

    # initialize_workflow
    main_job = new_id("job")
    out[jobs].append(
        {
            "job_id": main_job,
            "parent_job_id": None,
            "job_type": "supervised_workflow",
            "workflow_id": wf,
            "status": "open",  # made "running" by start_execution's UPDATE, below (JOB_STARTS)
            "status_reason": "created",
            "data": {"workflow_id": wf, "executor_id": executor, "escrow_amount": str(config.escrow_amount)},
            "created_at": created,
            "updated_at": created,
        }
    )
    chain.append(
        "workflow_created", actor, {"name": config.name, "config": c.cfg, "job_id": main_job, BINDS_MARK: 1}
    )
    if c.amount:
        posting = rules.lock(wf, poster, c.amount)
        posting.validate()
        txn = {
            "txn_id": book.new_txn_id(),
            "idempotency_key": f"lock:{wf}",
            "workflow_id": wf,
            "kind": posting.kind,
            "memo": posting.memo,
            "created_at": utcnow(),
        }
        legs = [
            {"txn_id": txn["txn_id"], "account": leg.account, "amount_micro": leg.amount}
            for leg in posting.legs
        ]
        out[ledger_transactions].append(txn)
        out[ledger_legs].extend(legs)
        chain.append(
            "escrow_locked",
            actor,
            {
                "amount": format_micro(c.amount),
                "txn_id": txn["txn_id"],
                "escrow_id": f"escrow_{wf}",
                "posting_sha256": posting_digest(txn, legs),
            },
        )

    # start_execution
    started = utcnow()
    out[JOB_STARTS].append(
        {"b_job": main_job, "status": "running", "status_reason": "", "updated_at": started}
    )
    chain.append(
        "transition", executor, {"from": "initialized", "to": "executing", "event": "start", "reason": None}
    )

    # pause: the checkpoint's snapshot
    snap = {
        "snapshot_id": new_id("snap"),
        "workflow_id": wf,
        "sequence": 1,
        "checkpoint_id": cp.checkpoint_id,
        "label": item.state.checkpoint_id,
        "status": "captured",
        "artifact_uri": stored.uri,
        "raw_size_bytes": stored.raw_size,
        "compressed_size_bytes": stored.compressed_size,
        "new_bytes": stored.new_bytes,
        "parent_snapshot_id": None,
        "created_at": utcnow(),
    }
    out[snapshots].append(snap)
    chain.append(
        "checkpoint_captured",
        executor,
        {
            "snapshot_id": snap["snapshot_id"],
            "checkpoint_id": cp.checkpoint_id,
            "label": item.state.checkpoint_id,
            "artifact_uri": stored.uri,
            "raw_size_bytes": stored.raw_size,
            "compressed_size_bytes": stored.compressed_size,
            "new_bytes": stored.new_bytes,
            "bind": [bind("snapshots", "row", snap), bind("snapshots", "status", snap)],
        },
    )

    # pause: the request, its approval sub-job and its notice
    review, parameters = c.review, dict(item.state.parameters)
    declared = review.parameter_schema or cp.parameter_schema
    if declared:
        param_schema.check_proposed(declared, parameters)
    now = utcnow()
    # the approval sub-job (with its history) and the request's notice are written by the database from
    # the request's row (revision 0024), as the engine's are
    request_id, approval_job = new_id("req"), new_id("job")
    values = {
        "request_id": request_id,
        "workflow_id": wf,
        "snapshot_id": snap["snapshot_id"],
        "checkpoint_id": cp.checkpoint_id,
        "checkpoint_name": cp.name,
        "summary": review.summary,
        "decision_needed": review.decision_needed or cp.description or f"Approve '{cp.name}' and continue?",
        "context": review.context,
        "parameters": parameters,
        "parameter_schema": param_schema.effective(declared, parameters),
        "recommendation": review.recommendation,
        "confidence": review.confidence,
        "risk": review.risk,
        "alerts": review.alerts,
        "supervisor_id": supervisor,
        "job_id": approval_job,
        "on_timeout": cp.on_timeout,
        "created_at": now,
        "expires_at": now + timedelta(seconds=cp.timeout_seconds),
    }
    out[approval_requests].append(
        {**values, "status": "pending", "risk_level": level_of(review.risk), "decided_at": None}
    )
    chain.append(
        "transition",
        executor,
        {
            "from": "executing",
            "to": "awaiting_approval",
            "event": "checkpoint_reached",
            "reason": review.summary,
            "request_id": request_id,
            "snapshot_id": snap["snapshot_id"],
            "checkpoint_id": cp.checkpoint_id,
            "approval_job_id": approval_job,
            "bind": [
                bind("approval_requests", "row", values),
                bind("approval_requests", "review", {**values, "status": "pending"}),
            ],
        },
    )
    out[audit_events].extend(chain.rows)

    # the workflow row as the three calls leave it (version: +1 for the job id, +1 per state change)
    out[workflows].append(
        {
            "workflow_id": wf,
            "name": config.name,
            "description": config.description,
            "state": WorkflowState.AWAITING_APPROVAL.value,
            "config": c.cfg,
            "poster_id": poster,
            "executor_id": executor,
            "supervisor_id": supervisor,
            "escrow_micro": c.amount,
            "current_checkpoint": 0,
            "job_id": main_job,
            "escrow_id": f"escrow_{wf}",
            "last_approved_snapshot_id": None,
            "result_uri": None,
            "platform_url": None,
            "error_message": None,
            "rollback_claimed_by": None,
            "rollback_claimed_at": None,
            "version": 3,
            "created_at": created,
            "updated_at": now,
            "started_at": started,
            "completed_at": None,
            "audit_seq": len(chain.rows),
            "audit_head": chain.head,
        }
    )
    notify.publish(conn, "workflow", wf)  # delivered on commit, as the engine's are
    return out, request_id


_START_JOB = update(jobs).where(jobs.c.job_id == bindparam("b_job"))


def write(conn: Connection, tables: dict[Any, list[dict[str, Any]]]) -> None:
    """One executemany per table, parents first; the main jobs started (their history's second event)
    right after the jobs."""
    for table in ORDER:
        rows = tables.get(table)
        if rows:
            conn.execute(insert(table), rows)
        if table is jobs and tables.get(JOB_STARTS):
            conn.execute(_START_JOB, tables[JOB_STARTS])
