"""The audit hash chain, as pure functions.

Each workflow has its own chain. Event ``n`` stores the hash of event ``n-1`` (``GENESIS`` for the first)
and its own hash, the SHA-256 of the canonical JSON of everything it says plus that previous hash. A
changed, removed or reordered event therefore breaks every link after it, and ``verify_chain`` names
the first one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from saferun.domain.canonical import canonical_bytes

GENESIS = "0" * 64


def payload_text(payload: Mapping[str, Any]) -> str:
    """The payload as stored and hashed: canonical JSON text, never re-encoded afterwards (a database's
    JSON type may normalise numbers, which would break the hash of an untouched event)."""
    return canonical_bytes(dict(payload), "audit_payload").decode("utf-8")


def event_hash(
    *,
    workflow_id: str,
    seq: int,
    kind: str,
    actor: str,
    at: str,
    payload: str,
    prev_hash: str,
    stored: bool = False,
) -> str:
    """The event's SHA-256 over its canonical JSON. ``stored``: the fields are a stored event's, read back
    to verify it, so the value check (which exists to refuse what must not be written) is skipped; the
    bytes are the same, since the check never changes them (a value orjson cannot encode still takes the
    checked path)."""
    body = {
        "workflow_id": workflow_id,
        "seq": seq,
        "kind": kind,
        "actor": actor,
        "at": at,
        "payload": payload,
        "prev_hash": prev_hash,
    }
    if stored and "\x00" not in f"{workflow_id}{kind}{actor}{at}{payload}{prev_hash}":  # NUL: refused below
        try:
            return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        except TypeError:
            pass
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
    if row.get("review_digest") is not None:
        # the review digest (issue 16) is bound too; decisions without one hash as they always did
        body["review_digest"] = row["review_digest"]
    return hashlib.sha256(canonical_bytes(body, "decision")).hexdigest()


POSTING_FIELDS = ("txn_id", "idempotency_key", "workflow_id", "kind", "memo")


def posting_digest(txn: Mapping[str, Any], legs: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 of a ledger posting: its ``ledger_transactions`` row (minus the timestamp) and its legs as
    an order-free multiset. The escrow event that wrote the posting carries it, so a flipped leg amount or
    account no longer matches the chain even when the legs still sum to zero."""
    body: dict[str, Any] = {name: txn[name] for name in POSTING_FIELDS}
    body["legs"] = sorted([str(leg["account"]), int(leg["amount_micro"])] for leg in legs)
    return hashlib.sha256(canonical_bytes(body, "posting")).hexdigest()


def posting_problem(
    workflow_id: str,
    recorded: Mapping[str, Sequence[tuple[int, str]]],
    entries: Iterable[Mapping[str, Any]],
) -> tuple[str, str, str] | None:
    """The read path's ledger check, as ``(table, row id, reason)`` or None: every posting of the workflow
    (``entries``: all of them, each with its legs) must sum to zero, every posting an event recorded
    (``recorded``: txn id -> (event seq, ``posting_sha256``), ``ChainFacts.postings``) must be there and
    hash to what the event recorded. The same rules as ``verify``, on rows already read, so a balance or an
    entry is never served from a forged leg."""
    present = set()
    for entry in entries:
        txn_id = str(entry["txn_id"])
        present.add(txn_id)
        total = sum(int(leg["amount_micro"]) for leg in entry["legs"])
        if total != 0:
            return "ledger_legs", txn_id, f"the posting's legs sum to {total} micro-units, not zero"
        digest = posting_digest({**entry, "workflow_id": workflow_id}, entry["legs"])
        for seq, expected in recorded.get(txn_id, []):
            if digest != expected:
                return "ledger_transactions", txn_id, f"the posting does not match what event {seq} recorded"
    for txn_id, events in recorded.items():
        if txn_id not in present:
            return "ledger_transactions", txn_id, f"it is missing (event {events[0][0]} recorded it)"
    return None


# --- rows bound to the chain by view ------------------------------------------------------------------
#
# An event binds a row by carrying ``bind``: a list of ``[table, row id, view, sha256]``. A *view* is the
# set of a row's columns that one kind of change writes, so a row whose status moves later (a snapshot
# approved, a request decided, a compensation finished) is bound field group by field group, each by the
# latest event that wrote it. Timestamps of bookkeeping (created_at, updated_at) and the lease columns a
# claim moves without an event (saga claims) are in no view: see docs/decisions.md for the full list.

VIEWS: dict[str, dict[str, tuple[str, ...]]] = {
    "snapshots": {
        # what was captured and where it lives: pointing a snapshot at another artifact breaks this view
        "row": (
            "snapshot_id",
            "workflow_id",
            "sequence",
            "checkpoint_id",
            "label",
            "artifact_uri",
            "raw_size_bytes",
            "compressed_size_bytes",
            "new_bytes",
            "parent_snapshot_id",
        ),
        "status": ("snapshot_id", "status"),
    },
    "approval_requests": {
        # what the reviewer was asked: bound when the request is opened and never changed afterwards
        "row": (
            "request_id",
            "workflow_id",
            "snapshot_id",
            "checkpoint_id",
            "checkpoint_name",
            "summary",
            "decision_needed",
            "context",
            "parameters",
            "parameter_schema",
            "recommendation",
            "confidence",
            "risk",
            "job_id",
            "on_timeout",
            "expires_at",
            "quorum",  # optional: hashed only when set (see OPTIONAL), so older rows hash as they did
            "group_id",  # optional too: an item of a checkpoint that asked several things at once
            "item_key",
        ),
        # what changes while it waits: the monitor's alerts, the assigned supervisor, the outcome
        "review": ("request_id", "alerts", "supervisor_id", "status"),
    },
    "saga_steps": {
        "row": ("step_id", "workflow_id", "seq", "name", "compensation", "args"),
        "result": ("step_id", "status", "last_error"),
    },
    "approval_votes": {
        # one vote on a quorum request (issue 16), bound by the ``vote`` event that recorded it
        "row": ("vote_id", "request_id", "workflow_id", "voter", "vote", "rationale", "team"),
    },
    "x402_payments": {
        "row": (
            "payment_id",
            "workflow_id",
            "network",
            "asset",
            "payer",
            "nonce",
            "pay_to",
            "amount_micro",
            "status",
            "tx_hash",
            "ledger_txn_id",
            "receipt",
            "reason",
        ),
    },
}

