"""Prometheus metrics, read from the database at scrape time.

Counting in the store rather than in process memory makes the numbers the system's, not one replica's:
every replica reports the same values (scrape any one), they survive restarts, and a decision made through
the CLI counts too. The seed's names are kept: ``saferun_checkpoints_total`` and
``saferun_approval_latency_seconds``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

from saferun.storage.schema import approval_requests, approval_responses, snapshots, utcnow, workflows

if TYPE_CHECKING:
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


class StoreCollector:
    def __init__(self, orch: WorkflowOrchestrator) -> None:
        self.orch = orch

    def collect(self) -> Iterator[Metric]:
        with self.orch.db.read() as conn:
            n_checkpoints = conn.execute(select(func.count()).select_from(snapshots)).scalar_one()
            by_state = dict(
                conn.execute(select(workflows.c.state, func.count()).group_by(workflows.c.state)).all()
            )
            decisions = conn.execute(
                select(approval_responses.c.decision, approval_responses.c.automatic, func.count()).group_by(
                    approval_responses.c.decision, approval_responses.c.automatic
                )
            ).all()
            by_status = dict(
                conn.execute(
                    select(approval_requests.c.status, func.count()).group_by(approval_requests.c.status)
                ).all()
            )
            escalations = conn.execute(
                select(func.coalesce(func.sum(approval_requests.c.escalation_step), 0))
            ).scalar_one()
            pending = conn.execute(
                select(func.count())
                .select_from(approval_requests)
                .where(approval_requests.c.status == "pending")
            ).scalar_one()
            waits = conn.execute(
                select(approval_requests.c.created_at, approval_responses.c.created_at)
                .join(approval_responses, approval_responses.c.request_id == approval_requests.c.request_id)
                .where(approval_responses.c.automatic.is_(False))
            ).all()
        yield CounterMetricFamily(
            "saferun_checkpoints", "Checkpoints captured (snapshots stored)", value=n_checkpoints
        )
        states = GaugeMetricFamily("saferun_workflows", "Workflows by state", labels=["state"])
        for state in (
            "initialized",
            "executing",
            "awaiting_approval",
            "rolling_back",
            "settling",
            "completed",
            "failed",
        ):
            states.add_metric([state], by_state.get(state, 0))
        yield states
        dec = CounterMetricFamily(
            "saferun_decisions", "Approval decisions by outcome", labels=["decision", "automatic"]
        )
        for decision, automatic, n in decisions:
            dec.add_metric([decision, str(bool(automatic)).lower()], n)
        yield dec
        yield GaugeMetricFamily("saferun_pending_approvals", "Requests waiting for a human", value=pending)
        # "expired" apart from a person's decision everywhere, metrics included (issue 16)
        outcomes = GaugeMetricFamily(
            "saferun_approval_requests",
            "Approval requests by status (expired: nobody decided in time)",
            labels=["status"],
        )
        for status in ("pending", "decided", "expired", "cancelled", "closed"):
            outcomes.add_metric([status], by_status.get(status, 0))
        yield outcomes
        yield CounterMetricFamily(
            "saferun_escalations",
            "Escalation-ladder rungs applied (reminders and reassignments)",
            value=int(escalations),
        )
        now = utcnow()
        stuck = self.orch.stuck_workflows(now)
        by_stuck_state = GaugeMetricFamily(
            "saferun_stuck_workflows",
            "Workflows rolling back or settling past the rollback grace with nobody finishing them "
            "(saferun workflows stuck)",
            labels=["state"],
        )
        for state in ("rolling_back", "settling"):
            by_stuck_state.add_metric([state], sum(1 for i in stuck if i.state == state))
        yield by_stuck_state
        yield GaugeMetricFamily(
            "saferun_stuck_oldest_seconds",
            "Age of the oldest stuck workflow (0 when none)",
            value=max((i.age_seconds(now) for i in stuck), default=0.0),
        )
        seconds = [max(0.0, (decided - asked).total_seconds()) for asked, decided in waits]
        counts = [sum(1 for x in seconds if x <= b) for b in BUCKETS]
        yield HistogramMetricFamily(
            "saferun_approval_latency_seconds",
            "Time from approval request to human decision",
            buckets=[*[(str(b), c) for b, c in zip(BUCKETS, counts, strict=True)], ("+Inf", len(seconds))],
            sum_value=sum(seconds),
        )


def render(orch: WorkflowOrchestrator) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(orch))  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
