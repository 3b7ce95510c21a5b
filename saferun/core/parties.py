"""Who may take part in a workflow: the Identity primitive's role checks at each step, and the
Marketplace's automatic supervisor assignment, both inside the caller's transaction.

**Role checks** follow ``SAFERUN_IDENTITY_CHECKS``:

- ``registered`` (the default): a party that is a registered identity must be enabled and hold the role
  it acts in; a name nobody registered passes. The seed's examples name free-form parties
  (``"user_123"``) and must keep working, while a registered executor can never approve, a disabled
  supervisor can never decide, and a poster cannot be slipped in as a supervisor.
- ``strict``: every party must be a registered identity with the role (what a production deployment
  with keys should run).
- ``off``: no checks (tests of the engine alone).

Checks run when a workflow is created (poster, executor, supervisor), when it starts, at every checkpoint
and settlement (executor) and at every human decision (the decider as supervisor). A failed check is a
``Forbidden`` with the rule ``identity_role`` (``InvalidInput`` naming the field at creation), and
nothing is written: the check runs before the transaction's first write.

**Assignment.** A workflow created without a supervisor gets the marketplace's best eligible one (see
``candidates``); when there is none it stays unassigned and any supervisor may decide, as before. The
choice is written both to the marketplace's assignments and to ``workflows.supervisor_id``, so the
engine's four-eyes and ``assigned_supervisor`` rules see it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, RowMapping, select, update

from saferun.core import mirror
from saferun.domain.audit import bind
from saferun.domain.policy import Role
from saferun.domain.reputation import approval_quality
from saferun.errors import Forbidden, InvalidInput
from saferun.storage import audit, jobs, marketplace
from saferun.storage import identities as id_store
from saferun.storage.schema import approval_requests, workflows

RULE = "identity_role"
__all__ = ["RULE", "IdentityChecks", "Role", "candidates", "pick_supervisor", "record_assignment"]


class IdentityChecks(StrEnum):
    OFF = "off"
    REGISTERED = "registered"
    STRICT = "strict"


def parse_mode(value: str | IdentityChecks) -> IdentityChecks:
    try:
        return IdentityChecks(value)
    except ValueError:
        choices = ", ".join(m.value for m in IdentityChecks)
        raise InvalidInput("SAFERUN_IDENTITY_CHECKS", f"must be one of {choices}, got {value!r}") from None


def role_problem(conn: Connection, user_id: str, role: Role, mode: IdentityChecks) -> str | None:
    """Why ``user_id`` may not act as ``role`` under ``mode`` (None when it may)."""
    if mode is IdentityChecks.OFF:
        return None
    return identity_problem(id_store.find_identity(conn, user_id), user_id, role, mode)


def identity_problem(
    row: RowMapping | dict[str, Any] | None, user_id: str, role: Role, mode: IdentityChecks
) -> str | None:
    """``role_problem`` for an identity row the caller already read (None: not registered)."""
    if mode is IdentityChecks.OFF:
        return None
    if row is None:
        return f"{user_id!r} is not a registered identity" if mode is IdentityChecks.STRICT else None
    if row["disabled"]:
        return f"identity {user_id!r} is disabled"
    if role not in id_store.roles_of(row):
        return f"identity {user_id!r} does not have the {role.value} role"
    return None


def require_role(conn: Connection, user_id: str, role: Role, mode: IdentityChecks, action: str) -> None:
    problem = role_problem(conn, user_id, role, mode)
    if problem is not None:
        raise Forbidden(RULE, f"{problem}, so it cannot {action}")


def require_identity(
    row: RowMapping | dict[str, Any] | None, user_id: str, role: Role, mode: IdentityChecks, action: str
) -> None:
    """``require_role`` for an identity row read with the caller's own statement (no query here)."""
    problem = identity_problem(row, user_id, role, mode)
    if problem is not None:
        raise Forbidden(RULE, f"{problem}, so it cannot {action}")


def check_config_parties(
    conn: Connection, poster_id: str, executor_id: str, supervisor_id: str | None, mode: IdentityChecks
) -> None:
    """The three parties a new workflow names, each in its role (422 naming the field)."""
    named = [("poster_id", poster_id, Role.POSTER), ("executor_id", executor_id, Role.EXECUTOR)]
    if supervisor_id is not None:
        named.append(("supervisor_id", supervisor_id, Role.SUPERVISOR))
    for field, user_id, role in named:
        problem = role_problem(conn, user_id, role, mode)
        if problem is not None:
            raise InvalidInput(field, problem)


