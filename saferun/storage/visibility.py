"""The visibility rule (``saferun.domain.policy.may_see_workflow``) as SQL, for every list and stream.

``visible_workflows(caller)`` is a plain ``ColumnElement[bool]`` over ``workflows``, so it composes with
any other ``WHERE`` (a state filter, a keyset page's ``extra_where``); ``visible_ids(caller)`` is the
same rule as a sub-select of workflow ids, for tables that only carry ``workflow_id`` (approval
requests, events). Keep both equal to the pure rule: tests check them against each other.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, Connection, Select, and_, false, or_, select, true

from saferun.domain.policy import Caller, Role
from saferun.storage.schema import snapshots, workflows


def platform_column() -> ColumnElement[str]:
    """The workflow's platform identity, kept in its config (``WorkflowConfig.platform_id``)."""
    return workflows.c.config["platform_id"].as_string()


def restricted(caller: Caller) -> bool:
    """Whether the rule narrows anything for ``caller`` (False: open mode or an admin, who see all).
    Lists skip the clause then, so a count is not made to join or sub-select every workflow."""
    return caller.authenticated and not caller.is_admin


def visible_workflows(caller: Caller) -> ColumnElement[bool]:
    """``WHERE`` clause: the workflows ``caller`` may see."""
    if not caller.authenticated or caller.is_admin:
        return true()
    me = caller.identity_id
    if not me:
        return false()
    terms: list[ColumnElement[bool]] = [
        workflows.c.poster_id == me,
        workflows.c.executor_id == me,
        workflows.c.supervisor_id == me,
    ]
    if caller.has(Role.SUPERVISOR):
        terms.append(workflows.c.supervisor_id.is_(None))
    if caller.has(Role.PLATFORM):
        terms.append(and_(platform_column().is_not(None), platform_column() == me))
    return or_(*terms)


def visible_ids(caller: Caller) -> Select[tuple[str]]:
    """The ids of the workflows ``caller`` may see, as a sub-select for ``workflow_id.in_(...)``."""
    return select(workflows.c.workflow_id).where(visible_workflows(caller))


def artifact_visible(conn: Connection, caller: Caller, uri: str) -> bool:
    """Whether ``uri`` belongs to a workflow ``caller`` may see: one of its snapshots, or its result.

    Artifacts are content-addressed and shared, so knowing (or guessing) a hash must not be a side door:
    the bytes are served only when a visible workflow references them.
    """
    if not caller.authenticated or caller.is_admin:
        return True
    ids = visible_ids(caller)
    by_snapshot = select(snapshots.c.snapshot_id).where(
        snapshots.c.artifact_uri == uri, snapshots.c.workflow_id.in_(ids)
    )
    by_result = select(workflows.c.workflow_id).where(
        workflows.c.result_uri == uri, visible_workflows(caller)
    )
    return (
        conn.execute(by_snapshot.limit(1)).first() is not None
        or conn.execute(by_result.limit(1)).first() is not None
    )


def visible_among(conn: Connection, caller: Caller, workflow_ids: Iterable[str]) -> set[str]:
    """Which of ``workflow_ids`` ``caller`` may see (one query): filters a batch of events or rows."""
    ids = set(workflow_ids)
    if not ids:
        return set()
    if not caller.authenticated or caller.is_admin:
        return ids
    query = select(workflows.c.workflow_id).where(workflows.c.workflow_id.in_(ids), visible_workflows(caller))
    return {r[0] for r in conn.execute(query)}
