"""The platform's own records of a workflow, read for the rules of ``saferun.domain.platform_policy``.

Everything the ``/x402`` API checks comes from this server's tables, never from a request body: a
workflow the engine runs (``workflows``, its platform in ``config.platform_id``), or one known through
platform jobs (its main job's terms and owner, its approval sub-jobs' outcomes), what its escrow paid
(``ledger``) and who locked it. Called inside the transaction that then moves the money, so the check and
the movement see the same rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping, delete, insert, select

from saferun.domain import ledger as rules
from saferun.domain.platform_policy import ENDED_STATUSES, Approval, Terms, outcome_of, terms_from_job
from saferun.storage import jobs as job_store
from saferun.storage import ledger as book
from saferun.storage.schema import platform_artifacts, platform_grants, utcnow, workflows

OWNER_FIELD = "platform_id"  # in a platform job's data: the platform identity that created it


def workflow_terms(conn: Connection, workflow_id: str) -> Terms | None:
    """What this server knows of ``workflow_id`` (None: nothing, an unknown id)."""
    row = conn.execute(select(workflows).where(workflows.c.workflow_id == workflow_id)).mappings().first()
    if row is not None:
        config = row["config"] or {}
        return Terms(
            workflow_id=workflow_id,
            platform_id=config.get("platform_id"),
            engine=True,
            poster_id=row["poster_id"],
            executor_id=row["executor_id"],
            escrow_micro=int(row["escrow_micro"]),
        )
    found = job_store.for_workflow(conn, workflow_id)
    main = next((j for j in found if j["parent_job_id"] is None and j["job_type"] != "settlement"), None)
    if main is None:
        return None
    data: dict[str, Any] = dict(main["data"] or {})
    approvals = []
    for job in found:
        if job["job_type"] != "approval":
            continue
        events = job_store.history(conn, job["job_id"])
        reason = events[-1]["reason"] if events else ""
        outcome, automatic = outcome_of(job["status"], reason or "")
        sub = job["data"] or {}
        approvals.append(
            Approval(str(sub.get("checkpoint_id", "")), sub.get("supervisor_id"), outcome, automatic)
        )
    return terms_from_job(
        workflow_id, data.get(OWNER_FIELD), data, approvals, main["status"] in ENDED_STATUSES
    )


def job_owner(conn: Connection, job: RowMapping) -> tuple[str | None, Terms | None]:
    """``(platform, terms)`` of a job: its workflow's platform, or (a job with no workflow) the platform
    that created the job it descends from."""
    if job["workflow_id"] is not None:
        terms = workflow_terms(conn, job["workflow_id"])
        return (terms.platform_id if terms is not None else None), terms
    root = job
    seen = {root["job_id"]}
    while root["parent_job_id"] is not None and root["parent_job_id"] not in seen:
        root = job_store.get(conn, root["parent_job_id"])
        seen.add(root["job_id"])
    return (root["data"] or {}).get(OWNER_FIELD), None


def escrow_paid(conn: Connection, workflow_id: str) -> tuple[dict[str, int], str | None]:
    """``(what each party's wallet received from the escrow, the party whose funding locked it)``."""
    paid = {
        account[len(rules.WALLET_PREFIX) :]: amount
        for account, amount in book.payments(conn, workflow_id).items()
        if account.startswith(rules.WALLET_PREFIX)
    }
    source = book.lock_source(conn, workflow_id)
    payer = (
        source[len(rules.FUNDING_PREFIX) :]
        if source is not None and source.startswith(rules.FUNDING_PREFIX)
        else None
    )
    return paid, payer


def hold_artifact(conn: Connection, uri: str, platform_id: str) -> None:
    """Record that ``platform_id`` stored ``uri`` (once; a repeat changes nothing)."""
    held = select(platform_artifacts.c.uri).where(
        platform_artifacts.c.uri == uri, platform_artifacts.c.platform_id == platform_id
    )
    if conn.execute(held).first() is None:
        conn.execute(
            insert(platform_artifacts), {"uri": uri, "platform_id": platform_id, "created_at": utcnow()}
        )


def holds_artifact(conn: Connection, uri: str, platform_id: str) -> bool:
    query = select(platform_artifacts.c.uri).where(
        platform_artifacts.c.uri == uri, platform_artifacts.c.platform_id == platform_id
    )
    return conn.execute(query).first() is not None


# --- which platforms a poster lets draw on its funding (saferun.domain.platform_policy.check_poster_grant)


def grants_of(conn: Connection, poster_id: str) -> set[str]:
    """The platform identities ``poster_id`` allowed to lock escrow from its funding account."""
    query = select(platform_grants.c.platform_id).where(platform_grants.c.poster_id == poster_id)
    return {r[0] for r in conn.execute(query)}


def grant(conn: Connection, poster_id: str, platform_id: str, granted_by: str) -> bool:
    """Allow ``platform_id``; False when it already was (nothing changes)."""
    if platform_id in grants_of(conn, poster_id):
        return False
    conn.execute(
        insert(platform_grants),
        {
            "poster_id": poster_id,
            "platform_id": platform_id,
            "granted_by": granted_by,
            "created_at": utcnow(),
        },
    )
    return True


def revoke(conn: Connection, poster_id: str, platform_id: str) -> bool:
    """Stop ``platform_id`` (escrow it already locked stays where it is); False when it was not allowed."""
    result = conn.execute(
        delete(platform_grants).where(
            platform_grants.c.poster_id == poster_id, platform_grants.c.platform_id == platform_id
        )
    )
    return bool(result.rowcount)
