"""Fork a workflow from one of its approved checkpoints (issue 16, item 6).

A fork is a new workflow whose agent starts from the state a reviewer approved at checkpoint *k* of the
source: for "what if we had modified this" (optionally with modified parameters) or for re-running the
rest after a fix. It is a workflow like any other — its own escrow, its own audit chain, its own
reviewers — with these rules:

- **The source is never changed.** Nothing is written to the source's rows or its chain; the fork's first
  event records where it came from, including the source chain's head at that moment, so the link is
  checkable from the fork's side and survives the source moving on.
- **Only an approved state can be forked** (approved, modified-and-approved, or passed without review):
  a state nobody approved must not become the starting point of new work by a side door.
- **Side effects are not replayed.** The fork's agent resumes *after* checkpoint *k*; the fork's
  checkpoints are the source's remaining ones, so its escrow pays only for work done in the fork.
- **One transaction**: the workflow, its escrow lock, its start and its starting snapshot commit together,
  or nothing is created.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import select

from saferun.core import mirror
from saferun.core.checkpoints.capture import state_parts
from saferun.core.state_machine.models import WorkflowConfig, WorkflowExecution
from saferun.domain import parameter_schema
from saferun.domain.audit import bind
from saferun.domain.canonical import check_json
from saferun.domain.modifications import merge_patch
from saferun.domain.money import to_micro
from saferun.errors import Conflict, InvalidInput
from saferun.storage import audit, snapshots
from saferun.storage import workflows as wf_store
from saferun.storage.schema import approval_requests
from saferun.storage.schema import snapshots as snapshots_table

if TYPE_CHECKING:
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

APPROVED = ("approved", "modified", "passed")


def fork_workflow(
    orch: WorkflowOrchestrator,
    source_id: str,
    checkpoint: str,
    *,
    actor: str,
    escrow_amount: Decimal | str | int | None = None,
    name: str | None = None,
    modifications: dict[str, Any] | None = None,
    workflow_id: str | None = None,
) -> WorkflowExecution:
    """Start a new workflow from the approved state of ``checkpoint`` (a checkpoint id, or the id of one
    of the source's approved snapshots). Returns the fork, EXECUTING (or INITIALIZED when its escrow is
    funded by an x402 payment still to be made)."""
    if modifications is not None:
        if not isinstance(modifications, dict) or not modifications:
            raise InvalidInput("modifications", "must be a non-empty object of parameter changes")
        check_json(modifications, "modifications")
    with orch.db.transaction() as conn:
        source_row = wf_store.get(conn, source_id)
        source = WorkflowConfig.model_validate(source_row["config"])
        snap = _approved_snapshot(conn, source_id, checkpoint)
        # the state a fork starts from is a read of the source's snapshot: it must match the source's chain
        audit.check_read(conn, source_id, {"snapshots": [snap]}, workflow=source_row)
        ids = [cp.checkpoint_id for cp in source.checkpoints]
        if snap["checkpoint_id"] not in ids:  # a fork's starting state: its checkpoint is its source's
            raise InvalidInput(
                "checkpoint",
                f"{checkpoint!r} is the state this workflow was forked from; fork its source there instead",
            )
        index = ids.index(snap["checkpoint_id"])
        remaining = source.checkpoints[index + 1 :]
        if not remaining:
            raise InvalidInput(
                "checkpoint",
                f"{snap['checkpoint_id']!r} is the last checkpoint: a fork would have nothing to run",
            )
        state = orch.capture.load_state(conn, snap["artifact_uri"])
        if modifications:
            merged = merge_patch(state.parameters, modifications)
            schema = parameter_schema.effective(_declared_schema(conn, source_id, snap), state.parameters)
            parameter_schema.validate(schema, state.parameters, modifications, merged)
            state = state.model_copy(update={"parameters": merged})
        link = {
            "workflow_id": source_id,
            "checkpoint_id": snap["checkpoint_id"],
            "snapshot_id": snap["snapshot_id"],
            "artifact_uri": snap["artifact_uri"],
            "source_audit_seq": int(source_row["audit_seq"] or 0),
            "source_audit_head": source_row["audit_head"],
        }
        try:
            config = WorkflowConfig.model_validate(
                {
                    **source.model_dump(exclude={"workflow_id"}),
                    **({"workflow_id": workflow_id} if workflow_id else {}),
                    "name": name or f"{source.name} (fork from {source.checkpoints[index].name})"[:500],
                    "checkpoints": [cp.model_dump() for cp in remaining],
                    "escrow_amount": source.escrow_amount if escrow_amount is None else escrow_amount,
                    "metadata": {**source.metadata, "forked_from": link},
                }
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "fork"
            raise InvalidInput(field, str(first["msg"]).removeprefix("Value error, ")) from None
        cfg = config.model_dump(mode="json")
        amount = to_micro(config.escrow_amount, "escrow_amount")
        orch._initialize_in(conn, config, cfg, amount, actor)
        row = wf_store.get(conn, config.workflow_id)
        if config.funding == "ledger":
            orch._start_in(conn, row, actor)
            row = wf_store.get(conn, config.workflow_id)
        stored = orch.capture.store_state(
            conn,
            state_parts(state),
            {"workflow_id": config.workflow_id, "checkpoint_id": snap["checkpoint_id"]},
        )
        start = snapshots.insert_for(
            conn,
            config.workflow_id,
            snap["checkpoint_id"],
            snap["label"],
            "approved",
            stored,
            parent_snapshot_id=None,
        )
        mirror.checkpoint_state(conn, row, start["snapshot_id"], snap["checkpoint_id"], stored.uri)
        wf_store.update_fields(conn, config.workflow_id, last_approved_snapshot_id=start["snapshot_id"])
        audit.append(
            conn,
            config.workflow_id,
            "forked_from",
            actor,
            {
                **link,
                "starting_snapshot_id": start["snapshot_id"],
                "starting_artifact_uri": stored.uri,
                "modifications": modifications,
                "bind": [bind("snapshots", "row", start), bind("snapshots", "status", start)],
            },
        )
        return orch._fresh(conn, config.workflow_id)


def _approved_snapshot(conn: Any, source_id: str, checkpoint: str) -> Any:
    """The source's latest approved snapshot of ``checkpoint`` (or that snapshot, named by id)."""
    if not isinstance(checkpoint, str) or not checkpoint:
        raise InvalidInput("checkpoint", "name a checkpoint id or an approved snapshot id of the source")
    rows = (
        conn.execute(
            select(snapshots_table)
            .where(
                snapshots_table.c.workflow_id == source_id,
                (snapshots_table.c.checkpoint_id == checkpoint)
                | (snapshots_table.c.snapshot_id == checkpoint),
            )
            .order_by(snapshots_table.c.sequence.desc())
        )
        .mappings()
        .all()
    )
    if not rows:
        raise InvalidInput(
            "checkpoint", f"workflow {source_id!r} has no checkpoint or snapshot {checkpoint!r}"
        )
    for row in rows:
        if row["status"] in APPROVED:
            return row
    raise Conflict(
        f"checkpoint {checkpoint!r} of workflow {source_id!r} was never approved; a fork starts only from an "
        "approved state",
        workflow_id=source_id,
    )


def _declared_schema(conn: Any, source_id: str, snap: Any) -> dict[str, Any] | None:
    """The parameter schema the source's reviewer decided this checkpoint under, if one was declared."""
    found = conn.execute(
        select(approval_requests.c.parameter_schema)
        .where(
            approval_requests.c.workflow_id == source_id,
            approval_requests.c.checkpoint_id == snap["checkpoint_id"],
        )
        .order_by(approval_requests.c.created_at.desc())
        .limit(1)
    ).scalar()
    return found if isinstance(found, dict) else None
