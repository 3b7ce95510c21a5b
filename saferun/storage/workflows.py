"""Rows of ``workflows`` and ``transitions``. The state column is written only through ``set_state``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    Select,
    and_,
    bindparam,
    func,
    insert,
    literal,
    select,
    tuple_,
    union_all,
    update,
)

from saferun.errors import WorkflowNotFound
from saferun.storage import audit
from saferun.storage.bare_select import BareSelect
from saferun.storage.database import Database
from saferun.storage.schema import (
    approval_requests,
    approval_responses,
    identities,
    snapshots,
    transitions,
    utcnow,
    workflows,
)


@contextmanager
def locked(db: Database, workflow_id: str) -> Iterator[tuple[Connection, RowMapping]]:
    """A transaction holding the workflow's row lock, and the row as it is under that lock.

    The row also carries the executor's identity (``executor_identity``: None when unregistered, else
    its ``roles`` and ``disabled``), read by the same statement, because nearly every locked write checks
    the executor's role first."""
    with db.transaction() as conn:
        row = get_locked(conn, workflow_id)
        yield conn, row


def get_locked(conn: Connection, workflow_id: str) -> RowMapping:
    """The workflow row (with its executor's identity) under the workflow's lock, in one statement:
    ``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite ``BEGIN IMMEDIATE`` already holds the write lock.
    The audit chain of this transaction starts from the anchor the row carries (no query for its tail)."""
    stmt = _GET_LOCKED_PG if conn.dialect.name == "postgresql" else _GET_LOCKED
    row = conn.execute(stmt, {"b_wf": workflow_id}).mappings().first()
    if row is None:
        raise WorkflowNotFound(workflow_id)
    audit.seed(conn, workflow_id, row["audit_seq"], row["audit_head"])
    return row


def executor_identity(row: RowMapping) -> dict[str, Any] | None:
    """The executor's identity as ``get_locked`` read it (None: not a registered identity)."""
    if row["x_executor_id"] is None:
        return None
    return {"roles": row["x_executor_roles"], "disabled": row["x_executor_disabled"]}


def insert_workflow(conn: Connection, **values: Any) -> None:
    now = utcnow()
    conn.execute(
        insert(workflows).values(created_at=now, updated_at=now, version=0, current_checkpoint=0, **values)
    )


# Hot statements are built once: constructing a Core statement costs ~50 us per call, more than SQLite
# takes to run it. Bind names carry a b_ prefix so they never collide with a column being SET.
_GET = select(workflows).where(workflows.c.workflow_id == bindparam("b_wf"))
GET_BARE = BareSelect(_GET)  # ``get`` on a bare read cursor (storage.bare_select)
_UPDATE = (
    update(workflows)
    .where(workflows.c.workflow_id == bindparam("b_wf"))
    .values(version=workflows.c.version + 1)
)
_SET_STATE = _UPDATE.where(workflows.c.state == bindparam("b_from"))


_GET_LOCKED = (
    select(
        workflows,
        identities.c.identity_id.label("x_executor_id"),
        identities.c.roles.label("x_executor_roles"),
        identities.c.disabled.label("x_executor_disabled"),
    )
    .select_from(workflows.outerjoin(identities, identities.c.identity_id == workflows.c.executor_id))
    .where(workflows.c.workflow_id == bindparam("b_wf"))
)
_GET_LOCKED_PG = _GET_LOCKED.with_for_update(of=workflows)


def get(conn: Connection, workflow_id: str) -> RowMapping:
    row = conn.execute(_GET, {"b_wf": workflow_id}).mappings().first()
    if row is None:
        raise WorkflowNotFound(workflow_id)
    return row


def exists(conn: Connection, workflow_id: str) -> bool:
    return (
        conn.execute(select(workflows.c.workflow_id).where(workflows.c.workflow_id == workflow_id)).first()
        is not None
    )


def update_fields(conn: Connection, workflow_id: str, **values: Any) -> None:
    conn.execute(_UPDATE, {"b_wf": workflow_id, "updated_at": utcnow(), **values})


def set_state(conn: Connection, workflow_id: str, from_state: str, to_state: str, **values: Any) -> None:
    """Compare-and-set the state; the caller checked the edge is legal and appended its ``transition``
    audit event, from which the database writes the ``transitions`` row (revision 0024)."""
    params = {"b_wf": workflow_id, "state": to_state, "updated_at": utcnow(), **values, "b_from": from_state}
    if conn.execute(_SET_STATE, params).rowcount != 1:
        # Someone else moved the workflow between our read and this write; callers hold the row lock,
        # so reaching this means a bug, and the transaction must not commit.
        raise RuntimeError(f"workflow {workflow_id} left state {from_state} concurrently")


def history(conn: Connection, workflow_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(transitions).where(transitions.c.workflow_id == workflow_id).order_by(transitions.c.id)
    ).mappings()
    return [dict(r) for r in rows]


def list_statement(
    *,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
    after: tuple[datetime, str] | None = None,
    where: ColumnElement[bool] | None = None,
) -> Select[Any]:
    """The list query :func:`list_rows` runs (also what ``tests/test_query_plans.py`` explains)."""
    stmt = select(workflows).order_by(workflows.c.created_at.desc(), workflows.c.workflow_id.desc())
    if state:
        stmt = stmt.where(workflows.c.state == state)
    if where is not None:
        stmt = stmt.where(where)
    if after is not None:
        stmt = stmt.where(tuple_(workflows.c.created_at, workflows.c.workflow_id) < tuple_(*after))
    return stmt.limit(limit).offset(offset)


