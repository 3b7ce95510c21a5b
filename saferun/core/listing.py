"""Pages of the two big lists (the pending queue, workflows) as the engine's models, with opaque cursors.

Storage reads the keyset page (``storage/queue.py``, ``storage/workflows.py``); this turns it into the
seed's models and a :class:`Page` that says whether more follow and how to ask for them. A page is one
read transaction of three queries whatever the list's size: the rows, their counts (workflows) and the
true ``total``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from saferun.core.state_machine.models import ApprovalRequest
from saferun.domain import cursor as cursors
from saferun.domain.policy import Caller
from saferun.errors import InvalidInput
from saferun.storage.queue import RISK_LEVELS, QueueFilter

T = TypeVar("T")

MAX_LIMIT = 500
QUEUE = "approvals.pending"
WORKFLOWS = "workflows"
MAX_SECONDS = 10 * 365 * 24 * 3600


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    next_cursor: str | None
    has_more: bool
    limit: int


@dataclass(frozen=True)
class QueueItem:
    """A pending request as the queue shows it: the request and its workflow's name (one query a page)."""

    request: ApprovalRequest
    workflow_name: str


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput("limit", f"must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def check_filter(flt: QueueFilter) -> QueueFilter:
    """Refuse impossible filters with the field's name (the API's query checks say the same)."""
    if flt.risk is not None and flt.risk not in RISK_LEVELS:
        raise InvalidInput("risk", f"must be one of {', '.join(RISK_LEVELS)}, got {flt.risk!r}")
    for name in ("expiring_within", "older_than", "newer_than"):
        value = getattr(flt, name)
        if value is not None and (isinstance(value, bool) or not 0 <= value <= MAX_SECONDS):
            raise InvalidInput(name, f"must be seconds from 0 to {MAX_SECONDS}, got {value!r}")
    return flt


def scope(filters: dict[str, object], caller: Caller | None) -> dict[str, object]:
    """What a cursor is bound to: the filters and who asked (another caller's cursor is refused)."""
    return {**filters, "caller": None if caller is None else caller.identity_id or ""}


def queue_after(token: str | None, flt: QueueFilter, caller: Caller | None) -> tuple[datetime, str] | None:
    if token is None:
        return None
    expires_at, request_id = cursors.decode(token, QUEUE, scope(flt.as_dict(), caller), (datetime, str))
    return expires_at, request_id


def queue_cursor(last: ApprovalRequest, flt: QueueFilter, caller: Caller | None) -> str:
    return cursors.encode(QUEUE, scope(flt.as_dict(), caller), [last.expires_at, last.request_id])


def workflows_scope(state: str | None, caller: Caller | None) -> dict[str, object]:
    return scope({"state": state} if state else {}, caller)


def workflows_after(
    token: str | None, state: str | None, caller: Caller | None
) -> tuple[datetime, str] | None:
    if token is None:
        return None
    created_at, workflow_id = cursors.decode(
        token, WORKFLOWS, workflows_scope(state, caller), (datetime, str)
    )
    return created_at, workflow_id


def workflows_cursor(created_at: datetime, workflow_id: str, state: str | None, caller: Caller | None) -> str:
    return cursors.encode(WORKFLOWS, workflows_scope(state, caller), [created_at, workflow_id])
