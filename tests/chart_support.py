"""A week of review history for the chart tests: real workflows decided through the engine (approve,
modify, reject, timeout, some still pending), then moved back in time with plain UPDATEs so waiting times
and dates are known. Returns what the charts must show, computed here from the seeded values."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalResponse,
    CheckpointConfig,
    ExecutionState,
    WorkflowConfig,
)
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.schema import approval_requests, approval_responses, ledger_transactions

LATENCIES = (4, 25, 45, 130, 600, 2400, 7200, 30000, 100000)  # one per latency bucket
KINDS = ("APPROVED", "MODIFIED", "REJECTED", "TIMEOUT", "PENDING")


@dataclass
class Seeded:
    now: datetime
    latencies: list[float] = field(default_factory=list)  # human decisions only
    kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    pending_ages: list[float] = field(default_factory=list)
    decided_by: dict[str, int] = field(default_factory=dict)
    pending_for: dict[str | None, int] = field(default_factory=dict)
    workflow_ids: list[str] = field(default_factory=list)


def seed_history(
    orch: WorkflowOrchestrator, count: int, *, seed: int = 7, now: datetime | None = None
) -> Seeded:
    rng = random.Random(seed)
    now = now or datetime.now(UTC).replace(microsecond=0)
    out = Seeded(now=now)
    supervisors = ["dana", "sam", "priya", None]
    for i in range(count):
        kind = (
            KINDS[i % len(KINDS)] if i < len(KINDS) else rng.choices(KINDS, weights=(50, 15, 15, 10, 10))[0]
        )
        supervisor = supervisors[i % len(supervisors)]
        fails = kind in ("REJECTED", "TIMEOUT") and i % 2 == 0
        config = WorkflowConfig(
            name=f"History {i}",
            checkpoints=[
                CheckpointConfig(
                    name="Order", checkpoint_id="cp1", timeout_seconds=3600, can_rollback=not fails
                )
            ],
            escrow_amount=f"{rng.choice([40, 60, 120, 250])}.00",
            poster_id="poster",
            executor_id="agent",
            supervisor_id=supervisor,
        )
        wf = config.workflow_id
        out.workflow_ids.append(wf)
        orch.initialize_workflow(config)
        orch.start_execution(wf)
        snap = orch.create_checkpoint_sync(wf, ExecutionState(checkpoint_id="cp1", parameters={"count": 5}))
        req = orch.request_approval(wf, snap.snapshot_id, f"Order #{i}").request_id
        started = now - timedelta(days=7) + timedelta(seconds=i * 6.5 * 86400 / count)
        asked = started + timedelta(seconds=60)
        decided_at: datetime | None = None
        if kind == "PENDING":
            age = rng.choice(LATENCIES[:7])
            asked = now - timedelta(seconds=age)
            started = asked - timedelta(seconds=60)
            out.pending_ages.append(age)
            out.pending_for[supervisor] = out.pending_for.get(supervisor, 0) + 1
        elif kind == "TIMEOUT":
            orch.sweep_expired(datetime.now(UTC) + timedelta(hours=2), only=req)
            decided_at = asked + timedelta(hours=1)
        else:
            latency = rng.choice(LATENCIES)
            who = supervisor or "sam"
            orch.submit_approval(
                None,
                ApprovalResponse(
                    request_id=req,
                    decision=ApprovalDecision(kind),
                    rationale="seeded",
                    approved_by=who,
                    modifications={"count": 3} if kind == "MODIFIED" else None,
                ),
            )
            decided_at = asked + timedelta(seconds=latency)
            out.latencies.append(latency)
            out.decided_by[who] = out.decided_by.get(who, 0) + 1
        out.kinds[kind] += 1
        with orch.db.engine.begin() as conn:
            conn.execute(
                update(approval_requests)
                .where(approval_requests.c.request_id == req)
                .values(created_at=asked)
            )
            conn.execute(
                update(ledger_transactions)
                .where(ledger_transactions.c.workflow_id == wf, ledger_transactions.c.kind == "lock")
                .values(created_at=started)
            )
            if decided_at is not None:
                conn.execute(
                    update(approval_responses)
                    .where(approval_responses.c.request_id == req)
                    .values(created_at=decided_at)
                )
                conn.execute(
                    update(ledger_transactions)
                    .where(ledger_transactions.c.workflow_id == wf, ledger_transactions.c.kind != "lock")
                    .values(created_at=decided_at)
                )
    return out
