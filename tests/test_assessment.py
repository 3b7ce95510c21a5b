"""One risk and one confidence, each saying whose it is (issue 14, item 2): the pure ``assess`` and the
review page built on it (no "None recorded" beside a risk level, no "No resource use recorded" beside
tokens), and the demo's legal panel without ``confidence -``."""

from __future__ import annotations

import pytest

from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.assessment import assess
from saferun.domain.recommendation import REASON_KEY
from saferun.storage.database import Database
from tests import ui_support as ui
from tests.test_ui import client_for


def test_a_request_prepared_by_saferun_keeps_its_advice_and_names_the_agents_scores() -> None:
    a = assess(
        recommendation="modify",
        confidence=0.62,
        risk={"level": "high", REASON_KEY: "Recommend modify at 62% confidence: high risk."},
        state_risk={"level": "high", "reason": "cost"},
        confidence_scores={"plan": 0.72, "quantity": 0.9},
    )
    assert (a.saferun_advice, a.saferun_confidence) == ("modify", 0.62)
    assert a.saferun_why and a.saferun_why.startswith("Recommend modify")
    assert a.agent_proposal is None and a.agent_confidence is None
    assert a.agent_lowest == ("plan", 0.72)  # the agent's own 0.72 is named, not confused with 62 %
    assert a.risk_level == "high" and a.risk_disagreement is None
    assert a.risk_items == {"reason": "cost"}


def test_an_agents_own_recommendation_is_its_proposal_and_saferun_advises_by_its_rule() -> None:
    a = assess(
        recommendation="review", confidence=None, risk={"level": "high", "reason": "uncapped liability"}
    )
    assert a.agent_proposal == "review" and a.agent_confidence is None
    assert a.saferun_advice in ("modify", "reject") and a.saferun_confidence is not None
    assert a.saferun_why and "high risk" in a.saferun_why


def test_one_risk_level_wherever_the_agent_put_it_and_a_disagreement_is_spelled_out() -> None:
    only_request = assess(recommendation=None, confidence=None, risk={"level": "High"}, state_risk={})
    assert only_request.risk_level == "high"
    only_state = assess(recommendation=None, confidence=None, risk={}, state_risk={"rating": "medium"})
    assert only_state.risk_level == "medium"
    both = assess(recommendation=None, confidence=None, risk={"level": "high"}, state_risk={"level": "low"})
    assert both.risk_level == "high"
    assert both.risk_disagreement == "the agent's state says low; the approval request says high"
    odd = assess(recommendation=None, confidence=None, risk={"level": "Extreme"})
    assert odd.risk_level == "extreme"  # a word the rule does not know is still shown, not dropped


def test_malformed_scores_give_no_advice_rather_than_a_wrong_one() -> None:
    a = assess(recommendation=None, confidence=None, risk={}, alerts=[42])
    assert a.saferun_advice is None or isinstance(a.saferun_advice, str)
    bad_scores = assess(recommendation=None, confidence=None, risk={}, confidence_scores={"x": 7.0})
    assert bad_scores.agent_lowest is None  # out of range: not the agent's confidence


@pytest.fixture
def orch(db: Database) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=db)


async def test_a_risk_given_only_with_the_request_is_not_contradicted_below(
    orch: WorkflowOrchestrator,
) -> None:
    wf = ui.new_workflow(orch, "Contract", ["Review"])
    req = ui.pause(
        orch,
        wf,
        "cp1",
        "Send the contract",
        state={
            "intermediate_outputs": {
                "analysis": {"summary": "ok", "resources_consumed": {"tokens_used": 1834, "api_calls": 1}}
            }
        },
        risk={"level": "high", "reason": "uncapped liability"},
        recommendation="review",
    )
    async with client_for(orch, "open") as client:
        page = (await client.get(f"/approvals/{req}")).text
    assert 'id="risk-level">high<' in page
    risk_below = page.split('id="state-risk">', 1)[1].split("</p>", 1)[0]
    assert "high" in risk_below and "None recorded" not in risk_below
    assert "the agent gave it with the approval request, not in its state" in page
    assert 'id="agent-proposal">review<' in page and "gave no overall confidence" in page
    assert "confidence -" not in page
    # tokens recorded in the agent's output are shown, with where they came from
    assert "No resource use recorded" not in page
    assert "from the agent&#39;s output analysis.resources_consumed" in page and "1,834" in page


async def test_tokens_on_recorded_calls_are_summed_when_nothing_else_says(orch: WorkflowOrchestrator) -> None:
    wf = ui.new_workflow(orch, "Tokens", ["Draft"])
    req = ui.pause(
        orch,
        wf,
        "cp1",
        "Draft",
        state={
            "api_calls": [
                {"kind": "model", "input_tokens": 100, "output_tokens": 20},
                {"kind": "model", "input_tokens": 50, "output_tokens": 5},
                {"kind": "http", "status": 200},
            ]
        },
    )
    async with client_for(orch, "open") as client:
        page = (await client.get(f"/approvals/{req}")).text
    assert "summed over 2 recorded calls" in page and ">150<" in page and ">25<" in page


def test_the_demo_panel_names_whose_advice_and_never_prints_confidence_dash() -> None:
    import demo_kit

    lines = demo_kit.advice_lines(
        assess(
            recommendation="review", confidence=None, risk={"level": "high", "reason": "uncapped liability"}
        )
    )
    text = "\n".join(lines)
    assert "confidence -" not in text
    assert "Agent proposes: review (no confidence given)" in text
    assert text.startswith("SafeRun recommends: ") and "% sure" in text
    assert "Risk: high (the agent's assessment)" in text
