"""Append-only storage of the per-workflow audit chain (see ``saferun.domain.audit`` for the rules).

``append`` must run inside the transaction that makes the change it records, after the workflow row is
locked (``lock_workflow``), so sequence numbers never race and an event exists exactly when its change
does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, func, insert, select, text, update

from saferun.domain.audit import (
    GENESIS,
    KEYS,
    Binding,
    ChainBreak,
    binds_rows,
    check_row,
    decision_digest,
    event_hash,
    payload_text,
    posting_problem,
)
from saferun.domain.canonical import canonical_loads
from saferun.domain.chain_facts import ChainFacts, of_events, workflow_problem
from saferun.domain.chain_facts import extend as extend_facts
from saferun.errors import ArtifactCorrupted, ArtifactNotFound, InvalidInput, Tampered
from saferun.storage import chain_cache, eventlog, ledger
from saferun.storage.artifacts import ArtifactStore, check_artifact_row
from saferun.storage.bare_select import BareSelect
from saferun.storage.database import NOTIFY_SELECT, before_commit, take_pg_notices
from saferun.storage.schema import (
    approval_requests,
    approval_responses,
    approval_votes,
    audit_events,
    ledger_legs,
    ledger_transactions,
    saga_steps,
    snapshots,
    utcnow,
    workflows,
    x402_payments,
)

# core.checkpoints.capture.ARTIFACT_TYPE (storage does not import core)
CHECKPOINT_ARTIFACT = "checkpoint_state"

# the tables whose rows events bind by view (``domain.audit.VIEWS``), all keyed by their workflow
BOUND_TABLES = {
    "snapshots": snapshots,
    "approval_requests": approval_requests,
    "saga_steps": saga_steps,
    "x402_payments": x402_payments,
    "approval_votes": approval_votes,
}

_HEAD = (
    select(audit_events.c.seq, audit_events.c.hash)
    .where(audit_events.c.workflow_id == bindparam("workflow_id"))
    .order_by(audit_events.c.seq.desc())
    .limit(1)
)
# the anchor on the workflow row and the events after a verified prefix, in one indexed read
_EVENT_COLUMNS = tuple(c.name for c in audit_events.c)
_TAIL = (
    select(
        workflows.c.audit_seq.label("anchor_seq"),
        workflows.c.audit_head.label("anchor_head"),
        *audit_events.c,
    )
    .select_from(
        workflows.outerjoin(
            audit_events,
            and_(
                audit_events.c.workflow_id == workflows.c.workflow_id, audit_events.c.seq > bindparam("seq")
            ),
        )
    )
    .where(workflows.c.workflow_id == bindparam("workflow_id"))
    .order_by(audit_events.c.seq)
)
_INSERT = insert(audit_events)
# PostgreSQL: the events as a data-modifying CTE (always run, referenced or not) of the SELECT that queues
# the transaction's wake-ups (storage.database.pg_notice). Arrays keep the text the same for any number of
# events, so the driver prepares it once.
_COLUMNS = ("workflow_id", "seq", "kind", "actor", "payload", "at", "prev_hash", "hash")
_INSERT_AND_NOTIFY = text(
    f"WITH a AS (INSERT INTO audit_events ({', '.join(_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{c} AS {'int' if c == 'seq' else 'text'}[])" for c in _COLUMNS)
    + f")) {NOTIFY_SELECT}"
)
_ANCHOR = (
    update(workflows)
    .where(workflows.c.workflow_id == bindparam("wf"))
    .values(audit_seq=bindparam("seq"), audit_head=bindparam("head"))
)


class _Chain:
    """This transaction's view of the chains it appends to: heads, the events not yet sent, and the
    sequence number each workflow row already anchors."""

    __slots__ = ("anchored", "heads", "rows", "seeded", "txn")

    def __init__(self, txn: Any) -> None:
        self.txn = txn
        self.heads: dict[str, tuple[int, str]] = {}
        self.rows: list[dict[str, Any]] = []
        self.anchored: dict[str, int] = {}
        # the head each chain was seeded with (``seed``): a head still equal to it means nothing appended
        self.seeded: dict[str, tuple[int, str]] = {}


def _chain(conn: Connection) -> _Chain:
    """Kept in ``conn.info`` keyed by the transaction, so nothing of it outlives the transaction."""
    txn = conn.get_transaction()
    stash = conn.info.get("saferun_audit_chain")
    if stash is None or stash.txn is not txn:
        stash = conn.info["saferun_audit_chain"] = _Chain(txn)
    return stash  # type: ignore[no-any-return]


def seed(conn: Connection, workflow_id: str, seq: int | None, head: str | None) -> None:
    """Start this transaction's chain of ``workflow_id`` from the anchor on its row (``audit_seq``,
    ``audit_head``), read under the workflow's lock: appending then needs no query for the chain's tail.

    Only call it with the row as read under that lock; without a seed ``append`` reads the tail itself.
    """
    chain = _chain(conn)
    if workflow_id in chain.heads or seq is None or (seq and not head):
        return  # no anchor to trust: append reads the chain's tail itself
    chain.heads[workflow_id] = chain.seeded[workflow_id] = (int(seq), head or GENESIS)
    chain.anchored[workflow_id] = int(seq)


def append(conn: Connection, workflow_id: str, kind: str, actor: str, payload: Mapping[str, Any]) -> int:
    """Add an event to the workflow's chain; returns its sequence number.

    The event is hashed now and written with every other event of the transaction in one INSERT just
    before the commit (``flush``, run by ``Database.transaction``), so a checkpoint or a decision costs one
    audit statement whatever it records. Readers in the same transaction see it (they flush first).
    """
    chain = _chain(conn)
    if workflow_id in chain.heads:
        last_seq, prev = chain.heads[workflow_id]
        seq = last_seq + 1
    else:
        last = conn.execute(_HEAD, {"workflow_id": workflow_id}).first()
        seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
    at = utcnow().isoformat(timespec="microseconds")
    text = payload_text(payload)
    digest = event_hash(
        workflow_id=workflow_id, seq=seq, kind=kind, actor=actor, at=at, payload=text, prev_hash=prev
    )
    chain.rows.append(
        {
            "workflow_id": workflow_id,
            "seq": seq,
            "kind": kind,
            "actor": actor,
            "payload": text,
            "at": at,
            "prev_hash": prev,
            "hash": digest,
        }
    )
    chain.heads[workflow_id] = (seq, digest)
    before_commit(conn, "audit", flush)
    eventlog.record(conn, workflow_id, kind, actor, payload)  # one log line, after the commit
    return seq


def anchor_fields(conn: Connection, workflow_id: str) -> dict[str, Any]:
    """The anchor columns for an UPDATE of the workflow row this transaction is about to run anyway (a
    state change), so the anchor costs no statement of its own; ``flush`` then skips it unless more
    events follow. Empty when this transaction appended nothing for the workflow."""
    chain = _chain(conn)
    if workflow_id not in chain.heads:
        return {}
    seq, head = chain.heads[workflow_id]
    chain.anchored[workflow_id] = seq
    return {"audit_seq": seq, "audit_head": head}


def flush(conn: Connection) -> None:
    """Send the events gathered so far (one INSERT) and move each anchor the row does not yet carry."""
    chain = _chain(conn)
    if chain.rows:
        rows, chain.rows = chain.rows, []
        notices = take_pg_notices(conn) if conn.dialect.name == "postgresql" else None
        if notices is None:
            conn.execute(_INSERT, rows)
        else:  # the transaction's wake-ups ride on the INSERT: one round trip, not two
            columns = {name: [r[name] for r in rows] for name in _COLUMNS}
            conn.execute(_INSERT_AND_NOTIFY, {**columns, "channel": notices[0], "payloads": notices[1]})
    for workflow_id, (seq, head) in chain.heads.items():
        if chain.anchored.get(workflow_id) != seq:
            conn.execute(_ANCHOR, {"wf": workflow_id, "seq": seq, "head": head})
            chain.anchored[workflow_id] = seq


def events(conn: Connection, workflow_id: str) -> list[dict[str, Any]]:
    """Events with their payloads decoded, for readers."""
    return [{**ev, "payload": canonical_loads(ev["payload"])} for ev in raw_events(conn, workflow_id)]


def raw_events(conn: Connection, workflow_id: str) -> list[dict[str, Any]]:
    """Events exactly as stored (payload as the hashed text), for verification."""
    _flush_if_writing(conn)
    rows = conn.execute(
        select(audit_events).where(audit_events.c.workflow_id == workflow_id).order_by(audit_events.c.seq)
    ).mappings()
    return [dict(r) for r in rows]


def verify(conn: Connection, workflow_id: str) -> tuple[int, ChainBreak | None]:
    """How many events the chain holds, and its first broken link (None when intact).

    Beyond the links: every decision row must hash to what its ``decision`` event recorded (events written
    before decisions were bound carry no ``response_sha256`` and are checked as before), and every ledger
    posting of the workflow must sum to zero and hash to what the event that wrote it recorded
    (``posting_sha256``; older events without it are checked for the sum only).

    Always the whole chain, never this process's verified prefix (``chain_cache``): this is the check that
    finds an old event changed after a reader verified it. A broken chain is also dropped from that cache,
    so this process's reads verify it whole again (and refuse it) instead of trusting the prefix; an
    intact one is remembered, as any read's would be."""
    evs = raw_events(conn, workflow_id)
    facts = of_events(workflow_id, evs)
    broken = facts if isinstance(facts, ChainBreak) else _check_anchor(conn, workflow_id, evs)
    if broken is None and isinstance(facts, ChainFacts):
        broken = (
            _check_decisions(conn, workflow_id, evs)
            or _check_workflow_row(conn, workflow_id, facts)
            or _check_bound_rows(conn, workflow_id, facts)
            or _check_artifacts(conn, workflow_id)
            or _check_postings(conn, workflow_id)
            or _check_bound_postings(conn, evs)
        )
    cache = chain_cache.for_engine(conn.engine)
    if broken is not None:
        cache.drop(workflow_id)
    elif isinstance(facts, ChainFacts) and not _appended_here(conn, workflow_id):
        cache.put(facts)
    return len(evs), broken


