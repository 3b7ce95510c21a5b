"""Opaque keyset-pagination cursors: where the next page of a list starts, bound to that list and filter.

A cursor is ``base64url(canonical JSON {"v", "l", "f", "k"})``: the list it belongs to (``l``), a
fingerprint of the filters and the caller it was issued for (``f``), and the sort key of the last row
shown (``k``). Keyset pages stay as fast on page 1,000 as on page 1 (``WHERE (sort key) > k ... LIMIT``,
an index range scan) where ``OFFSET`` re-reads every skipped row.

The cursor is not signed: it only says where to resume, every row is still filtered by the caller's
visibility, so a hand-made cursor can show nothing that the first page could not. It is checked strictly
instead, so a mistake is a 422 naming ``cursor`` and never a silently wrong page: malformed text, a
cursor of another list (``foreign``), or one issued for other filters or another caller.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from saferun.errors import InvalidInput

VERSION = 1
MAX_CURSOR_CHARS = 1024


def fingerprint(filters: dict[str, Any]) -> str:
    """A short digest of the filters (and caller) a page was asked with; equal filters, equal digest."""
    text = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode(list_name: str, filters: dict[str, Any], key: list[Any]) -> str:
    """The cursor for the page after the row whose sort key is ``key`` (datetimes as ISO text)."""
    body = {"v": VERSION, "l": list_name, "f": fingerprint(filters), "k": [_plain(v) for v in key]}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, list_name: str, filters: dict[str, Any], kinds: tuple[type, ...]) -> list[Any]:
    """The sort key a cursor resumes after, checked against the list, the filters and the key's types.

    ``kinds`` gives each key part's type (``datetime`` or ``str``). Anything else is ``InvalidInput``
    naming ``cursor``: the caller learns why, and no page is guessed.
    """
    if not token or len(token) > MAX_CURSOR_CHARS:
        raise InvalidInput("cursor", "malformed cursor: pass back next_cursor exactly as a page gave it")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            "cursor", "malformed cursor: pass back next_cursor exactly as a page gave it"
        ) from None
    if not isinstance(body, dict) or body.get("v") != VERSION or not isinstance(body.get("k"), list):
        raise InvalidInput("cursor", "malformed cursor: not a SafeRun page cursor")
    if body.get("l") != list_name:
        raise InvalidInput("cursor", f"foreign cursor: it pages {body.get('l')!r}, not {list_name!r}")
    if body.get("f") != fingerprint(filters):
        raise InvalidInput(
            "cursor", "cursor issued for other filters (or another caller): start again without a cursor"
        )
    key = body["k"]
    if len(key) != len(kinds):
        raise InvalidInput("cursor", "malformed cursor: wrong key length")
    return [_parse(v, kind) for v, kind in zip(key, kinds, strict=True)]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def _parse(value: Any, kind: type) -> Any:
    if kind is datetime:
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise InvalidInput("cursor", "malformed cursor: bad timestamp")
        return parsed.astimezone(UTC)
    if not isinstance(value, kind) or (isinstance(value, str) and not 0 < len(value) <= 200):
        raise InvalidInput("cursor", "malformed cursor: bad key")
    return value
