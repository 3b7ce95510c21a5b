"""Escalation ladders (issue 16, item 3): reminders and reassignments while nobody decides, each rung
exactly once however many processes sweep, visible on the timeline and in metrics, and "expired" kept
apart from a person's rejection. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from saferun import ApprovalExpired, ApprovalRejected, supervised
from saferun.core import escalation
from saferun.core.state_machine.models import CheckpointConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.policy import Caller, Role
from saferun.storage.database import Database
from saferun.storage.schema import notifications
from tests.helpers import make_config, pause, started

LADDER = [
    {"after_seconds": 600, "action": "notify"},
    {"after_seconds": 1800, "action": "reassign", "to": "oncall"},
    {"after_seconds": 2400, "action": "reassign", "to": "any"},
]


def _config(**kw: Any) -> Any:
    cp = CheckpointConfig(name="Pay", checkpoint_id="cp1", timeout_seconds=3600, escalation=LADDER, **kw)
    return make_config(checkpoints=[cp])


def _waiting_notices(db: Database, request_id: str) -> int:
    with db.transaction() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(notifications)
                .where(
                    notifications.c.request_id == request_id,
                    (notifications.c.kind == "waiting") | notifications.c.kind.like("escalated:%"),
                )
            ).scalar_one()
        )


@pytest.mark.parametrize(
    ("ladder", "words"),
    [
        (
            [{"after_seconds": 600, "action": "notify"}, {"after_seconds": 600, "action": "notify"}],
            "overlaps",
        ),
        (
            [{"after_seconds": 900, "action": "notify"}, {"after_seconds": 300, "action": "notify"}],
            "overlaps",
        ),
        ([{"after_seconds": 3600, "action": "notify"}], "not before timeout_seconds"),
        ([{"after_seconds": 60, "action": "reassign"}], "reassign needs 'to'"),
        ([{"after_seconds": 60, "action": "notify", "to": "x"}], "notify step reminds"),
        ([{"after_seconds": 60, "action": "page"}], "Input should be"),
        ([{"after_seconds": 0, "action": "notify"}], "greater than 0"),
    ],
)
def test_impossible_ladders_are_refused_naming_the_step(ladder: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        CheckpointConfig(name="Pay", timeout_seconds=3600, escalation=ladder)


async def test_each_rung_fires_once_in_order_then_the_timeout_applies(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch, _config())
    rid = await pause(orch, wf, "cp1")
    req = orch.get_approval_request(rid)
    opened = req.created_at
    assert req.next_escalation_at == opened + timedelta(seconds=600)
    assert _waiting_notices(db, rid) == 1

    assert orch.sweep(opened + timedelta(seconds=599)).escalated == []
    assert orch.sweep(opened + timedelta(seconds=601)).escalated == [f"{rid}:0"]  # a reminder
    assert orch.sweep(opened + timedelta(seconds=700)).escalated == []  # never twice
    assert _waiting_notices(db, rid) == 2
    assert orch.get_approval_request(rid).supervisor_id == "reviewer"

    # rung 2 reassigns: the on-call person may decide now, the first reviewer may not
    assert orch.sweep(opened + timedelta(seconds=1801)).escalated == [f"{rid}:1"]
    req = orch.get_approval_request(rid)
    assert (req.supervisor_id, req.escalation_step) == ("oncall", 2)
    from saferun.domain.policy import assignee, may_decide

    wf_row = orch.get_workflow(wf)
    who = assignee(req.supervisor_id, wf_row.supervisor_id, req.escalation_step > 0)
    reviewer = Caller("reviewer", frozenset({Role.SUPERVISOR}), True)
    oncall = Caller("oncall", frozenset({Role.SUPERVISOR}), True)
    assert may_decide(
        reviewer, poster_id="poster", executor_id="agent", supervisor_id=who, approved_by="reviewer"
    )
    assert (
        may_decide(oncall, poster_id="poster", executor_id="agent", supervisor_id=who, approved_by="oncall")
        is None
    )

    # rung 3 hands it to every eligible supervisor; then the ladder is done and the timeout applies
    assert orch.sweep(opened + timedelta(seconds=2401)).escalated == [f"{rid}:2"]
    req = orch.get_approval_request(rid)
    assert (req.supervisor_id, req.next_escalation_at) == (None, None)
    report = await asyncio.to_thread(orch.sweep, opened + timedelta(seconds=3601))  # it may roll back
    assert report.expired == [rid] and report.escalated == []
    assert orch.get_approval_request(rid).status == "expired"  # not "decided": nobody said no
    kinds = [e["kind"] for e in orch.audit_events(wf)]
    assert kinds.count("escalated") == 3
    assert orch.verify_audit(wf)[1] is None


async def test_racing_sweeps_apply_each_rung_exactly_once(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    requests = []
    for _ in range(5):
        wf = started(orch, _config())
        requests.append(await pause(orch, wf, "cp1"))
    opened = max(orch.get_approval_request(r).created_at for r in requests)
    applied: list[str] = []
    lock = threading.Lock()

    def sweeper() -> None:
        mine = WorkflowOrchestrator(database=db)  # its own process-like orchestrator, same store
        for at in (1801, 1801, 2401):
            got = escalation.sweep(mine.db, opened + timedelta(seconds=at))
            with lock:
                applied.extend(got)

    threads = [threading.Thread(target=sweeper) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(applied) == sorted(f"{r}:{i}" for r in requests for i in range(3))  # each rung once
    for r in requests:
        assert orch.get_approval_request(r).escalation_step == 3


async def test_a_decision_stops_the_ladder(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch, _config())
    rid = await pause(orch, wf, "cp1")
    opened = orch.get_approval_request(rid).created_at
    from tests.helpers import decide

    decide(orch, rid, "APPROVED")
    assert orch.sweep(opened + timedelta(seconds=3000)).escalated == []


async def test_the_agent_tells_expired_from_rejected(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)

    async def run(decide_as: str) -> BaseException:
        config = _config(on_timeout="reject")
        try:
            async with supervised(config, orch) as r:
                task = asyncio.create_task(r.checkpoint("cp1", summary="pay"))
                while not orch.pending_approvals(config.workflow_id):
                    await asyncio.sleep(0.01)
                req = orch.pending_approvals(config.workflow_id)[0]
                if decide_as == "timeout":
                    # expiry alone: the agent rolls back itself (a whole sweep might finish it first)
                    await asyncio.to_thread(orch.sweep_expired, req.expires_at + timedelta(seconds=1))
                else:
                    from tests.helpers import decide

                    decide(orch, req.request_id, "REJECTED", rationale="no")
                await task
        except ApprovalRejected as exc:
            return exc
        raise AssertionError("not rejected")

    expired = await run("timeout")
    assert isinstance(expired, ApprovalExpired) and "on_timeout=reject" in expired.rationale
    rejected = await run("person")
    assert type(rejected) is ApprovalRejected


async def test_the_timeline_and_metrics_show_escalations(db: Database) -> None:
    from saferun.api.metrics import render
    from saferun.ui import pages

    orch = WorkflowOrchestrator(database=db)
    wf = started(orch, _config())
    rid = await pause(orch, wf, "cp1")
    opened = orch.get_approval_request(rid).created_at
    orch.sweep(opened + timedelta(seconds=1801))
    entries = pages.workflow(orch, Caller.open(), wf)["timeline"]
    titles = [e.title for e in entries]
    assert "Escalated: Reminder sent" in titles and "Escalated: Reassigned to oncall" in titles
    text = render(orch)[0].decode()
    assert "saferun_escalations_total 2.0" in text
    assert 'saferun_approval_requests{status="pending"} 1.0' in text
