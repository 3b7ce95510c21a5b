"""Approval requests and responses. ``claim`` is the one place a request stops being pending.

Exactly-once decisions rest on a single conditional UPDATE: ``pending -> decided|expired`` succeeds for
one caller only, whichever process or replica it runs in; everyone else sees ``rowcount == 0`` and gets a
conflict. The response row has a unique ``request_id`` as a second guard.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    Select,
    bindparam,
    func,
    insert,
    select,
    update,
)

from saferun.domain.recommendation import risk_level
from saferun.errors import ApprovalRequestNotFound, InvalidInput
from saferun.storage import audit
from saferun.storage.database import raw_fetchone
from saferun.storage.schema import (
    approval_requests,
    approval_responses,
    identities,
    utcnow,
    workflows,
)
from saferun.storage.snapshots import passed_before

_GET = select(approval_requests).where(approval_requests.c.request_id == bindparam("b_req"))
_CLAIM = update(approval_requests).where(
    approval_requests.c.request_id == bindparam("b_req"), approval_requests.c.status == "pending"
)
_CLAIM_UNEXPIRED = _CLAIM.where(approval_requests.c.expires_at > bindparam("b_now"))
_INSERT_REQUEST = insert(approval_requests)
_INSERT_RESPONSE = insert(approval_responses)
_RESPONSE = select(approval_responses).where(approval_responses.c.request_id == bindparam("b_req"))


def insert_request(conn: Connection, **values: Any) -> None:
    """Insert a pending request; its ``risk_level`` column is derived here from ``risk`` (the queue's
    risk filter reads the column, so it is set by the same rule wherever a request is written)."""
    conn.execute(_INSERT_REQUEST, {"status": "pending", "risk_level": level_of(values.get("risk")), **values})


def level_of(risk: Any) -> str | None:
    """The risk level stored beside a request's ``risk`` (None when it names none, or names it badly:
    the engine refuses an out-of-range score before it gets here)."""
    try:
        return risk_level(risk if isinstance(risk, dict) else None)
    except InvalidInput:
        return None


def get(conn: Connection, request_id: str) -> RowMapping:
    row = conn.execute(_GET, {"b_req": request_id}).mappings().first()
    if row is None:
        raise ApprovalRequestNotFound(request_id)
    return row


_EXECUTOR = identities.alias("x_executor")
_APPROVER = identities.alias("x_approver")
_REQUEST_COLUMNS = tuple(c.name for c in approval_requests.c)
_WORKFLOW_COLUMNS = tuple(c.name for c in workflows.c)
_FOR_DECISION = (
    select(
        *(c.label(f"r_{c.name}") for c in approval_requests.c),
        *workflows.c,
        _EXECUTOR.c.identity_id.label("x_executor_id"),
        _EXECUTOR.c.roles.label("x_executor_roles"),
        _EXECUTOR.c.disabled.label("x_executor_disabled"),
        _APPROVER.c.identity_id.label("x_approver_id"),
        _APPROVER.c.roles.label("x_approver_roles"),
        _APPROVER.c.disabled.label("x_approver_disabled"),
    )
    .select_from(
        approval_requests.join(workflows, workflows.c.workflow_id == approval_requests.c.workflow_id)
        .outerjoin(_EXECUTOR, _EXECUTOR.c.identity_id == workflows.c.executor_id)
        .outerjoin(_APPROVER, _APPROVER.c.identity_id == bindparam("b_who"))
    )
    .where(approval_requests.c.request_id == bindparam("b_req"))
)
_FOR_DECISION_PG = _FOR_DECISION.with_for_update(of=workflows)
# Whether another snapshot of the request's checkpoint passed before (its milestone was paid), asked in a
# statement the decision runs anyway, once no other writer of the workflow can commit: on SQLite the first
# read (BEGIN IMMEDIATE serialized the writers), on PostgreSQL the request's re-read once the lock is held
# (the first statement is evaluated before it waits for the lock, so a decision committed meanwhile would
# be missed).
_PASSED_BEFORE = passed_before(
    approval_requests.c.workflow_id, approval_requests.c.checkpoint_id, approval_requests.c.snapshot_id
).label("x_passed_before")
_FOR_DECISION_SQLITE = _FOR_DECISION.add_columns(_PASSED_BEFORE)
_GET_UNDER_LOCK = select(approval_requests, _PASSED_BEFORE).where(
    approval_requests.c.request_id == bindparam("b_req")
)


def get_for_decision(
    conn: Connection, request_id: str, approver: str
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """What a decision reads before it writes, in one statement: the request, the would-be decider's
    identity (None: not registered) and the request's workflow row under the workflow's lock, as
    ``workflows.get_locked`` gives it (with the executor's identity; the audit chain of this transaction
    starts from its anchor). ``SELECT … FOR UPDATE OF workflows`` on PostgreSQL, where the request part
    may be older than the lock (the caller re-reads it under the lock); on SQLite ``BEGIN IMMEDIATE``
    already serialized every writer, and the workflow row also says whether the request's checkpoint
    passed before (``x_passed_before``; absent on PostgreSQL)."""
    sqlite = conn.dialect.name != "postgresql"
    stmt = _FOR_DECISION_SQLITE if sqlite else _FOR_DECISION_PG
    row = conn.execute(stmt, {"b_req": request_id, "b_who": approver}).mappings().first()
    if row is None:
        raise ApprovalRequestNotFound(request_id)
    req = {name: row[f"r_{name}"] for name in _REQUEST_COLUMNS}
    wf = {name: row[name] for name in _WORKFLOW_COLUMNS}
    wf.update({k: row[k] for k in ("x_executor_id", "x_executor_roles", "x_executor_disabled")})
    if sqlite:
        wf["x_passed_before"] = bool(row["x_passed_before"])
    audit.seed(conn, wf["workflow_id"], wf["audit_seq"], wf["audit_head"])
    identity = None
    if row["x_approver_id"] is not None:
        identity = {"roles": row["x_approver_roles"], "disabled": row["x_approver_disabled"]}
    return req, identity, wf


def get_under_lock(conn: Connection, request_id: str) -> tuple[dict[str, Any], bool]:
    """The request as it is now, and whether its checkpoint passed before (``_PASSED_BEFORE``): a
    decision's re-read once it holds the workflow's lock."""
    row = conn.execute(_GET_UNDER_LOCK, {"b_req": request_id}).mappings().first()
    if row is None:
        raise ApprovalRequestNotFound(request_id)
    return {name: row[name] for name in _REQUEST_COLUMNS}, bool(row["x_passed_before"])


def claim(
    conn: Connection, request_id: str, new_status: str, now: datetime, *, require_unexpired: bool
) -> bool:
    """Move a pending request to ``new_status``; True only for the one caller that did it."""
    params = {"b_req": request_id, "status": new_status, "decided_at": now}
    if require_unexpired:
        return conn.execute(_CLAIM_UNEXPIRED, {**params, "b_now": now}).rowcount == 1
    return conn.execute(_CLAIM, params).rowcount == 1


_GROUP = (
    select(
        approval_requests,
        approval_responses.c.decision.label("x_decision"),
        approval_responses.c.modifications.label("x_modifications"),
    )
    .select_from(
        approval_requests.outerjoin(
            approval_responses, approval_responses.c.request_id == approval_requests.c.request_id
        )
    )
    .where(approval_requests.c.group_id == bindparam("b_group"))
    .order_by(approval_requests.c.created_at, approval_requests.c.request_id)
)


def group_items(conn: Connection, group_id: str) -> list[RowMapping]:
    """The items of one checkpoint's group with their decision and modifications (``x_decision``,
    ``x_modifications``; None while undecided), in the order they were asked: one statement."""
    return list(conn.execute(_GROUP, {"b_group": group_id}).mappings())


def close_group(conn: Connection, group_id: str, status: str, now: datetime) -> None:
    """Close every item of ``group_id`` still pending (a sibling was rejected): no longer decidable."""
    conn.execute(
        update(approval_requests)
        .where(approval_requests.c.group_id == group_id, approval_requests.c.status == "pending")
        .values(status=status, decided_at=now)
    )


def set_alerts(conn: Connection, request_id: str, alerts: list[dict[str, Any]]) -> None:
    """Replace a request's alerts (the monitor adds to them while the request is pending)."""
    conn.execute(
        update(approval_requests).where(approval_requests.c.request_id == request_id).values(alerts=alerts)
    )


