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
