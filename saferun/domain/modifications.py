"""How a reviewer's modifications change what the agent gets back (pure).

A MODIFIED decision is a JSON merge patch (RFC 7386) over the parameters the agent proposed at the
checkpoint: ``{"pizza_count": 100}`` patched with ``{"pizza_count": 10}`` gives ``{"pizza_count": 10}``,
``null`` removes a key, nested objects merge.

What a modification may change is the checkpoint's parameter schema (``parameter_schema.py``): declared
by the agent, or inferred from the proposed values (only those keys, each keeping its type, a whole
number staying whole). A typo in a key or a "ten" for a count is refused with the field named, instead of
reaching an agent that would ignore it or crash on it. When the agent proposed none and declared none,
the patch becomes the parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


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
    parameters: Mapping[str, Any],
    modifications: Mapping[str, Any],
    schema: Mapping[str, Any] | None = None,
    path: str = "modifications",
) -> None:
    """Refuse modifications that the checkpoint's parameter schema (declared, or inferred from the
    proposed ``parameters``) does not allow, naming ``modifications.<key>``; see ``parameter_schema``."""
    from saferun.domain import parameter_schema

    effective = parameter_schema.effective(schema, parameters)
    merged = merge_patch(parameters, modifications) if parameters else dict(modifications)
    parameter_schema.validate(effective, parameters, modifications, merged, path)


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