def _check_workflow_row(conn: Connection, workflow_id: str, facts: ChainFacts) -> ChainBreak | None:
    row = conn.execute(select(workflows).where(workflows.c.workflow_id == workflow_id)).mappings().first()
    problem = None if row is None else workflow_problem(row, facts)
    return None if problem is None else ChainBreak(facts.length, problem)


def _check_artifacts(conn: Connection, workflow_id: str) -> ChainBreak | None:
    """Every snapshot's artifact: all its blobs re-read and re-hashed (no cache), and its ``artifacts``
    row equal to what the snapshot (itself checked against the chain) recorded."""
    store = ArtifactStore(cache_bytes=0)
    for snap in conn.execute(select(snapshots).where(snapshots.c.workflow_id == workflow_id)).mappings():
        uri = snap["artifact_uri"]
        try:
            store.get(conn, uri)
        except (ArtifactCorrupted, ArtifactNotFound, InvalidInput) as exc:
            return ChainBreak(0, f"snapshot {snap['snapshot_id']}'s artifact does not verify: {exc}")
        problem = check_artifact_row(
            conn,
            uri,
            artifact_type=CHECKPOINT_ARTIFACT,
            raw_size=snap["raw_size_bytes"],
            compressed_size=snap["compressed_size_bytes"],
        )
        if problem is not None:
            return ChainBreak(0, f"snapshot {snap['snapshot_id']}: {problem}")
    return None


