"""What a verified prefix of a workflow's audit chain says, folded event by event (pure).

A read checks the rows it serves against the chain (``storage.audit.check_read``): the hash each bound row
must have (``bindings``), the decision digests the chain recorded, and what the workflow row must say (its
configuration, state, assigned supervisor and last approved snapshot). All of that is a fold over the
events in order, so it can be carried forward: ``extend`` takes the facts of events ``1..n`` plus the
events ``n+1..m`` (linked onto the head of the first part, link by link) and gives the facts of ``1..m``.
That is what lets a process keep the facts of the prefix it already verified (``storage.chain_cache``)
and hash only the events appended since, instead of the whole chain on every read.

``workflow_problem`` judges a workflow row against these facts; ``audit verify`` and the read path use
the same function, so the two never disagree about what a row must say.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from saferun.domain.audit import (
    GENESIS,
    Binding,
    ChainBreak,
    _numbers_as_stored,
    binds_rows,
    row_digest,
    verify_chain,
)
from saferun.domain.canonical import canonical_loads
from saferun.domain.money import to_micro

_PASSED = ("approved", "modified", "passed")


@dataclass(frozen=True)
class ChainFacts:
    """The facts of events ``1..length`` of one workflow's chain, whose last hash is ``head``.

    Never mutated after it is built (``extend`` returns a new one), so one instance can be shared by
    readers in several threads."""

    workflow_id: str
    length: int = 0
    head: str = GENESIS
    strict: bool = False  # the first event marks every row as bound (``domain.audit.BINDS_MARK``)
    created: Mapping[str, Any] | None = None  # the first event's payload
    state: str | None = None  # the last transition's ``to``
    last_passed: str | None = None  # the last snapshot the chain saw approved, modified or passed
    assigned_seen: bool = False
    assigned: str | None = None  # the first ``supervisor_assigned`` event's supervisor
    bound: Mapping[tuple[str, str, str], Binding] = field(default_factory=dict)
    recorded: Mapping[Any, Any] = field(default_factory=dict)  # request id -> its decision's digest
    # txn id -> (seq, ``posting_sha256``) of every event that recorded the ledger posting
    postings: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)
    # request id -> the (seq, vote id) of every ``vote`` event on it (M-of-N quorum, docs/quorum.md)
    votes: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)

    @property
    def anchor(self) -> tuple[int, str | None]:
        """What the workflow row's ``audit_seq``/``audit_head`` must say for exactly these events."""
        return self.length, (self.head if self.length else None)


