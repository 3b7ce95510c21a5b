"""Monitor rules: when a workflow's live telemetry deserves a human's look, as pure functions.

The seed's Monitor Agent watches for spikes in API usage and errors, for an agent that is stuck or far
ahead of its timeline, for spend approaching the budget, for confidence below 80 % and for critical
actions. Each of those is a rule here, configured per workflow (``MonitorConfig``, loadable from YAML)
and evaluated over a ``Telemetry`` snapshot. Nothing here reads a clock, a file or a database: the
caller (``saferun.agents.monitor``) turns an ``ExecutionState`` into ``Telemetry`` and acts on the
result, so every rule is tested with exact numbers.

The rules, exactly (each alert carries ``observed`` and ``threshold`` numbers so the reviewer can judge
the alert as well as the work):

- ``spend_budget`` / ``token_budget`` (``budget``): fires when spend (or tokens) reaches ``share`` of the
  budget; at or past the whole budget the alert is ``critical`` whatever the configured severity.
- ``api_call_spike`` (``api_call_spike``): the baseline is the **median** calls per interval over the
  ``window`` intervals before the current one (the workflow's own recent past, not a global constant;
  the median so that one earlier burst does not raise the bar). Fires when the current interval has
  ``calls >= factor * baseline`` **and** ``calls - baseline >= min_increase`` (the second condition
  keeps 0 -> 2 calls from counting as a spike). Silent until ``window`` earlier intervals exist.
- ``error_rate_spike`` (``error_rate_spike``): error rate = errors / calls of an interval. The baseline
  is the median rate over those of the ``window`` earlier intervals that had calls. Fires when the
  current rate ``>= baseline + increase`` (an absolute rise: 0.25 = 25 percentage points) **and** the
  current interval has at least ``min_errors`` errors. Silent until ``window`` earlier intervals exist
  and one of them had calls.
- ``stuck`` (``progress``): elapsed ``>= stuck_after * expected_seconds`` while progress is below 1 (or
  unknown: nothing says the work is done).
- ``ahead_of_schedule`` (``progress``): ``progress - min(elapsed / expected_seconds, 1) >= ahead_margin``,
  i.e. the agent reports far more done than a linear schedule allows (skipped work is the usual cause).
- ``low_confidence`` (``confidence``): one alert per confidence score below ``min_confidence`` (0.8).
- ``critical_action`` (``critical_actions``): the next action carries one of ``tags`` (always including
  ``critical`` and ``irreversible``); it always needs approval before it runs, so this rule cannot be
  switched off and always asks for a checkpoint.

Verdict: ``CHECKPOINT`` when any alert comes from a rule with ``checkpoint: true`` (the default), else
``ALERT`` when there are alerts (worth showing a reviewer, not worth stopping for), else ``OK``.

Impossible thresholds (a negative budget, a share above 1, a window of 0, a factor of 1 or less, ...)
raise ``InvalidInput`` naming the field (``budget.share``), from the constructors as from YAML.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from saferun.errors import InvalidInput

Severity = Literal["info", "warning", "critical"]
ALWAYS_CRITICAL_TAGS = frozenset({"critical", "irreversible"})


def invalid_input(exc: ValidationError, prefix: str = "") -> InvalidInput:
    """One ``InvalidInput`` for a Pydantic error: the first bad field named, the others listed after."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "") or prefix or "value"
        msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        problems.append((loc, msg))
    field, message = problems[0]
    if len(problems) > 1:
        message += "; also " + "; ".join(f"{loc}: {msg}" for loc, msg in problems[1:])
    return InvalidInput(field, message)


_depth: ContextVar[int] = ContextVar("monitor_rules_validation_depth", default=0)


