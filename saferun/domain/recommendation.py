"""What to recommend to the reviewer, how sure to be, and why in one sentence (Diagram 3, layer 1).

A pure function of three things the checkpoint already carries: the monitor's alerts (by severity), the
checkpoint's risk assessment (``level`` / ``rating`` / ``severity`` low..critical, or a numeric
``score`` in 0..1) and the agent's confidence scores. The rule, exactly:

1. Each finding has a weight: an alert ``info`` 0.05, ``warning`` 0.25, ``high`` 0.40, ``critical`` 0.60
   (its ``severity`` or ``level``, read with the risk scale's words too: ``low`` is info, ``medium`` a
   warning, ``error`` high, ``severe`` critical; an unknown one counts as a warning); risk ``low`` 0,
   ``medium`` 0.10, ``high`` 0.30, ``critical`` 0.60 (a ``score`` s maps to low below 0.25, medium
   below 0.5, high below 0.75, else critical); the agent's doubt is ``1 - min(confidence scores)``,
   or 0.20 when it reported none.
2. The concern is ``1 - prod(1 - weight)``: independent reasons for worry compound, none alone reaches 1.
3. Concern below 0.35 recommends ``approve``, below 0.70 ``modify`` (the reviewer should change the
   parameters or scope), otherwise ``reject``.
4. The recommendation's confidence is how far the concern sits on its side: ``1 - concern`` for
   approve, ``concern`` for reject, and for modify ``max(concern, 1 - concern)`` (the middle band is
   the least certain by nature).

So a clean checkpoint whose agent is 92 % sure is "approve at 92 %", and each alert or step up in risk
lowers that until the advice changes. Values are lower case (``approve``), as in the seed's example
and the dashboard.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from saferun.errors import InvalidInput

ALERT_WEIGHTS = {"info": 0.05, "warning": 0.25, "high": 0.40, "critical": 0.60}
# monitors speak either scale: the alert one (info/warning/critical) or the risk one (low..critical)
ALERT_SYNONYMS = {
    "low": "info",
    "notice": "info",
    "medium": "warning",
    "moderate": "warning",
    "warn": "warning",
    "error": "high",
    "severe": "critical",
}
ALERT_NOUNS = {"critical": "critical alert", "high": "high alert", "warning": "warning", "info": "notice"}
_NAME_LIMIT = 60
RISK_WEIGHTS = {"low": 0.0, "medium": 0.10, "high": 0.30, "critical": 0.60}
RISK_SYNONYMS = {"moderate": "medium", "severe": "critical", "none": "low", "minimal": "low"}
UNKNOWN_CONFIDENCE_DOUBT = 0.20
APPROVE_BELOW = 0.35
MODIFY_BELOW = 0.70
# where a request carries the one-sentence reason: its ``risk`` mapping, which every view already shows
REASON_KEY = "recommendation_reason"


class Advice(StrEnum):
    APPROVE = "approve"
    MODIFY = "modify"
    REJECT = "reject"


@dataclass(frozen=True)
class Recommendation:
    advice: Advice
    confidence: float
    explanation: str
    concern: float


def risk_level(risk: Mapping[str, Any] | None) -> str | None:
    """``low``/``medium``/``high``/``critical`` from a risk assessment, or None when it names none."""
    if not risk:
        return None
    for key in ("level", "rating", "severity"):
        value = risk.get(key)
        if isinstance(value, str):
            level = value.strip().lower()
            level = RISK_SYNONYMS.get(level, level)
            if level in RISK_WEIGHTS:
                return level
    score = risk.get("score")
    if isinstance(score, int | float) and not isinstance(score, bool):
        if not 0 <= score <= 1:
            raise InvalidInput("risk.score", f"must be between 0 and 1, got {score}")
        return "low" if score < 0.25 else "medium" if score < 0.5 else "high" if score < 0.75 else "critical"
    return None


def _severity(alert: Any) -> str:
    if isinstance(alert, Mapping):
        value = alert.get("severity") or alert.get("level")
    else:
        value = getattr(alert, "severity", None)
    value = str(value or "warning").strip().lower()
    value = ALERT_SYNONYMS.get(value, value)
    return value if value in ALERT_WEIGHTS else "warning"


def _rule(alert: Any) -> str:
    """What to call the alert in the reason: its rule, else its message (shortened), else "unnamed"."""
    for key in ("rule", "message"):
        value = alert.get(key) if isinstance(alert, Mapping) else getattr(alert, key, None)
        if isinstance(value, str) and value.strip():
            text = " ".join(value.split())
            return text if len(text) <= _NAME_LIMIT else text[: _NAME_LIMIT - 1].rstrip() + "…"
    return "unnamed"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def recommend(
    alerts: Iterable[Any] = (),
    risk: Mapping[str, Any] | None = None,
    confidence_scores: Mapping[str, float] | None = None,
) -> Recommendation:
    """The advice for one checkpoint (see the module docstring for the exact rule)."""
    alerts = list(alerts)
    scores = dict(confidence_scores or {})
    for name, score in scores.items():
        if not isinstance(score, int | float) or isinstance(score, bool) or not 0 <= score <= 1:
            raise InvalidInput(f"confidence_scores.{name}", f"must be between 0 and 1, got {score!r}")

    by_severity: dict[str, list[str]] = {s: [] for s in ALERT_NOUNS}
    for alert in alerts:
        by_severity[_severity(alert)].append(_rule(alert))
    level = risk_level(risk)
    weakest = min(scores, key=lambda k: scores[k]) if scores else None
    doubt = 1 - scores[weakest] if weakest is not None else UNKNOWN_CONFIDENCE_DOUBT

    weights = [ALERT_WEIGHTS[s] for s, rules in by_severity.items() for _ in rules]
    weights += [RISK_WEIGHTS[level] if level else 0.0, doubt]
    concern = 1 - math.prod(1 - w for w in weights)

    if concern < APPROVE_BELOW:
        advice, confidence = Advice.APPROVE, 1 - concern
    elif concern < MODIFY_BELOW:
        advice, confidence = Advice.MODIFY, max(concern, 1 - concern)
    else:
        advice, confidence = Advice.REJECT, concern
    confidence = round(min(max(confidence, 0.0), 1.0), 4)

    reasons = []
    for severity, noun in ALERT_NOUNS.items():
        rules = by_severity[severity]
        if rules:
            names = ", ".join(dict.fromkeys(rules))
            reasons.append(f"{len(rules)} {noun}{'s' if len(rules) > 1 else ''} ({names})")
    if not alerts:
        reasons.append("no monitor alerts")
    reasons.append(f"{level} risk" if level else "risk not assessed")
    if weakest is not None:
        reasons.append(f"the agent's lowest confidence is {scores[weakest]:.0%} ({weakest})")
    else:
        reasons.append("no confidence reported by the agent")
    explanation = f"Recommend {advice.value} at {confidence:.0%} confidence: {_join(reasons)}."
    return Recommendation(advice, confidence, explanation, round(concern, 4))
