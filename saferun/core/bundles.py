"""Signed, self-contained decision records: `saferun export` writes one, `saferun verify` checks it.

A bundle carries a workflow's rows exactly as stored (the workflow, its transitions, snapshots,
approval requests and decisions, saga steps, x402 payments, ledger postings with their legs, the whole
audit chain, and every blob its checkpoint artifacts need), a summary for people (each decision with
its digest, approver and time; every ledger movement; the chain's anchor), and an Ed25519 signature
over all of it by the server's key (``saferun.core.signing``).

Why rows rather than a report: verification then reuses the code the server trusts. ``verify_bundle``
loads the rows into a scratch SQLite store and runs the same ``audit verify`` (chain, anchor, every bound
row, every posting) and the same verified artifact reads; nothing is checked by a second, weaker
implementation. The file is canonical JSON, and a bundle whose bytes are not exactly the canonical
encoding of what it parses to is refused, so no flipped byte can hide in whitespace or escapes.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, LargeBinary, Table, select

from saferun.core.signing import ALGORITHM, KeyRing, PublicKey
from saferun.domain.canonical import canonical_bytes, canonical_loads
from saferun.errors import ArtifactCorrupted, AuditChainBroken, NotFound, SafeRunError, WorkflowNotFound
from saferun.storage import audit
from saferun.storage.artifacts import ArtifactStore
from saferun.storage.database import Database
from saferun.storage.schema import (
    UTCDateTime,
    approval_requests,
    approval_responses,
    artifacts,
    audit_events,
    blobs,
    identities,
    ledger_legs,
    ledger_transactions,
    saga_steps,
    snapshots,
    transitions,
    workflows,
    x402_payments,
)

FORMAT = "saferun-bundle/1"

# Insert order for verification (parents before children); every table a bundle carries.
TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        workflows,
        transitions,
        snapshots,
        approval_requests,
        approval_responses,
        saga_steps,
        x402_payments,
        ledger_transactions,
        ledger_legs,
        audit_events,
        artifacts,
        blobs,
    )
}
_BY_WORKFLOW = (
    "transitions",
    "snapshots",
    "approval_requests",
    "approval_responses",
    "saga_steps",
    "x402_payments",
)


class BundleError(SafeRunError):
    """A bundle that cannot be trusted; ``message`` names the first problem found."""


@dataclass
class BundleReport:
    """What ``verify_bundle`` checked."""

    workflow_id: str
    key_id: str
    events: int
    decisions: int
    postings: int
    artifacts: int
    summary: dict[str, Any] = field(default_factory=dict)


# -- export -----------------------------------------------------------------------------------------------


def export_bundle(db: Database, keys: KeyRing, workflow_id: str, *, now: datetime | None = None) -> bytes:
    """The signed bundle of ``workflow_id`` (``NotFound`` for an unknown one). Read in one transaction, so
    the rows are one consistent picture even while the workflow moves on."""
    signer = keys.signer()
    store = ArtifactStore(cache_bytes=0)
    with db.transaction() as conn:
        wf = conn.execute(select(workflows).where(workflows.c.workflow_id == workflow_id)).mappings().first()
        if wf is None:
            raise WorkflowNotFound(workflow_id)
        # the server never signs a record that does not verify where it stands
        _, broken = audit.verify(conn, workflow_id)
        if broken is not None:
            raise AuditChainBroken(workflow_id, broken.seq, broken.reason)
        rows: dict[str, list[dict[str, Any]]] = {"workflows": [dict(wf)]}
        for name in _BY_WORKFLOW:
            table = TABLES[name]
            order = [c for c in (table.c.get("created_at"), *table.primary_key.columns) if c is not None]
            query = select(table).where(table.c.workflow_id == workflow_id).order_by(*order)
            rows[name] = [dict(r) for r in conn.execute(query).mappings()]
        rows["audit_events"] = audit.raw_events(conn, workflow_id)
        txn_ids = _posting_ids(conn, workflow_id, rows)
        rows["ledger_transactions"] = [
            dict(r)
            for r in conn.execute(
                select(ledger_transactions)
                .where(ledger_transactions.c.txn_id.in_(txn_ids))
                .order_by(ledger_transactions.c.txn_id)
            ).mappings()
        ]
        rows["ledger_legs"] = [
            dict(r)
            for r in conn.execute(
                select(ledger_legs).where(ledger_legs.c.txn_id.in_(txn_ids)).order_by(ledger_legs.c.id)
            ).mappings()
        ]
        uris = sorted({s["artifact_uri"] for s in rows["snapshots"] if s.get("artifact_uri")})
        keys_needed: set[str] = set()
        for uri in uris:
            keys_needed |= store.closure(conn, uri)
        rows["artifacts"] = [
            dict(r)
            for r in conn.execute(
                select(artifacts).where(artifacts.c.uri.in_(uris)).order_by(artifacts.c.uri)
            ).mappings()
        ]
        rows["blobs"] = [
            dict(r)
            for r in conn.execute(
                select(blobs).where(blobs.c.sha256.in_(sorted(keys_needed))).order_by(blobs.c.sha256)
            ).mappings()
        ]
        parties = _parties(conn, rows)
    encoded = {name: [_encode_row(TABLES[name], r) for r in items] for name, items in rows.items()}
    body = {
        "format": FORMAT,
        "workflow_id": workflow_id,
        "exported_at": (now or datetime.now().astimezone()).isoformat(),
        "parties": parties,
        "summary": summarize(encoded),
        "tables": encoded,
    }
    message = canonical_bytes(body)
    signature = {
        "algorithm": ALGORITHM,
        "key_id": signer.key_id,
        "public_key": signer.public_key.hex(),
        "value": base64.b64encode(signer.sign(message)).decode(),
    }
    return canonical_bytes({"body": body, "signature": signature})


def _posting_ids(conn: Connection, workflow_id: str, rows: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    """The workflow's postings, the x402 payments' funding postings, and any posting its events bound."""
    ids = set(
        conn.execute(
            select(ledger_transactions.c.txn_id).where(ledger_transactions.c.workflow_id == workflow_id)
        ).scalars()
    )
    ids |= {p["ledger_txn_id"] for p in rows["x402_payments"] if p.get("ledger_txn_id")}
    for ev in rows["audit_events"]:
        payload = canonical_loads(ev["payload"])
        if isinstance(payload, dict) and isinstance(payload.get("txn_id"), str):
            ids.add(payload["txn_id"])
    return sorted(ids)


def _parties(conn: Connection, rows: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Who the poster, executor, supervisor and approvers are (public fields only: never a key)."""
    wf = rows["workflows"][0]
    ids = {wf["poster_id"], wf["executor_id"], wf.get("supervisor_id")}
    ids |= {r["approved_by"] for r in rows["approval_responses"]}
    ids.discard(None)
    found = {
        r.identity_id: r
        for r in conn.execute(select(identities).where(identities.c.identity_id.in_(sorted(ids))))
    }
    return [
        {
            "identity_id": i,
            "display_name": found[i].display_name if i in found else None,
            "roles": list(found[i].roles) if i in found else [],
            "registered": i in found,
        }
        for i in sorted(ids)
    ]