class _Model(BaseModel):
    """Strict, immutable, and raising ``InvalidInput`` (422, naming the field) instead of Pydantic's error,
    so a bad rule reads the same from Python, YAML or an API body.

    Only the outermost model converts the error (Pydantic builds nested models through ``__init__`` too;
    a depth counter tells them apart), so the field is named by its whole path (``budget.share``), not
    by its last part.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        outermost = _depth.get() == 0
        token = _depth.set(_depth.get() + 1)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if outermost:
                raise invalid_input(exc) from None
            raise
        finally:
            _depth.reset(token)


class _Rule(_Model):
    severity: Severity = "warning"
    # False: the alert is shown to a reviewer (added to the pending request) but does not stop the agent
    checkpoint: bool = True


class BudgetRule(_Rule):
    budget_usd: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0, validate_default=True)
    share: float = Field(default=0.8, gt=0, le=1)

    @field_validator("max_tokens")
    @classmethod
    def _has_a_budget(cls, value: int | None, info: ValidationInfo) -> int | None:
        # budget_usd is absent from info.data when it was itself invalid: that error is enough
        if value is None and info.data.get("budget_usd", 0) is None:
            raise ValueError("a budget rule needs budget_usd, max_tokens or both")
        return value


class ApiCallSpikeRule(_Rule):
    window: int = Field(default=5, ge=1, le=1000)
    factor: float = Field(default=3.0, gt=1)
    min_increase: int = Field(default=10, ge=1)


class ErrorRateSpikeRule(_Rule):
    window: int = Field(default=5, ge=1, le=1000)
    increase: float = Field(default=0.25, gt=0, le=1)
    min_errors: int = Field(default=3, ge=1)


class ProgressRule(_Rule):
    expected_seconds: float = Field(gt=0)
    stuck_after: float = Field(default=1.5, ge=1)
    ahead_margin: float = Field(default=0.5, gt=0, le=1)


class ConfidenceRule(_Rule):
    min_confidence: float = Field(default=0.8, gt=0, le=1)


class CriticalActionRule(_Model):
    """Not a ``_Rule``: it always checkpoints; only its tags and severity are configurable."""

    tags: frozenset[str] = ALWAYS_CRITICAL_TAGS
    severity: Severity = "warning"

    @field_validator("tags", mode="before")
    @classmethod
    def _always_critical(cls, value: Any) -> frozenset[str]:
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise ValueError("tags is a list of tag names")
        tags = {str(t).strip().lower() for t in value}
        if "" in tags:
            raise ValueError("tags must be non-empty names")
        return frozenset(tags | ALWAYS_CRITICAL_TAGS)

    @field_serializer("tags")
    def _sorted(self, tags: frozenset[str]) -> list[str]:
        return sorted(tags)


class MonitorConfig(_Model):
    """One workflow's monitor rules. ``None`` switches a rule off; budget and progress are off unless
    configured (they need the workflow's own budget and expected duration)."""

    interval_seconds: float = Field(default=60.0, gt=0)
    # the configured checkpoint a monitor-raised pause binds to (None: the state's own checkpoint_id)
    checkpoint_id: str | None = Field(default=None, min_length=1, max_length=200)
    budget: BudgetRule | None = None
    api_call_spike: ApiCallSpikeRule | None = ApiCallSpikeRule()
    error_rate_spike: ErrorRateSpikeRule | None = ErrorRateSpikeRule()
    progress: ProgressRule | None = None
    confidence: ConfidenceRule | None = ConfidenceRule()
    critical_actions: CriticalActionRule = CriticalActionRule()

    @field_validator("critical_actions", mode="before")
    @classmethod
    def _cannot_be_off(cls, value: Any) -> Any:
        if value is None or value is False:
            raise ValueError("critical and irreversible actions always need approval; this rule stays on")
        return value

    @property
    def history_needed(self) -> int:
        """How many intervals before the current one the spike rules look at."""
        windows = [r.window for r in (self.api_call_spike, self.error_rate_spike) if r is not None]
        return max(windows, default=0)

    @classmethod
    def from_mapping(cls, data: Any, field: str = "monitor", prefix: str = "") -> MonitorConfig:
        """Rules from a parsed mapping (YAML, JSON, a workflow's ``metadata["monitor"]``). ``field`` names
        the whole mapping in errors about it; ``prefix`` goes before the field of an error inside it."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidInput(field, f"expected a mapping of rules, got {type(data).__name__}")
        token = _depth.set(_depth.get() + 1)  # nested models leave the conversion to this call
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise invalid_input(exc, prefix) from None
        finally:
            _depth.reset(token)

    @classmethod
    def from_yaml(cls, text: str) -> MonitorConfig:
        """Rules from YAML text (an empty document gives the defaults)."""
        import yaml  # on first use, as in approval_policy.load

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise InvalidInput("yaml", f"not valid YAML{where}: {problem}") from None
        return cls.from_mapping(data, field="yaml")

    @classmethod
    def from_metadata(cls, rules: Any) -> MonitorConfig | None:
        """A workflow's own rules (``metadata["monitor"]``: a mapping, or YAML text); None when it has none.

        The orchestrator calls this when a workflow is created, so impossible thresholds are refused
        then (422 naming ``metadata.monitor.<field>``), not when the monitor first reads them mid-run.
        """
        if rules is None:
            return None
        if isinstance(rules, str):
            return cls.from_yaml(rules)
        return cls.from_mapping(rules, field="metadata.monitor", prefix="metadata.monitor")

    def to_yaml(self) -> str:
        """The rules as YAML that ``from_yaml`` reads back equal (a rule switched off is ``null``)."""
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class Telemetry(_Model):
    """What the rules look at: one workflow's numbers at one moment.

    ``api_calls_per_interval`` and ``errors_per_interval`` are oldest first and end with the current
    interval; ``errors_per_interval`` may be empty (no error data) or else has the same length.
    """

    spent_usd: float = Field(default=0.0, ge=0)
    tokens: int = Field(default=0, ge=0)
    api_calls_per_interval: tuple[int, ...] = ()
    errors_per_interval: tuple[int, ...] = ()
    elapsed_seconds: float | None = Field(default=None, ge=0)
    progress: float | None = Field(default=None, ge=0, le=1)
    confidence: dict[str, float] = Field(default_factory=dict)
    next_action: str | None = None
    action_tags: frozenset[str] = frozenset()

    @field_validator("api_calls_per_interval", "errors_per_interval")
    @classmethod
    def _counts(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(v < 0 for v in value):
            raise ValueError("counts per interval cannot be negative")
        return value

    @field_validator("confidence")
    @classmethod
    def _scores(cls, value: dict[str, float]) -> dict[str, float]:
        for name, score in value.items():
            if not 0 <= score <= 1:
                raise ValueError(f"confidence {name!r} must be between 0 and 1, got {score}")
        return value

    @field_validator("action_tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> frozenset[str]:
        if isinstance(value, str):
            value = [value]
        return frozenset(str(t).strip().lower() for t in value or ())

    @field_validator("errors_per_interval")
    @classmethod
    def _errors_fit_calls(cls, errors: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        calls = info.data.get("api_calls_per_interval")
        if calls is None:  # itself invalid, and named already
            return errors
        if errors and len(errors) != len(calls):
            raise ValueError("must be empty or as long as api_calls_per_interval")
        if any(e > c for e, c in zip(errors, calls, strict=False)):
            raise ValueError("an interval cannot have more errors than calls")
        return errors


class Alert(_Model):
    """One fired rule: which, how bad, and the numbers behind it."""

    rule: str
    severity: Severity
    message: str
    observed: dict[str, Any] = Field(default_factory=dict)
    threshold: dict[str, Any] = Field(default_factory=dict)
    checkpoint: bool = True

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Verdict(StrEnum):
    CHECKPOINT = "checkpoint"  # stop now and ask a human
    ALERT = "alert"  # tell the reviewer (the pending request, or the next one), keep going
    OK = "ok"


class Evaluation(_Model):
    verdict: Verdict
    alerts: tuple[Alert, ...] = ()

    def to_dicts(self) -> list[dict[str, Any]]:
        return [a.to_dict() for a in self.alerts]


# ---------------------------------------------------------------------------------------------- rules
def _share(value: float, limit: float) -> float:
    return round(value / limit, 4)


def budget_alerts(rule: BudgetRule, t: Telemetry) -> list[Alert]:
    alerts = []
    checks = (
        ("spend_budget", "spent_usd", float(t.spent_usd), "budget_usd", rule.budget_usd, "${:,.2f}"),
        ("token_budget", "tokens", float(t.tokens), "max_tokens", rule.max_tokens, "{:,.0f}"),
    )
    for name, used_key, used, limit_key, limit, fmt in checks:
        if limit is None or used < rule.share * limit:
            continue
        over = used >= limit
        alerts.append(
            Alert(
                rule=name,
                severity="critical" if over else rule.severity,
                message=(
                    f"{'spent' if name == 'spend_budget' else 'used'} {fmt.format(used)} "
                    f"of {fmt.format(limit)}: {used / limit:.0%}"
                    + (" — over budget" if over else f", past the {rule.share:.0%} alert share")
                ),
                observed={used_key: used, "share_used": _share(used, limit)},
                threshold={limit_key: limit, "share": rule.share},
                checkpoint=rule.checkpoint,
            )
        )
    return alerts


def api_call_spike_alert(rule: ApiCallSpikeRule, t: Telemetry) -> Alert | None:
    calls = t.api_calls_per_interval
    if len(calls) < rule.window + 1:
        return None
    history = list(calls[-rule.window - 1 : -1])
    current = calls[-1]
    baseline = float(statistics.median(history))
    if current < rule.factor * baseline or current - baseline < rule.min_increase:
        return None
    return Alert(
        rule="api_call_spike",
        severity=rule.severity,
        message=(
            f"{current} API calls in the last interval against a median of {baseline:g} "
            f"over the {rule.window} before"
        ),
        observed={"calls": current, "baseline_median": baseline, "history": history},
        threshold={
            "factor": rule.factor,
            "min_increase": rule.min_increase,
            "limit": max(rule.factor * baseline, baseline + rule.min_increase),
        },
        checkpoint=rule.checkpoint,
    )


def error_rate_spike_alert(rule: ErrorRateSpikeRule, t: Telemetry) -> Alert | None:
    calls, errors = t.api_calls_per_interval, t.errors_per_interval
    if not errors or len(calls) < rule.window + 1:
        return None
    history = [
        e / c
        for c, e in zip(calls[-rule.window - 1 : -1], errors[-rule.window - 1 : -1], strict=True)
        if c > 0
    ]
    current_calls, current_errors = calls[-1], errors[-1]
    if not history or current_calls == 0 or current_errors < rule.min_errors:
        return None
    baseline = float(statistics.median(history))
    rate = current_errors / current_calls
    if rate < baseline + rule.increase:
        return None
    return Alert(
        rule="error_rate_spike",
        severity=rule.severity,
        message=(
            f"{current_errors} of {current_calls} API calls failed in the last interval ({rate:.0%}) "
            f"against a median error rate of {baseline:.0%} over the {rule.window} before"
        ),
        observed={
            "errors": current_errors,
            "calls": current_calls,
            "error_rate": round(rate, 4),
            "baseline_median_rate": round(baseline, 4),
        },
        threshold={
            "increase": rule.increase,
            "min_errors": rule.min_errors,
            "limit_rate": round(baseline + rule.increase, 4),
        },
        checkpoint=rule.checkpoint,
    )


def progress_alerts(rule: ProgressRule, t: Telemetry) -> list[Alert]:
    if t.elapsed_seconds is None:
        return []
    elapsed, expected = t.elapsed_seconds, rule.expected_seconds
    alerts = []
    if elapsed >= rule.stuck_after * expected and (t.progress is None or t.progress < 1):
        done = "unknown progress" if t.progress is None else f"{t.progress:.0%} done"
        alerts.append(
            Alert(
                rule="stuck",
                severity=rule.severity,
                message=f"{elapsed:,.0f} s elapsed of {expected:,.0f} s expected, {done}",
                observed={"elapsed_seconds": elapsed, "progress": t.progress},
                threshold={
                    "expected_seconds": expected,
                    "stuck_after": rule.stuck_after,
                    "stuck_after_seconds": rule.stuck_after * expected,
                },
                checkpoint=rule.checkpoint,
            )
        )
    if t.progress is not None:
        on_schedule = min(elapsed / expected, 1.0)
        if t.progress - on_schedule >= rule.ahead_margin:
            alerts.append(
                Alert(
                    rule="ahead_of_schedule",
                    severity=rule.severity,
                    message=(
                        f"{t.progress:.0%} done after {elapsed:,.0f} s of {expected:,.0f} s expected "
                        f"(a steady pace would be at {on_schedule:.0%})"
                    ),
                    observed={
                        "progress": t.progress,
                        "elapsed_seconds": elapsed,
                        "expected_progress": round(on_schedule, 4),
                    },
                    threshold={"ahead_margin": rule.ahead_margin, "expected_seconds": expected},
                    checkpoint=rule.checkpoint,
                )
            )
    return alerts


def confidence_alerts(rule: ConfidenceRule, t: Telemetry) -> list[Alert]:
    return [
        Alert(
            rule="low_confidence",
            severity=rule.severity,
            message=f"{name} confidence {score:.0%} is below {rule.min_confidence:.0%}",
            observed={"metric": name, "confidence": score},
            threshold={"min_confidence": rule.min_confidence},
            checkpoint=rule.checkpoint,
        )
        for name, score in sorted(t.confidence.items())
        if score < rule.min_confidence
    ]


def critical_action_alert(rule: CriticalActionRule, action: str | None, tags: Iterable[str]) -> Alert | None:
    """The gate: an action carrying a critical tag needs approval before it runs, always."""
    hit = sorted(rule.tags & {str(t).strip().lower() for t in tags})
    if not hit:
        return None
    name = action or "the next action"
    return Alert(
        rule="critical_action",
        severity=rule.severity,
        message=f"{name} is tagged {', '.join(hit)}: it needs approval before it runs",
        observed={"action": action, "tags": hit},
        threshold={"tags": sorted(rule.tags)},
        checkpoint=True,
    )


def evaluate(config: MonitorConfig, t: Telemetry) -> Evaluation:
    """Every configured rule over one telemetry snapshot, in a fixed order, and the verdict."""
    alerts: list[Alert] = []
    if config.budget is not None:
        alerts += budget_alerts(config.budget, t)
    if config.api_call_spike is not None and (a := api_call_spike_alert(config.api_call_spike, t)):
        alerts.append(a)
    if config.error_rate_spike is not None and (a := error_rate_spike_alert(config.error_rate_spike, t)):
        alerts.append(a)
    if config.progress is not None:
        alerts += progress_alerts(config.progress, t)
    if config.confidence is not None:
        alerts += confidence_alerts(config.confidence, t)
    if a := critical_action_alert(config.critical_actions, t.next_action, t.action_tags):
        alerts.append(a)
    if any(a.checkpoint for a in alerts):
        verdict = Verdict.CHECKPOINT
    else:
        verdict = Verdict.ALERT if alerts else Verdict.OK
    return Evaluation(verdict=verdict, alerts=tuple(alerts))


# ------------------------------------------------------------------------------------- interval counts
def per_interval(
    events: Iterable[tuple[datetime, bool]], now: datetime, interval_seconds: float, intervals: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Calls and errors per interval, oldest first, the last ending at ``now``.

    ``events`` are ``(when, failed)``. Interval ``k`` back from now covers ``(now - (k+1)·I, now - k·I]``,
    so the current interval always spans a whole ``I`` and an agent that went quiet shows zeros. Events
    after ``now`` count in the current interval; those older than ``intervals`` intervals are dropped.
    Naive datetimes are read as UTC.
    """
    if interval_seconds <= 0:
        raise InvalidInput("interval_seconds", f"must be positive, got {interval_seconds}")
    if intervals < 1:
        raise InvalidInput("intervals", f"must be at least 1, got {intervals}")
    now = _utc(now)
    calls = [0] * intervals
    errors = [0] * intervals
    for when, failed in events:
        age = (now - _utc(when)).total_seconds()
        back = 0 if age <= 0 else int(-(-age // interval_seconds)) - 1  # ceil(age / I) - 1
        if back >= intervals:
            continue
        calls[intervals - 1 - back] += 1
        errors[intervals - 1 - back] += int(failed)
    return tuple(calls), tuple(errors)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
