"""One byte flipped in any stored row that matters is found, by ``audit verify`` and by the read path.

The cases are generated from the SQLAlchemy metadata, like the authorization matrix is from the routes:
every table must be listed either in ``COVERED`` (each of its columns a case or an exemption with its
reason) or in ``NOT_EVIDENCE`` (with the reason it holds no decision, money, snapshot, artifact or audit
record). A new table or column without an entry fails ``test_every_table_and_column_is_classified``.

The world is one real completed workflow, funded through x402 (a payment), with a MODIFIED decision, a
rejection whose compensation ran, a re-approval and a settlement. For every case one byte (one bit for an
integer, the value for a boolean) of one stored row is flipped directly in the database, as an attacker
or a bad disk would; then ``verify`` must report it, and every read path that serves that row must
refuse it (``IntegrityError``: 409 ``tampered`` over HTTP) instead of serving the forged value. The reads
run with this process's verified-prefix cache warm (``storage.chain_cache``), as a server's would be; an
old audit event is not re-hashed by a warm read, so those cases must be refused once ``verify`` has
reported them (and dropped the prefix), as in a process started after the flip (docs/decisions.md,
"Verified-prefix cache"). The byte is flipped back afterwards and the world must verify again, so each
case starts from an intact store.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Table, select, update
from sqlalchemy import exc as sa_exc

from saferun.core.rollback.reconciliation import CompensationRegistry
from saferun.core.state_machine.models import CheckpointConfig, ExecutionState
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.quorum import QuorumRule
from saferun.errors import IntegrityError, NotFound
from saferun.storage import chain_cache
from saferun.storage.artifacts import ArtifactStore
from saferun.storage.database import Database
from saferun.storage.schema import metadata
from tests.helpers import decide, make_config, pause, quorum_group
from tests.test_x402_funding import Env, fund_url

TS = "bookkeeping time: not evidence, the events carry their own hashed time"
LEASE = "a lease a claim moves without an event (who holds a rollback or a compensation right now)"

# table -> column -> the reason it is exempt, or None for "a case: flipping it must be detected"
COVERED: dict[str, dict[str, str | None]] = {
    "workflows": {
        "workflow_id": None,
        "name": None,
        "description": None,
        "state": None,
        "config": None,
        "poster_id": None,
        "executor_id": None,
        "supervisor_id": None,
        "escrow_micro": None,
        "current_checkpoint": "a counter of passed checkpoints; the payouts it guards are bound postings",
        "job_id": "the id of the platform's mirror job (a label); the job holds no money",
        "escrow_id": "a label; the money is in ledger accounts named by the workflow id",
        "last_approved_snapshot_id": None,
        "result_uri": "names the result artifact, which is content-addressed and verified when read",
        "platform_url": "where the outbox delivers; deliveries are idempotent and checked by the platform",
        "error_message": "a copy of the failing transition's reason, which the chain holds",
        "rollback_claimed_by": LEASE,
        "rollback_claimed_at": LEASE,
        "version": "an optimistic-lock counter",
        "created_at": TS,
        "updated_at": TS,
        "started_at": TS,
        "completed_at": TS,
        "audit_seq": None,
        "audit_head": None,
    },
    "snapshots": {
        "snapshot_id": None,
        "workflow_id": None,
        "sequence": None,
        "checkpoint_id": None,
        "label": None,
        "status": None,
        "artifact_uri": None,
        "raw_size_bytes": None,
        "compressed_size_bytes": None,
        "new_bytes": None,
        "parent_snapshot_id": None,
        "created_at": TS,
    },
    "approval_requests": {
        "request_id": None,
        "workflow_id": None,
        "snapshot_id": None,
        "checkpoint_id": None,
        "checkpoint_name": None,
        "summary": None,
        "decision_needed": None,
        "context": None,
        "parameters": None,
        "parameter_schema": None,
        "recommendation": None,
        "confidence": None,
        "risk": None,
        "risk_level": None,
        "alerts": None,
        "supervisor_id": None,
        "job_id": None,
        "on_timeout": None,
        "status": None,
        "created_at": TS,
        "expires_at": None,
        "decided_at": TS,
        "quorum": None,
        "group_id": None,  # an item's group and key (several asked at one checkpoint): in the row view
        "item_key": None,
        "escalation_step": "which ladder rung the sweep applied last (scheduling); each rung is an "
        "`escalated` event and a reassignment's new supervisor is bound in the review view",
        "next_escalation_at": "when the sweep looks at the request next (scheduling)",
    },
    "approval_responses": {
        "response_id": None,
        "request_id": None,
        "workflow_id": None,
        "decision": None,
        "rationale": None,
        "approved_by": None,
        "modifications": None,
        "automatic": None,
        "created_at": TS,
        "review_digest": None,
    },
    "approval_votes": {
        "vote_id": None,
        "request_id": None,
        "workflow_id": None,
        "voter": None,
        "vote": None,
        "rationale": None,
        "team": None,
        "created_at": TS,
    },
    "saga_steps": {
        "step_id": None,
        "workflow_id": None,
        "seq": None,
        "name": None,
        "compensation": None,
        "args": None,
        "status": None,
        "attempts": LEASE,
        "last_error": None,
        "claimed_by": LEASE,
        "claimed_at": LEASE,
        "created_at": TS,
        "finished_at": TS,
    },
    "ledger_transactions": {
        "txn_id": None,
        "idempotency_key": None,
        "workflow_id": None,
        "kind": None,
        "memo": None,
        "created_at": TS,
    },
    "ledger_legs": {
        "id": "a surrogate key with no meaning; the leg is bound by its posting, account and amount",
        "txn_id": None,
        "account": None,
        "amount_micro": None,
    },
    "audit_events": {
        "workflow_id": None,
        "seq": None,
        "kind": None,
        "actor": None,
        "payload": None,
        "at": None,
        "prev_hash": None,
        "hash": None,
    },
    "blobs": {
        "sha256": None,
        "kind": None,
        "codec": None,
        "raw_size": None,
        "stored_size": None,
        "data": None,
        "created_at": TS,
    },
    "artifacts": {
        "uri": None,
        "artifact_type": None,
        "metadata": "labels of whichever workflow first stored this deduplicated artifact; never read to "
        "restore, review or pay",
        "raw_size": None,
        "compressed_size": None,
        "created_at": TS,
    },
    "x402_payments": {
        "payment_id": None,
        "workflow_id": None,
        "network": None,
        "asset": None,
        "payer": None,
        "nonce": None,
        "pay_to": None,
        "amount_micro": None,
        "status": None,
        "tx_hash": None,
        "ledger_txn_id": None,
        "receipt": None,
        "reason": None,
        "created_at": TS,
        "updated_at": TS,
    },
}

NOT_EVIDENCE = {
    "transitions": "a readable copy of the chain's transition events; the chain is the record",
    "jobs": "the platform's mirror of a workflow's progress; no decision or money lives there",
    "job_events": "history of the mirror jobs",
    "identities": "who may act; authorization, covered by the authz matrix",
    "identity_groups": "who may vote in a quorum (authorization); each vote is bound with the voter's team",
    "api_keys": "hashes of keys; authorization",
    "sessions": "hashes of session cookies; authorization",
    "platform_requests": "idempotency answers of platform calls",
    "platform_artifacts": "which platform stored an artifact through /x402 (read access, not content)",
    "platform_grants": "which platforms a poster authorizes (authorization); their postings are bound",
    "signing_keys": "keys that sign exported records; a bundle is checked offline against the published keys",
    "supervisor_profiles": "a price list: money moves only through a workflow's bound postings",
    "supervisor_ratings": "reputation input, recorded on the chain as supervisor_rated",
    "approval_quality": "reputation input, recorded on the chain as approval_quality_recorded",
    "supervisor_assignments": "the marketplace's pick, recorded on the chain as supervisor_assigned",
    "platform_outbox": "calls owed to a remote platform, keyed idempotently",
    "x402_token_transfers": "the local facilitator's stand-in for an external token chain, not SafeRun's "
    "record (x402_payments is, and it is bound)",
    "x402_funding_claims": "a lease on the one payment being settled",
    "notifications": "notices about decisions; the decisions are bound",
    "notification_deliveries": "delivery attempts of notices",
    "decision_links": "hashes of single-use decision links; authorization",
    "identity_emails": "where notices go",
    "lg_checkpoints": "LangGraph's own checkpointer rows; its channel values are content-addressed artifacts",
    "lg_blobs": "LangGraph's channel index into content-addressed artifacts",
    "lg_writes": "LangGraph's pending writes",
    "counters": "counts derived from the rows by triggers; storage.counters.recount recomputes them",
}


def test_every_table_and_column_is_classified() -> None:
    tables = set(metadata.tables)
    assert tables == set(COVERED) | set(NOT_EVIDENCE), (
        "classify every table: new ones "
        f"{sorted(tables - set(COVERED) - set(NOT_EVIDENCE))}, gone {sorted(set(COVERED) - tables)}"
    )
    assert not set(COVERED) & set(NOT_EVIDENCE)
    for name, columns in COVERED.items():
        actual = {c.name for c in metadata.tables[name].columns}
        assert actual == set(columns), f"{name}: classify {sorted(actual ^ set(columns))}"


# --- the world ------------------------------------------------------------------------------------------


@dataclass
class World:
    env: Env
    wf: str
    modified_request: str
    rejected_request: str
    step_id: str
    payment_id: str
    approved_snapshot: str
    quorum_request: str


async def build_world(db: Database) -> World:
    env = Env(db)
    registry = CompensationRegistry()
    undone: list[Any] = []
    registry.register("cancel_order", lambda **kw: undone.append(kw))
    env.orch.registry = registry
    config = make_config(
        escrow="12.50",
        funding="x402",
        checkpoints=[
            CheckpointConfig(name="Plan", checkpoint_id="cp1", milestone_weight=1),
            CheckpointConfig(name="Order", checkpoint_id="cp2", milestone_weight=2),
            CheckpointConfig(name="Sign", checkpoint_id="cp3", quorum=QuorumRule(approvals=2, of="risk")),
        ],
    )
    quorum_group(db, "risk", {"alice": "north", "bob": "south"})
    env.orch.initialize_workflow(config)
    wf = config.workflow_id
    async with env.paying(env.payer(20_000_000)) as http:
        assert (await http.post(fund_url(wf))).status_code == 200
    orch = env.orch
    orch.start_execution(wf)
    memory = {"notes": ["the same careful note, again and again"] * 80}
    snap = await orch.create_checkpoint(
        wf, ExecutionState(checkpoint_id="plan", parameters={"n": 857}, agent_memory=memory)
    )
    modified = orch.request_approval(
        wf,
        snap.snapshot_id,
        "order 857 units",
        {"supplier": "acme"},
        decision_needed="Order them?",
        recommendation="approve",
        confidence=0.75,
        risk={"level": "medium"},
        alerts=[{"rule": "budget", "message": "near the limit"}],
    ).request_id
    decide(orch, modified, "MODIFIED", modifications={"n": 858})
    step_id = orch.register_step(wf, "order", "cancel_order", {"order": 42})
    rejected = await pause(orch, wf, "cp2", parameters={"total": 3})
    decide(orch, rejected, "REJECTED", rationale="too expensive")
    report = await orch.arollback(wf)
    assert report.compensated == ["order"] and undone == [{"order": 42}]
    decide(orch, await pause(orch, wf, "cp2", parameters={"total": 2}), "APPROVED")
    signed = await pause(orch, wf, "cp3", parameters={"signature": "ok"})
    decide(orch, signed, "APPROVED", by="alice", rationale="fine by north")
    decide(orch, signed, "APPROVED", by="bob", rationale="fine by south")
    orch.settle_workflow(wf, {"done": True})
    orch.complete_workflow(wf)
    (payment,) = orch.payments(wf)
    current = orch.get_workflow(wf)
    assert current.last_approved_snapshot_id is not None
    assert orch.verify_audit(wf)[1] is None
    return World(
        env, wf, modified, rejected, step_id, payment["payment_id"], current.last_approved_snapshot_id, signed
    )


# --- which row of each table gets the flip ---------------------------------------------------------------


def row_of(db: Database, w: World, table: str) -> dict[str, Any]:
    t = metadata.tables[table]
    where: dict[str, Callable[[], Any]] = {
        "workflows": lambda: t.c.workflow_id == w.wf,
        "snapshots": lambda: t.c.snapshot_id == w.approved_snapshot,
        "approval_requests": lambda: t.c.request_id == w.modified_request,
        "approval_responses": lambda: t.c.request_id == w.modified_request,
        "saga_steps": lambda: t.c.step_id == w.step_id,
        "x402_payments": lambda: t.c.payment_id == w.payment_id,
        "approval_votes": lambda: (t.c.request_id == w.quorum_request) & (t.c.voter == "alice"),
        "audit_events": lambda: (t.c.workflow_id == w.wf) & (t.c.kind == "decision"),
    }
    with db.read() as conn:
        if table in where:
            return dict(conn.execute(select(t).where(where[table]())).mappings().first() or {})
        snap = (
            conn.execute(
                select(metadata.tables["snapshots"]).where(
                    metadata.tables["snapshots"].c.snapshot_id == w.approved_snapshot
                )
            )
            .mappings()
            .one()
        )
        if table == "artifacts":
            return dict(conn.execute(select(t).where(t.c.uri == snap["artifact_uri"])).mappings().one())
        if table == "blobs":  # the blob holding the approved state's agent memory (a zstd chunk)
            parts = ArtifactStore(cache_bytes=0).get(conn, snap["artifact_uri"])
            import hashlib

            key = hashlib.sha256(parts["agent_memory"]).hexdigest()
            return dict(conn.execute(select(t).where(t.c.sha256 == key)).mappings().one())
        legs, txns = metadata.tables["ledger_legs"], metadata.tables["ledger_transactions"]
        release = (
            conn.execute(select(txns).where(txns.c.workflow_id == w.wf, txns.c.kind == "release"))
            .mappings()
            .first()
        )
        assert release is not None
        if table == "ledger_transactions":
            return dict(release)
        return dict(
            conn.execute(select(legs).where(legs.c.txn_id == release["txn_id"]).limit(1)).mappings().one()
        )


# --- flipping -------------------------------------------------------------------------------------------


def flipped(value: Any, column: Any, attempt: int = 0) -> Any:
    """The value with one byte (a bit for integers, the value for booleans) changed; ``attempt`` picks
    another bit or byte when the first one collides with a unique key (the database refuses it)."""
    if value is None:  # a NULL has no byte to flip: the smallest value that is not NULL
        py = column.type.python_type if not hasattr(column.type, "impl") else None
        return {"x": 1} if py is None or py is dict else ("x" if py is str else 1)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value ^ (1 << (attempt * 3))
    if isinstance(value, float):
        (bits,) = struct.unpack(">Q", struct.pack(">d", value))
        return struct.unpack(">d", struct.pack(">Q", bits ^ 1))[0]
    if isinstance(value, datetime):
        return value.replace(microsecond=value.microsecond ^ 1)
    if isinstance(value, bytes):
        mid = len(value) // 2
        return value[:mid] + bytes([value[mid] ^ 0x01]) + value[mid + 1 :]
    if isinstance(value, str):
        return _flip_text(value, attempt)
    encoded = json.dumps(value, sort_keys=True)
    for i in [*range(len(encoded) // 2, len(encoded)), *range(len(encoded) // 2)]:
        c = encoded[i]
        if c.isalnum():
            candidate = encoded[:i] + chr(ord(c) ^ 1) + encoded[i + 1 :]
            try:
                decoded = json.loads(candidate)
            except ValueError:
                continue
            if decoded != value:
                return decoded
    raise AssertionError(f"no byte of {encoded!r} flips into other valid JSON")


def _flip_text(value: str, attempt: int = 0) -> str:
    """Flip the low bit of the last alphanumeric character (stays printable, one byte in UTF-8)."""
    for i in range(len(value) - 1, -1, -1):
        c = value[i]
        if c.isascii() and c.isalnum():
            if attempt:
                attempt -= 1
                continue
            return value[:i] + chr(ord(c) ^ 1) + value[i + 1 :]
    return value + "x"


@contextmanager
def raw_write(db: Database) -> Iterator[Any]:
    """A transaction with foreign keys off: the attacker writes the tables directly."""
    sqlite = db.engine.dialect.name == "sqlite"
    with db.engine.connect() as conn:
        # outside any transaction (SQLAlchemy's begin hook would open one first on SQLite)
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cur = raw.cursor()
        cur.execute("PRAGMA foreign_keys=OFF" if sqlite else "SET session_replication_role = replica")
        if not sqlite:
            raw.commit()
        yield conn
        conn.commit()
        cur = raw.cursor()
        cur.execute("PRAGMA foreign_keys=ON" if sqlite else "SET session_replication_role = DEFAULT")
        if not sqlite:
            raw.commit()


def write(db: Database, table: Table, row: dict[str, Any], column: str, value: Any) -> dict[str, Any]:
    """Set one column of ``row`` (found by its primary key) and return the row's new primary key."""
    pk = {c.name: row[c.name] for c in table.primary_key.columns}
    with raw_write(db) as conn:
        where = [table.c[name] == v for name, v in pk.items()]
        assert conn.execute(update(table).where(*where).values({column: value})).rowcount == 1
    return {**row, column: value}


