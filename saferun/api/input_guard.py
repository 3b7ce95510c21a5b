"""Bounded input at the ASGI boundary: nesting depth, NaN/Infinity and NUL checked before any route runs.

A JSON body is parsed by the standard library (FastAPI) and validated by Pydantic, both recursive: a
200 KB body nested 100,000 deep once crashed the whole server (SIGSEGV, since importing the x402 EVM
stack raises the interpreter's recursion limit) before authentication even ran. So the body's depth is
measured here first, by a linear scan that never recurses (``canonical.json_depth``), and refused with
422 naming the limit. Values no SafeRun store can hold the same way on SQLite and PostgreSQL (NaN and
Infinity, which are not JSON; NUL characters, which PostgreSQL refuses) are refused here too, with the
field that holds them, so both databases give the same 422 and nothing is written.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saferun.domain.canonical import JSON_STRING, MAX_DEPTH, check_json, json_depth
from saferun.errors import InvalidInput, StateNotSerializable

# a request body wraps the stored values in a few levels (``{"state": {"agent_memory": ...}}``); the
# values themselves are held to MAX_DEPTH by the library, with the path of the offending value
MAX_BODY_DEPTH = MAX_DEPTH + 8
_NON_JSON_NUMBER = re.compile(rb"NaN|Infinity")
_NUL_ESCAPE = re.compile(rb"\\u0000", re.IGNORECASE)


class InputGuard:
    """Refuses, with SafeRun's 422, JSON bodies deeper than ``max_depth`` and NaN/Infinity/NUL anywhere
    in the body, the path or the query string. Runs inside ``BodyLimit``, so the body it buffers is
    already bounded in size."""

    def __init__(self, app: ASGIApp, max_depth: int = MAX_BODY_DEPTH) -> None:
        self.app, self.max_depth = app, max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = _check_url(scope)
        if error is not None:
            await _refuse(error, send)
            return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE") or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        error = check_body(body, self.max_depth)
        if error is not None:
            await _refuse(error, send)
            return
        whole: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([whole], receive), send)


def check_body(body: bytes, max_depth: int = MAX_BODY_DEPTH) -> InvalidInput | None:
    """The error for a JSON body SafeRun refuses before parsing, or ``None``. Malformed JSON passes: the
    framework's parser refuses it with its own 422 (safely, since its depth is bounded by now)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InvalidInput("body", f"is not UTF-8 (byte {exc.start}); JSON bodies must be UTF-8")
    depth = json_depth(body)
    if depth > max_depth:
        return InvalidInput(
            "body", f"JSON nests {depth} levels deep; the limit is {max_depth}", limit=max_depth
        )
    outside_strings = JSON_STRING.sub(b'""', body)
    if not (_NON_JSON_NUMBER.search(outside_strings) or b"\x00" in body or _NUL_ESCAPE.search(body)):
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    try:
        check_json(value, "body", max_depth=max_depth)
    except StateNotSerializable as exc:
        field = exc.field.removeprefix("body.").removeprefix("body") or "body"
        return InvalidInput(field, exc.message.split(": ", 1)[-1])
    return None


def _check_url(scope: Scope) -> InvalidInput | None:
    if "\x00" in scope.get("path", ""):
        return InvalidInput("path", "contains a NUL character (\\u0000)")
    query = scope.get("query_string", b"")
    if b"%00" in query.lower() or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return InvalidInput(name.replace("\x00", "") or "query", "contains a NUL character (\\u0000)")
    return None


def _is_json(scope: Scope) -> bool:
    """JSON or unlabelled bodies (FastAPI parses a JSON route's body whatever its label); forms and
    uploads have their own parsers, which do not nest."""
    headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
    kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return kind == b"" or kind == b"application/json" or kind.endswith(b"+json")


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _refuse(error: InvalidInput, send: Send) -> None:
    response = JSONResponse(status_code=error.http_status, content={"detail": _detail(error)})
    await response({"type": "http"}, _no_receive, send)


def _detail(error: InvalidInput) -> dict[str, Any]:
    return error.to_dict()


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