def extend(facts: ChainFacts, events: Iterable[Mapping[str, Any]]) -> ChainFacts | ChainBreak:
    """The facts of ``facts``' events followed by ``events`` (raw rows, in order), or the first broken
    link: each event must follow the previous one (the first, ``facts.head``) and hash to what it says."""
    evs = list(events)
    broken = verify_chain(facts.workflow_id, evs, after=(facts.length, facts.head))
    if broken is not None:
        return broken
    if not evs:
        return facts
    bound = dict(facts.bound)
    recorded = dict(facts.recorded)
    postings = dict(facts.postings)
    votes = dict(facts.votes)
    strict, created = facts.strict, facts.created
    state, last_passed = facts.state, facts.last_passed
    assigned_seen, assigned = facts.assigned_seen, facts.assigned
    statuses: list[list[Any]] = []  # the snapshot status bindings of these events, in order
    for ev in evs:
        payload = canonical_loads(ev["payload"])
        if int(ev["seq"]) == 1:
            created = payload if isinstance(payload, Mapping) else None
            strict = binds_rows(payload)
        if ev["kind"] == "supervisor_assigned" and not assigned_seen:
            assigned_seen = True
            value = payload.get("supervisor_id") if isinstance(payload, Mapping) else None
            assigned = value if isinstance(value, str) else None
        if not isinstance(payload, Mapping):
            continue
        if "to" in payload and "event" in payload:
            state = payload["to"]
        if isinstance(payload, dict) and "response_sha256" in payload:
            recorded[payload.get("request_id")] = payload.get("response_sha256")
        if isinstance(payload, dict) and isinstance(payload.get("posting_sha256"), str):
            txn_id = str(payload.get("txn_id"))
            postings[txn_id] = (*postings.get(txn_id, ()), (int(ev["seq"]), payload["posting_sha256"]))
        if ev["kind"] == "vote" and isinstance(payload.get("request_id"), str) and "vote_id" in payload:
            cast = (int(ev["seq"]), str(payload["vote_id"]))
            votes[payload["request_id"]] = (*votes.get(payload["request_id"], ()), cast)
        entries = payload.get("bind")
        if isinstance(entries, list):
            for entry in entries:
                if isinstance(entry, list) and len(entry) == 4 and all(isinstance(x, str) for x in entry):
                    table, row_id, view, sha = entry
                    bound[(table, row_id, view)] = Binding(int(ev["seq"]), sha)
        for entry in entries or ():
            if isinstance(entry, list) and entry[:1] == ["snapshots"] and entry[2:3] == ["status"]:
                statuses.append(entry)
    # the last one that records a passing status (a binding carries only a hash, so each candidate costs
    # digests): from the newest back, so a long chain pays for the few bindings after its last pass, not
    # for every binding it holds; none among these events keeps the one found before
    for entry in reversed(statuses):
        if _status_in(entry, _PASSED):
            last_passed = entry[1]
            break
    last = evs[-1]
    return ChainFacts(
        workflow_id=facts.workflow_id,
        length=int(last["seq"]),
        head=last["hash"],
        strict=strict,
        created=created,
        state=state,
        last_passed=last_passed,
        assigned_seen=assigned_seen,
        assigned=assigned,
        bound=bound,
        recorded=recorded,
        postings=postings,
        votes=votes,
    )


def of_events(workflow_id: str, events: Iterable[Mapping[str, Any]]) -> ChainFacts | ChainBreak:
    """The facts of a whole chain (from its first event), or its first broken link."""
    return extend(ChainFacts(workflow_id), events)


def workflow_problem(row: Mapping[str, Any], facts: ChainFacts) -> str | None:
    """Why a workflow row disagrees with its chain, or None. Only for workflows that bind their rows
    (older ones are checked by their anchor alone). The chain fixes: the configuration and the parties
    and amount it names (``workflow_created``), the state (the last transition's ``to``) and the snapshot
    an agent resumes from (the last snapshot the chain saw approved, modified or passed)."""
    if not facts.length or not facts.strict or facts.created is None:
        return None
    config = facts.created.get("config")
    if not isinstance(config, Mapping):
        return "the chain's first event carries no configuration"
    wf_id = row["workflow_id"]
    if _numbers_as_stored(row["config"]) != _numbers_as_stored(config):
        return f"workflows row {wf_id}: config does not match the one recorded when it was created"
    for column in ("name", "description", "poster_id", "executor_id"):
        if row[column] != config.get(column, ""):
            return f"workflows row {wf_id}: {column} does not match the configuration it was created with"
    if row["supervisor_id"] != (config.get("supervisor_id") or facts.assigned):
        return f"workflows row {wf_id}: supervisor_id is neither the configured nor the assigned supervisor"
    if row["escrow_micro"] != to_micro(config.get("escrow_amount"), "escrow_amount"):
        return f"workflows row {wf_id}: escrow_micro does not match the escrow amount it was created with"
    if facts.state is not None and row["state"] != facts.state:
        return f"workflows row {wf_id}: state {row['state']!r} is not the chain's last state {facts.state!r}"
    if row["last_approved_snapshot_id"] != facts.last_passed:
        return (
            f"workflows row {wf_id}: last_approved_snapshot_id is not the last snapshot the chain saw "
            "approved"
        )
    return None


def _status_in(entry: list[Any], statuses: Iterable[str]) -> bool:
    """Whether a snapshot status binding records one of ``statuses`` (a binding carries only a hash)."""
    snapshot_id, sha = entry[1], entry[3]
    return any(
        row_digest("snapshots", "status", {"snapshot_id": snapshot_id, "status": s}) == sha for s in statuses
    )
