"""A request described without sending it (``Call``), and the base every endpoint group builds on.

Each group of endpoints (``workflows``, ``approvals``, ``records``, ``saga``) is written once: its
``*Endpoints`` class builds the ``Call`` (pure, no I/O) and its ``*Methods`` mixin hands the call to
``_json`` / ``_bytes``. The sync client's ``_json`` returns the answer; the async client's is a coroutine
function, so the same method returns an awaitable there. ``Sends`` carries the two types, so a type checker
sees ``dict`` on ``SafeRunClient`` and ``Awaitable[dict]`` on ``AsyncSafeRunClient``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

from saferun import errors

J = TypeVar("J")  # what a JSON call gives back: the answer (sync) or an awaitable of it (async)
B = TypeVar("B")  # the same for a call whose answer is bytes


@dataclass(frozen=True)
class Call:
    """One request, described without sending it."""

    method: Literal["GET", "POST"]
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    has_body: bool = False
    wait: float = 0.0  # a long poll's seconds, added to the client's timeout for this call
    expect: Literal["json", "bytes"] = "json"

    @property
    def idempotent(self) -> bool:
        return self.method == "GET"


def seg(value: str, field: str = "id") -> str:
    """An id as one path segment, quoted: ids are the caller's strings and may hold ``/`` or ``?``; anything
    but a non-empty string is ``InvalidInput`` naming ``field``, before anything is sent."""
    if not isinstance(value, str) or not value:
        raise errors.InvalidInput(field, f"must be a non-empty string, got {value!r}")
    return quote(value, safe="")


def get(path: str, params: dict[str, Any] | None = None, **kw: Any) -> Call:
    """A GET; ``None`` parameters are left out."""
    return Call("GET", path, params={k: v for k, v in (params or {}).items() if v is not None} or None, **kw)


def post(path: str, body: Any = None, *, has_body: bool = True) -> Call:
    return Call("POST", path, body=body, has_body=has_body and body is not None)


def compact(body: dict[str, Any]) -> dict[str, Any]:
    """A body without its ``None`` fields (the server's defaults apply)."""
    return {k: v for k, v in body.items() if v is not None}


class Sends(ABC, Generic[J, B]):
    """What an endpoint group needs from a client: send a call, get its JSON (``J``) or bytes (``B``).
    Abstract: a class mixing the endpoint groups in without a transport (``SyncTransport`` or
    ``AsyncTransport``) cannot be instantiated."""

    @abstractmethod
    def _json(self, call: Call) -> J: ...

    @abstractmethod
    def _bytes(self, call: Call) -> B: ...
