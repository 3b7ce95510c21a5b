"""Canonical JSON: the one byte encoding that content hashes, audit hashes and artifacts are taken over.

Canonical means: sorted keys, no insignificant whitespace, UTF-8, no NaN/Infinity. Two equal values
always encode to the same bytes, so equal states share storage and hashes can be recomputed later.

Only plain JSON is accepted (dict with ``str`` keys, list/tuple, str, int, float, bool, None). Anything
else would either fail later or come back changed (a ``set``, a ``datetime``, an ``int`` key turned into
``"1"``), so it is refused up front with the path of the offending value.
"""

from __future__ import annotations

import json
import math
from typing import Any

from saferun.errors import StateNotSerializable

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_bytes(value: Any, field: str = "value") -> bytes:
    """Encode ``value`` canonically; ``StateNotSerializable`` names the first bad path under ``field``."""
    check_json(value, field)
    return _ENCODER.encode(value).encode("utf-8")


def canonical_loads(data: bytes) -> Any:
    return json.loads(data)


def check_json(value: Any, path: str) -> None:
    """Walk ``value`` once; iterative so deep agent memories cannot hit the recursion limit."""
    stack: list[tuple[Any, str]] = [(value, path)]
    seen: set[int] = set()
    while stack:
        item, where = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or kind is int or item is None:
            continue
        if kind is float:
            if not math.isfinite(item):
                raise StateNotSerializable(
                    where, f"{item!r} is not a finite number (JSON has no NaN/Infinity)"
                )
            continue
        if kind is dict:
            if id(item) in seen:
                raise StateNotSerializable(where, "value contains itself (circular reference)")
            seen.add(id(item))
            for k, v in item.items():
                if type(k) is not str:
                    raise StateNotSerializable(
                        f"{where}.{k!r}",
                        f"dict key of type {type(k).__name__} "
                        "is not a string; JSON objects only have string keys",
                    )
                stack.append((v, f"{where}.{k}"))
            continue
        if kind is list or kind is tuple:
            if id(item) in seen:
                raise StateNotSerializable(where, "value contains itself (circular reference)")
            seen.add(id(item))
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
            continue
        raise StateNotSerializable(
            where,
            f"value of type {kind.__name__} is not JSON-serializable; convert it to a str, number, "
            "bool, None, list or dict first",
        )
