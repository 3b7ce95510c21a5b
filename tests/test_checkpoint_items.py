"""Several pending requests at one checkpoint (issue 14 item 3, issue 15 item 3): parallel tool calls.

One pause opens N items sharing the snapshot; each is decided once; the checkpoint completes (paid once)
when the last is approved or modified, and any rejection rejects it at once, closing the siblings."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from saferun.core.rollback.reconciliation import CompensationRegistry, RetryPolicy
from saferun.core.state_machine.models import CheckpointConfig, ExecutionState
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import DecisionConflict, InvalidInput
from saferun.storage.database import Database
from saferun.storage.schema import notifications, utcnow
from tests.helpers import decide, make_config, started

ITEMS = [
    {"key": "call_a", "summary": "Email Alice", "parameters": {"to": "alice", "count": 1}},
    {"key": "call_b", "summary": "Email Bob", "parameters": {"to": "bob", "count": 2}},
    {"key": "call_c", "summary": "Email Carol", "parameters": {"to": "carol", "count": 3}},
]


def orchestrator(db: Database, undone: list[str] | None = None) -> WorkflowOrchestrator:
    reg = CompensationRegistry()
    reg.register("unsend", lambda to: (undone if undone is not None else []).append(to))
    return WorkflowOrchestrator(
        database=db, registry=reg, retry=RetryPolicy(attempts=2, initial_delay=0.001, max_delay=0.002)
    )


@pytest.fixture
def orch(db: Database) -> WorkflowOrchestrator:
    return orchestrator(db)


async def pause_items(
    orch: WorkflowOrchestrator, wf: str, items: list[dict[str, Any]] | None = None
) -> dict[str, str]:
    """Pause at cp1 with the items; returns {item key: request id}."""
    snap, reqs = await orch.pause_items(
        wf, ExecutionState(checkpoint_id="cp1"), "send three emails", items or ITEMS
    )
    assert {r.snapshot_id for r in reqs} == {snap.snapshot_id}
    assert len({r.group_id for r in reqs}) == 1 and reqs[0].group_id is not None
    return {r.item_key: r.request_id for r in reqs if r.item_key is not None}


def releases(orch: WorkflowOrchestrator, wf: str) -> list[dict[str, Any]]:
    return [e for e in orch.ledger_entries(wf) if e["kind"] == "release"]


async def test_all_items_approved_complete_the_checkpoint_once(orch: WorkflowOrchestrator) -> None:
    wf = started(orch)
    reqs = await pause_items(orch, wf)
    assert [r.item_key for r in orch.pending_approvals(wf)] == ["call_a", "call_b", "call_c"]
    assert [r.summary for r in orch.pending_approvals(wf)] == ["Email Alice", "Email Bob", "Email Carol"]
    for key in ("call_a", "call_b"):
        after = decide(orch, reqs[key], "APPROVED")
        assert after.current_state.value == "awaiting_approval"  # a sibling still waits
        assert releases(orch, wf) == [] and after.current_checkpoint == 0
    assert [s.status for s in orch.list_snapshots(wf)] == ["captured"]
    done = decide(orch, reqs["call_c"], "APPROVED")
    assert done.current_state.value == "executing" and done.current_checkpoint == 1
    assert len(releases(orch, wf)) == 1  # the milestone is paid once, by the last item
    assert [s.status for s in orch.list_snapshots(wf)] == ["approved"]
    state = orch.latest_approved_state(wf)
    assert state is not None and state.parameters == {i["key"]: i["parameters"] for i in ITEMS}
    assert orch.verify_audit(wf)[1] is None


async def test_a_modification_applies_to_its_own_item_only(orch: WorkflowOrchestrator) -> None:
    wf = started(orch)
    reqs = await pause_items(orch, wf)
    decide(orch, reqs["call_b"], "MODIFIED", modifications={"count": 20})
    decide(orch, reqs["call_a"], "APPROVED")
    with pytest.raises(InvalidInput) as info:  # checked against this item's own schema
        decide(orch, reqs["call_c"], "MODIFIED", modifications={"count": "three"})
    assert info.value.field == "modifications.count"
    done = decide(orch, reqs["call_c"], "MODIFIED", modifications={"to": "carol@example.org"})
    assert done.current_state.value == "executing"
    state = orch.latest_approved_state(wf)
    assert state is not None
    assert state.parameters == {
        "call_a": {"to": "alice", "count": 1},
        "call_b": {"to": "bob", "count": 20},
        "call_c": {"to": "carol@example.org", "count": 3},
    }
    assert [s.status for s in orch.list_snapshots(wf)] == ["superseded", "modified"]
    assert len(releases(orch, wf)) == 1
    assert orch.verify_audit(wf)[1] is None


async def test_one_rejection_closes_the_siblings_and_rolls_back(db: Database) -> None:
    undone: list[str] = []
    orch = orchestrator(db, undone)
    wf = started(orch)
    orch.register_step(wf, "drafted", "unsend", {"to": "everyone"})
    reqs = await pause_items(orch, wf)
    decide(orch, reqs["call_a"], "APPROVED")
    after = decide(orch, reqs["call_b"], "REJECTED", rationale="Bob left the company")
    assert after.current_state.value == "rolling_back"
    statuses = {r.item_key: r.status for r, _ in orch.approval_history(wf)}
    assert statuses == {"call_a": "decided", "call_b": "decided", "call_c": "closed"}
    with pytest.raises(DecisionConflict) as info:
        decide(orch, reqs["call_c"], "APPROVED")
    assert info.value.status == "closed"
    assert "sibling item was rejected" in info.value.message and "call_c" in info.value.message
    closed = [e for e in orch.audit_events(wf) if e["kind"] == "items_closed"]
    assert len(closed) == 1 and closed[0]["payload"]["rejected_item_key"] == "call_b"
    assert [c["item_key"] for c in closed[0]["payload"]["closed"]] == ["call_c"]
    with orch.db.read() as conn:  # the closed sibling's notice commits with the rejection
        kinds = conn.execute(
            select(notifications.c.kind).where(notifications.c.request_id == reqs["call_c"])
        ).scalars()
        assert sorted(kinds) == ["closed", "waiting"]
    report = await orch.arollback(wf)
    assert report.final_state == "executing" and undone == ["everyone"]
    assert releases(orch, wf) == []
    assert orch.verify_audit(wf)[1] is None


async def test_a_rejection_reaches_an_agent_waiting_on_a_closed_sibling(orch: WorkflowOrchestrator) -> None:
    wf = started(orch)
    reqs = await pause_items(orch, wf)
    decide(orch, reqs["call_a"], "REJECTED", rationale="no")
    answer = await orch.wait_for_decision(reqs["call_c"], timeout=5)
    assert answer.request_id == reqs["call_a"] and answer.decision.value == "REJECTED"


async def test_one_expired_item_rejects_the_checkpoint(db: Database) -> None:
    cps = [CheckpointConfig(name="Send", checkpoint_id="cp1", timeout_seconds=60, on_timeout="reject")]
    orch = orchestrator(db)
    wf = started(orch, make_config(checkpoints=cps))
    reqs = await pause_items(orch, wf)
    decide(orch, reqs["call_a"], "APPROVED")
    expired = orch.sweep_expired(utcnow() + timedelta(seconds=61))
    assert len(expired) == 1 and expired[0] in (reqs["call_b"], reqs["call_c"])
    statuses = sorted(r.status for r, _ in orch.approval_history(wf))
    assert statuses == ["closed", "decided", "expired"]
    assert orch.get_workflow(wf).current_state.value == "rolling_back"
    assert orch.verify_audit(wf)[1] is None


async def test_expiry_with_on_timeout_approve_completes_once(db: Database) -> None:
    cps = [CheckpointConfig(name="Send", checkpoint_id="cp1", timeout_seconds=60, on_timeout="approve")]
    orch = orchestrator(db)
    wf = started(orch, make_config(checkpoints=cps))
    reqs = await pause_items(orch, wf)
    decide(orch, reqs["call_a"], "MODIFIED", modifications={"count": 5})
    assert len(orch.sweep_expired(utcnow() + timedelta(seconds=61))) == 2
    wf_now = orch.get_workflow(wf)
    assert wf_now.current_state.value == "executing" and wf_now.current_checkpoint == 1
    assert len(releases(orch, wf)) == 1
    state = orch.latest_approved_state(wf)
    assert state is not None and state.parameters["call_a"] == {"to": "alice", "count": 5}


async def test_racing_decisions_on_the_last_two_items_complete_once(db: Database) -> None:
    orch = orchestrator(db)
    wf = started(orch)
    reqs = await pause_items(orch, wf)
    decide(orch, reqs["call_a"], "APPROVED")
    barrier = threading.Barrier(2)
    states: list[str] = []

    def attempt(key: str) -> None:
        mine = WorkflowOrchestrator(database=Database(db.url))
        barrier.wait()
        states.append(decide(mine, reqs[key], "APPROVED", by="reviewer").current_state.value)

    threads = [threading.Thread(target=attempt, args=(k,)) for k in ("call_b", "call_c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(states) == ["awaiting_approval", "executing"]
    wf_now = orch.get_workflow(wf)
    assert wf_now.current_state.value == "executing" and wf_now.current_checkpoint == 1
    assert len(releases(orch, wf)) == 1
    approvals = [e for e in orch.audit_events(wf) if e["kind"] == "transition"]
    assert [e["payload"]["event"] for e in approvals].count("approved") == 1
    assert orch.verify_audit(wf)[1] is None


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "items"),
        ([{"key": "a"}, {"key": "b"}, {"key": "a"}], "items.2.key"),
        ([{"key": ""}], "items.0.key"),
        ([{"key": "   "}], "items.0.key"),
        (
            [{"key": "a", "parameters": {"n": 1}, "parameter_schema": {"type": "string"}}],
            "items.0.parameter_schema.type",
        ),
        ([{"key": "a", "summary": " "}], "items.0.summary"),
        ([{"key": "a", "surprise": 1}], "items.0.surprise"),
    ],
)
async def test_bad_items_are_refused_naming_the_field_and_write_nothing(
    orch: WorkflowOrchestrator, items: list[dict[str, Any]], field: str
) -> None:
    wf = started(orch)
    events = len(orch.audit_events(wf))
    with pytest.raises(InvalidInput) as info:
        await orch.pause_items(wf, ExecutionState(checkpoint_id="cp1"), "ask", items)
    assert info.value.field == field
    assert orch.list_snapshots(wf) == [] and orch.pending_approvals(wf) == []
    assert len(orch.audit_events(wf)) == events
    assert orch.get_workflow(wf).current_state.value == "executing"


async def test_cancelling_the_workflow_cancels_every_item(orch: WorkflowOrchestrator) -> None:
    wf = started(orch)
    await pause_items(orch, wf)
    assert orch.cancel_workflow(wf, "changed plans", actor="poster").current_state.value == "failed"
    assert sorted(r.status for r, _ in orch.approval_history(wf)) == ["cancelled"] * 3
    assert orch.verify_audit(wf)[1] is None


async def test_a_checkpoint_that_needs_no_approval_opens_no_items(db: Database) -> None:
    cps = [CheckpointConfig(name="Log", checkpoint_id="cp1", requires_approval=False)]
    orch = orchestrator(db)
    wf = started(orch, make_config(checkpoints=cps))
    snap, reqs = await orch.pause_items(wf, ExecutionState(checkpoint_id="cp1"), "ask", ITEMS)
    assert reqs == [] and snap.status == "passed"