KEYS = {"snapshots": "snapshot_id", "approval_requests": "request_id", "saga_steps": "step_id"}
KEYS["x402_payments"] = "payment_id"
KEYS["approval_votes"] = "vote_id"

# Fields a view hashes only when they hold a value: added after rows were first bound, so a row without
# one (every row written before the field existed) hashes exactly as it did, and a row with one is bound
# to it. Setting one on a row that had none changes the hash like any other forged value.
OPTIONAL = {
    ("approval_requests", "quorum"),
    # an item of a checkpoint that asked several things at once: its group and key (revision 0019)
    ("approval_requests", "group_id"),
    ("approval_requests", "item_key"),
}

# Values a status column can hold. A status outside its vocabulary is a forged row even where no event
# bound the current value (a saga step's ``committed`` is written by a bulk UPDATE with its approval).
STATUSES = {
    "snapshots": frozenset(
        {"captured", "passed", "approved", "modified", "superseded", "rejected", "expired", "restored"}
    ),
    "approval_requests": frozenset({"pending", "decided", "expired", "cancelled", "closed"}),
    "saga_steps": frozenset({"pending", "committed", "compensating", "compensated", "failed"}),
    "x402_payments": frozenset({"credited", "unapplied", "unconfirmed"}),
}


def row_digest(table: str, view: str, row: Mapping[str, Any]) -> str:
    """SHA-256 of one view of a row, over its values as the database hands them back (see
    ``_numbers_as_stored``; datetimes as ISO UTC text)."""
    fields = VIEWS[table][view]
    body = {"table": table, "view": view}
    for name in fields:
        if (table, name) in OPTIONAL:
            if row.get(name) is not None:
                body[name] = _numbers_as_stored(_plain(row[name]))
            continue
        body[name] = _numbers_as_stored(_plain(row[name]))
    return hashlib.sha256(canonical_bytes(body, f"{table}.{view}")).hexdigest()


def bind(table: str, view: str, row: Mapping[str, Any]) -> list[Any]:
    """One ``[table, id, view, sha256]`` entry for an event's ``bind`` list."""
    return [table, str(row[KEYS[table]]), view, row_digest(table, view, row)]


@dataclass(frozen=True)
class Binding:
    seq: int
    sha256: str


# Set in a new workflow's ``workflow_created`` payload: every row of this workflow is bound when written,
# so a row with no binding was not written by SafeRun. Workflows from before binding lack it and their
# unbound rows are read as before.
BINDS_MARK = "rows_bound"


def binds_rows(first_payload: Any) -> bool:
    return isinstance(first_payload, Mapping) and first_payload.get(BINDS_MARK) == 1


def check_row(
    table: str, row: Mapping[str, Any], bound: Mapping[tuple[str, str, str], Binding], *, strict: bool
) -> str | None:
    """Why a stored row disagrees with the chain, or None. With ``strict`` (a workflow that binds its
    rows) a row whose ``row`` view no event bound is foreign; otherwise unbound views (rows written before
    binding existed) are not judged, except that a status must be one the table can hold."""
    row_id = str(row[KEYS[table]])
    if strict and (table, row_id, "row") not in bound:
        return f"{table} row {row_id} was never recorded on this workflow's audit chain"
    for view in VIEWS[table]:
        binding = bound.get((table, row_id, view))
        if binding is not None and row_digest(table, view, row) != binding.sha256:
            return f"{table} row {row_id} ({view}) does not match what event {binding.seq} recorded"
    if table == "approval_requests" and "risk_level" in row and row["risk_level"] != _risk_level(row["risk"]):
        return f"{table} row {row_id}: risk_level {row['risk_level']!r} is not the level its risk states"
    vocabulary = STATUSES.get(table)
    if vocabulary is not None and row["status"] not in vocabulary:
        return f"{table} row {row_id} has status {row['status']!r}, which no SafeRun code writes"
    return None


def _risk_level(risk: Any) -> str | None:
    """The queue's ``risk_level`` column as the engine derives it from ``risk`` (a stored copy: checked,
    not bound, so the filter cannot show a request as less risky than its bound assessment)."""
    from saferun.domain.recommendation import risk_level
    from saferun.errors import InvalidInput

    try:
        return risk_level(risk if isinstance(risk, Mapping) else None)
    except InvalidInput:  # an out-of-range score stores no level (storage.approvals.level_of)
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


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


def verify_chain(
    workflow_id: str, events: Iterable[Mapping[str, Any]], after: tuple[int, str] = (0, GENESIS)
) -> ChainBreak | None:
    """The first broken link, or None when every event hashes to what it says and follows its parent.
    ``after`` is the (length, last hash) of a prefix already verified that ``events`` continue."""
    expected_seq, expected_prev = after[0] + 1, after[1]
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
            stored=True,
        )
        if actual != ev["hash"]:
            return ChainBreak(seq, "content does not hash to the stored hash (the event was altered)")
        expected_prev = ev["hash"]
        expected_seq += 1
    return None