def forge(db: Database, table: Table, row: dict[str, Any], column: str) -> dict[str, Any]:
    for attempt in range(8):
        forged = flipped(row[column], table.c[column], attempt)
        assert forged != row[column]
        try:
            return write(db, table, row, column, forged)
        except sa_exc.IntegrityError:
            continue  # collides with another row's key: flip another bit
    raise AssertionError(f"no flip of {table.name}.{column} is accepted by the database")


# --- what must refuse a forged row ----------------------------------------------------------------------


def reader(db: Database) -> WorkflowOrchestrator:
    """A fresh orchestrator whose artifact store remembers nothing, so every read goes to the rows."""
    orch = WorkflowOrchestrator(database=db)
    orch.capture.store = ArtifactStore(cache_bytes=0)
    return orch


def verify_reports(db: Database, w: World) -> bool:
    try:
        _, broken = reader(db).verify_audit(w.wf)
    except NotFound:
        return True  # the workflow row itself vanished under its id
    return broken is not None


def read_paths(db: Database, w: World) -> dict[str, Callable[[], Any]]:
    orch = reader(db)
    return {
        "get_workflow": lambda: orch.get_workflow(w.wf),
        "approval_history": lambda: orch.approval_history(w.wf),
        "get_approval_request": lambda: orch.get_approval_request(w.modified_request),
        "quorum_votes": lambda: orch.get_approval_request(w.quorum_request),
        "get_approval_response": lambda: orch.get_approval_response(w.modified_request),
        # what the approval routes read (request, workflow row and decision in one checked read)
        "request_view": lambda: orch.request_view(w.modified_request),
        "workflow_view": lambda: orch.workflow_view(w.wf),  # what the agent's routes check first
        "list_snapshots": lambda: orch.list_snapshots(w.wf),
        "get_snapshot_state": lambda: orch.get_snapshot_state(w.approved_snapshot),
        "latest_approved_state": lambda: orch.latest_approved_state(w.wf),
        "saga_steps": lambda: orch.saga_steps(w.wf),
        "payments": lambda: orch.payments(w.wf),
        # the ledger's entries and the escrow position are computed from postings checked on the way
        "ledger_entries": lambda: orch.ledger_entries(w.wf),
        "escrow_position": lambda: orch.escrow_position(w.wf),
    }