def list_rows(
    conn: Connection,
    *,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
    after: tuple[datetime, str] | None = None,
    where: ColumnElement[bool] | None = None,
) -> list[RowMapping]:
    """A page of workflow rows, newest first (ties: higher id first); ``where`` narrows it (e.g.
    ``visibility.visible_workflows``). ``after`` is a keyset position ``(created_at, workflow_id)``: the
    page starts below it, read from ``ix_workflows_created`` / ``ix_workflows_state_created`` in order.
    Rows carry no counts: :func:`counts_for` adds them for the whole page in one query."""
    stmt = list_statement(state=state, limit=limit, offset=offset, after=after, where=where)
    return list(conn.execute(stmt).mappings())


def count_statement(*, state: str | None = None, where: ColumnElement[bool] | None = None) -> Select[Any]:
    stmt = select(func.count()).select_from(workflows)
    if state:
        stmt = stmt.where(workflows.c.state == state)
    if where is not None:
        stmt = stmt.where(where)
    return stmt


def count(conn: Connection, *, state: str | None = None, where: ColumnElement[bool] | None = None) -> int:
    """How many workflows a list has in all (its true ``total``, not the page length)."""
    return int(conn.execute(count_statement(state=state, where=where)).scalar_one())


def counts_for(conn: Connection, workflow_ids: list[str]) -> dict[str, dict[str, int]]:
    """Snapshots, requests and responses of each of ``workflow_ids``, in one query for a whole page.

    The seed's list shows these three counts per workflow; as correlated sub-selects they cost three
    queries per row, evaluated for every row before the sort (issue 12: 0.3-0.44 s per list)."""
    zero = {"n_snapshots": 0, "n_requests": 0, "n_responses": 0}
    out = {wf: dict(zero) for wf in workflow_ids}
    if not workflow_ids:
        return out
    parts = [
        select(t.c.workflow_id, literal(name).label("what"), func.count().label("n"))
        .where(t.c.workflow_id.in_(workflow_ids))
        .group_by(t.c.workflow_id)
        for name, t in (
            ("n_snapshots", snapshots),
            ("n_requests", approval_requests),
            ("n_responses", approval_responses),
        )
    ]
    for wf, what, n in conn.execute(union_all(*parts)):
        out[wf][what] = int(n)
    return out


def count_by_state(conn: Connection, where: ColumnElement[bool] | None = None) -> dict[str, int]:
    stmt = select(workflows.c.state, func.count()).group_by(workflows.c.state)
    rows = conn.execute(stmt if where is None else stmt.where(where))
    return {state: n for state, n in rows}


def rolling_back_since(conn: Connection, before: datetime) -> list[str]:
    """Workflows left in ROLLING_BACK since before ``before``: the sweep's rollback candidates."""
    rows = conn.execute(
        select(workflows.c.workflow_id).where(
            workflows.c.state == "rolling_back", workflows.c.updated_at <= before
        )
    )
    return [r[0] for r in rows]


def settling_since(conn: Connection, before: datetime) -> list[str]:
    """Workflows left in SETTLING since before ``before``: an agent died between settle and complete."""
    rows = conn.execute(
        select(workflows.c.workflow_id).where(
            workflows.c.state == "settling", workflows.c.updated_at <= before
        )
    )
    return [r[0] for r in rows]


def active_parties(conn: Connection, where: ColumnElement[bool] | None = None) -> tuple[int, int]:
    """Distinct executors and supervisors of workflows that have not ended (of those ``where`` keeps)."""
    live = workflows.c.state.notin_(["completed", "failed"])
    if where is not None:
        live = and_(live, where)
    executors = conn.execute(
        select(func.count(func.distinct(workflows.c.executor_id))).where(live)
    ).scalar_one()
    supervisors = conn.execute(
        select(func.count(func.distinct(workflows.c.supervisor_id))).where(
            live, workflows.c.supervisor_id.is_not(None)
        )
    ).scalar_one()
    return executors, supervisors


def _count(table: Any) -> Any:
    """How many rows of ``table`` belong to the workflow of the enclosing query (correlated)."""
    return (
        select(func.count())
        .select_from(table)
        .where(table.c.workflow_id == workflows.c.workflow_id)
        .correlate(workflows)
        .scalar_subquery()
    )


_WITH_COUNTS = select(
    workflows,
    _count(snapshots).label("n_snapshots"),
    _count(approval_requests).label("n_requests"),
    _count(approval_responses).label("n_responses"),
)
_GET_WITH_COUNTS = _WITH_COUNTS.where(workflows.c.workflow_id == bindparam("b_wf"))


def get_with_counts(conn: Connection, workflow_id: str) -> RowMapping:
    """The workflow row plus how many snapshots, requests and responses it has, in one round trip."""
    row = conn.execute(_GET_WITH_COUNTS, {"b_wf": workflow_id}).mappings().first()
    if row is None:
        raise WorkflowNotFound(workflow_id)
    return row
