"""Monitor rules, pure: each rule fires on the right numbers and says them; impossible thresholds and
bad YAML are refused naming the field; the recommendation follows its documented rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from saferun.domain.monitor_rules import (
    ApiCallSpikeRule,
    BudgetRule,
    ConfidenceRule,
    CriticalActionRule,
    ErrorRateSpikeRule,
    MonitorConfig,
    ProgressRule,
    Telemetry,
    Verdict,
    api_call_spike_alert,
    budget_alerts,
    confidence_alerts,
    critical_action_alert,
    error_rate_spike_alert,
    evaluate,
    per_interval,
    progress_alerts,
)
from saferun.domain.recommendation import Advice, recommend, risk_level
from saferun.errors import InvalidInput

QUIET = MonitorConfig(api_call_spike=None, error_rate_spike=None, confidence=None)


# ---------------------------------------------------------------------------------------------- budget
def test_spend_past_the_share_of_the_budget_is_a_warning_with_its_numbers() -> None:
    rule = BudgetRule(budget_usd=50, share=0.8)
    assert budget_alerts(rule, Telemetry(spent_usd=39.99)) == []
    (alert,) = budget_alerts(rule, Telemetry(spent_usd=40))
    assert alert.rule == "spend_budget" and alert.severity == "warning"
    assert alert.observed == {"spent_usd": 40.0, "share_used": 0.8}
    assert alert.threshold == {"budget_usd": 50.0, "share": 0.8}
    assert alert.message == "spent $40.00 of $50.00: 80%, past the 80% alert share"


def test_tokens_past_the_whole_budget_are_critical() -> None:
    rule = BudgetRule(max_tokens=10_000, share=0.5, severity="info")
    (alert,) = budget_alerts(rule, Telemetry(tokens=12_000))
    assert alert.rule == "token_budget" and alert.severity == "critical"
    assert alert.observed == {"tokens": 12_000.0, "share_used": 1.2}
    assert "over budget" in alert.message


# ---------------------------------------------------------------------------------------------- spikes
def test_api_call_spike_is_judged_against_the_median_of_the_workflows_own_window() -> None:
    rule = ApiCallSpikeRule(window=5, factor=3, min_increase=10)
    # one earlier burst (40) does not raise the bar: the median of 2,3,40,4,3 is 3
    alert = api_call_spike_alert(rule, Telemetry(api_calls_per_interval=(9, 2, 3, 40, 4, 3, 13)))
    assert alert is not None and alert.rule == "api_call_spike"
    assert alert.observed == {"calls": 13, "baseline_median": 3.0, "history": [2, 3, 40, 4, 3]}
    assert alert.threshold == {"factor": 3.0, "min_increase": 10, "limit": 13.0}


def test_api_calls_below_either_bound_are_no_spike() -> None:
    rule = ApiCallSpikeRule(window=3, factor=3, min_increase=10)
    assert api_call_spike_alert(rule, Telemetry(api_calls_per_interval=(3, 3, 3, 12))) is None  # < +10
    assert api_call_spike_alert(rule, Telemetry(api_calls_per_interval=(10, 10, 10, 25))) is None  # < 3x
    assert api_call_spike_alert(rule, Telemetry(api_calls_per_interval=(0, 0, 0, 10))) is not None


def test_a_spike_needs_a_full_window_of_history() -> None:
    rule = ApiCallSpikeRule(window=5, factor=2, min_increase=1)
    assert api_call_spike_alert(rule, Telemetry(api_calls_per_interval=(1, 1, 1, 1, 50))) is None


def test_error_rate_spike_against_the_median_rate_of_intervals_that_had_calls() -> None:
    rule = ErrorRateSpikeRule(window=4, increase=0.25, min_errors=3)
    t = Telemetry(
        api_calls_per_interval=(10, 0, 10, 20, 10),  # the quiet interval has no rate and is skipped
        errors_per_interval=(1, 0, 0, 2, 6),
    )
    alert = error_rate_spike_alert(rule, t)
    assert alert is not None and alert.rule == "error_rate_spike"
    assert alert.observed == {"errors": 6, "calls": 10, "error_rate": 0.6, "baseline_median_rate": 0.1}
    assert alert.threshold == {"increase": 0.25, "min_errors": 3, "limit_rate": 0.35}


def test_error_rate_needs_enough_errors_and_a_real_rise() -> None:
    rule = ErrorRateSpikeRule(window=2, increase=0.25, min_errors=3)
    few = Telemetry(api_calls_per_interval=(10, 10, 4), errors_per_interval=(0, 0, 2))
    assert error_rate_spike_alert(rule, few) is None  # 50 % but only 2 errors
    usual = Telemetry(api_calls_per_interval=(10, 10, 10), errors_per_interval=(4, 5, 6))
    assert error_rate_spike_alert(rule, usual) is None  # 60 % against a 45 % baseline
    no_history = Telemetry(api_calls_per_interval=(0, 0, 10), errors_per_interval=(0, 0, 9))
    assert error_rate_spike_alert(rule, no_history) is None


# ---------------------------------------------------------------------------------------------- progress
def test_stuck_past_the_expected_duration_with_work_left() -> None:
    rule = ProgressRule(expected_seconds=600, stuck_after=1.5)
    assert progress_alerts(rule, Telemetry(elapsed_seconds=899, progress=0.4)) == []
    (alert,) = progress_alerts(rule, Telemetry(elapsed_seconds=900, progress=0.4))
    assert alert.rule == "stuck"
    assert alert.observed == {"elapsed_seconds": 900.0, "progress": 0.4}
    assert alert.threshold == {"expected_seconds": 600.0, "stuck_after": 1.5, "stuck_after_seconds": 900.0}
    assert progress_alerts(rule, Telemetry(elapsed_seconds=2000, progress=1.0)) == []  # done, not stuck
    (unknown,) = progress_alerts(rule, Telemetry(elapsed_seconds=2000))
    assert "unknown progress" in unknown.message


def test_far_ahead_of_a_steady_schedule() -> None:
    rule = ProgressRule(expected_seconds=1000, ahead_margin=0.5)
    assert progress_alerts(rule, Telemetry(elapsed_seconds=100, progress=0.59)) == []
    (alert,) = progress_alerts(rule, Telemetry(elapsed_seconds=100, progress=0.6))
    assert alert.rule == "ahead_of_schedule"
    assert alert.observed == {"progress": 0.6, "elapsed_seconds": 100.0, "expected_progress": 0.1}
    assert progress_alerts(rule, Telemetry(progress=1.0)) == []  # no elapsed time: nothing to judge


# ------------------------------------------------------------------------------------- confidence, gate
def test_each_confidence_below_the_seeds_80_percent_is_an_alert() -> None:
    t = Telemetry(confidence={"research": 0.79, "analysis": 0.8, "quality_score": 0.5})
    alerts = confidence_alerts(ConfidenceRule(), t)
    assert [(a.observed["metric"], a.observed["confidence"]) for a in alerts] == [
        ("quality_score", 0.5),
        ("research", 0.79),
    ]
    assert alerts[1].threshold == {"min_confidence": 0.8}
    assert alerts[1].message == "research confidence 79% is below 80%"


def test_critical_and_irreversible_actions_always_need_approval() -> None:
    rule = CriticalActionRule(tags=["payment"])
    assert rule.tags == {"payment", "critical", "irreversible"}
    assert critical_action_alert(rule, "fetch page", ["read-only"]) is None
    alert = critical_action_alert(rule, "send emails", ["Irreversible", "bulk"])
    assert alert is not None and alert.checkpoint is True
    assert alert.observed == {"action": "send emails", "tags": ["irreversible"]}
    # the gate cannot be switched off, and stays a checkpoint even when every other rule only alerts
    with pytest.raises(InvalidInput) as info:
        MonitorConfig(critical_actions=None)
    assert info.value.field == "critical_actions"
    config = MonitorConfig(confidence=ConfidenceRule(checkpoint=False))
    ev = evaluate(config, Telemetry(confidence={"x": 0.1}, next_action="wire $5k", action_tags=["critical"]))
    assert ev.verdict == Verdict.CHECKPOINT and [a.rule for a in ev.alerts] == [
        "low_confidence",
        "critical_action",
    ]


# ---------------------------------------------------------------------------------------------- verdict
def test_verdict_is_checkpoint_alert_or_ok() -> None:
    assert evaluate(MonitorConfig(), Telemetry(confidence={"x": 0.95})).verdict == Verdict.OK
    checkpoint = evaluate(MonitorConfig(), Telemetry(confidence={"x": 0.5}))
    assert checkpoint.verdict == Verdict.CHECKPOINT
    assert checkpoint.to_dicts()[0]["rule"] == "low_confidence"
    only_alert = MonitorConfig(confidence=ConfidenceRule(checkpoint=False, severity="info"))
    ev = evaluate(only_alert, Telemetry(confidence={"x": 0.5}))
    assert ev.verdict == Verdict.ALERT and ev.alerts[0].severity == "info"


def test_evaluate_runs_every_rule_in_a_fixed_order() -> None:
    config = MonitorConfig(
        budget=BudgetRule(budget_usd=10),
        api_call_spike=ApiCallSpikeRule(window=2, factor=2, min_increase=2),
        error_rate_spike=ErrorRateSpikeRule(window=2, increase=0.2, min_errors=1),
        progress=ProgressRule(expected_seconds=10),
    )
    t = Telemetry(
        spent_usd=9,
        api_calls_per_interval=(2, 2, 10),
        errors_per_interval=(0, 0, 5),
        elapsed_seconds=20,
        progress=0.2,
        confidence={"plan": 0.6},
        next_action="deploy",
        action_tags=["critical"],
    )
    assert [a.rule for a in evaluate(config, t).alerts] == [
        "spend_budget",
        "api_call_spike",
        "error_rate_spike",
        "stuck",
        "low_confidence",
        "critical_action",
    ]


# ---------------------------------------------------------------------------------------------- intervals
def test_calls_are_counted_per_interval_ending_now() -> None:
    now = datetime(2026, 1, 18, 10, 30, tzinfo=UTC)
    events = [
        (now - timedelta(seconds=5), False),  # current interval
        (now - timedelta(seconds=60), True),  # exactly one interval old: still current
        (now - timedelta(seconds=61), False),  # previous
        (now - timedelta(seconds=179), True),  # two back
        (now - timedelta(seconds=181), False),  # beyond the three intervals kept
        (now.replace(tzinfo=None) + timedelta(seconds=3), False),  # naive = UTC, future counts as now
    ]
    calls, errors = per_interval(events, now, 60, 3)
    assert calls == (1, 1, 3) and errors == (1, 0, 1)
    with pytest.raises(InvalidInput) as info:
        per_interval(events, now, 0, 3)
    assert info.value.field == "interval_seconds"


# ---------------------------------------------------------------------------------------------- config, YAML
YAML = """
# monitor rules for the pricing study
interval_seconds: 30
checkpoint_id: monitor_review
budget:
  budget_usd: 50
  max_tokens: 200000
  share: 0.8
