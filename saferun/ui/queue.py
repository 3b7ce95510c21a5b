"""The dashboard's queue (``/approvals``): one keyset page of pending requests, with the API's filters.

The page reads exactly one page (``WorkflowOrchestrator.pending_page``: the rows joined with their
workflows' names, and a ``COUNT``), never the whole queue, so its time and the server's memory stay flat
at 100,000 pending requests (issue 12: 19-79 s and 550 MB RSS when it loaded them all and then each
request's workflow). The filters are the API's (``GET /api/approvals/pending``), with the same names in the
query string, so a link to a filtered queue reads the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from saferun.core.listing import MAX_LIMIT, MAX_SECONDS
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import InvalidInput
from saferun.storage.queue import RISK_LEVELS, QueueFilter
from saferun.ui.pages import _alert, _risk
from saferun.ui.viewer import Viewer

PAGE_SIZE = 50
# the choices the filter bar offers (any number of seconds is accepted in the URL)
EXPIRING = [("", "Any time"), ("600", "Within 10 min"), ("3600", "Within 1 hour"), ("86400", "Within a day")]
WAITING = [("", "Any age"), ("3600", "Waiting over 1 hour"), ("86400", "Waiting over a day")]
FILTER_KEYS = ("workflow_id", "mine", "risk", "expiring_within", "older_than", "newer_than", "limit")


def _seconds(query: Mapping[str, str], name: str) -> int | None:
    raw = (query.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) > MAX_SECONDS:
        raise InvalidInput(name, f"must be seconds from 0 to {MAX_SECONDS}, got {raw!r}")
    return int(raw)


def _limit(query: Mapping[str, str]) -> int:
    return parse_limit(query, PAGE_SIZE)


def parse_limit(query: Mapping[str, str], default: int) -> int:
    """A page size from the query string (the API's range); a bad one is ``InvalidInput`` naming it."""
    raw = (query.get("limit") or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInput("limit", f"must be a whole number from 1 to {MAX_LIMIT}, got {raw!r}")
    return int(raw)


def parse(query: Mapping[str, str], viewer: Viewer) -> tuple[QueueFilter, bool]:
    """The filter a queue URL asks for, and whether it is "mine" (the signed-in identity, or in open mode
    the name the reviewer acts as). Bad values are ``InvalidInput`` naming the parameter."""
    risk = (query.get("risk") or "").strip() or None
    if risk is not None and risk not in RISK_LEVELS:
        raise InvalidInput("risk", f"must be one of {', '.join(RISK_LEVELS)}, got {risk!r}")
    mine = (query.get("mine") or "") in ("1", "true", "on")
    me = None
    if mine:
        caller = viewer.who
        me = caller.identity_id if caller.authenticated else viewer.acting_as
        if not me:
            raise InvalidInput("mine", "say who you are first: sign in, or decide once 'acting as' a name")
    workflow_id = (query.get("workflow_id") or "").strip() or None
    if workflow_id is not None and len(workflow_id) > 64:
        raise InvalidInput("workflow_id", "at most 64 characters")
    flt = QueueFilter(
        workflow_id=workflow_id,
        assigned_to=me,
        risk=risk,
        expiring_within=_seconds(query, "expiring_within"),
        older_than=_seconds(query, "older_than"),
        newer_than=_seconds(query, "newer_than"),
    )
    return flt, mine


def context(orch: WorkflowOrchestrator, viewer: Viewer, query: Mapping[str, str]) -> dict[str, Any]:
    """What ``approvals.html`` / ``_pending.html`` show: the page, its filters and the links around it."""
    flt, mine = parse(query, viewer)
    limit = _limit(query)
    cursor = (query.get("cursor") or "").strip() or None
    page = orch.pending_page(flt, limit=limit, cursor=cursor, visible_to=viewer.who)
    kept = {k: query[k] for k in FILTER_KEYS if (query.get(k) or "").strip()}
    filtered = bool({k: v for k, v in kept.items() if k != "limit"})
    live = {**kept, "cursor": cursor} if cursor else kept
    return {
        "items": [
            {
                "req": item.request,
                "workflow_name": item.workflow_name,
                "alerts": [_alert(a) for a in item.request.alerts],
                "risk": _risk(item.request.risk),
            }
            for item in page.items
        ],
        "total": page.total,
        "has_more": page.has_more,
        "next_url": f"/approvals?{urlencode({**kept, 'cursor': page.next_cursor})}"
        if page.has_more
        else None,
        "first_url": f"/approvals?{urlencode(kept)}" if cursor else None,
        # the live region refreshes this same page (same filters, same cursor)
        "live_url": "/ui/fragments/pending" + (f"?{urlencode(live)}" if live else ""),
        "filters": {**dict.fromkeys(FILTER_KEYS, ""), **kept, "mine": mine},
        "filtered": filtered,
        "risk_levels": RISK_LEVELS,
        "expiring_choices": EXPIRING,
        "waiting_choices": WAITING,
    }