def summarize(tables: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The human-readable part of a bundle, derived from its rows only (so a verifier recomputes it and
    a summary that disagrees with the rows it stands for is refused)."""
    events = tables.get("audit_events", [])
    digests: dict[str, str] = {}
    for ev in events:
        payload = canonical_loads(ev["payload"]) if isinstance(ev.get("payload"), str) else {}
        if ev.get("kind") == "decision" and isinstance(payload, dict) and payload.get("response_sha256"):
            digests[str(payload.get("request_id"))] = payload["response_sha256"]
    requests = {r["request_id"]: r for r in tables.get("approval_requests", [])}
    decisions = [
        {
            "request_id": r["request_id"],
            "checkpoint_id": requests.get(r["request_id"], {}).get("checkpoint_id"),
            "decision": r["decision"],
            "approved_by": r["approved_by"],
            "decided_at": r.get("created_at"),
            "automatic": r.get("automatic"),
            "rationale": r.get("rationale"),
            "response_sha256": digests.get(r["request_id"]),
        }
        for r in tables.get("approval_responses", [])
    ]
    legs: dict[str, list[dict[str, Any]]] = {}
    for leg in tables.get("ledger_legs", []):
        legs.setdefault(leg["txn_id"], []).append(
            {"account": leg["account"], "amount_micro": leg["amount_micro"]}
        )
    ledger = [
        {"txn_id": t["txn_id"], "kind": t["kind"], "at": t["created_at"], "legs": legs.get(t["txn_id"], [])}
        for t in tables.get("ledger_transactions", [])
    ]
    wf = (tables.get("workflows") or [{}])[0]
    return {
        "workflow": {
            k: wf.get(k)
            for k in ("workflow_id", "name", "state", "poster_id", "executor_id", "supervisor_id")
        },
        "audit": {
            "events": len(events),
            "first_hash": events[0]["hash"] if events else None,
            "head_hash": events[-1]["hash"] if events else None,
            "anchor_seq": wf.get("audit_seq"),
            "anchor_hash": wf.get("audit_head"),
        },
        "decisions": decisions,
        "ledger": ledger,
        "artifacts": [a["uri"] for a in tables.get("artifacts", [])],
    }


# -- verify -----------------------------------------------------------------------------------------------


def verify_bundle(data: bytes, trusted: Mapping[str, PublicKey]) -> BundleReport:
    """Check a bundle offline against ``trusted`` public keys; ``BundleError`` names the first problem."""
    try:
        doc = canonical_loads(data)
    except SafeRunError:
        raise BundleError("not a SafeRun bundle: the file is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"body", "signature"}:
        raise BundleError("not a SafeRun bundle: expected exactly 'body' and 'signature'")
    try:
        canonical = canonical_bytes(doc)
    except SafeRunError as exc:
        raise BundleError(f"not a SafeRun bundle: {exc}") from None
    if canonical != data:
        raise BundleError(
            "the bundle's bytes were altered: they are not the canonical encoding of its content"
        )
    body, sig = doc["body"], doc["signature"]
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise BundleError(
            f"not a {FORMAT} bundle (format {body.get('format') if isinstance(body, dict) else None!r})"
        )
    if not isinstance(sig, dict) or sig.get("algorithm") != ALGORITHM:
        raise BundleError(f"the signature is not {ALGORITHM}")
    key_id = sig.get("key_id")
    key = trusted.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        raise BundleError(f"signed by an unknown key {key_id!r}: not among the {len(trusted)} trusted key(s)")
    if sig.get("public_key") != key.public_key.hex():
        raise BundleError(f"the signature's public key is not key {key_id}'s")
    try:
        signature = base64.b64decode(sig.get("value", ""), validate=True)
    except (ValueError, TypeError):
        raise BundleError("the signature is not base64") from None
    if not key.verify(signature, canonical_bytes(body)):
        raise BundleError(f"the signature does not match the bundle's content (key {key_id})")
    tables = body.get("tables")
    if not isinstance(tables, dict) or set(tables) != set(TABLES):
        raise BundleError(f"the bundle must carry exactly the tables {sorted(TABLES)}")
    if body.get("summary") != summarize(tables):
        raise BundleError("the summary does not match the rows it summarises")
    workflow_id = body.get("workflow_id")
    if [w.get("workflow_id") for w in tables["workflows"]] != [workflow_id]:
        raise BundleError(f"the bundle must hold exactly workflow {workflow_id!r}")
    with tempfile.TemporaryDirectory(prefix="saferun-verify-") as scratch:
        db = Database(f"sqlite:///{Path(scratch) / 'bundle.db'}")
        try:
            return _check_rows(db, workflow_id, key_id, tables, body["summary"])
        finally:
            db.dispose()


def _check_rows(
    db: Database, workflow_id: str, key_id: str, tables: Mapping[str, list[Any]], summary: dict[str, Any]
) -> BundleReport:
    store = ArtifactStore(cache_bytes=0)
    with db.transaction() as conn:
        # the scratch store holds the bundle's rows exactly: its own triggers must not add the rows a live
        # store derives from them (revision 0024: sub-jobs, notices, transitions; the bundle carries its
        # transitions as they were stored, and no jobs)
        derived = conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'derived%'"
        ).scalars()
        for trigger in list(derived):
            conn.exec_driver_sql(f'DROP TRIGGER "{trigger}"')
        for name, table in TABLES.items():
            items = tables[name]
            if not isinstance(items, list) or not all(isinstance(r, dict) for r in items):
                raise BundleError(f"table {name} is not a list of rows")
            if items:
                try:
                    conn.execute(table.insert(), [_decode_row(table, r) for r in items])
                except (ValueError, TypeError, KeyError) as exc:
                    raise BundleError(f"table {name} holds a malformed row: {exc}") from None
                except Exception as exc:  # a constraint the rows break: duplicate keys, missing parents
                    raise BundleError(
                        f"table {name}'s rows do not fit SafeRun's schema: {type(exc).__name__}"
                    ) from None
        count, broken = audit.verify(conn, workflow_id)
        if broken is not None:
            raise BundleError(f"audit chain broken at event {broken.seq}: {broken.reason}")
        uris = sorted({s["artifact_uri"] for s in tables["snapshots"] if s.get("artifact_uri")})
        for uri in uris:
            try:
                store.get(conn, uri)
            except (ArtifactCorrupted, NotFound) as exc:
                raise BundleError(f"artifact {uri} does not verify: {exc.message}") from None
    return BundleReport(
        workflow_id=workflow_id,
        key_id=key_id,
        events=count,
        decisions=len(tables["approval_responses"]),
        postings=len(tables["ledger_transactions"]),
        artifacts=len(uris),
        summary=summary,
    )


def _encode_row(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in table.columns:
        value = row.get(str(column.name))
        if value is None:
            out[str(column.name)] = None
        elif isinstance(column.type, UTCDateTime):
            out[str(column.name)] = value.isoformat()
        elif _is_binary(column.type):
            out[str(column.name)] = base64.b64encode(bytes(value)).decode()
        else:
            out[str(column.name)] = value
    return out


def _decode_row(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(row) - {c.name for c in table.columns}
    if unknown:
        raise ValueError(f"unknown columns {sorted(unknown)}")
    out: dict[str, Any] = {}
    for column in table.columns:
        value = row.get(str(column.name))
        if value is None:
            out[str(column.name)] = None
        elif isinstance(column.type, UTCDateTime):
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise ValueError(f"{column.name}: a timestamp without its time zone")
            out[str(column.name)] = parsed
        elif _is_binary(column.type):
            out[str(column.name)] = base64.b64decode(value, validate=True)
        else:
            out[str(column.name)] = value
    return out


def _is_binary(type_: Any) -> bool:
    return isinstance(type_, LargeBinary) or isinstance(getattr(type_, "impl", None), LargeBinary)
