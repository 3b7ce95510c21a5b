"""The parameters a reviewer may change at a checkpoint, as a JSON Schema (pure: no I/O).

An agent may declare, per checkpoint, a JSON Schema (Draft 2020-12) for its proposed parameters: types,
``enum``, ``minimum``/``maximum``, ``pattern``, ``required``, ``description``. Without one the schema is
inferred from the proposed values (``100`` is an integer, ``0.5`` a number, ``"x"`` a string; objects
nest; no other keys), which is what the engine enforced before schemas could be declared, except that a
whole number now stays a whole number (a reviewer's ``10.5`` pizzas is refused, as the browser did).

The same schema is checked in every place a modification enters — the engine (library, REST, CLI, the
LangGraph resume), the dashboard's form (server side) and, through the field attributes it renders, the
browser — and the messages come from here, so each place says the same thing. Validation is done by
``jsonschema`` (the well-kept library), not by hand-written type checks; only the wording is ours.
It is imported on first use: most processes never see a modification, and ``import saferun`` stays fast.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from saferun.domain.canonical import check_json
from saferun.errors import InvalidInput

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "string": "text",
    "array": "a JSON array",
    "object": "a JSON object",
    "null": "null",
}


def infer(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The schema the proposed values imply; ``{"type": "object"}`` (anything) when none were proposed."""
    if not parameters:
        return {"type": "object"}
    return _infer_object(parameters)


def _infer_object(value: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {str(k): _infer_value(v) for k, v in value.items()},
        "additionalProperties": False,
    }


def _infer_value(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list | tuple):
        return {"type": "array"}
    if isinstance(value, Mapping):
        return _infer_object(value) if value else {"type": "object"}
    return {}


def check_declared(schema: Any, field: str = "parameter_schema") -> dict[str, Any]:
    """A declared schema, checked against the JSON Schema meta-schema; ``InvalidInput`` naming ``field``
    (and the part of the schema that is wrong) otherwise. It must describe an object of parameters."""
    if not isinstance(schema, Mapping):
        raise InvalidInput(field, f"must be a JSON Schema object, not {type(schema).__name__}")
    schema = dict(schema)
    check_json(schema, field)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = ".".join(str(p) for p in exc.absolute_path)
        name = f"{field}.{where}" if where else field
        raise InvalidInput(name, f"not a valid JSON Schema: {exc.message}") from None
    if schema.get("type", "object") != "object":
        raise InvalidInput(f"{field}.type", "parameters are an object: the schema's type must be 'object'")
    return schema


def effective(declared: Mapping[str, Any] | None, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The schema a checkpoint's modifications are checked against: the declared one, else inferred."""
    return dict(declared) if declared else infer(parameters)


def check_proposed(schema: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
    """The agent's own proposal must satisfy the schema it declared (else the reviewer could not approve
    it as shown): ``InvalidInput`` naming ``parameters.<key>``."""
    _raise_first(schema, dict(parameters), "parameters")


def validate(
    schema: Mapping[str, Any],
    parameters: Mapping[str, Any],
    modifications: Mapping[str, Any],
    merged: Mapping[str, Any],
    path: str = "modifications",
) -> None:
    """Check a reviewer's modifications: each key must be a declared (or proposed) parameter, and the
    parameters after the merge must satisfy the schema. ``InvalidInput`` names ``modifications.<key>``."""
    check_json(dict(modifications), path)
    known = _known_keys(schema, parameters)
    if known is not None:
        for key in modifications:
            if key not in known:
                allowed = ", ".join(sorted(known)) or "none"
                raise InvalidInput(
                    f"{path}.{key}", f"not a parameter of this checkpoint (parameters: {allowed})"
                )
    _raise_first(schema, dict(merged), path)


def _known_keys(schema: Mapping[str, Any], parameters: Mapping[str, Any]) -> set[str] | None:
    """The keys a modification may name: the schema's properties and the proposed keys; ``None`` (any)
    when neither names one, i.e. the agent proposed nothing and declared nothing (the patch becomes the
    parameters)."""
    props = schema.get("properties")
    keys = set(props) if isinstance(props, Mapping) else set()
    keys |= set(parameters)
    return keys or None


def errors(schema: Mapping[str, Any], value: Mapping[str, Any]) -> dict[str, str]:
    """Every violation, as ``{"key.sub": message}`` (the dashboard shows one per field)."""
    found: dict[str, str] = {}
    for error in sorted(_validator(schema).iter_errors(dict(value)), key=_order):
        key = _where(error)
        found.setdefault(key, message(error))
    return found


def _raise_first(schema: Mapping[str, Any], value: dict[str, Any], path: str) -> None:
    found = sorted(_validator(schema).iter_errors(value), key=_order)
    if found:
        key = _where(found[0])
        raise InvalidInput(f"{path}.{key}" if key else path, message(found[0]))


def _validator(schema: Mapping[str, Any]) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(dict(schema))


def _order(error: ValidationError) -> tuple[str, str]:
    return (_where(error), str(error.validator))


def _where(error: ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        parts.append(missing)
    elif error.validator == "additionalProperties" and "'" in error.message:
        parts.append(error.message.split("'")[1])
    return ".".join(p for p in parts if p)


def show(value: Any) -> str:
    """A value as the messages quote it (JSON), the same in Python and in the browser's script."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))  # 1000.0 is quoted 1000, as the browser's script quotes it
    return json.dumps(value, ensure_ascii=False)


def message(error: ValidationError) -> str:
    """One violation in the words the reviewer sees (also used, word for word, by ``app.js``)."""
    kind, rule, value = error.validator, error.validator_value, error.instance
    if kind == "type":
        wanted = rule if isinstance(rule, str) else " or ".join(rule)
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in wanted.split(" or "))
        return f"expected {words}, got {show(value)}"
    if kind == "minimum":
        return f"must be at least {show(rule)}, got {show(value)}"
    if kind == "maximum":
        return f"must be at most {show(rule)}, got {show(value)}"
    if kind == "exclusiveMinimum":
        return f"must be greater than {show(rule)}, got {show(value)}"
    if kind == "exclusiveMaximum":
        return f"must be less than {show(rule)}, got {show(value)}"
    if kind == "enum":
        return f"must be one of {', '.join(show(v) for v in rule)}, got {show(value)}"
    if kind == "const":
        return f"must be {show(rule)}, got {show(value)}"
    if kind == "pattern":
        return f"must match the pattern {rule}, got {show(value)}"
    if kind == "minLength":
        return f"must be at least {rule} characters long"
    if kind == "maxLength":
        return f"must be at most {rule} characters long"
    if kind == "multipleOf":
        return f"must be a multiple of {show(rule)}, got {show(value)}"
    if kind == "required":
        return "is required"
    if kind == "additionalProperties":
        return "not a parameter of this checkpoint"
    return error.message


def property_schema(schema: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The sub-schema of one top-level parameter (``{}`` when the schema says nothing about it)."""
    props = schema.get("properties")
    if isinstance(props, Mapping) and isinstance(props.get(name), Mapping):
        return dict(props[name])
    return {}


def is_text(schema: Mapping[str, Any]) -> bool:
    """Whether a parameter's value is text (typed as it is entered, never parsed as JSON)."""
    enum = schema.get("enum")
    words = isinstance(enum, list) and bool(enum) and all(isinstance(v, str) for v in enum)
    return schema.get("type") == "string" or (schema.get("type") is None and words)