def _check_bound_rows(conn: Connection, workflow_id: str, facts: ChainFacts) -> ChainBreak | None:
    """Every row an event bound must still exist and hash, view by view, to what the latest event that
    bound it recorded; every stored row's status must be one SafeRun writes."""
    bound, strict = facts.bound, facts.strict
    for name, table in BOUND_TABLES.items():
        key = KEYS[name]
        rows = {
            str(r[key]): r
            for r in conn.execute(select(table).where(table.c.workflow_id == workflow_id)).mappings()
        }
        for (t, row_id, _view), binding in bound.items():
            if t == name and row_id not in rows:
                missing = f"{name} row {row_id} is missing (event {binding.seq} bound it)"
                return ChainBreak(binding.seq, missing)
        for row_id, row in rows.items():
            problem = check_row(name, row, bound, strict=strict)
            if problem is not None:
                return ChainBreak(_seq_of(bound, name, row_id), problem)
    return None


def _seq_of(bound: Mapping[tuple[str, str, str], Binding], table: str, row_id: str) -> int:
    seqs = [b.seq for (t, r, _), b in bound.items() if t == table and r == row_id]
    return max(seqs) if seqs else 0


def check_read(
    conn: Connection,
    workflow_id: str,
    rows: dict[str, list[Any]] | None = None,
    responses: list[Any] | None = None,
    workflow: Any = None,
    complete: tuple[str, ...] = (),
    postings: list[dict[str, Any]] | None = None,
    votes_of: str | None = None,
) -> None:
    """The read path's check: before a decision, request, snapshot, step, payment or ledger posting is
    served, its chain must verify link by link and end where the workflow row's anchor says, and the rows
    must match what their events recorded (``postings``: all of the workflow's, as ``ledger.entries`` reads
    them; ``posting_problem``). Raises ``Tampered`` naming the row, so a forged value is never returned.

    The chain is verified through this process's verified prefix (``read_facts``): with a warm cache a
    read hashes only the events appended since, but always re-hashes the rows it serves."""
    facts = read_facts(conn, workflow_id, workflow)
    _check_against(facts, workflow_id, rows, responses, workflow, complete, postings, votes_of)