def insert_response(conn: Connection, **values: Any) -> None:
    conn.execute(_INSERT_RESPONSE, {"created_at": utcnow(), **values})


_W, _R = "w__", "r__"  # label prefixes of the workflow's and the decision's columns in ``_WITH_CONTEXT``
_WITH_CONTEXT = (
    select(
        approval_requests,
        *(c.label(_W + c.name) for c in workflows.c),
        *(c.label(_R + c.name) for c in approval_responses.c),
    )
    .select_from(
        approval_requests.join(
            workflows, workflows.c.workflow_id == approval_requests.c.workflow_id
        ).outerjoin(approval_responses, approval_responses.c.request_id == approval_requests.c.request_id)
    )
    .where(approval_requests.c.request_id == bindparam("b_req"))
)


def with_context(
    conn: Connection, request_id: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """The request, its workflow row and its decision (None while there is none), as ``get``,
    ``workflows.get`` and ``response_for`` read them, in one statement (a route's access check and answer
    need all three; three round trips were a third of a long-poll's statements)."""
    row = conn.execute(_WITH_CONTEXT, {"b_req": request_id}).mappings().first()
    if row is None:
        raise ApprovalRequestNotFound(request_id)
    req = {c.name: row[c.name] for c in approval_requests.c}
    wf = {c.name: row[_W + c.name] for c in workflows.c}
    resp = {c.name: row[_R + c.name] for c in approval_responses.c}
    return req, wf, resp if resp["response_id"] is not None else None


_GATE = (
    select(
        approval_requests.c.status,
        approval_requests.c.expires_at,
        workflows.c.workflow_id,
        workflows.c.created_at,
        workflows.c.config,
        workflows.c.supervisor_id,
    )
    .join(workflows, workflows.c.workflow_id == approval_requests.c.workflow_id)
    .where(approval_requests.c.request_id == bindparam("b_req"))
)


def gate(conn: Connection, request_id: str) -> RowMapping:
    """The request's status and expiry with its workflow's id, creation time, config and supervisor: what
    a long-poll checks before it waits (``WorkflowAccess.request_gate``), in one indexed read."""
    row = conn.execute(_GATE, {"b_req": request_id}).mappings().first()
    if row is None:
        raise ApprovalRequestNotFound(request_id)
    return row


def is_pending(engine: Engine, request_id: str) -> bool:
    """Whether the request exists and is still pending: one indexed read through the bare driver (no
    transaction), for a long-poll's fallback polls. Only a hint: what is served is read and checked again."""
    row = raw_fetchone(engine, "SELECT status FROM approval_requests WHERE request_id = ?", (request_id,))
    return row is not None and row[0] == "pending"


def response_for(conn: Connection, request_id: str) -> RowMapping | None:
    return conn.execute(_RESPONSE, {"b_req": request_id}).mappings().first()


def pending(
    conn: Connection, workflow_id: str | None = None, visible: Select[tuple[str]] | None = None
) -> list[RowMapping]:
    """Pending requests, oldest first; ``visible`` (``visibility.visible_ids``) keeps only those workflows."""
    stmt = select(approval_requests).where(approval_requests.c.status == "pending")
    if workflow_id:
        stmt = stmt.where(approval_requests.c.workflow_id == workflow_id)
    if visible is not None:
        stmt = stmt.where(approval_requests.c.workflow_id.in_(visible))
    return list(conn.execute(stmt.order_by(approval_requests.c.created_at)).mappings())


def count_pending(conn: Connection, visible: Select[tuple[str]] | None = None) -> int:
    """How many requests are pending, as one ``COUNT(*)``: ``/api/stats`` must not fetch every row to count
    them (issue 12: 2.0 s at 30k rows against 2.6 ms). ``visible`` as in :func:`pending`."""
    stmt = select(func.count()).select_from(approval_requests).where(approval_requests.c.status == "pending")
    if visible is not None:
        stmt = stmt.where(approval_requests.c.workflow_id.in_(visible))
    return int(conn.execute(stmt).scalar_one())


def due(conn: Connection, now: datetime, limit: int = 100) -> list[RowMapping]:
    return list(
        conn.execute(
            select(approval_requests)
            .where(approval_requests.c.status == "pending", approval_requests.c.expires_at <= now)
            .order_by(approval_requests.c.expires_at)
            .limit(limit)
        ).mappings()
    )


def for_workflow(conn: Connection, workflow_id: str) -> list[RowMapping]:
    return list(
        conn.execute(
            select(approval_requests)
            .where(approval_requests.c.workflow_id == workflow_id)
            .order_by(approval_requests.c.created_at)
        ).mappings()
    )


def responses_for_workflow(conn: Connection, workflow_id: str) -> list[RowMapping]:
    return list(
        conn.execute(
            select(approval_responses)
            .where(approval_responses.c.workflow_id == workflow_id)
            .order_by(approval_responses.c.created_at)
        ).mappings()
    )


def total_responses(conn: Connection, visible: Select[tuple[str]] | None = None) -> int:
    """Decisions recorded; ``visible`` (``visibility.visible_ids``) counts only those workflows'."""
    stmt = select(func.count()).select_from(approval_responses)
    if visible is not None:
        stmt = stmt.where(approval_responses.c.workflow_id.in_(visible))
    return conn.execute(stmt).scalar_one()
