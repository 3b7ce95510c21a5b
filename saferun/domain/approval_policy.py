"""Approval policy as code: a versioned YAML file decides which checkpoints need a human, and which don't.

Why a file and not settings: the people who own risk (not the agent's authors) write the rules, review
them like code, and test them against what really happened (``saferun policy test``) before they go
live. Every decision a rule makes is recorded with the policy's name, version and rule id ("approved by
policy payments v3 rule R2"), so an auditor can tell a person's approval from a rule's.

A policy is an ordered list of rules; the first rule whose every condition holds decides, otherwise
``default`` does. Actions:

``require_approval``  a person decides (the normal pause);
``auto_approve``      decided at once, approved, by the rule (only where a person would have approved);
``forbid``            decided at once, rejected, by the rule: the agent's work since the last approved
                      checkpoint is rolled back like any rejection.

Conditions (all optional, all must hold):

``checkpoints``  checkpoint ids or names, shell-style patterns (``transfer_*``);
``params``       per parameter: ``gt``/``gte``/``lt``/``lte`` (exact decimals), ``eq``, ``in``, ``not_in``,
                 ``pattern`` (a regular expression the whole text value must match); a parameter the
                 checkpoint does not propose makes the condition false, never an error;
``confidence_below`` / ``confidence_at_least``  the agent's stated confidence (0..1); none stated: false;
``alerts``       ``none`` (the monitor raised nothing) or ``any``;
``risk``         risk levels (``low``, ``medium``, ``high``, ``critical``) the request must carry;
``spend_above``  what the workflow has already paid out (released escrow), exact, in currency units.

Pure: no I/O. Loading refuses unknown fields and impossible rules (naming the rule), so a typo cannot
silently turn a rule off.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from saferun.domain.quorum import QuorumRule
from saferun.errors import InvalidInput

Action = Literal["require_approval", "auto_approve", "forbid"]
RISK_LEVELS = ("low", "medium", "high", "critical")
MAX_AMOUNT = Decimal("9223372036854.775807")  # int64 micro-units, the ledger's range


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamTest(_Strict):
    """Tests on one proposed parameter; every given test must hold."""

    gt: Decimal | None = None
    gte: Decimal | None = None
    lt: Decimal | None = None
    lte: Decimal | None = None
    eq: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None
    pattern: str | None = None

    @field_validator("gt", "gte", "lt", "lte")
    @classmethod
    def _finite(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and (not value.is_finite() or abs(value) > MAX_AMOUNT):
            raise ValueError("must be a finite amount within the ledger's range")
        return value

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _possible(self) -> ParamTest:
        low = max((b for b in (self.gt, self.gte) if b is not None), default=None)
        high = min((b for b in (self.lt, self.lte) if b is not None), default=None)
        strict = (self.gt is not None and self.gt == low) or (self.lt is not None and self.lt == high)
        if low is not None and high is not None and (low > high or (low == high and strict)):
            raise ValueError(f"no value can be above {low} and below {high}: the rule could never match")
        if self.in_ is not None and not self.in_:
            raise ValueError("'in' is empty: the rule could never match")
        if (
            self.in_ is not None
            and self.not_in is not None
            and set(map(repr, self.in_)) <= set(map(repr, self.not_in))
        ):
            raise ValueError("every value 'in' allows is also 'not_in': the rule could never match")
        if all(
            v is None
            for v in (self.gt, self.gte, self.lt, self.lte, self.eq, self.in_, self.not_in, self.pattern)
        ):
            raise ValueError("names no test (gt, gte, lt, lte, eq, in, not_in or pattern)")
        return self

    def holds(self, value: Any) -> bool:
        if any(b is not None for b in (self.gt, self.gte, self.lt, self.lte)):
            number = _number(value)
            if number is None:
                return False
            if self.gt is not None and not number > self.gt:
                return False
            if self.gte is not None and not number >= self.gte:
                return False
            if self.lt is not None and not number < self.lt:
                return False
            if self.lte is not None and not number <= self.lte:
                return False
        if self.eq is not None and value != self.eq:
            return False
        if self.in_ is not None and value not in self.in_:
            return False
        if self.not_in is not None and value in self.not_in:
            return False
        return not (
            self.pattern is not None and not (isinstance(value, str) and re.fullmatch(self.pattern, value))
        )


class When(_Strict):
    checkpoints: list[str] | None = Field(default=None, min_length=1)
    params: dict[str, ParamTest] | None = Field(default=None, min_length=1)
    confidence_below: float | None = Field(default=None, ge=0, le=1)
    confidence_at_least: float | None = Field(default=None, ge=0, le=1)
    alerts: Literal["none", "any"] | None = None
    risk: list[Literal["low", "medium", "high", "critical"]] | None = Field(default=None, min_length=1)
    spend_above: Decimal | None = Field(default=None, ge=0, le=MAX_AMOUNT)

    @model_validator(mode="after")
    def _possible(self) -> When:
        low, high = self.confidence_at_least, self.confidence_below
        if low is not None and high is not None and low >= high:
            raise ValueError(
                f"confidence cannot be at least {low} and below {high}: the rule could never match"
            )
        return self


class Rule(_Strict):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    when: When = Field(default_factory=When)
    then: Action
    # with ``then: require_approval``: N approvals of a group decide (saferun/domain/quorum.py)
    quorum: QuorumRule | None = None

    @model_validator(mode="after")
    def _quorum_needs_a_person(self) -> Rule:
        if self.quorum is not None and self.then != "require_approval":
            raise ValueError(f"quorum: only a require_approval rule takes a quorum, not {self.then}")
        return self


class Policy(_Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    version: int = Field(ge=1)
    default: Action = "require_approval"
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> Policy:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        return self

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def evaluate(self, case: Case) -> Verdict:
        for rule in self.rules:
            if _matches(rule.when, case):
                return Verdict(rule.then, self.name, self.version, rule.id, rule.description, rule.quorum)
        return Verdict(self.default, self.name, self.version, None, "")


@dataclass(frozen=True)
class Case:
    """What a rule may look at when a checkpoint asks for a decision."""

    checkpoint_id: str
    checkpoint_name: str = ""
    parameters: Mapping[str, Any] | None = None
    confidence: float | None = None
    alerts: Sequence[Any] = ()
    risk: str | None = None
    spend: Decimal = Decimal(0)  # already released for this workflow, in currency units


@dataclass(frozen=True)
class Verdict:
    action: Action
    policy: str
    version: int
    rule: str | None  # None: the default applied
    description: str = ""
    quorum: QuorumRule | None = None  # require_approval by N of a group (saferun/domain/quorum.py)

    @property
    def actor(self) -> str:
        """Who a decision by this verdict is recorded as: ``policy:<name>@v<version>``."""
        return f"policy:{self.policy}@v{self.version}"

    @property
    def because(self) -> str:
        which = f"rule {self.rule}" if self.rule else "its default"
        word = {"auto_approve": "approved", "forbid": "forbidden", "require_approval": "sent to a person"}
        text = f"{word[self.action]} by policy {self.policy} v{self.version} {which}"
        if self.quorum is not None:
            text += f" (quorum: {self.quorum.text})"
        return f"{text}: {self.description}" if self.description else text

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "policy": self.policy,
            "version": self.version,
            "rule": self.rule,
        }
        if self.quorum is not None:
            out["quorum"] = self.quorum.as_dict()
        return out


def load(text: str, source: str = "policy") -> Policy:
    """Parse and check a policy; ``InvalidInput`` names the rule and field that is wrong."""
    import yaml  # on first use: it costs every ``import saferun`` ~9 ms, and most processes load no policy

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(source, f"not YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(source, "a policy is a mapping with name, version and rules")
    try:
        return Policy.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidInput(
            _where(source, doc, err["loc"]), str(err["msg"]).removeprefix("Value error, ")
        ) from None


def _where(source: str, doc: Mapping[str, Any], loc: Sequence[Any]) -> str:
    """``policy.rules[R2].when.params.amount.gt``: rules are named by their id when they have one."""
    parts = [source]
    i = 0
    while i < len(loc):
        key = loc[i]
        if key == "rules" and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            rules = doc.get("rules") if isinstance(doc.get("rules"), list) else []
            idx = loc[i + 1]
            rule = rules[idx] if idx < len(rules) and isinstance(rules[idx], dict) else {}
            parts.append(f"rules[{rule.get('id', idx)}]")
            i += 2
            continue
        parts.append(str(key))
        i += 1
    return ".".join(parts)


def _matches(when: When, case: Case) -> bool:
    if when.checkpoints is not None and not any(
        fnmatch.fnmatchcase(case.checkpoint_id, p) or fnmatch.fnmatchcase(case.checkpoint_name, p)
        for p in when.checkpoints
    ):
        return False
    if when.params is not None:
        params = case.parameters or {}
        for name, test in when.params.items():
            if name not in params or not test.holds(params[name]):
                return False
    if when.confidence_below is not None and not (
        case.confidence is not None and case.confidence < when.confidence_below
    ):
        return False
    if when.confidence_at_least is not None and not (
        case.confidence is not None and case.confidence >= when.confidence_at_least
    ):
        return False
    if when.alerts == "none" and case.alerts:
        return False
    if when.alerts == "any" and not case.alerts:
        return False
    if when.risk is not None and case.risk not in when.risk:
        return False
    return not (when.spend_above is not None and not case.spend > when.spend_above)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


_CASE_KEYS = {
    "name",
    "checkpoint",
    "checkpoint_name",
    "parameters",
    "confidence",
    "alerts",
    "risk",
    "spend",
    "expect",
}


def case_from_dict(item: Mapping[str, Any], where: str = "case") -> tuple[Case, str | None]:
    """A case written by hand (``saferun policy test``, ``POST /api/policy/evaluate``) and the verdict
    it expects, if any; ``InvalidInput`` names the key that is wrong."""
    unknown = set(item) - _CASE_KEYS
    if unknown:
        raise InvalidInput(
            f"{where}.{sorted(unknown)[0]}", f"unknown key; allowed: {', '.join(sorted(_CASE_KEYS))}"
        )
    if not isinstance(item.get("checkpoint"), str):
        raise InvalidInput(f"{where}.checkpoint", "required: the checkpoint id")
    expect = item.get("expect")
    if expect is not None and expect not in ("require_approval", "auto_approve", "forbid"):
        raise InvalidInput(f"{where}.expect", "one of require_approval, auto_approve, forbid")
    try:
        spend = Decimal(str(item.get("spend", 0)))
    except InvalidOperation:
        spend = Decimal("NaN")
    if not spend.is_finite() or not 0 <= spend <= MAX_AMOUNT:
        raise InvalidInput(f"{where}.spend", "an amount between 0 and the ledger's maximum")
    confidence = item.get("confidence")
    if confidence is not None and (
        isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1
    ):
        raise InvalidInput(f"{where}.confidence", "a number from 0 to 1")
    if not isinstance(item.get("parameters") or {}, dict):
        raise InvalidInput(f"{where}.parameters", "an object of parameter values")
    if item.get("risk") is not None and item.get("risk") not in RISK_LEVELS:
        raise InvalidInput(f"{where}.risk", f"one of {', '.join(RISK_LEVELS)}")
    alerts = item.get("alerts") or []
    return (
        Case(
            checkpoint_id=item["checkpoint"],
            checkpoint_name=str(item.get("checkpoint_name", "")),
            parameters=item.get("parameters") or {},
            confidence=item.get("confidence"),
            alerts=list(alerts) if isinstance(alerts, list) else [alerts],
            risk=item.get("risk"),
            spend=spend,
        ),
        expect,
    )
