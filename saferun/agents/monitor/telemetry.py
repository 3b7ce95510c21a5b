"""Reading an ``ExecutionState`` as monitor ``Telemetry``.

Only ``ExecutionState`` fields are read, never an executor's internals, so any agent that fills the
state can be monitored. The spellings of ``resource_consumption`` in use are all understood: the seed's
(``estimated_cost_usd``, ``tokens_used``, ``execution_time_seconds``) and the shorter ones (``cost_usd``,
``tokens_in`` + ``tokens_out`` or ``input_tokens`` + ``output_tokens``, ``seconds``); where several are
present the largest wins, since they count the same spend.

Other sources, by convention:

- API calls per interval: ``api_calls`` entries with an ISO ``timestamp``; an entry failed when its
  ``status`` is 400 or more (or the word ``error``), its ``error`` is set, or its ``ok`` is false.
  Entries without a readable timestamp cannot be placed in an interval and are left out of the rates.
- progress: ``intermediate_outputs["progress"]``, a fraction 0..1.
- confidence: ``confidence_scores``, plus ``intermediate_outputs["quality_score"]`` (the seed's example
  reports its confidence there).
- the next action: ``risk_assessment["next_action"]`` (a name) and ``risk_assessment["action_tags"]``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from saferun.core.state_machine.models import ExecutionState
from saferun.domain.monitor_rules import MonitorConfig, Telemetry, per_interval


def _number(mapping: dict[str, Any], *keys: str) -> float | None:
    values = [
        float(v) for k in keys if isinstance(v := mapping.get(k), int | float) and not isinstance(v, bool)
    ]
    return max(values) if values else None


def _when(call: dict[str, Any]) -> datetime | None:
    value = call.get("timestamp")
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def failed(call: dict[str, Any]) -> bool:
    status = call.get("status")
    if isinstance(status, int) and not isinstance(status, bool) and status >= 400:
        return True
    if isinstance(status, str) and status.strip().lower() in {"error", "failed", "failure"}:
        return True
    return bool(call.get("error")) or call.get("ok") is False


def telemetry_from_state(
    state: ExecutionState,
    config: MonitorConfig,
    *,
    now: datetime | None = None,
    elapsed_seconds: float | None = None,
) -> Telemetry:
    """The state's numbers as the rules read them.

    ``now`` anchors the intervals (default: the newest call's timestamp, so a stored snapshot reads the
    same whenever it is checked); ``elapsed_seconds`` is used when the state records no run time.
    """
    rc = dict(state.resource_consumption)
    tokens_split = max(
        sum(float(v) for k in pair if isinstance(v := rc.get(k), int | float))
        for pair in (("tokens_in", "tokens_out"), ("input_tokens", "output_tokens"))
    )
    tokens = max(tokens_split, _number(rc, "tokens_used", "tokens") or 0.0)
    seconds = _number(rc, "seconds", "execution_time_seconds")

    events = [(when, failed(c)) for c in state.api_calls if (when := _when(c)) is not None]
    calls: tuple[int, ...] = ()
    errors: tuple[int, ...] = ()
    anchor = now or max((w for w, _ in events), default=None)
    if anchor is not None:
        calls, errors = per_interval(events, anchor, config.interval_seconds, config.history_needed + 1)

    confidence = dict(state.confidence_scores)
    quality = state.intermediate_outputs.get("quality_score")
    if isinstance(quality, int | float) and not isinstance(quality, bool):
        confidence.setdefault("quality_score", float(quality))
    progress = state.intermediate_outputs.get("progress")
    risk = state.risk_assessment
    tags = risk.get("action_tags") or ()
    return Telemetry(
        spent_usd=_number(rc, "cost_usd", "estimated_cost_usd") or 0.0,
        tokens=int(tokens),
        api_calls_per_interval=calls,
        errors_per_interval=errors,
        elapsed_seconds=seconds if seconds is not None else elapsed_seconds,
        progress=progress if isinstance(progress, int | float) and not isinstance(progress, bool) else None,
        confidence=confidence,
        next_action=str(risk["next_action"]) if risk.get("next_action") is not None else None,
        action_tags=[tags] if isinstance(tags, str) else list(tags),
    )
