"""Append-only storage of the per-workflow audit chain (see ``saferun.domain.audit`` for the rules).

``append`` must run inside the transaction that makes the change it records, after the workflow row is
locked (``lock_workflow``), so sequence numbers never race and an event exists exactly when its change
does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from saferun.domain.audit import (
    GENESIS,
    ChainBreak,
    decision_digest,
    event_hash,
    payload_text,
    verify_chain,
)
from saferun.domain.canonical import canonical_loads
from saferun.storage import ledger
from saferun.storage.schema import (
    approval_responses,
    audit_events,
    ledger_legs,
    ledger_transactions,
    utcnow,
    workflows,
)

_HEAD = (
    select(audit_events.c.seq, audit_events.c.hash)
    .where(audit_events.c.workflow_id == bindparam("workflow_id"))
    .order_by(audit_events.c.seq.desc())
    .limit(1)
)
_INSERT = insert(audit_events)
_ANCHOR = (
    update(workflows)
    .where(workflows.c.workflow_id == bindparam("wf"))
    .values(audit_seq=bindparam("seq"), audit_head=bindparam("head"))
)


def _heads(conn: Connection) -> dict[str, tuple[int, str]]:
    """Chain heads written in *this* transaction (under the workflow lock), so a transaction that appends
    several events reads the head once. Keyed by the transaction so a stash never outlives it."""
    txn = conn.get_transaction()
    stash = conn.info.get("saferun_audit_heads")
    if stash is None or stash[0] is not txn:
        stash = conn.info["saferun_audit_heads"] = (txn, {})
    return stash[1]


def append(conn: Connection, workflow_id: str, kind: str, actor: str, payload: Mapping[str, Any]) -> int:
    heads = _heads(conn)
    if workflow_id in heads:
        last_seq, prev = heads[workflow_id]
        seq = last_seq + 1
    else:
        last = conn.execute(_HEAD, {"workflow_id": workflow_id}).first()
        seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
    at = utcnow().isoformat(timespec="microseconds")
    text = payload_text(payload)
    digest = event_hash(
        workflow_id=workflow_id, seq=seq, kind=kind, actor=actor, at=at, payload=text, prev_hash=prev
    )
    conn.execute(
        _INSERT,
        {
            "workflow_id": workflow_id,
            "seq": seq,
            "kind": kind,
            "actor": actor,
            "payload": text,
            "at": at,
            "prev_hash": prev,
            "hash": digest,
        },
    )
    conn.execute(_ANCHOR, {"wf": workflow_id, "seq": seq, "head": digest})
    heads[workflow_id] = (seq, digest)
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
    """How many events the chain holds, and its first broken link (None when intact).

    Beyond the links: every decision row must hash to what its ``decision`` event recorded (events written
    before decisions were bound carry no ``response_sha256`` and are checked as before), and every ledger
    posting of the workflow must sum to zero and hash to what the event that wrote it recorded
    (``posting_sha256``; older events without it are checked for the sum only)."""
    evs = raw_events(conn, workflow_id)
    broken = verify_chain(workflow_id, evs) or _check_anchor(conn, workflow_id, evs)
    if broken is None:
        broken = (
            _check_decisions(conn, workflow_id, evs)
            or _check_postings(conn, workflow_id)
            or _check_bound_postings(conn, evs)
        )
    return len(evs), broken


def _check_decisions(conn: Connection, workflow_id: str, evs: list[dict[str, Any]]) -> ChainBreak | None:
    rows = {
        r["request_id"]: r
        for r in conn.execute(
            select(approval_responses).where(approval_responses.c.workflow_id == workflow_id)
        ).mappings()
    }
    for ev in evs:
        if ev["kind"] != "decision":
            continue
        payload = canonical_loads(ev["payload"])
        expected = payload.get("response_sha256")
        if expected is None:  # legacy event, written before decisions were bound
            continue
        request_id = payload.get("request_id")
        row = rows.get(request_id)
        if row is None:
            return ChainBreak(ev["seq"], f"decision of request {request_id} is missing from the table")
        if row["workflow_id"] != workflow_id or decision_digest(row) != expected:
            return ChainBreak(
                ev["seq"], f"stored decision of request {request_id} does not match what this event recorded"
            )
    return None


def _check_postings(conn: Connection, workflow_id: str) -> ChainBreak | None:
    sums = conn.execute(
        select(ledger_legs.c.txn_id, func.sum(ledger_legs.c.amount_micro))
        .join(ledger_transactions, ledger_transactions.c.txn_id == ledger_legs.c.txn_id)
        .where(ledger_transactions.c.workflow_id == workflow_id)
        .group_by(ledger_legs.c.txn_id)
        .having(func.sum(ledger_legs.c.amount_micro) != 0)
    ).first()
    if sums is not None:
        return ChainBreak(0, f"ledger posting {sums[0]} does not sum to zero ({int(sums[1])} micro-units)")
    return None


def _check_bound_postings(conn: Connection, evs: list[dict[str, Any]]) -> ChainBreak | None:
    for ev in evs:
        payload = canonical_loads(ev["payload"])
        expected = payload.get("posting_sha256") if isinstance(payload, dict) else None
        if expected is None:
            continue
        txn_id = payload.get("txn_id")
        actual = ledger.digest(conn, txn_id) if isinstance(txn_id, str) else None
        if actual is None:
            return ChainBreak(ev["seq"], f"ledger posting {txn_id} is missing from the ledger")
        if actual != expected:
            return ChainBreak(
                ev["seq"], f"ledger posting {txn_id} does not match what this event recorded (legs altered)"
            )
    return None


def anchor(conn: Connection, workflow_id: str) -> tuple[int, str | None] | None:
    """The chain's anchor kept on the workflow row (length, latest hash); None for an unknown workflow."""
    row = conn.execute(
        select(workflows.c.audit_seq, workflows.c.audit_head).where(workflows.c.workflow_id == workflow_id)
    ).first()
    return None if row is None else (int(row.audit_seq or 0), row.audit_head)


def _check_anchor(conn: Connection, workflow_id: str, evs: list[dict[str, Any]]) -> ChainBreak | None:
    """A chain that verifies link by link can still have lost its tail: its length and last hash must be
    the ones the workflow row recorded when the last event was written."""
    anchored = anchor(conn, workflow_id)
    if anchored is None:
        return None  # events of something that is not a workflow row: nothing to anchor against
    seq, head = anchored
    last_seq, last_hash = (int(evs[-1]["seq"]), evs[-1]["hash"]) if evs else (0, None)
    if seq != last_seq:
        return ChainBreak(
            min(seq, last_seq) + 1, f"the chain holds {last_seq} events but its anchor recorded {seq}"
        )
    if head != last_hash:
        return ChainBreak(last_seq, "the last event's hash is not the one the workflow row anchored")
    return None
