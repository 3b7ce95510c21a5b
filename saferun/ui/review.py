"""What the review page computes from a checkpoint, without I/O: the parameter editor and the state diff.

The parameter editor shows one input per parameter, typed by the checkpoint's parameter schema (declared
by the agent, or inferred from the values it proposed: a whole number gets a whole-number input, a flag
true/false, a closed list of words a choice, an object or a list a JSON box), with the schema's limits
(minimum, maximum, pattern, length) as attributes. The browser checks the same rules before submitting,
with the same words; ``parse_modifications`` checks them again on the server (through
``saferun.domain.parameter_schema``, the engine's own check), because a form can be posted without the
page, and returns one message per field so the page can show each next to its input. Only the parameters
the reviewer actually changed become modifications.

The diff compares the checkpoint's state with the state approved before it, field by field
(``api_calls``, ``intermediate_outputs``, ...): keys of an object field, or positions of a list field,
that were added, removed or changed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from saferun.core.state_machine.models import ExecutionState
from saferun.domain import parameter_schema
from saferun.domain.modifications import json_kind, merge_patch

PARAM_PREFIX = "param."
PATCH_FIELD = "patch"
_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
LONG_TEXT = 80


def kind_of(value: Any, schema: Mapping[str, Any] | None = None) -> str:
    """The editor kind of a parameter: integer, number, boolean, string, text, choice or json — from its
    schema's type when it has one, else from the proposed value."""
    schema = schema or {}
    enum = schema.get("enum")
    if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
        return "choice"
    declared = schema.get("type")
    if declared in ("integer", "number", "boolean"):
        return str(declared)
    if declared == "string":
        return "text" if isinstance(value, str) and (len(value) > LONG_TEXT or "\n" in value) else "string"
    if declared in ("array", "object"):
        return "json"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "text" if len(value) > LONG_TEXT or "\n" in value else "string"
    return "json"


_LIMITS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "minLength", "maxLength")


def as_input(value: Any) -> str:
    """The text an input shows for a value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class ParamField:
    """One input of the parameter editor."""

    name: str
    kind: str
    value: str
    original: Any
    error: str | None = None
    schema: Mapping[str, Any] = field(default_factory=dict)

    @property
    def choices(self) -> list[str]:
        return [str(v) for v in self.schema.get("enum", [])]

    @property
    def limits(self) -> dict[str, Any]:
        """The schema's limits, rendered as ``data-*`` attributes the browser's check reads."""
        return {k: self.schema[k] for k in _LIMITS if k in self.schema}

    @property
    def description(self) -> str:
        return str(self.schema.get("description") or "")

    @property
    def input_name(self) -> str:
        return PARAM_PREFIX + self.name

    @property
    def json_type(self) -> str:
        return json_kind(self.original)


def param_fields(
    parameters: Mapping[str, Any],
    submitted: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    schema: Mapping[str, Any] | None = None,
) -> list[ParamField]:
    """The editor's inputs, showing what the reviewer submitted (after a refusal) or the proposed values."""
    submitted = submitted or {}
    errors = errors or {}
    schema = schema or parameter_schema.infer(parameters)
    fields = []
    for name, value in parameters.items():
        sub = parameter_schema.property_schema(schema, name)
        fields.append(
            ParamField(
                name=name,
                kind=kind_of(value, sub),
                value=submitted.get(PARAM_PREFIX + name, as_input(value)),
                original=value,
                error=errors.get(name),
                schema=sub,
            )
        )
    return fields


def _parse(kind: str, raw: str, original: Any) -> Any:
    """One input's value; raises ValueError with the message the reviewer sees (the schema's words, the
    same as ``parameter_schema.message`` and ``app.js``)."""
    text = raw.strip()
    if kind == "integer":
        if not _INTEGER.match(text):
            shown = parameter_schema.show(float(text)) if _NUMBER.match(text) else parameter_schema.show(raw)
            raise ValueError(f"expected a whole number, got {shown}")
        return int(text)
    if kind == "number":
        if not _NUMBER.match(text):
            raise ValueError(f"expected a number, got {parameter_schema.show(raw)}")
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {raw!r}")
        return int(text) if _INTEGER.match(text) else number
    if kind == "boolean":
        if text not in ("true", "false"):
            raise ValueError(f"expected true or false, got {parameter_schema.show(raw)}")
        return text == "true"
    if kind in ("string", "text", "choice"):
        return raw.replace("\r\n", "\n")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if original is not None and value is not None and json_kind(value) != json_kind(original):
        raise ValueError(
            f"expected a JSON {json_kind(original)} like the proposed value, got {json_kind(value)}"
        )
    return value


