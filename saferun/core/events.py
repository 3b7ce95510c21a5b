"""The live event feed: every workflow state change, in order, resumable by id (the SSE ``Last-Event-ID``).

The feed is the ``transitions`` table read by its autoincrement id. A new approval request shows up as the
transition to ``awaiting_approval``, a decision as the transition out of it. ``wait_for_change`` sleeps
until a state change commits (``core/notify``), so a stream re-reads at once instead of on a timer.

On PostgreSQL ids come from a sequence, which hands them out at INSERT, not at COMMIT: a transaction still
in flight may hold id 10 while id 11 is already visible. A reader that moved past 11 would never see 10, so
``events_since`` stops before such a gap and returns the rest on a later call; a gap that outlives
``gap_grace`` seconds (an id consumed by a transaction that rolled back) is skipped. SQLite's writers are
serialized, so its ids appear in commit order and this never happens there.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, RowMapping, bindparam, func, select

from saferun.core import notify
from saferun.storage.schema import transitions, utcnow

if TYPE_CHECKING:
    from saferun.storage.database import Database

MAX_LIMIT = 1000
GAP_GRACE_SECONDS = 5.0

_SINCE = (
    select(
        transitions.c.id,
        transitions.c.workflow_id,
        transitions.c.from_state,
        transitions.c.to_state,
        transitions.c.event,
        transitions.c.actor,
        transitions.c.reason,
        transitions.c.at,
    )
    .where(transitions.c.id > bindparam("b_after"))
    .order_by(transitions.c.id)
    .limit(bindparam("b_limit"))
)
_LAST = select(func.max(transitions.c.id))


def events_since(
    conn: Connection, after_id: int = 0, limit: int = 100, *, gap_grace: float = GAP_GRACE_SECONDS
) -> list[dict[str, Any]]:
    """Up to ``limit`` state changes with id > ``after_id``, oldest first, as JSON-ready dicts:
    ``id, workflow_id, from_state, to_state, event, actor, reason, at`` (``at``: ISO 8601 UTC)."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    rows = list(conn.execute(_SINCE, {"b_after": int(after_id), "b_limit": limit}).mappings())
    if conn.dialect.name == "postgresql":
        rows = _before_young_gap(rows, int(after_id), gap_grace)
    return [_event(r) for r in rows]


def last_event_id(conn: Connection) -> int:
    """The newest event id (0 when there is none): where a stream that wants only new events starts."""
    return int(conn.execute(_LAST).scalar() or 0)


async def wait_for_change(db: Database, timeout: float | None) -> bool:
    """True as soon as any workflow state change commits (in any process on PostgreSQL, in this one on
    SQLite), False at ``timeout``. A stream that must not miss a change between its read and this call
    should hold ``notify.notifier_for(db).subscribe({"workflow"})`` across both instead."""
    return await notify.notifier_for(db).wait("workflow", notify.ANY, timeout)


def _before_young_gap(rows: list[RowMapping], after_id: int, grace: float) -> list[RowMapping]:
    """The rows up to the first id gap that may still be filled by a transaction in flight."""
    cutoff = utcnow() - timedelta(seconds=grace)
    expected = after_id + 1
    for i, row in enumerate(rows):
        if row["id"] != expected and row["at"] > cutoff:
            return rows[:i]
        expected = row["id"] + 1
    return rows


def _event(row: RowMapping) -> dict[str, Any]:
    return {
        "id": row["id"],
        "workflow_id": row["workflow_id"],
        "from_state": row["from_state"],
        "to_state": row["to_state"],
        "event": row["event"],
        "actor": row["actor"],
        "reason": row["reason"],
        "at": row["at"].isoformat(),
    }
