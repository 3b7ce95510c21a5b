"""How JSON columns are encoded and decoded: the engine's ``json_serializer`` and ``json_deserializer``.

Why not the standard library (SQLAlchemy's default): every pause writes a request's context, review and
parameters, and every checked read decodes the workflow's config and the request's columns; orjson does
both several times faster. Why not orjson alone: it writes no integer past 64 bits and reads one back as a
float, and it refuses ``NaN`` that an older version may have written. A value the standard library stored
before must read back exactly, or its row no longer matches the digest the audit chain recorded for it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_PASS_THROUGH = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def json_dumps(value: Any) -> str:
    """A JSON column's text: orjson (several times faster than ``json.dumps`` on a request's context and
    review, which every pause writes), and the standard library for what orjson refuses (integers past
    64 bits, non-string keys, subclasses of str, int, dict and list), so every value is stored as before
    (an enum is written as its value by both); dates and dataclasses, which orjson would write and
    ``json.dumps`` refuses, are still refused: a column never quietly starts storing something new.
    Readers see the same values; only whitespace differs."""
    try:
        return orjson.dumps(value, option=_PASS_THROUGH).decode()
    except TypeError:
        return json.dumps(value)


_LONG_NUMBER = re.compile(r"\d{19}")  # 19 digits or more: possibly past 64 bits
_LONG_NUMBER_BYTES = re.compile(rb"\d{19}")  # psycopg hands JSONB over as bytes


def json_loads(text: str | bytes) -> Any:
    """A JSON column's value: orjson, or the standard library for text orjson refuses (a ``NaN`` an older
    version wrote) or would read differently (orjson turns an integer past 64 bits into a float: such a
    value must come back exact, or its row's digest no longer matches the audit chain)."""
    long_number = _LONG_NUMBER_BYTES if isinstance(text, bytes) else _LONG_NUMBER
    if long_number.search(text):  # type: ignore[arg-type]
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