def has_verified(engine: Engine, workflow_id: str) -> bool:
    """Whether this process has verified a prefix of the workflow's chain (``check_cached`` may then
    answer without a statement)."""
    return chain_cache.for_engine(engine).get(workflow_id) is not None


def check_cached(
    engine: Engine, workflow_id: str, rows: dict[str, list[Any]], workflow: Any, cursor: Any = None
) -> bool:
    """``check_read`` of ``rows`` and the ``workflow`` row against the prefix of the chain this process
    has verified already: False when that prefix cannot vouch for the row's anchor (the caller then reads
    and checks in a transaction), ``Tampered`` when a row disagrees. With ``cursor`` (a bare read cursor),
    a chain that grew since is verified from the prefix on, as ``read_facts`` does in a transaction: the
    events after it, read with the anchor in one statement, must continue it link by link and end where
    the row's anchor says.

    For the bare reads (``storage.bare_select``): their rows come from separate statements, so a
    disagreement may be a commit that landed between two of them; the caller answers it with the
    transactional read, which raises ``Tampered`` only for a real one."""
    cache = chain_cache.for_engine(engine)
    known = cache.get(workflow_id)
    anchored = (int(workflow["audit_seq"] or 0), workflow["audit_head"])
    if known is None:
        return False
    if known.anchor != anchored:
        if cursor is None or anchored[0] < known.length:
            return False
        tail = _TAIL_BARE.all(engine.dialect, cursor, {"workflow_id": workflow_id, "seq": known.length})
        tail_anchor, events = _split_tail(tail)
        if tail_anchor != anchored:
            return False  # the row moved between the two statements
        extended = _extended(known, events, anchored)
        if extended is None:
            return False  # no continuation of the prefix: the whole chain decides, in a transaction
        cache.put(extended)
        known = extended
    _check_against(known, workflow_id, rows, None, workflow, (), None, None)
    return True


def _check_against(
    facts: ChainFacts,
    workflow_id: str,
    rows: dict[str, list[Any]] | None,
    responses: list[Any] | None,
    workflow: Any,
    complete: tuple[str, ...],
    postings: list[dict[str, Any]] | None,
    votes_of: str | None,
) -> None:
    """The row checks of ``check_read``, against verified chain facts."""
    if workflow is not None:
        problem = workflow_problem(workflow, facts)
        if problem is not None:
            raise Tampered(workflow_id, "workflows", workflow_id, problem)
    bound, strict = facts.bound, facts.strict
    for name in complete:  # ``rows[name]`` is all of the workflow's rows: none the chain bound may be gone
        present = {str(r[KEYS[name]]) for r in (rows or {}).get(name, [])}
        for (table, row_id, _view), binding in bound.items():
            if table == name and row_id not in present:
                raise Tampered(workflow_id, name, row_id, f"it is missing (event {binding.seq} bound it)")
    if votes_of is not None:  # every vote the chain recorded on this request must be among ``rows``
        present = {str(r["vote_id"]) for r in (rows or {}).get("approval_votes", [])}
        for seq, vote_id in facts.votes.get(votes_of, ()):
            if vote_id not in present:
                missing = f"it is missing (event {seq} recorded it on request {votes_of})"
                raise Tampered(workflow_id, "approval_votes", vote_id, missing)
    for name, items in (rows or {}).items():
        for row in items:
            problem = check_row(name, row, bound, strict=strict)
            if problem is not None:
                raise Tampered(workflow_id, name, str(row[KEYS[name]]), problem)
    if postings is not None:
        forged = posting_problem(workflow_id, facts.postings, postings)
        if forged is not None:
            raise Tampered(workflow_id, *forged)
    for resp in responses or ():
        expected = facts.recorded.get(resp["request_id"])
        if (expected is None and strict) or (
            expected is not None and (resp["workflow_id"] != workflow_id or decision_digest(resp) != expected)
        ):
            raise Tampered(
                workflow_id,
                "approval_responses",
                str(resp["response_id"]),
                f"the decision of request {resp['request_id']} does not match what its event recorded",
            )


