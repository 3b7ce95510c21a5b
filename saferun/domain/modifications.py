"""How a reviewer's modifications change what the agent gets back (pure).

A MODIFIED decision is a JSON merge patch (RFC 7386) over the parameters the agent proposed at the
checkpoint: ``{"pizza_count": 100}`` patched with ``{"pizza_count": 10}`` gives ``{"pizza_count": 10}``,
``null`` removes a key, nested objects merge.

When the agent proposed parameters, a modification may only touch those keys, and only with a value of
the same JSON kind (a number stays a number): a typo in a key or a "ten" for a count is refused with
the field named, instead of reaching an agent that would ignore it or crash on it. When the agent
proposed none, the patch becomes the parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from saferun.domain.canonical import check_json
from saferun.errors import InvalidInput


def json_kind(value: Any) -> str:
    """The JSON type of a value: what a modification must keep (a number stays a number)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def validate_modifications(
    parameters: Mapping[str, Any], modifications: Mapping[str, Any], path: str = "modifications"
) -> None:
    check_json(dict(modifications), path)
    if not parameters:
        return
    for key, new in modifications.items():
        where = f"{path}.{key}"
        if key not in parameters:
            allowed = ", ".join(sorted(parameters)) or "none"
            raise InvalidInput(where, f"not a parameter of this checkpoint (parameters: {allowed})")
        old = parameters[key]
        if new is None:
            continue
        if json_kind(old) != json_kind(new) and old is not None:
            raise InvalidInput(where, f"expected a {json_kind(old)} like the proposed {old!r}, got {new!r}")
        if isinstance(old, dict) and isinstance(new, dict) and old:
            validate_modifications(old, new, where)


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge; returns a new dict and leaves both inputs untouched."""
    result = copy.deepcopy(dict(target))
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_patch(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result