def refused_by(db: Database, w: World) -> list[str]:
    """The read paths that refused (IntegrityError, or NotFound for a row that vanished under its key)."""
    out = []
    for name, read in read_paths(db, w).items():
        try:
            read()
        except (IntegrityError, NotFound):
            out.append(name)
    return out


# A flip in a ledger row must be refused by the ledger reads themselves (not only by another read path
# that happens to re-check the chain): entries and escrow position, and so the ledger page and API.
LEDGER_TABLES = {"ledger_transactions", "ledger_legs"}
LEDGER_READS = ["ledger_entries", "escrow_position"]

CASES = [(table, column) for table, cols in COVERED.items() for column, why in cols.items() if why is None]


@pytest.fixture
async def world(db: Database) -> World:
    return await build_world(db)


async def test_every_flipped_byte_is_found(db: Database, world: World) -> None:
    """Reads run with this process's verified-prefix cache warm (``storage.chain_cache``): the world was
    read and verified before the flip, as a long-running server's would be. A flipped row a read serves is
    refused by that warm read. A flipped *old event* is not re-hashed by a warm read (its rows still match
    what was verified, so nothing forged is served): ``verify`` must report it, which also drops the
    verified prefix, and from then on (as in a fresh process) every read path must refuse the chain."""
    w = world
    cache = chain_cache.for_engine(db.engine)
    assert refused_by(db, w) == [], "the intact world must read"
    missed_verify: list[str] = []
    missed_read: list[str] = []
    missed_view: list[str] = []
    read_detected = 0
    old_event_served_warm = 0
    for table_name, column in CASES:
        table = metadata.tables[table_name]
        row = row_of(db, w, table_name)
        assert row, f"no {table_name} row in the world"
        original = row[column]
        new_row = forge(db, table, row, column)
        try:
            known = cache.get(w.wf)
            assert known is not None and known.length > 0, "the reads must run with a warm cache"
            warm = refused_by(db, w)
            if not verify_reports(db, w):
                missed_verify.append(f"{table_name}.{column}")
            if table_name == "audit_events":
                old_event_served_warm += not warm
                assert w.wf not in cache, "a broken chain must leave the verified-prefix cache"
                warm = refused_by(db, w)  # cold now, as in a process that starts after the flip
            if warm and (table_name not in LEDGER_TABLES or set(LEDGER_READS) <= set(warm)):
                read_detected += 1
            else:
                missed_read.append(f"{table_name}.{column}")
            # the approval routes' one read must refuse whatever the separate reads it replaced did
            replaced = {"get_workflow", "get_approval_request", "get_approval_response"}
            if replaced & set(warm) and "request_view" not in warm:
                missed_view.append(f"request_view: {table_name}.{column}")
            if "get_workflow" in warm and "workflow_view" not in warm:
                missed_view.append(f"workflow_view: {table_name}.{column}")
        finally:
            write(db, table, new_row, column, original)
        assert reader(db).verify_audit(w.wf)[1] is None, f"{table_name}.{column} not restored"
    assert missed_verify == [], f"verify missed {missed_verify}"
    assert missed_read == [], f"the read path served {missed_read}"
    assert missed_view == [], f"the routes' checked views served {missed_view}"
    assert read_detected == len(CASES)
    print(
        f"byte-flip cases: {len(CASES)}; verify found {len(CASES)}; read path refused {read_detected} "
        f"({old_event_served_warm} old-event flips only after verify or in a fresh process)"
    )


