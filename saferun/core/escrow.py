"""Escrow movements of a workflow, each posted and audited in the caller's transaction.

Idempotency keys are derived from what the movement is (``release:<wf>:<checkpoint>``), not from when it
happens, so a retried or replayed decision can never pay a milestone twice.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from sqlalchemy import Connection, RowMapping

from saferun.core import mirror, parties, transitions
from saferun.domain import ledger as rules
from saferun.domain.money import format_micro
from saferun.domain.states import Event
from saferun.errors import Conflict
from saferun.storage import audit, jobs
from saferun.storage import ledger as book
from saferun.storage.schema import utcnow


def lock(conn: Connection, row: RowMapping, actor: str) -> None:
    amount = row["escrow_micro"]
    if amount == 0:
        return
    wf = row["workflow_id"]
    txn = book.post(
        conn,
        rules.lock(wf, row["poster_id"], amount),
        idempotency_key=f"lock:{wf}",
        workflow_id=wf,
        field="escrow_amount",
    )
    mirror.lock(conn, row)
    audit.append(
        conn,
        wf,
        "escrow_locked",
        actor,
        {
            "amount": format_micro(amount),
            "txn_id": txn,
            "escrow_id": row["escrow_id"],
            "posting_sha256": book.digest(conn, txn),
        },
    )


def milestone_amounts(row: RowMapping) -> dict[str, int]:
    cps = row["config"]["checkpoints"]
    weights = tuple(str(cp.get("milestone_weight", 1)) for cp in cps)
    amounts = _allocation(row["escrow_micro"], weights) if row["escrow_micro"] else (0,) * len(cps)
    return {cp["checkpoint_id"]: amt for cp, amt in zip(cps, amounts, strict=True)}


@lru_cache(maxsize=1024)
def _allocation(total: int, weights: tuple[str, ...]) -> tuple[int, ...]:
    """``allocate`` is exact (fractions) and O(checkpoints); a workflow asks for the same split at every
    release, so it is computed once per (escrow, weights)."""
    return tuple(rules.allocate(total, [Decimal(w) for w in weights]))


def release_milestone(
    conn: Connection, row: RowMapping, checkpoint_id: str, supervisor_id: str | None, actor: str
) -> int:
    """Pay one milestone (90/10 by default); returns the amount, 0 when it was already paid or is empty."""
    amount = milestone_amounts(row).get(checkpoint_id, 0)
    wf = row["workflow_id"]
    key = f"release:{wf}:{checkpoint_id}"
    if amount == 0 or book.exists(conn, key):
        return 0
    share = Decimal(str(row["config"].get("executor_share", "0.9")))
    posting = rules.release(wf, amount, row["executor_id"], supervisor_id, share)
    txn = book.post(conn, posting, idempotency_key=key, workflow_id=wf)
    mirror.release(conn, row, checkpoint_id, posting)
    audit.append(
        conn,
        wf,
        "milestone_released",
        actor,
        {
            "checkpoint_id": checkpoint_id,
            "amount": format_micro(amount),
            "txn_id": txn,
            "posting_sha256": book.digest(conn, txn),
            "legs": {leg.account: format_micro(leg.amount) for leg in posting.legs if leg.amount > 0},
        },
    )
    return amount


def refund_held(
    conn: Connection, row: RowMapping, reason: str, actor: str, *, outcome: str = "failed"
) -> int:
    """Return what the escrow still holds to where it came from (settlement and failure both end here).

    That is the poster's funding account, or for an escrow paid with x402 the payer's
    (``funding:x402-<address>``): money goes back to the account that paid it, never to one that did not.
    A remote platform first hears that the workflow ended (``outcome``): it refunds only an ended one.
    """
    mirror.main_job_ended(conn, row, outcome, reason)
    wf = row["workflow_id"]
    held = book.escrow_position(conn, wf).held
    if held <= 0:
        return 0
    source = book.lock_source(conn, wf)
    party = (
        source[len(rules.FUNDING_PREFIX) :]
        if source is not None and source.startswith(rules.FUNDING_PREFIX)
        else row["poster_id"]
    )
    txn = book.post(conn, rules.refund(wf, party, held), idempotency_key=f"refund:{wf}", workflow_id=wf)
    mirror.refund(conn, row, held, reason)
    audit.append(
        conn,
        wf,
        "escrow_refunded",
        actor,
        {
            "amount": format_micro(held),
            "reason": reason,
            "txn_id": txn,
            "posting_sha256": book.digest(conn, txn),
        },
    )
    return held


def close_failed(conn: Connection, row: RowMapping, event: Event, message: str, actor: str) -> None:
    """Every way into FAILED ends the same: state, error recorded, unearned escrow back, job closed."""
    transitions.apply(
        conn, row, event, actor=actor, reason=message, error_message=message, completed_at=utcnow()
    )
    refund_held(conn, row, message, actor)
    close_jobs(conn, row, "failed", message)
    parties.record_quality(conn, row, actor)


def require_funded(conn: Connection, row: RowMapping) -> None:
    """A workflow funded through x402 cannot start before its escrow holds the full amount."""
    if row["config"].get("funding") != "x402" or row["escrow_micro"] == 0:
        return
    locked = book.escrow_position(conn, row["workflow_id"]).locked
    if locked < row["escrow_micro"]:
        raise Conflict(
            f"workflow {row['workflow_id']!r} waits for its escrow of {format_micro(row['escrow_micro'])}: "
            f"fund it first (POST /api/workflows/{row['workflow_id']}/escrow/fund with an x402 payment)",
            workflow_id=row["workflow_id"],
            reason="escrow_not_funded",
        )


def close_jobs(conn: Connection, row: RowMapping, status: str, reason: str) -> None:
    """End the workflow's main job and record its settlement job (the seed's third kind of job).

    The settlement job carries where every unit of the escrow went, read back from the ledger rather
    than recomputed, so it can never disagree with the money that actually moved.
    """
    if not row["job_id"]:
        return
    wf = row["workflow_id"]
    position = book.escrow_position(conn, wf)
    data = {
        "workflow_id": wf,
        "outcome": status,
        "locked": format_micro(position.locked),
        "released": format_micro(position.released),
        "refunded": format_micro(position.refunded),
        "held": format_micro(position.held),
        "payments": {account: format_micro(amount) for account, amount in book.payments(conn, wf).items()},
    }
    jobs.create(
        conn,
        job_type="settlement",
        workflow_id=wf,
        parent_job_id=row["job_id"],
        status="completed",
        data=data,
    )
    jobs.set_status(conn, row["job_id"], status, reason)
    mirror.settlement_job(conn, row, data)