def _same(a: Any, b: Any) -> bool:
    return json_kind(a) == json_kind(b) and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@dataclass
class ParsedModifications:
    modifications: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def parse_modifications(
    parameters: Mapping[str, Any], form: Mapping[str, str], schema: Mapping[str, Any] | None = None
) -> ParsedModifications:
    """The reviewer's changes to the proposed parameters, or a message per field that is wrong.

    Parameters not in the form are left as proposed; a parameter the form names but the agent did not
    propose is refused. When the agent proposed no parameters, the form's ``patch`` is a JSON object
    that becomes them.
    """
    out = ParsedModifications()
    if not parameters:
        raw = form.get(PATCH_FIELD, "").strip()
        if not raw:
            out.errors[PATCH_FIELD] = "give the parameters as a JSON object"
            return out
        try:
            patch = json.loads(raw)
        except ValueError as exc:
            out.errors[PATCH_FIELD] = f"not valid JSON: {exc}"
            return out
        if not isinstance(patch, dict) or not patch:
            out.errors[PATCH_FIELD] = "expected a non-empty JSON object"
            return out
        out.modifications = patch
        return out
    for key in form:
        if key.startswith(PARAM_PREFIX) and key[len(PARAM_PREFIX) :] not in parameters:
            name = key[len(PARAM_PREFIX) :]
            out.errors[name] = "not a parameter of this checkpoint"
    schema = schema or parameter_schema.infer(parameters)
    for name, original in parameters.items():
        raw = form.get(PARAM_PREFIX + name)
        if raw is None:
            continue
        try:
            value = _parse(kind_of(original, parameter_schema.property_schema(schema, name)), raw, original)
        except ValueError as exc:
            out.errors[name] = str(exc)
            continue
        if not _same(value, original):
            out.modifications[name] = value
    if out.modifications and not out.errors:
        # the schema's own limits (minimum, enum, pattern, ...), checked as the engine will check them
        merged = merge_patch(parameters, out.modifications)
        for where, message in parameter_schema.errors(schema, merged).items():
            out.errors.setdefault(where.split(".")[0] or PATCH_FIELD, message)
    return out


# ---------------------------------------------------------------------- what changed


@dataclass(frozen=True)
class Change:
    key: str
    before: Any = None
    after: Any = None


@dataclass(frozen=True)
class FieldDiff:
    """The changes of one ExecutionState field between two checkpoints."""

    field: str
    added: list[Change]
    removed: list[Change]
    changed: list[Change]

    @property
    def count(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed)


def _entries(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {f"[{i}]": v for i, v in enumerate(value)}
    return {} if value in (None, "") else {"value": value}


def diff_field(name: str, before: Any, after: Any) -> FieldDiff:
    old, new = _entries(before), _entries(after)
    return FieldDiff(
        field=name,
        added=[Change(k, after=new[k]) for k in new if k not in old],
        removed=[Change(k, before=old[k]) for k in old if k not in new],
        changed=[Change(k, old[k], new[k]) for k in new if k in old and not _same(old[k], new[k])],
    )


def state_diff(before: ExecutionState | None, after: ExecutionState) -> list[FieldDiff]:
    """Per-field changes from ``before`` (the last approved state; None before any) to ``after``.

    Fields that did not change are left out.
    """
    diffs = []
    for name in ExecutionState.part_names():
        old = getattr(before, name) if before is not None else None
        found = diff_field(name, old, getattr(after, name))
        if found.count:
            diffs.append(found)
    return diffs


def short(value: Any, limit: int = 120) -> str:
    """A value as one line of JSON-ish text, cut at ``limit`` characters."""
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    )
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def table_columns(rows: list[dict[str, Any]], limit: int = 6) -> list[str]:
    """Columns for a list of dicts (API calls): the keys in first-seen order, at most ``limit``."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns[:limit]
