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
import re
from itertools import accumulate
from typing import Any

import orjson

from saferun.errors import StateNotSerializable

# Deeper values are refused when stored, so everything stored can be read back by every reader (orjson
# stops at 1024 levels, Pydantic, Jinja and PostgreSQL's JSONB each have their own limits). 64 levels is
# far beyond any agent memory seen in practice and far below every reader's limit.
MAX_DEPTH = 64

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
    """Decode canonical bytes. Writes are bounded by ``MAX_DEPTH`` (plus the few levels SafeRun wraps a
    value in), far below orjson's own 1024-level limit, so whatever was stored reads back; bytes that do
    not decode (written by something else) raise a typed error, never a bare decoder exception."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StateNotSerializable("value", f"stored bytes do not decode as JSON: {exc}") from None


# a JSON string literal, unrolled so the regex engine never backtracks: "..." with \-escapes
JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(data: bytes) -> int:
    """Maximum nesting depth of JSON text, without parsing it and without recursion.

    Strings are blanked first (a ``[`` inside a string does not nest), then only brackets are kept;
    the work is a regex pass and a running sum, linear in the input and safe on 100,000-deep bodies
    whatever the interpreter's recursion limit is. Malformed text gives some number; the parser that
    runs afterwards refuses it.
    """
    brackets = JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(0, max(accumulate(_STEP[b] for b in brackets)))


_SCALARS = (str, bool, int)


def check_json(value: Any, path: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse anything but plain JSON (and strings with NUL, which PostgreSQL cannot store, and nesting
    deeper than ``max_depth``). One quick pass with little bookkeeping (an agent memory can hold 100,000
    values); only when it finds a problem does a second pass work out the path to report."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is str:
            if "\x00" not in item:
                continue
        elif kind is int or kind is bool or item is None:
            continue
        elif kind is float:
            if item - item == 0.0:  # finite (inf - inf and nan - nan are nan)
                continue
        elif depth >= max_depth:
            pass  # a container at the limit: too deep
        elif kind is dict:
            if id(item) in seen:  # shared (or circular): checked already; the encoder refuses cycles
                continue
            seen.add(id(item))
            if all(type(k) is str and "\x00" not in k for k in item):
                stack.extend((v, depth + 1) for v in item.values())
                continue
        elif kind is list or kind is tuple:
            if id(item) not in seen:
                seen.add(id(item))
                stack.extend((v, depth + 1) for v in item)
            continue
        _explain(value, path, max_depth)


def _explain(value: Any, path: str, max_depth: int = MAX_DEPTH) -> None:
    """The slow pass: find the first offending value and raise with its path."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    seen: set[int] = set()
    while stack:
        item, where, depth = stack.pop()
        kind = type(item)
        if kind is str:
            if "\x00" in item:
                raise StateNotSerializable(where, "contains a NUL character (\\u0000)")
            continue
        if kind is bool or kind is int or item is None:
            continue
        if kind is float:
            if not math.isfinite(item):
                raise StateNotSerializable(
                    where, f"{item!r} is not a finite number (JSON has no NaN/Infinity)"
                )
            continue
        if kind in (dict, list, tuple) and depth >= max_depth:
            raise StateNotSerializable(where, f"nests deeper than {max_depth} levels (the limit)")
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
                if "\x00" in k:
                    raise StateNotSerializable(f"{where}.{k!r}", "key contains a NUL character (\\u0000)")
                stack.append((v, f"{where}.{k}", depth + 1))
            continue
        if kind is list or kind is tuple:
            if id(item) in seen:
                continue
            seen.add(id(item))
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item))
            continue
        raise StateNotSerializable(
            where,
            f"value of type {kind.__name__} is not JSON-serializable; convert it to a str, number, "
            "bool, None, list or dict first",
        )
    raise AssertionError("check_json found a problem that _explain could not")  # pragma: no cover
