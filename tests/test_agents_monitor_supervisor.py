"""MonitorAgent and SupervisorAgent on a real workflow, on SQLite and PostgreSQL (``db``).

The monitor reads only ``ExecutionState`` fields; the clock is injected, so every interval and elapsed
time below is exact.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from saferun.agents.monitor.agent import MonitorAgent
from saferun.agents.monitor.telemetry import telemetry_from_state
from saferun.agents.supervisor.agent import SupervisorAgent
from saferun.core.state_machine.models import ApprovalDecision, ExecutionState
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.monitor_rules import (
    ApiCallSpikeRule,
    BudgetRule,
    ErrorRateSpikeRule,
    MonitorConfig,
    Verdict,
)
from saferun.errors import DecisionConflict, InvalidInput, WorkflowNotFound
from saferun.storage.database import Database
from tests.helpers import decide, make_config, pause, started

NOW = datetime(2026, 1, 18, 10, 30, tzinfo=UTC)


def calls(per_minute: list[int], errors: list[int] | None = None) -> list[dict[str, Any]]:
    """API-call records, ``per_minute[i]`` in minute ``i`` (the last minute ends at NOW)."""
    errors = errors or [0] * len(per_minute)
    out = []
    for i, (n, bad) in enumerate(zip(per_minute, errors, strict=True)):
        minute_end = NOW - timedelta(minutes=len(per_minute) - 1 - i)
        for k in range(n):
            out.append(
                {
                    "timestamp": (minute_end - timedelta(seconds=1 + k * 0.1)).isoformat(),
                    "endpoint": "/api/search",
                    "status": 500 if k < bad else 200,
                }
            )
    return out


def monitor(db: Database, config: MonitorConfig | None = None) -> MonitorAgent:
    return MonitorAgent(config, orchestrator=WorkflowOrchestrator(database=db), clock=lambda: NOW)


# ---------------------------------------------------------------------------------------------- telemetry
def test_telemetry_reads_both_spellings_of_resource_consumption() -> None:
    config = MonitorConfig(
        api_call_spike=ApiCallSpikeRule(window=2), error_rate_spike=ErrorRateSpikeRule(window=2)
    )
    seed = ExecutionState(
        checkpoint_id="cp1",
        resource_consumption={"estimated_cost_usd": 1.5, "tokens_used": 300, "execution_time_seconds": 4},
        intermediate_outputs={"quality_score": 0.95, "progress": 0.5},
        risk_assessment={"next_action": "send emails", "action_tags": ["irreversible"]},
        api_calls=[*calls([1, 2, 3]), {"endpoint": "/no-time", "status": 200}],
    )
    t = telemetry_from_state(seed, config, now=NOW)
    assert (t.spent_usd, t.tokens, t.elapsed_seconds, t.progress) == (1.5, 300, 4.0, 0.5)
    assert t.api_calls_per_interval == (1, 2, 3) and t.errors_per_interval == (0, 0, 0)
    assert t.confidence == {"quality_score": 0.95}
    assert t.next_action == "send emails" and t.action_tags == {"irreversible"}
    recorder = ExecutionState(
        checkpoint_id="cp1",
        resource_consumption={"cost_usd": 2.0, "tokens_in": 100, "tokens_out": 50, "seconds": 9},
        api_calls=[
            {"timestamp": NOW.isoformat(), "status": "error"},
            {"timestamp": NOW.isoformat(), "error": "timeout"},
            {"timestamp": NOW.isoformat().replace("+00:00", "Z"), "ok": False},
            {"timestamp": NOW.isoformat(), "status": 200},
        ],
    )
    t = telemetry_from_state(recorder, config)  # no clock: the intervals end at the newest call
    assert (t.spent_usd, t.tokens, t.elapsed_seconds) == (2.0, 150, 9.0)
    assert t.api_calls_per_interval == (0, 0, 4) and t.errors_per_interval == (0, 0, 3)


def test_check_and_needs_checkpoint_keep_working_on_a_bare_state() -> None:
    agent = MonitorAgent(MonitorConfig(budget=BudgetRule(budget_usd=10)))
    state = ExecutionState(
        checkpoint_id="cp1",
        confidence_scores={"plan": 0.7},
        resource_consumption={"estimated_cost_usd": 9.0},
    )
    alerts = agent.check(state)
    assert [a["rule"] for a in alerts] == ["spend_budget", "low_confidence"]
    assert alerts[0]["observed"] == {"spent_usd": 9.0, "share_used": 0.9}
    assert agent.needs_checkpoint(state)
    assert not agent.needs_checkpoint(ExecutionState(checkpoint_id="cp1", confidence_scores={"plan": 0.9}))


# ---------------------------------------------------------------------------------------------- observe
async def test_a_spike_raises_a_checkpoint_with_its_numbers(db: Database) -> None:
    agent = monitor(db)
    orch = agent.orchestrator
    wf = started(orch)
    state = ExecutionState(
        checkpoint_id="cp1",
        api_calls=calls([3, 2, 4, 3, 3, 40], errors=[0, 0, 0, 0, 0, 15]),
        confidence_scores={"search": 0.9},
    )
    seen = await agent.observe(wf, state)
    assert seen.verdict == Verdict.CHECKPOINT and seen.action == "checkpoint"
    assert orch.get_workflow(wf).current_state.value == "awaiting_approval"
    req = orch.get_approval_request(seen.request.request_id)  # type: ignore[union-attr]
    by_rule = {a["rule"]: a for a in req.alerts}
    assert set(by_rule) == {"api_call_spike", "error_rate_spike"}
    assert by_rule["api_call_spike"]["observed"] == {
        "calls": 40,
        "baseline_median": 3.0,
        "history": [3, 2, 4, 3, 3],
    }
    assert by_rule["error_rate_spike"]["observed"]["error_rate"] == 0.375
    assert req.summary.startswith("The monitor paused this workflow (api_call_spike, error_rate_spike)")
    # two warnings, risk not assessed, agent at 90 %: 1 - .75 * .75 * .9 = 0.49375 -> modify
    assert (req.recommendation, req.confidence) == ("modify", 0.5062)
    assert req.risk["recommendation_reason"].startswith("Recommend modify at 51% confidence: 2 warnings")
    kinds = [e["kind"] for e in orch.audit_events(wf)]
    assert "checkpoint_captured" in kinds


async def test_a_quiet_workflow_is_left_alone(db: Database) -> None:
    agent = monitor(db)
    wf = started(agent.orchestrator)
    state = ExecutionState(checkpoint_id="cp1", api_calls=calls([3, 2, 4, 3, 3, 4]))
    seen = await agent.observe(wf, state)
    assert (seen.verdict, seen.action, seen.request) == (Verdict.OK, "none", None)
    assert agent.orchestrator.get_workflow(wf).current_state.value == "executing"


async def test_alerts_only_rules_do_not_stop_the_agent(db: Database) -> None:
    config = MonitorConfig(budget=BudgetRule(budget_usd=10, checkpoint=False))
    agent = monitor(db, config)
    wf = started(agent.orchestrator)
    state = ExecutionState(checkpoint_id="cp1", resource_consumption={"cost_usd": 8.5})
    seen = await agent.observe(wf, state)
    assert seen.verdict == Verdict.ALERT and seen.action == "none"
    assert [a["rule"] for a in seen.alerts] == ["spend_budget"]  # for the caller's next checkpoint
    assert agent.orchestrator.get_workflow(wf).current_state.value == "executing"


async def test_alerts_are_added_to_the_pending_request(db: Database) -> None:
    agent = monitor(db, MonitorConfig(budget=BudgetRule(budget_usd=10)))
    orch = agent.orchestrator
    wf = started(orch)
    request_id = await pause(orch, wf, "cp1")  # the agent's own checkpoint, no alerts yet
    spent = ExecutionState(checkpoint_id="cp1", resource_consumption={"cost_usd": 12.0})
    seen = await agent.observe(wf, spent)
    assert seen.action == "alerts_added" and seen.request is not None
    req = orch.get_approval_request(request_id)
    (alert,) = req.alerts
    assert alert["rule"] == "spend_budget" and alert["severity"] == "critical"
    assert alert["observed"] == {"spent_usd": 12.0, "share_used": 1.2}
    added = [e for e in orch.audit_events(wf) if e["kind"] == "alerts_added"]
    assert len(added) == 1 and added[0]["actor"] == "monitor"
    assert added[0]["payload"]["request_id"] == request_id

    # the same finding again adds nothing; a new one is appended
    await agent.observe(wf, spent)
    more = ExecutionState(checkpoint_id="cp1", resource_consumption={"cost_usd": 15.0})
    await agent.observe(wf, more)
    req = orch.get_approval_request(request_id)
    assert [a["observed"]["spent_usd"] for a in req.alerts] == [12.0, 15.0]
    assert sum(1 for e in orch.audit_events(wf) if e["kind"] == "alerts_added") == 2
    assert orch.verify_audit(wf)[1] is None

    # once decided, the request is closed to alerts
    decide(orch, request_id, "APPROVED")
    with pytest.raises(DecisionConflict):
        orch.add_alerts(request_id, [{"rule": "late", "severity": "info", "message": "too late"}])


async def test_add_alerts_refuses_what_is_not_an_alert(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    request_id = await pause(orch, wf, "cp1")
    with pytest.raises(InvalidInput) as info:
        orch.add_alerts(request_id, ["spend is high"])  # type: ignore[list-item]
    assert info.value.field == "alerts"
    assert orch.get_approval_request(request_id).alerts == []


async def test_rules_come_from_the_workflows_own_metadata(db: Database) -> None:
    agent = monitor(db)  # its own rules: no budget
    orch = agent.orchestrator
    cfg = make_config(metadata={"monitor": {"budget": {"max_tokens": 1000, "share": 0.5}}})
    wf = started(orch, cfg)
    state = ExecutionState(checkpoint_id="cp1", resource_consumption={"tokens_used": 600})
    seen = await agent.observe(wf, state)
    assert seen.action == "checkpoint" and [a["rule"] for a in seen.alerts] == ["token_budget"]

    yaml_rules = make_config(metadata={"monitor": "budget: {budget_usd: 1}\nconfidence: null\n"})
    wf2 = started(orch, yaml_rules)
    seen = await agent.observe(
        wf2, ExecutionState(checkpoint_id="cp1", resource_consumption={"cost_usd": 2.0})
    )
    assert [a["rule"] for a in seen.alerts] == ["spend_budget"]

    bad = make_config(metadata={"monitor": {"budget": {"budget_usd": -1}}})
    with pytest.raises(InvalidInput) as info:  # refused when the workflow is created, not mid-run
        orch.initialize_workflow(bad)
    assert info.value.field == "metadata.monitor.budget.budget_usd"
    with pytest.raises(WorkflowNotFound):
        orch.get_workflow(bad.workflow_id)
    with pytest.raises(InvalidInput, match="YAML"):
        orch.initialize_workflow(make_config(metadata={"monitor": "budget: [unclosed"}))


async def test_stuck_is_measured_from_the_workflows_start_when_the_state_records_no_time(
    db: Database,
) -> None:
    orch = WorkflowOrchestrator(database=db)
    cfg = make_config(metadata={"monitor": {"progress": {"expected_seconds": 600}}})
    wf = started(orch, cfg)
    began = orch.get_workflow(wf).started_at
    assert began is not None
    agent = MonitorAgent(orchestrator=orch, clock=lambda: began + timedelta(seconds=1200))
    state = ExecutionState(checkpoint_id="cp1", intermediate_outputs={"progress": 0.3})
    seen = await agent.observe(wf, state)
    (alert,) = seen.alerts
    assert alert["rule"] == "stuck" and alert["observed"] == {"elapsed_seconds": 1200.0, "progress": 0.3}
    assert seen.action == "checkpoint"


async def test_a_monitor_checkpoint_binds_to_the_configured_checkpoint(db: Database) -> None:
    agent = monitor(db, MonitorConfig(checkpoint_id="cp2"))
    orch = agent.orchestrator
    wf = started(orch)
    seen = await agent.observe(wf, ExecutionState(checkpoint_id="cp1", confidence_scores={"x": 0.2}))
    assert seen.request is not None and seen.request.checkpoint_id == "cp2"


# ---------------------------------------------------------------------------------------------- the gate
async def test_an_irreversible_action_runs_only_after_approval(db: Database, tmp_path: Path) -> None:
    agent = monitor(db)
    orch = agent.orchestrator
    wf = started(orch)
    outbox = tmp_path / "sent.txt"
    state = ExecutionState(checkpoint_id="cp1", confidence_scores={"draft": 0.95})

    assert agent.gate("read inbox", ["read-only"]) is None
    seen = await agent.gate_action(wf, state, "send 500 emails", ["irreversible", "bulk"])
    assert seen.action == "checkpoint" and seen.request is not None
    (alert,) = seen.alerts
    assert alert["rule"] == "critical_action"
    assert alert["observed"] == {"action": "send 500 emails", "tags": ["irreversible"]}
    assert not outbox.exists()

    async def reviewer() -> None:
        await asyncio.sleep(0)
        decide(orch, seen.request.request_id, "APPROVED")  # type: ignore[union-attr]

    decision, _ = await asyncio.gather(
        orch.wait_for_decision(seen.request.request_id, timeout=30), reviewer()
    )
    assert decision.decision == ApprovalDecision.APPROVED
    outbox.write_text("500 emails")  # the action, only now
    assert orch.get_workflow(wf).current_state.value == "executing"

    # an untagged action does not stop the workflow
    quiet = await agent.gate_action(wf, state.model_copy(update={"checkpoint_id": "cp2"}), "log", [])
    assert quiet.action == "none" and orch.get_workflow(wf).current_state.value == "executing"


# ---------------------------------------------------------------------------------------------- supervisor
async def test_supervisor_recommends_from_the_monitors_findings_and_the_risk(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    supervisor = SupervisorAgent("reviewer", orch, monitor=MonitorAgent(orchestrator=orch, clock=lambda: NOW))
    wf = started(orch)
    state = ExecutionState(
        checkpoint_id="cp1",
        decision_trace=["Searched 3 sources", "Drafted the pricing table"],
        intermediate_outputs={"rows": 12},
        confidence_scores={"pricing": 0.6, "sources": 0.9},
        risk_assessment={"level": "high", "reason": "prices go live for all customers"},
        parameters={"price_change_pct": 5},
    )
    snapshot = await orch.create_checkpoint(wf, state)
    request = supervisor.create_approval_request(
        workflow_id=wf,
        checkpoint_id=snapshot.checkpoint_id,
        snapshot_id=snapshot.snapshot_id,
        execution_state=state,
    )
    # low_confidence warning (.25), high risk (.30), doubt .4: 1 - .75 * .7 * .6 = 0.685 -> modify
    assert (request.recommendation, request.confidence) == ("modify", 0.685)
    assert [a["rule"] for a in request.alerts] == ["low_confidence"]
    assert request.alerts[0]["observed"] == {"metric": "pricing", "confidence": 0.6}
    stored = orch.get_approval_request(request.request_id)
    assert stored.risk["recommendation_reason"] == (
        "Recommend modify at 68% confidence: 1 warning (low_confidence), high risk and the agent's lowest "
        "confidence is 60% (pricing)."
    )
    assert stored.risk["level"] == "high"

    display = supervisor.format_for_display(stored)
    assert display["recommendation"] == "modify" and display["confidence"] == "68%"
    assert display["why"] == stored.risk["recommendation_reason"]
    assert "recommendation_reason" not in display["risk"]
    assert display["alerts"][0]["message"] == "pricing confidence 60% is below 80%"
    assert display["summary"] == "Checkpoint cp1: Drafted the pricing table. Outputs: rows=12."
    assert display["options"] == ["APPROVED", "MODIFIED", "REJECTED"]

    response = supervisor.submit_decision(
        request_id=request.request_id,
        decision=ApprovalDecision.MODIFIED,
        rationale="Smaller change first",
        modifications={"price_change_pct": 2},
    )
    assert response.approved_by == "reviewer"
    orch.submit_approval(wf, response)
    restored = orch.latest_approved_state(wf)
    assert restored is not None and restored.parameters == {"price_change_pct": 2}


async def test_supervisor_approves_a_clean_checkpoint_like_the_seed(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    supervisor = SupervisorAgent("reviewer", orch)
    wf = started(orch)
    state = ExecutionState(
        checkpoint_id="review_data",
        api_calls=[{"timestamp": "2025-01-18T10:29:45Z", "endpoint": "/api/data/fetch", "status": 200}],
        intermediate_outputs={"records_collected": 3, "quality_score": 0.95},
        decision_trace=["Fetched records using validated API", "All validation checks passed"],
    )
    snapshot = await orch.create_checkpoint(wf, state)
    request = supervisor.create_approval_request(wf, snapshot.checkpoint_id, snapshot.snapshot_id, state)
    assert (request.recommendation, request.confidence, request.alerts) == ("approve", 0.95, [])
    advice = supervisor.recommend(state)
    assert advice.explanation == (
        "Recommend approve at 95% confidence: no monitor alerts, risk not assessed and the agent's lowest "
        "confidence is 95% (quality_score)."
    )
    # alerts given by the caller are used as they are
    given = [{"rule": "manual", "severity": "critical", "message": "a human flagged this"}]
    assert supervisor.recommend(state, given).advice.value == "modify"


async def test_supervisor_uses_the_workflows_own_rules(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    supervisor = SupervisorAgent("reviewer", orch)
    cfg = make_config(metadata={"monitor": {"confidence": {"min_confidence": 0.99}}})
    wf = started(orch, cfg)
    state = ExecutionState(checkpoint_id="cp1", confidence_scores={"plan": 0.95})
    snapshot = await orch.create_checkpoint(wf, state)
    request = supervisor.create_approval_request(wf, "cp1", snapshot.snapshot_id, state)
    assert [a["threshold"] for a in request.alerts] == [{"min_confidence": 0.99}]


def test_error_spike_rule_reads_recorded_failures() -> None:
    agent = MonitorAgent(
        MonitorConfig(error_rate_spike=ErrorRateSpikeRule(window=3, min_errors=2)), clock=lambda: NOW
    )
    state = ExecutionState(checkpoint_id="cp1", api_calls=calls([4, 4, 4, 4], errors=[0, 1, 0, 3]))
    (alert,) = agent.check(state)
    assert alert["rule"] == "error_rate_spike"
    assert alert["observed"] == {"errors": 3, "calls": 4, "error_rate": 0.75, "baseline_median_rate": 0.0}
