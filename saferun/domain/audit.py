"""The audit hash chain, as pure functions.

Each workflow has its own chain. Event ``n`` stores the hash of event ``n-1`` (``GENESIS`` for the first)
and its own hash, the SHA-256 of the canonical JSON of everything it says plus that previous hash. A
changed, removed or reordered event therefore breaks every link after it, and ``verify_chain`` names
the first one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from saferun.domain.canonical import canonical_bytes

GENESIS = "0" * 64


def payload_text(payload: Mapping[str, Any]) -> str:
    """The payload as stored and hashed: canonical JSON text, never re-encoded afterwards (a database's
    JSON type may normalise numbers, which would break the hash of an untouched event)."""
    return canonical_bytes(dict(payload), "audit_payload").decode("utf-8")


def event_hash(
    *, workflow_id: str, seq: int, kind: str, actor: str, at: str, payload: str, prev_hash: str
) -> str:
    body = {
        "workflow_id": workflow_id,
        "seq": seq,
        "kind": kind,
        "actor": actor,
        "at": at,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_bytes(body, "audit_event")).hexdigest()


DECISION_FIELDS = (
    "response_id",
    "request_id",
    "decision",
    "rationale",
    "approved_by",
    "modifications",
    "automatic",
)


def decision_digest(row: Mapping[str, Any]) -> str:
    """SHA-256 of what a decision says (its ``approval_responses`` row minus the timestamp). The decision
    event carries it, so a stored decision changed afterwards (say a MODIFIED decision's modifications)
    no longer matches the chain even though every event still hashes to itself."""
    body = {name: _numbers_as_stored(row[name]) for name in DECISION_FIELDS}
    body["automatic"] = bool(body["automatic"])
    return hashlib.sha256(canonical_bytes(body, "decision")).hexdigest()


POSTING_FIELDS = ("txn_id", "idempotency_key", "workflow_id", "kind", "memo")


def posting_digest(txn: Mapping[str, Any], legs: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 of a ledger posting: its ``ledger_transactions`` row (minus the timestamp) and its legs as
    an order-free multiset. The escrow event that wrote the posting carries it, so a flipped leg amount or
    account no longer matches the chain even when the legs still sum to zero."""
    body: dict[str, Any] = {name: txn[name] for name in POSTING_FIELDS}
    body["legs"] = sorted([str(leg["account"]), int(leg["amount_micro"])] for leg in legs)
    return hashlib.sha256(canonical_bytes(body, "posting")).hexdigest()


def _numbers_as_stored(value: Any) -> Any:
    """PostgreSQL's JSONB hands ``2e16`` back as the integer 20000000000000000 (and ``1.0`` as ``1.0`` or
    ``1``): integral floats are hashed as integers so the row read back hashes like the row written."""
    if type(value) is float and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _numbers_as_stored(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_numbers_as_stored(v) for v in value]
    return value


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    reason: str


def verify_chain(workflow_id: str, events: Iterable[Mapping[str, Any]]) -> ChainBreak | None:
    """The first broken link, or None when every event hashes to what it says and follows its parent."""
    expected_prev = GENESIS
    expected_seq = 1
    for ev in events:
        seq = int(ev["seq"])
        if seq != expected_seq:
            return ChainBreak(expected_seq, f"event {expected_seq} is missing (found {seq} next)")
        if ev["prev_hash"] != expected_prev:
            return ChainBreak(seq, "prev_hash does not match the hash of the event before")
        actual = event_hash(
            workflow_id=workflow_id,
            seq=seq,
            kind=ev["kind"],
            actor=ev["actor"],
            at=ev["at"],
            payload=ev["payload"],
            prev_hash=ev["prev_hash"],
        )
        if actual != ev["hash"]:
            return ChainBreak(seq, "content does not hash to the stored hash (the event was altered)")
        expected_prev = ev["hash"]
        expected_seq += 1
    return None
