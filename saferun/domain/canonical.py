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

import orjson

from saferun.errors import StateNotSerializable

_FALLBACK = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_bytes(value: Any, field: str = "value") -> bytes:
    """Encode ``value`` canonically; ``StateNotSerializable`` names the first bad path under ``field``.

    orjson (sorted keys) does the work; it is ~50x faster than the standard library on a 1 MB agent
    memory. Integers beyond 64 bits, which orjson refuses, send the whole value through the standard
    library instead: the choice depends only on the value, so equal values still give equal bytes.
    """
    check_json(value, field)
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        pass
    try:
        return _FALLBACK.encode(value).encode("utf-8")
    except (ValueError, RecursionError):
        raise StateNotSerializable(
            field, "value contains itself (circular reference) or nests too deeply"
        ) from None


def canonical_loads(data: bytes) -> Any:
    return orjson.loads(data)


_SCALARS = (str, bool, int)


def check_json(value: Any, path: str) -> None:
    """Refuse anything but plain JSON. One quick pass with no bookkeeping (an agent memory can hold
    100,000 values); only when it finds a problem does a second pass work out the path to report."""
    stack = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is float:
            if item - item == 0.0:  # finite (inf - inf and nan - nan are nan)
                continue
        elif kind is dict:
            if id(item) in seen:  # shared (or circular): checked already; the encoder refuses cycles
                continue
            seen.add(id(item))
            if all(type(k) is str for k in item):
                stack.extend(item.values())
                continue
        elif kind is list or kind is tuple:
            if id(item) not in seen:
                seen.add(id(item))
                stack.extend(item)
            continue
        _explain(value, path)


def _explain(value: Any, path: str) -> None:
    """The slow pass: find the first offending value and raise with its path."""
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
                continue
            seen.add(id(item))
            for k, v in item.items():
                if type(k) is not str:
                    raise StateNotSerializable(
                        f"{where}.{k!r}",
                        f"dict key of type {type(k).__name__} is not a string; JSON objects only have "
                        "string keys",
                    )
                stack.append((v, f"{where}.{k}"))
            continue
        if kind is list or kind is tuple:
            if id(item) in seen:
                continue
            seen.add(id(item))
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
            continue
        raise StateNotSerializable(
            where,
            f"value of type {kind.__name__} is not JSON-serializable; convert it to a str, number, "
            "bool, None, list or dict first",
        )
    raise AssertionError("check_json found a problem that _explain could not")  # pragma: no cover