def read_facts(conn: Connection, workflow_id: str, workflow: Any = None) -> ChainFacts:
    """The facts of the workflow's whole chain as its row anchors it, verified: this process's verified
    prefix (``chain_cache``) when the anchor has not moved, that prefix plus the events after it when it
    has, else the whole chain. ``workflow`` is the row when the caller has it (then a warm read runs no
    statement at all); otherwise one statement reads the anchor with the events after the prefix.
    ``Tampered`` when the chain is broken, empty, or does not end where the anchor says."""
    writing = _appended_here(conn, workflow_id)
    _flush_if_writing(conn)
    anchored: tuple[int, str | None] | None = None
    if workflow is not None and not writing:  # a row read before this transaction's appends is stale
        anchored = (int(workflow["audit_seq"] or 0), workflow["audit_head"])
    cache = chain_cache.for_engine(conn.engine)
    known = cache.get(workflow_id)
    if known is not None and anchored is not None and anchored[0] < known.length:
        known = None  # this snapshot is older than what the cache knows: verify it whole
    facts = known if known is not None and known.anchor == anchored else None
    if facts is None:
        start = known.length if known is not None else 0
        tail_anchor, evs = _tail(conn, workflow_id, start)
        anchored = anchored or tail_anchor
        if anchored is None:
            raise Tampered(workflow_id, "workflows", workflow_id, "the workflow row of this chain is missing")
        if known is not None:
            facts = _extended(known, evs, anchored)
            if facts is None:  # not a continuation of what this process verified: the whole chain decides
                evs = _tail(conn, workflow_id, 0)[1]
        if facts is None:
            whole = of_events(workflow_id, evs)
            if isinstance(whole, ChainBreak):
                raise Tampered(workflow_id, "audit_events", str(whole.seq), whole.reason)
            if not whole.length:
                raise Tampered(workflow_id, "workflows", workflow_id, "the workflow has no audit chain")
            if whole.anchor != anchored:
                reason = "the chain's length or last hash is not the one the workflow row anchored"
                raise Tampered(workflow_id, "workflows", workflow_id, reason)
            facts = whole
    if not writing:  # only what other transactions committed: this one's appends could still roll back
        cache.put(facts)
    return facts


def _tail(conn: Connection, workflow_id: str, after: int) -> tuple[tuple[int, str | None] | None, list[Any]]:
    """The workflow row's anchor and the chain's events after ``after``, in one statement (None for the
    anchor when the workflow row does not exist)."""
    return _split_tail(conn.execute(_TAIL, {"workflow_id": workflow_id, "seq": after}).mappings().all())


def _split_tail(rows: Sequence[Mapping[str, Any]]) -> tuple[tuple[int, str | None] | None, list[Any]]:
    """``_TAIL``'s rows (through the engine or on a bare cursor) as the anchor and the events."""
    if not rows:
        return None, []
    anchored = (int(rows[0]["anchor_seq"] or 0), rows[0]["anchor_head"])
    return anchored, [{c: r[c] for c in _EVENT_COLUMNS} for r in rows if r["seq"] is not None]


def _extended(known: ChainFacts, events: list[Any], anchored: tuple[int, str | None]) -> ChainFacts | None:
    """The verified prefix ``known`` extended by ``events``, link by link; None unless they continue it
    and end exactly at ``anchored``."""
    extended = extend_facts(known, events)
    return extended if isinstance(extended, ChainFacts) and extended.anchor == anchored else None


_TAIL_BARE = BareSelect(_TAIL)  # ``_tail`` on a bare read cursor (``check_cached``)


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
    bound = {canonical_loads(ev["payload"]).get("request_id") for ev in evs if ev["kind"] == "decision"}
    if evs and binds_rows(canonical_loads(evs[0]["payload"])):
        for request_id, row in rows.items():
            if request_id not in bound:
                return ChainBreak(0, f"decision {row['response_id']} was never recorded on the audit chain")
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


def _appended_here(conn: Connection, workflow_id: str) -> bool:
    """Whether this transaction appended to the workflow's chain. A chain only seeded from the row read
    under the lock (``seed``) has nothing of this transaction in it yet: what a read then verifies is
    committed, and may be remembered. (Counting a seeded chain as appended kept a decision's access check
    from ever remembering what it verified: on a replica that only decides, every decision re-hashed the
    workflow's whole chain, a cost growing with its history.)"""
    stash = conn.info.get("saferun_audit_chain")
    if stash is None or stash.txn is not conn.get_transaction():
        return False
    head = stash.heads.get(workflow_id)
    return head is not None and head != stash.seeded.get(workflow_id)


def _flush_if_writing(conn: Connection) -> None:
    """A read inside a transaction that appended sees those events (and their anchor) too."""
    stash = conn.info.get("saferun_audit_chain")
    if stash is not None and stash.txn is conn.get_transaction() and conn.in_transaction():
        flush(conn)


def anchor(conn: Connection, workflow_id: str) -> tuple[int, str | None] | None:
    """The chain's anchor kept on the workflow row (length, latest hash); None for an unknown workflow."""
    _flush_if_writing(conn)
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