api_call_spike:
  window: 5
  factor: 3
  min_increase: 10
error_rate_spike: null        # switched off
progress:
  expected_seconds: 1800
  stuck_after: 1.5
  ahead_margin: 0.5
  checkpoint: false
  severity: info
confidence:
  min_confidence: 0.8
critical_actions:
  tags: [payment, deploy]
"""


def test_rules_load_from_yaml_and_round_trip(tmp_path: Path) -> None:
    config = MonitorConfig.from_yaml(YAML)
    assert config.interval_seconds == 30 and config.checkpoint_id == "monitor_review"
    assert config.budget == BudgetRule(budget_usd=50, max_tokens=200_000, share=0.8)
    assert config.error_rate_spike is None and config.history_needed == 5
    assert config.progress is not None and config.progress.checkpoint is False
    assert config.critical_actions.tags == {"payment", "deploy", "critical", "irreversible"}
    assert MonitorConfig.from_yaml(config.to_yaml()) == config
    assert MonitorConfig.from_yaml("") == MonitorConfig()  # an empty file: the defaults

    from saferun.agents.monitor.agent import load_config

    path = tmp_path / "monitor.yaml"
    path.write_text(YAML)
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("budget: {budget_usd: -5}", "budget.budget_usd", "greater than 0"),
        ("budget: {max_tokens: -1}", "budget.max_tokens", "greater than 0"),
        ("budget: {budget_usd: 5, share: 1.5}", "budget.share", "less than or equal to 1"),
        ("budget: {budget_usd: 5, share: 0}", "budget.share", "greater than 0"),
        ("budget: {share: 0.5}", "budget.max_tokens", "needs budget_usd, max_tokens or both"),
        ("api_call_spike: {window: 0}", "api_call_spike.window", "greater than or equal to 1"),
        ("api_call_spike: {factor: 1}", "api_call_spike.factor", "greater than 1"),
        ("error_rate_spike: {increase: 2}", "error_rate_spike.increase", "less than or equal to 1"),
        ("error_rate_spike: {window: 0}", "error_rate_spike.window", "greater than or equal to 1"),
        ("progress: {expected_seconds: 0}", "progress.expected_seconds", "greater than 0"),
        ("progress: {expected_seconds: 60, stuck_after: 0.5}", "progress.stuck_after", "greater than"),
        ("progress: {}", "progress.expected_seconds", "required"),
        ("confidence: {min_confidence: 1.2}", "confidence.min_confidence", "less than or equal to 1"),
        ("confidence: {severity: loud}", "confidence.severity", "'info', 'warning' or 'critical'"),
        ("critical_actions: null", "critical_actions", "always need approval"),
        ("critical_actions: {tags: ['']}", "critical_actions.tags", "non-empty"),
        ("interval_seconds: -1", "interval_seconds", "greater than 0"),
        ("budgett: {budget_usd: 5}", "budgett", "Extra inputs are not permitted"),
        ("[1, 2]", "yaml", "expected a mapping of rules, got list"),
        ("budget: {budget_usd: 5\nshare: 1", "yaml", "not valid YAML at line"),
    ],
)
def test_impossible_thresholds_and_bad_yaml_name_the_field(text: str, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        MonitorConfig.from_yaml(text)
    assert info.value.field == field
    assert words in info.value.message
    assert info.value.http_status == 422


def test_constructors_refuse_bad_thresholds_the_same_way() -> None:
    with pytest.raises(InvalidInput) as info:
        MonitorConfig(budget={"budget_usd": 10, "share": 3})
    assert info.value.field == "budget.share"
    with pytest.raises(InvalidInput) as info:
        ApiCallSpikeRule(window=0, factor=0.5)
    assert info.value.field == "window" and "also factor" in info.value.message
    with pytest.raises(InvalidInput) as info:
        Telemetry(api_calls_per_interval=(1, 2), errors_per_interval=(0, 3))
    assert info.value.field == "errors_per_interval"
    with pytest.raises(InvalidInput) as info:
        Telemetry(confidence={"x": 92})
    assert info.value.field == "confidence"


def test_a_workflow_metadata_mapping_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        MonitorConfig.from_mapping(["budget"], field="metadata.monitor")
    assert info.value.field == "metadata.monitor"


# ------------------------------------------------------------------------------------- recommendation
def test_a_clean_checkpoint_is_approve_at_the_agents_confidence() -> None:
    rec = recommend([], {"level": "low"}, {"research": 0.92, "quality": 0.97})
    assert rec.advice == Advice.APPROVE and rec.confidence == 0.92
    assert rec.explanation == (
        "Recommend approve at 92% confidence: no monitor alerts, low risk and the agent's lowest "
        "confidence is 92% (research)."
    )


def test_warnings_and_risk_move_the_advice_to_modify_then_reject() -> None:
    warnings = [
        {"rule": "spend_budget", "severity": "warning"},
        {"rule": "api_call_spike", "severity": "warning"},
    ]
    modify = recommend(warnings, {"level": "medium"}, {"plan": 0.9})
    # concern = 1 - 0.75 * 0.75 * 0.9 * 0.9 = 0.544375
    assert modify.advice == Advice.MODIFY and modify.concern == 0.5444 and modify.confidence == 0.5444
    assert "2 warnings (spend_budget, api_call_spike)" in modify.explanation
    assert "medium risk" in modify.explanation
    reject = recommend([{"rule": "token_budget", "severity": "critical"}], {"rating": "High"}, {"plan": 0.7})
    # 1 - 0.4 * 0.7 * 0.7 = 0.804
    assert reject.advice == Advice.REJECT and reject.confidence == 0.804
    assert reject.explanation.startswith(
        "Recommend reject at 80% confidence: 1 critical alert (token_budget)"
    )


def test_no_confidence_reported_counts_as_some_doubt() -> None:
    rec = recommend()
    assert rec.advice == Advice.APPROVE and rec.confidence == 0.8
    assert "no confidence reported by the agent" in rec.explanation and "risk not assessed" in rec.explanation


def test_risk_levels_from_names_synonyms_and_scores() -> None:
    assert risk_level({"level": "HIGH"}) == "high"
    assert risk_level({"severity": "moderate"}) == "medium"
    assert risk_level({"score": 0.8}) == "critical"
    assert risk_level({"score": 0.1, "reason": "read only"}) == "low"
    assert risk_level({"reason": "none given"}) is None
    with pytest.raises(InvalidInput) as info:
        risk_level({"score": 7})
    assert info.value.field == "risk.score"
    with pytest.raises(InvalidInput) as info:
        recommend([], None, {"plan": 92})
    assert info.value.field == "confidence_scores.plan"
