"""What the engine owes a remote x402 platform, enqueued beside the local change that causes it.

With the embedded platform (the default) the engine's own rows *are* the platform's: the main job, the
approval sub-jobs, the settlement job and the escrow postings are written by the same transaction as the
state change, and ``EmbeddedPlatform`` reads them. A workflow created by an orchestrator whose
``X402Integration`` is remote carries that platform's URL (``workflows.platform_url``); then each of
those changes also enqueues the seed's platform call (``platform_outbox``), delivered after commit by
``saferun.platform.delivery``. Each call's idempotency key says *what* it is (``lock:<wf>``,
``release:<wf>:<checkpoint>``), so however often it is delivered the platform acts once.

A checkpoint's state goes to the platform's Artifacts primitive as the seed's ``create_artifact`` call
(``artifact_type="checkpoint_state"``, the state as JSON), named by the local artifact URI as
``{"$state": uri}`` and read from the local store when it is sent, so a megabyte of agent memory is never
copied into the outbox itself.

A call that needs an earlier call's answer (the approval sub-job needs the platform's id of the main job,
a release needs the escrow id the lock answered) names it as ``{"$result": key, "field": name}``; the
deliverer sends a workflow's calls in order and substitutes the answer.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping

from saferun.domain.ledger import WALLET_PREFIX, Posting
from saferun.domain.money import format_micro
from saferun.storage import outbox


def _key(kind: str, row: RowMapping, *parts: str) -> str:
    return ":".join((kind, row["workflow_id"], *parts))


def _ref(key: str, field: str) -> dict[str, str]:
    return {"$result": key, "field": field}


def remote(row: RowMapping) -> bool:
    return bool(row.get("platform_url"))


def main_job(conn: Connection, row: RowMapping) -> None:
    if not remote(row):
        return
    outbox.enqueue(
        conn,
        row["workflow_id"],
        "create_job",
        {
            "job_type": "supervised_workflow",
            "job_data": {"workflow_id": row["workflow_id"], "config": row["config"]},
            "escrow_amount": format_micro(row["escrow_micro"]),
            "executor_id": row["executor_id"],
        },
        _key("job", row),
    )


def lock(conn: Connection, row: RowMapping) -> None:
    if not remote(row) or row["escrow_micro"] == 0:
        return
    outbox.enqueue(
        conn,
        row["workflow_id"],
        "lock_escrow",
        {
            "workflow_id": row["workflow_id"],
            "amount": format_micro(row["escrow_micro"]),
            "poster_id": row["poster_id"],
            "executor_id": row["executor_id"],
        },
        _key("lock", row),
    )


def checkpoint_state(
    conn: Connection, row: Any, snapshot_id: str, checkpoint_id: str, artifact_uri: str
) -> None:
    if not remote(row):
        return
    outbox.enqueue(
        conn,
        row["workflow_id"],
        "create_artifact",
        {
            "artifact_type": "checkpoint_state",
            "content": {"$state": artifact_uri},
            "metadata": {
                "workflow_id": row["workflow_id"],
                "checkpoint_id": checkpoint_id,
                "snapshot_id": snapshot_id,
                "saferun_uri": artifact_uri,
            },
        },
        _key("artifact", row, snapshot_id),
    )


def approval_subjob(
    conn: Connection, row: Any, request_id: str, checkpoint_id: str, supervisor_id: str | None, data: Any
) -> None:
    """The seed's approval sub-job. A request nobody is assigned to yet has no supervisor to name, and
    the platform requires one: it is sent when the request is decided, naming the decider."""
    if not remote(row) or supervisor_id is None:
        return
    outbox.enqueue(
        conn,
        row["workflow_id"],
        "create_approval_subjob",
        {
            "parent_job_id": _ref(_key("job", row), "job_id"),
            "checkpoint_id": checkpoint_id,
            "supervisor_id": supervisor_id,
            "approval_data": data,
        },
        _key("approval", row, request_id),
    )


def approval_decided(conn: Connection, row: Any, request_id: str, decision: str, automatic: bool) -> None:
    """The decision, as the approval sub-job's outcome (``completed``, reason ``approved``/``modified``/
    ``rejected``): the platform pays a milestone only for a sub-job its own records show approved
    (``saferun.domain.platform_policy``). Sent after the sub-job itself, before the release."""
    if not remote(row):
        return
    outbox.enqueue(
        conn,
        row["workflow_id"],
        "update_job_status",
        {
            "job_id": _ref(_key("approval", row, request_id), "job_id"),
            "status": "completed",
            "reason": decision.lower() + (" (automatic)" if automatic else ""),
        },
        _key("decided", row, request_id),
    )


def main_job_ended(conn: Connection, row: RowMapping, status: str, reason: str) -> None:
    """The main job's end (``completed``/``failed``), sent before any refund: the platform returns escrow
    to its payer only for a workflow its records show ended (settle, fail or cancel)."""
    if not remote(row):
        return
    outbox.enqueue(
        conn,
        row["workflow_id"],
        "update_job_status",
        {"job_id": _ref(_key("job", row), "job_id"), "status": status, "reason": reason[:2000]},
        _key("ended", row),
    )


def release(conn: Connection, row: RowMapping, checkpoint_id: str, posting: Posting) -> None:
    """One approved milestone, paid on the platform as the same executor/supervisor split."""
    if not remote(row):
        return
    total = sum(leg.amount for leg in posting.legs if leg.amount > 0)
    splits = []
    for leg in posting.legs:
        if leg.amount <= 0:
            continue
        party = leg.account.removeprefix(WALLET_PREFIX)
        reason = "execution" if party == row["executor_id"] else "supervision"
        splits.append({"recipient_id": party, "amount": format_micro(leg.amount), "reason": reason})
    outbox.enqueue(
        conn,
        row["workflow_id"],
        "split_payment",
        {
            "escrow_id": _ref(_key("lock", row), "escrow_id"),
            "splits": splits,
            "total": format_micro(total),
        },
        _key("release", row, checkpoint_id),
    )


def refund(conn: Connection, row: RowMapping, amount: int, reason: str) -> None:
    """What the escrow still held goes back to the poster (the seed has no refund call: a release to
    the poster is one)."""
    if not remote(row) or amount <= 0:
        return
    outbox.enqueue(
        conn,
        row["workflow_id"],
        "release_escrow",
        {
            "escrow_id": _ref(_key("lock", row), "escrow_id"),
            "amount": format_micro(amount),
            "recipient_id": row["poster_id"],
            "reason": f"refund: {reason}"[:200],
        },
        _key("refund", row),
    )


def settlement_job(conn: Connection, row: RowMapping, data: dict[str, Any]) -> None:
    if not remote(row):
        return
    outbox.enqueue(
        conn,
        row["workflow_id"],
        "create_job",
        {
            "job_type": "settlement",
            "job_data": {**data, "parent_job_id": _ref(_key("job", row), "job_id")},
            "escrow_amount": "0",
            "executor_id": row["executor_id"],
        },
        _key("settlement", row),
    )


def approval_quality(conn: Connection, row: RowMapping, supervisor_id: str, score: float) -> None:
    if not remote(row):
        return
    outbox.enqueue(
        conn,
        row["workflow_id"],
        "record_approval_quality",
        {"supervisor_id": supervisor_id, "workflow_id": row["workflow_id"], "quality_score": score},
        _key("quality", row),
    )
