"""One log line per audited event, written only once its transaction committed (logger ``saferun.events``).

Why here: every state change, decision, compensation and payment already passes through
``audit.append`` exactly once, inside the transaction that makes it true. Logging at that one point gives
"each event logs once" for free, on every path (library, API, CLI, sweep, any replica), and logging only
*after the commit* means a rolled-back change (a lost race, a 409) never appears in the log as if it had
happened. Lines carry ids, states, amounts and names, never step arguments, modifications, rationales or
anything a caller typed as a secret; the handlers' ``RedactFilter`` (``saferun/logs.py``) is the second net.

Levels: a workflow ending FAILED, a compensation that failed, side effects marked undone by hand or left
NOT undone are WARNING; other state changes, decisions, payments and compensations INFO; the rest of the
audit kinds DEBUG.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, event

log = logging.getLogger("saferun.events")

_PENDING = "saferun_eventlog_pending"  # conn.info: lines of the open transaction
_COMMITTED = "saferun_eventlog_committed"  # conn.info: lines whose transaction committed, not yet logged
_hooked: weakref.WeakSet[Engine] = weakref.WeakSet()

Line = tuple[int, str, tuple[Any, ...], dict[str, Any]]


def _transition(p: Mapping[str, Any]) -> tuple[int, str, tuple[Any, ...]]:
    failed = p.get("to") == "failed"
    text = "%s -> %s (%s)" + (": %s" if failed else "")
    args = (p.get("from"), p.get("to"), p.get("event")) + ((p.get("reason"),) if failed else ())
    return (logging.WARNING if failed else logging.INFO), text, args


def _step(level: int, verb: str) -> Callable[[Mapping[str, Any]], tuple[int, str, tuple[Any, ...]]]:
    def describe(p: Mapping[str, Any]) -> tuple[int, str, tuple[Any, ...]]:
        if p.get("error"):
            return (
                level,
                f"{verb} step %r (compensation %s): %s",
                (p.get("name"), p.get("compensation"), p["error"]),
            )
        return level, f"{verb} step %r (compensation %s)", (p.get("name"), p.get("compensation"))

    return describe


_KINDS: dict[str, Callable[[Mapping[str, Any]], tuple[int, str, tuple[Any, ...]]]] = {
    "transition": _transition,
    "decision": lambda p: (
        logging.INFO,
        "decision %s on %s%s",
        (p.get("decision"), p.get("request_id"), " (automatic)" if p.get("automatic") else ""),
    ),
    "escrow_locked": lambda p: (logging.INFO, "escrow %s locked", (p.get("amount"),)),
    "escrow_funded": lambda p: (logging.INFO, "escrow funded with %s by an x402 payment", (p.get("amount"),)),
    "milestone_released": lambda p: (
        logging.INFO,
        "milestone %s paid %s",
        (p.get("checkpoint_id"), p.get("amount")),
    ),
    "escrow_refunded": lambda p: (logging.INFO, "escrow refund %s", (p.get("amount"),)),
    "compensation_succeeded": _step(logging.INFO, "compensated"),
    "compensation_failed": _step(logging.WARNING, "compensation FAILED for"),
    "compensation_marked_by_hand": _step(logging.WARNING, "marked undone by hand:"),
    "rollback_abandoned": lambda p: (
        logging.WARNING,
        "rollback abandoned; NOT undone: %s",
        (
            ", ".join(f"{s.get('name')!r} ({s.get('compensation')})" for s in p.get("not_undone", []))
            or "none",
        ),
    ),
}


def record(conn: Connection, workflow_id: str, kind: str, actor: str, payload: Mapping[str, Any]) -> None:
    """Queue the event's log line on the transaction; it is logged after the commit, dropped on rollback."""
    describe = _KINDS.get(kind)
    level, text, args = describe(payload) if describe else (logging.DEBUG, "audit event %s", (kind,))
    if not log.isEnabledFor(level):
        return
    _hook(conn.engine)
    extra = {"workflow_id": workflow_id, "event": kind, "actor": actor}
    conn.info.setdefault(_PENDING, []).append(
        (level, "%s: " + text + " by %s", (workflow_id, *args, actor), extra)
    )


def _hook(engine: Engine) -> None:
    if engine in _hooked:
        return
    _hooked.add(engine)
    event.listen(engine, "commit", _on_commit)
    event.listen(engine, "rollback", _on_rollback)
    event.listen(engine, "checkin", _on_checkin)


def _on_commit(conn: Connection) -> None:
    pending = conn.info.pop(_PENDING, None)
    if pending:
        conn.info.setdefault(_COMMITTED, []).extend(pending)


def _on_rollback(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)


def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
    if record is None:
        return
    record.info.pop(_PENDING, None)  # a transaction never committed leaves nothing behind
    for level, text, args, extra in record.info.pop(_COMMITTED, None) or ():
        log.log(level, text, *args, extra=extra)
