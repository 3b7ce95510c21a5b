"""Gathering a request's review digest from the database, and refusing a decision made on an old one.

The digest itself is pure (``saferun.domain.review_digest``); this module reads its inputs: the request
row (parameters, schema, alerts), its snapshot's artifact URI, the saga steps a rejection would undo and
the approval policy in force. ``check`` runs inside the deciding transaction, after the workflow lock, so
an alert added or a checkpoint opened concurrently is either seen by it (the decision is refused as stale)
or comes after the decision (and finds the request closed): never a decision on content nobody saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from saferun.core.policy_gate import PolicyGate
from saferun.domain import review_digest as rd
from saferun.errors import InvalidInput, SafeRunError, StaleReview
from saferun.storage import approvals, saga, snapshots

# versions rebuilt to name what changed behind a stale digest (each is one hash of small JSON)
MAX_VERSIONS = 500


@dataclass(frozen=True)
class ReviewCheck:
    """What a human decision brings: the digest the reviewer's page showed (None: not checked, as the
    seed's API and library calls) and the policy in force now."""

    seen: str | None
    policy: dict[str, Any] | None


def policy_of(gate: PolicyGate) -> dict[str, Any] | None:
    """The active policy's name and version; a policy file that does not load is part of what the
    reviewer sees too (the next checkpoint fails on it), so it is named rather than ignored."""
    if not gate.active:
        return None
    try:
        policy = gate.policy()
    except SafeRunError:
        return {"name": None, "version": None, "unloadable": True}
    return rd.policy_ref(policy.name, policy.version) if policy is not None else None


def current(conn: Connection, req: Mapping[str, Any], policy: dict[str, Any] | None) -> rd.Review:
    """The digest of the request as it is now (meaningful while it is pending)."""
    uri = snapshots.get(conn, req["snapshot_id"])["artifact_uri"]
    return _version(uri, req, req["alerts"] or [], policy, _undo(conn, req["workflow_id"]))


def _undo(conn: Connection, workflow_id: str) -> list[dict[str, Any]]:
    # newest first: the order a rollback compensates them in
    return [rd.undo_item(s) for s in saga.to_compensate(conn, workflow_id)]


def _version(
    artifact_uri: str,
    req: Mapping[str, Any],
    alerts: list[Any],
    policy: dict[str, Any] | None,
    undo: list[dict[str, Any]],
) -> rd.Review:
    return rd.review(
        artifact_uri=artifact_uri,
        parameters=req["parameters"],
        parameter_schema=req["parameter_schema"],
        policy=policy,
        alerts=alerts,
        pending_undo=undo,
        quorum=req.get("quorum"),
    )


def check(conn: Connection, req: Mapping[str, Any], reviewed: ReviewCheck) -> str:
    """The digest to record with a decision on ``req`` (read under the workflow lock): the reviewer's,
    which must equal the current one, else ``StaleReview`` naming what changed."""
    now = current(conn, req, reviewed.policy)
    if reviewed.seen is None or reviewed.seen == now.digest:
        return now.digest
    if not rd.well_formed(reviewed.seen):
        raise InvalidInput("review_digest", "expected 'sha256:' and 64 lowercase hex digits")
    seen = _find(conn, req, reviewed.seen, reviewed.policy, now)
    raise StaleReview(
        req["request_id"], reviewed.seen, now.digest, rd.changed_fields(seen, now) if seen else None
    )


def _find(
    conn: Connection, req: Mapping[str, Any], digest: str, policy: dict[str, Any] | None, now: rd.Review
) -> rd.Review | None:
    """The version of this request (or of an earlier request of its workflow) the digest was taken over.

    Alerts are only ever appended while a request is pending, so its earlier versions are the prefixes of
    its alert list; an earlier request is what a reviewer saw before the agent checkpointed again. The
    policy may have been switched on or off since, and the steps to undo are those of the time of the
    earlier request or of now; those variants are tried too. None when nothing matches.
    """
    undo = list(now.fields["pending_undo"])
    policies = [policy] if policy is None else [policy, None]
    tried = 0
    for other in reversed(approvals.for_workflow(conn, req["workflow_id"])):
        alerts = list(other["alerts"] or [])
        uri = snapshots.get(conn, other["snapshot_id"])["artifact_uri"]
        for k in range(len(alerts), -1, -1):
            for pol in policies:
                for steps in (undo, []):
                    tried += 1
                    if tried > MAX_VERSIONS:
                        return None
                    version = _version(uri, other, alerts[:k], pol, steps)
                    if version.digest == digest:
                        return version
    return None
