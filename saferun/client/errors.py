"""How an answer becomes a ``saferun.errors`` exception on the client side, and the client's own errors.

The server answers ``{"detail": {"error": "WorkflowNotFound", "message": ..., "workflow_id": ...}}``; the
client raises that class with the server's words and fields, so code written against the in-process
orchestrator catches the same exceptions over HTTP. Shared with ``saferun.platform.remote``.
"""

from __future__ import annotations

from typing import Any

from saferun import errors
from saferun.errors import SafeRunError


class ServerUnreachable(SafeRunError):
    """The server could not be reached (connection refused or dropped) after the retries allowed.

    For a POST the server may or may not have applied the request; read the resource to find out."""

    http_status = 503


class RequestTimedOut(ServerUnreachable):
    """The server did not answer within the client's timeout."""

    http_status = 504


class ServerError(SafeRunError):
    """A 5xx answer that is not one of SafeRun's own errors (a proxy, or a bug in the server)."""

    http_status = 500


class UnexpectedResponse(SafeRunError):
    """An answer the client cannot read: a status SafeRun does not use, or a body that is not JSON."""


def _error_classes() -> dict[str, type[SafeRunError]]:
    found: dict[str, type[SafeRunError]] = {}
    for module_vars in (vars(errors), globals()):
        for name, value in module_vars.items():
            if isinstance(value, type) and issubclass(value, SafeRunError):
                found[name] = value
    found["stale_review"] = errors.StaleReview  # the one error answered by a code, not a class name
    return found


ERROR_CLASSES = _error_classes()
_BY_STATUS: dict[int, type[SafeRunError]] = {
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    422: errors.InvalidInput,
}


def error_from_answer(status: int, body: Any, text: str = "") -> SafeRunError:
    """The ``saferun.errors`` instance an error answer stands for, with the server's message and fields.

    SafeRun answers ``{"detail": {"error": "WorkflowNotFound", "message": ..., "workflow_id": ...}}``;
    the class is found by ``error``, and every other key becomes an attribute (``exc.workflow_id``,
    ``exc.field``, ``exc.rule``) and an entry of ``exc.fields``. Anything else is mapped by status.
    """
    detail = body.get("detail") if isinstance(body, dict) else None
    fields: dict[str, Any] = {}
    cls: type[SafeRunError] | None = None
    if isinstance(detail, dict) and isinstance(detail.get("error"), str):
        cls = ERROR_CLASSES.get(detail["error"])
        message = str(detail.get("message") or detail["error"])
        fields = {k: v for k, v in detail.items() if k not in ("error", "message")}
    else:
        message = str(detail) if detail is not None else (text[:500] or f"HTTP {status}")
    if cls is None:
        cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else UnexpectedResponse)
    fields.setdefault("status_code", status)
    if issubclass(cls, errors.InvalidInput):
        fields.setdefault("field", "")
    if issubclass(cls, errors.Forbidden):
        fields.setdefault("rule", "")
    return _instantiate(cls, message, fields)


def _instantiate(cls: type[SafeRunError], message: str, fields: dict[str, Any]) -> SafeRunError:
    # The leaves' constructors take their own arguments (WorkflowNotFound(workflow_id), ...) and build the
    # message themselves; here the server already built it, so keep its words and set the fields directly.
    err = cls.__new__(cls)
    SafeRunError.__init__(err, message, **fields)
    for name, value in fields.items():
        if name not in ("message", "fields", "args"):
            setattr(err, name, value)
    return err
