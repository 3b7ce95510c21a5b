"""One risk and one confidence per checkpoint, each labelled with whose it is (pure).

A request carries numbers from different authors: the agent's own recommendation, confidence scores and
risk assessment (in its state or given with the request), the monitor's alerts, and, when the monitor or
the SupervisorAgent prepared the request, SafeRun's recommendation (``domain/recommendation``; marked by
``risk[REASON_KEY]``) with its confidence. Shown side by side without names they contradicted each other
(issue 14: "Risk High" beside "Risk assessment: None recorded"; headline confidence 62 % beside the
agent's 0.72). ``assess`` folds them into one view: SafeRun's advice (the request's, or computed now by
the same rule when the agent gave its own), the agent's proposal and confidence, and one risk level with
where it came from and any disagreement spelled out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from saferun.domain.recommendation import REASON_KEY, risk_level
from saferun.domain.recommendation import recommend as saferun_advice
from saferun.errors import InvalidInput

LEVEL_KEYS = ("level", "rating", "severity")


@dataclass(frozen=True, slots=True)
class Assessment:
    saferun_advice: str | None  # approve | modify | reject, by SafeRun's rule
    saferun_confidence: float | None  # how sure that advice is (0..1)
    saferun_why: str | None  # its one-sentence reason
    agent_proposal: str | None  # what the agent itself recommended, if it said
    agent_confidence: float | None  # the confidence the agent gave with its proposal
    agent_lowest: tuple[str, float] | None  # the agent's lowest confidence score ("quantity", 0.41)
    risk_level: str | None  # low | medium | high | critical: the agent's assessment (no one else rates)
    risk_disagreement: str | None  # e.g. "the agent's state says medium; the request says high"
    risk_items: dict[str, Any] = field(default_factory=dict)  # the rest of the assessment (reason, cost …)


def assess(
    *,
    recommendation: str | None,
    confidence: float | None,
    risk: Mapping[str, Any] | None,
    alerts: Iterable[Any] = (),
    state_risk: Mapping[str, Any] | None = None,
    confidence_scores: Mapping[str, float] | None = None,
) -> Assessment:
    """The one view of a request's advice, confidence and risk (see the module docstring)."""
    risk = dict(risk or {})
    state_risk = dict(state_risk or {})
    scores = {k: v for k, v in (confidence_scores or {}).items() if _is_score(v)}
    by_saferun = bool(risk.get(REASON_KEY))

    level_request, level_state = _level(risk), _level(state_risk)
    level = level_request or level_state
    disagreement = None
    if level_request and level_state and level_request != level_state:
        disagreement = f"the agent's state says {level_state}; the approval request says {level_request}"
    items = {k: v for k, v in {**state_risk, **risk}.items() if k not in (*LEVEL_KEYS, REASON_KEY)}

    weakest = min(scores, key=lambda k: scores[k]) if scores else None
    if by_saferun:
        advice, sure, why = recommendation, confidence, str(risk[REASON_KEY])
        proposal, agent_conf = None, None
    else:
        proposal, agent_conf = recommendation, confidence
        advice, sure, why = _computed(alerts, {**state_risk, **risk}, scores)
    return Assessment(
        saferun_advice=advice,
        saferun_confidence=sure,
        saferun_why=why,
        agent_proposal=proposal,
        agent_confidence=agent_conf,
        agent_lowest=(weakest, scores[weakest]) if weakest is not None else None,
        risk_level=level,
        risk_disagreement=disagreement,
        risk_items=items,
    )


def _computed(
    alerts: Iterable[Any], risk: Mapping[str, Any], scores: Mapping[str, float]
) -> tuple[str | None, float | None, str | None]:
    try:
        advice = saferun_advice(alerts, risk, scores)
    except InvalidInput:  # a malformed alert or score: no advice rather than a wrong one
        return None, None, None
    return advice.advice.value, advice.confidence, advice.explanation


def _level(risk: Mapping[str, Any]) -> str | None:
    """The rule's level, or the agent's own word when the rule does not know it ("extreme")."""
    try:
        known = risk_level(risk)
    except InvalidInput:
        known = None
    if known:
        return known
    raw = next((risk[k] for k in LEVEL_KEYS if risk.get(k) is not None), None)
    return str(raw).strip().lower() or None if raw is not None else None


def _is_score(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