async def test_a_forged_decision_is_a_409_tampered_over_http_and_on_the_review_page(
    db: Database, world: World
) -> None:
    w = world
    table = metadata.tables["approval_responses"]
    row = row_of(db, w, "approval_responses")
    write(db, table, row, "modifications", {"n": "FORGED-858"})
    async with w.env.plain() as http:
        for url in (
            f"/api/approvals/{w.modified_request}",
            f"/api/workflows/{w.wf}/audit",
        ):
            r = await http.get(url)
            assert r.status_code in (200, 409), (url, r.status_code, r.text)
            assert "FORGED" not in r.text
        r = await http.get(f"/api/approvals/{w.modified_request}")
        assert r.status_code == 409 and r.json()["detail"]["error"] == "tampered"
        assert r.json()["detail"]["table"] == "approval_responses"
        page = await http.get(f"/approvals/{w.modified_request}")
        assert page.status_code == 409 and "FORGED" not in page.text


async def test_a_forged_ledger_leg_is_a_409_tampered_on_the_ledger_escrow_and_page(
    db: Database, world: World
) -> None:
    """A release leg moved to another account (the legs still sum to zero, so only the chain sees it):
    the ledger API, the platform's escrow answer and the workflow page refuse instead of serving it."""
    w = world
    table = metadata.tables["ledger_legs"]
    row = row_of(db, w, "ledger_legs")
    async with w.env.plain() as http:
        intact = await http.get(f"/api/workflows/{w.wf}/ledger")
        assert intact.status_code == 200, intact.text
        assert (await http.get(f"/x402/escrow/escrow_{w.wf}")).status_code == 200
        forged = write(db, table, row, "account", "wallet:mallory")
        try:
            for url in (f"/api/workflows/{w.wf}/ledger", f"/x402/escrow/escrow_{w.wf}"):
                r = await http.get(url)
                assert r.status_code == 409, (url, r.status_code, r.text)
                detail = r.json()["detail"]
                assert detail["error"] == "tampered" and detail["table"] == "ledger_transactions"
                assert "mallory" not in r.text
            page = await http.get(f"/workflows/{w.wf}")
            assert page.status_code == 409 and "mallory" not in page.text
        finally:
            write(db, table, forged, "account", row["account"])
        assert (await http.get(f"/api/workflows/{w.wf}/ledger")).json() == intact.json()
