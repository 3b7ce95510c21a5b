"""The pending-approval queue as keyset pages: soonest expiry first, filtered, one indexed query a page.

Every page is ``WHERE status = 'pending' [AND filters] AND (expires_at, request_id) > :after ORDER BY
expires_at, request_id LIMIT n + 1``: a range read of ``ix_approval_requests_queue`` (or its assignee /
risk twins), so the 1,000th page costs what the first does, and nothing ever loads the whole queue (issue
12: 3-4 s and 16 MB for an unpaged 30k queue). The one visibility rule composes as the ``workflows`` join's
``WHERE`` (``visibility.visible_workflows``); the join also gives the workflow's name, which the dashboard
used to fetch per request.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, RowMapping, Select, and_, func, select, tuple_

from saferun.domain.policy import Caller
from saferun.storage.schema import approval_requests, workflows
from saferun.storage.visibility import restricted, visible_ids, visible_workflows

RISK_LEVELS = ("low", "medium", "high", "critical", "none")

_r = approval_requests


@dataclass(frozen=True)
class QueueFilter:
    """What a reviewer narrows the queue to. Times are relative (seconds from now), so a saved link or a
    cursor keeps meaning "expiring within 10 minutes" rather than a moment that has passed."""

    workflow_id: str | None = None
    assigned_to: str | None = None  # the request's supervisor (the workflow's assigned one)
    risk: str | None = None  # one of RISK_LEVELS; "none": no level recorded
    expiring_within: int | None = None  # seconds
    older_than: int | None = None  # seconds since the request was opened
    newer_than: int | None = None

    def as_dict(self) -> dict[str, object]:
        """The filters that are set (a cursor's fingerprint, a dashboard link's query)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _conditions(flt: QueueFilter, now: datetime) -> list[ColumnElement[bool]]:
    terms: list[ColumnElement[bool]] = [_r.c.status == "pending"]
    if flt.workflow_id:
        terms.append(_r.c.workflow_id == flt.workflow_id)
    if flt.assigned_to:
        terms.append(_r.c.supervisor_id == flt.assigned_to)
    if flt.risk == "none":
        terms.append(_r.c.risk_level.is_(None))
    elif flt.risk:
        terms.append(_r.c.risk_level == flt.risk)
    if flt.expiring_within is not None:
        terms.append(_r.c.expires_at <= now + timedelta(seconds=flt.expiring_within))
    if flt.older_than is not None:
        terms.append(_r.c.created_at <= now - timedelta(seconds=flt.older_than))
    if flt.newer_than is not None:
        terms.append(_r.c.created_at >= now - timedelta(seconds=flt.newer_than))
    return terms


def page_statement(
    flt: QueueFilter, *, limit: int, after: tuple[datetime, str] | None, now: datetime, caller: Caller | None
) -> Select[Any]:
    """The page query (``limit + 1`` rows: the extra one says whether more follow); also what
    ``tests/test_query_plans.py`` asks each database to explain."""
    terms = _conditions(flt, now)
    if after is not None:
        terms.append(tuple_(_r.c.expires_at, _r.c.request_id) > tuple_(*after))
    stmt = select(_r, workflows.c.name.label("workflow_name")).join(
        workflows, workflows.c.workflow_id == _r.c.workflow_id
    )
    if caller is not None and restricted(caller):
        terms.append(visible_workflows(caller))
    return stmt.where(and_(*terms)).order_by(_r.c.expires_at, _r.c.request_id).limit(limit + 1)


def page(
    conn: Connection,
    flt: QueueFilter,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    now: datetime,
    caller: Caller | None,
) -> tuple[list[RowMapping], bool]:
    """Up to ``limit`` pending requests after ``after`` (each with ``workflow_name``), and whether more
    follow. ``caller`` None: no visibility filter (the engine's own reads)."""
    stmt = page_statement(flt, limit=limit, after=after, now=now, caller=caller)
    rows = list(conn.execute(stmt).mappings())
    return rows[:limit], len(rows) > limit


def count_statement(flt: QueueFilter, *, now: datetime, caller: Caller | None) -> Select[Any]:
    terms = _conditions(flt, now)
    if caller is not None and restricted(caller):
        terms.append(_r.c.workflow_id.in_(visible_ids(caller)))
    return select(func.count()).select_from(_r).where(and_(*terms))


def count(conn: Connection, flt: QueueFilter, *, now: datetime, caller: Caller | None) -> int:
    """How many pending requests match (the queue's true ``total``): one ``COUNT(*)`` over the index."""
    return int(conn.execute(count_statement(flt, now=now, caller=caller)).scalar_one())


def waiting_for(conn: Connection, workflow_ids: list[str]) -> dict[str, str]:
    """The pending request (soonest to expire) of each of these workflows, in one query: what a list of
    workflows marks as waiting, without reading the whole queue."""
    if not workflow_ids:
        return {}
    rows = conn.execute(
        select(_r.c.workflow_id, _r.c.request_id)
        .where(_r.c.status == "pending", _r.c.workflow_id.in_(workflow_ids))
        .order_by(_r.c.expires_at.desc(), _r.c.request_id.desc())
    )
    return {wf: req for wf, req in rows}  # the last one written per workflow is its soonest
