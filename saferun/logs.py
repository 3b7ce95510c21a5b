"""Logging for the server and the CLI: one ``logging.config`` setup, text or JSON, secrets kept out.

``configure(level, fmt)`` is called by ``saferun`` (every command) and ``saferun serve`` (which hands the
same setup to uvicorn, so access lines go through it too). Level and format come from ``--log-level`` or
``SAFERUN_LOG_LEVEL`` and ``SAFERUN_LOG_FORMAT`` (``text`` | ``json``).

Every record passes two filters on the handler:

- ``ContextFilter`` adds ``request_id`` (from the ``X-Request-ID`` header or a fresh one, set by
  ``RequestIdMiddleware``) and ``workflow_id`` (the record's own ``extra``, else the one the request's
  path names), so a JSON line can be joined with the request that caused it.
- ``RedactFilter`` replaces decision-link tokens (``/decide/<token>``), API keys (``sr_key_...``),
  ``token=`` query values, bearer tokens and a URL's ``user:password@`` with ``[redacted]`` in the message
  and its arguments: a single-use decision link is a credential until used, and access logs are read by
  more people than reviewers. Both formatters redact tracebacks and extra fields too, which the filter
  cannot reach.
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("saferun_request_id", default=None)
WORKFLOW_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("saferun_workflow_id", default=None)

REDACTED = "[redacted]"
_SECRETS = (
    (re.compile(r"(/decide/)[^/\s?\"']+"), r"\1" + REDACTED),
    (re.compile(r"\bsr_key_[A-Za-z0-9_\-]+"), "sr_key_" + REDACTED),
    (re.compile(r"(?i)([?&](?:token|key|api_key|session)=)[^&\s\"';,)]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]+"), r"\1" + REDACTED),
    # credentials in a URL (a facilitator's or webhook's user:password@host)
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@\"']+:[^/\s@\"']*@"), r"\1" + REDACTED + "@"),
)
# one search that every secret above matches (a superset): most lines hold none, and the five substitutions
# per string were ~28 µs of every access line, each request's largest logging cost
_MAYBE_SECRET = re.compile(r"/decide/|sr_key_|://|(?i:[?&](?:token|key|api_key|session)=|bearer\s)")
_WORKFLOW_IN_PATH = re.compile(r"/workflows/(wf_[A-Za-z0-9_\-]+)")
_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:\-]{1,100}")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id", "workflow_id"}


def redact(text: str) -> str:
    """``text`` with decision tokens, API keys and token query values replaced by ``[redacted]``."""
    if not _MAYBE_SECRET.search(text):
        return text
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _redact_arg(value: Any) -> Any:
    """A log argument with secrets redacted; objects (httpx logs an ``httpx.URL``) are redacted as their
    text, and left as they are when their text holds nothing to redact (so ``%d`` still gets a number)."""
    if isinstance(value, (int, float, bool, type(None))):
        return value
    text = str(value)
    shown = redact(text)
    return value if shown == text and not isinstance(value, str) else shown


class RedactFilter(logging.Filter):
    """Redacts secrets in every record (message and arguments) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


class ContextFilter(logging.Filter):
    """Puts the current request id and workflow id on the record (``-`` when unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = REQUEST_ID.get() or "-"
        if not getattr(record, "workflow_id", None):
            record.workflow_id = WORKFLOW_ID.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, workflow_id, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "workflow_id": getattr(record, "workflow_id", "-"),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                if isinstance(value, (int, float, bool, type(None))):
                    out[key] = value
                else:
                    out[key] = redact(str(value))
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """The text format, with tracebacks redacted (an exception's message may quote a URL or a token)."""

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact(super().formatStack(stack_info))


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record to ``sys.stderr`` as it is when the record is emitted.

    Why not ``StreamHandler(sys.stderr)``: that binds the stream object at configuration time. Every
    ``saferun`` command configures logging, and a command run in-process (Typer's ``CliRunner`` in a
    user's tests, a notebook) swaps ``sys.stderr`` for a captured stream that is closed afterwards. The
    handler then wrote every later record of the process into a closed stream, and each failed write
    printed a traceback (``Handler.handleError``): in the test suite, a 20,000-workflow bulk load after one
    CLI test took 2.8x as long as without it. Python's own last-resort handler looks the stream up the
    same way.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # always the current sys.stderr


def config_dict(level: str = "INFO", fmt: str = "text") -> dict[str, Any]:
    """The ``logging.config.dictConfig`` document for ``level`` and ``fmt`` (also handed to uvicorn)."""
    formatter = (
        {"()": "saferun.logs.JsonFormatter"}
        if fmt == "json"
        else {
            "()": "saferun.logs.TextFormatter",
            "fmt": "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s",
        }
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "redact": {"()": "saferun.logs.RedactFilter"},
            "context": {"()": "saferun.logs.ContextFilter"},
        },
        "formatters": {"saferun": formatter},
        "handlers": {
            "stderr": {
                "class": "saferun.logs.StderrHandler",
                "formatter": "saferun",
                "filters": ["redact", "context"],
            }
        },
        "loggers": {
            "saferun": {"level": level, "handlers": ["stderr"], "propagate": False},
            "uvicorn": {"level": level, "handlers": ["stderr"], "propagate": False},
            "uvicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            "uvicorn.access": {"level": level, "handlers": ["stderr"], "propagate": False},
        },
        "root": {"level": "WARNING", "handlers": ["stderr"]},
    }


def configure(level: str = "INFO", fmt: str = "text") -> dict[str, Any]:
    """Install the setup in this process; returns the document so ``serve`` can give uvicorn the same."""
    document = config_dict(level.upper(), fmt)
    logging.config.dictConfig(document)
    return document


class RequestIdMiddleware:
    """Gives every HTTP request an id (the client's ``X-Request-ID`` if sane, else a new one), sets it and
    the path's workflow id for the request's log records, and returns it as ``X-Request-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID_OK.fullmatch(given) else uuid.uuid4().hex[:16]
        found = _WORKFLOW_IN_PATH.search(scope.get("path", ""))
        tokens = (REQUEST_ID.set(request_id), WORKFLOW_ID.set(found.group(1) if found else None))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(tokens[0])
            WORKFLOW_ID.reset(tokens[1])