def candidates(
    conn: Connection, workflow_type: str | None, min_reputation: float, exclude: Iterable[str] = ()
) -> list[tuple[RowMapping, float]]:
    """Marketplace profiles that may supervise, best first: available, specialised in ``workflow_type``
    (any, when None), an enabled identity with the supervisor role, reputation >= ``min_reputation``,
    and not one of ``exclude`` (the workflow's poster and executor). Ties go to the cheaper, then by id."""
    excluded = set(exclude)
    profiles = [
        p
        for p in marketplace.list_profiles(conn)
        if p["available"]
        and p["supervisor_id"] not in excluded
        and (workflow_type is None or workflow_type in p["specialties"])
    ]
    reps = marketplace.reputations(conn, [p["supervisor_id"] for p in profiles])
    found = []
    for p in profiles:
        ident = id_store.find_identity(conn, p["supervisor_id"])
        if ident is None or ident["disabled"] or Role.SUPERVISOR not in id_store.roles_of(ident):
            continue
        if reps[p["supervisor_id"]] >= min_reputation:
            found.append((p, reps[p["supervisor_id"]]))
    found.sort(key=lambda pr: (-pr[1], pr[0]["price_per_approval_micro"], pr[0]["supervisor_id"]))
    return found


def pick_supervisor(conn: Connection, config: dict[str, Any], poster_id: str, executor_id: str) -> str | None:
    """The supervisor the marketplace assigns to a new workflow that names none (None: nobody fits)."""
    found = candidates(
        conn,
        config.get("workflow_type"),
        float(config.get("min_supervisor_reputation") or 0.0),
        exclude=(poster_id, executor_id),
    )
    return found[0][0]["supervisor_id"] if found else None


def record_assignment(conn: Connection, workflow_id: str, supervisor_id: str, actor: str) -> None:
    """Write an assignment everywhere the engine and the marketplace look for it.

    Requests already pending for the workflow are routed to the new supervisor too, so the review
    queue and the ``assigned_supervisor`` rule agree with the workflow.
    """
    if marketplace.get_assignment(conn, workflow_id) is None:
        marketplace.assign(conn, workflow_id, supervisor_id)
    conn.execute(
        update(workflows)
        .where(workflows.c.workflow_id == workflow_id, workflows.c.supervisor_id.is_(None))
        .values(supervisor_id=supervisor_id)
    )
    routed = approval_requests.c.workflow_id == workflow_id, approval_requests.c.status == "pending"
    unassigned = (*routed, approval_requests.c.supervisor_id.is_(None))
    moved = list(conn.execute(select(approval_requests).where(*unassigned)).mappings())
    if moved:
        conn.execute(update(approval_requests).where(*unassigned).values(supervisor_id=supervisor_id))
    # the rerouted requests' new review view is bound to the chain with the assignment
    binds = [bind("approval_requests", "review", {**r, "supervisor_id": supervisor_id}) for r in moved]
    payload: dict[str, Any] = {"supervisor_id": supervisor_id}
    if binds:
        payload["bind"] = binds
    audit.append(conn, workflow_id, "supervisor_assigned", actor, payload)


def worked_on(
    conn: Connection, supervisor_id: str, workflow_row: RowMapping | None, workflow_id: str
) -> bool:
    """Whether ``supervisor_id`` supervised the workflow: assigned to it, decided one of its requests, or
    was given one of its approval sub-jobs (all a platform serving another SafeRun knows of it).

    A rating or an approval-quality score for anyone else would move a reputation nobody earned.
    """
    if workflow_row is not None and workflow_row["supervisor_id"] == supervisor_id:
        return True
    assignment = marketplace.get_assignment(conn, workflow_id)
    if assignment is not None and assignment["supervisor_id"] == supervisor_id:
        return True
    if marketplace.decided_on(conn, supervisor_id, workflow_id):
        return True
    return any(
        job["job_type"] == "approval" and (job["data"] or {}).get("supervisor_id") == supervisor_id
        for job in jobs.for_workflow(conn, workflow_id)
    )


def record_quality(conn: Connection, row: RowMapping, actor: str) -> float | None:
    """When a workflow ends, score its supervisor's approvals (``domain.reputation.approval_quality``).

    Only a registered supervisor has a reputation to move; a workflow nobody supervised, or one that
    never asked for a decision, records nothing. Recorded once per supervisor and workflow.
    """
    supervisor = row["supervisor_id"]
    if supervisor is None:
        return None
    score = approval_quality(*marketplace.decision_counts(conn, supervisor, row["workflow_id"]))
    if score is None:
        return None
    mirror.approval_quality(conn, row, supervisor, score)  # a remote platform's reputation, if any
    if id_store.find_identity(conn, supervisor) is None:
        return None
    if marketplace.get_quality(conn, supervisor, row["workflow_id"]) is not None:
        return None
    marketplace.add_quality(conn, supervisor, row["workflow_id"], score)
    audit.append(
        conn,
        row["workflow_id"],
        "approval_quality_recorded",
        actor,
        {"supervisor_id": supervisor, "quality_score": score},
    )
    return score
