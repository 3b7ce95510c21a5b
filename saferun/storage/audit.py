"""Append-only storage of the per-workflow audit chain (see ``saferun.domain.audit`` for the rules).

``append`` must run inside the transaction that makes the change it records, after the workflow row is
locked (``lock_workflow``), so sequence numbers never race and an event exists exactly when its change
does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, func, insert, select

from saferun.domain.audit import GENESIS, ChainBreak, event_hash, payload_text, verify_chain
from saferun.domain.canonical import canonical_loads
from saferun.storage.schema import audit_events, utcnow


def append(conn: Connection, workflow_id: str, kind: str, actor: str, payload: Mapping[str, Any]) -> int:
    last = conn.execute(
        select(audit_events.c.seq, audit_events.c.hash)
        .where(audit_events.c.workflow_id == workflow_id)
        .order_by(audit_events.c.seq.desc())
        .limit(1)
    ).first()
    seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
    at = utcnow().isoformat(timespec="microseconds")
    text = payload_text(payload)
    digest = event_hash(
        workflow_id=workflow_id, seq=seq, kind=kind, actor=actor, at=at, payload=text, prev_hash=prev
    )
    conn.execute(
        insert(audit_events).values(
            workflow_id=workflow_id,
            seq=seq,
            kind=kind,
            actor=actor,
            payload=text,
            at=at,
            prev_hash=prev,
            hash=digest,
        )
    )
    return seq


def events(conn: Connection, workflow_id: str) -> list[dict[str, Any]]:
    """Events with their payloads decoded, for readers."""
    return [{**ev, "payload": canonical_loads(ev["payload"])} for ev in raw_events(conn, workflow_id)]


def raw_events(conn: Connection, workflow_id: str) -> list[dict[str, Any]]:
    """Events exactly as stored (payload as the hashed text), for verification."""
    rows = conn.execute(
        select(audit_events).where(audit_events.c.workflow_id == workflow_id).order_by(audit_events.c.seq)
    ).mappings()
    return [dict(r) for r in rows]


def verify(conn: Connection, workflow_id: str) -> tuple[int, ChainBreak | None]:
    """How many events the chain holds, and its first broken link (None when intact)."""
    evs = raw_events(conn, workflow_id)
    return len(evs), verify_chain(workflow_id, evs)


def count(conn: Connection, workflow_id: str) -> int:
    return conn.execute(
        select(func.count()).select_from(audit_events).where(audit_events.c.workflow_id == workflow_id)
    ).scalar_one()
