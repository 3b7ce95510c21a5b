"""The one visibility rule (``policy.may_see_workflow``) and its SQL twin (``storage.visibility``)."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select

from saferun.domain.policy import Caller, Role, may_see_workflow
from saferun.storage import visibility
from saferun.storage import workflows as wf_store
from saferun.storage.schema import workflows


def who(identity: str, *roles: Role) -> Caller:
    return Caller(identity_id=identity, roles=frozenset(roles), authenticated=True)


A = {"poster_id": "pa", "executor_id": "ea", "supervisor_id": "sa", "platform_id": "plat_a"}
UNASSIGNED = {**A, "supervisor_id": None}


@pytest.mark.parametrize(
    ("caller", "parties", "expected"),
    [
        (Caller.open(), A, True),  # open mode: the local single user sees everything
        (who("pa", Role.POSTER), A, True),
        (who("ea", Role.EXECUTOR), A, True),
        (who("sa", Role.SUPERVISOR), A, True),
        (who("root", Role.ADMIN), A, True),
        (who("plat_a", Role.PLATFORM), A, True),
        (who("plat_b", Role.PLATFORM), A, False),
        (who("plat_a"), A, False),  # the id without the platform role is nobody
        (who("sb", Role.SUPERVISOR), A, False),  # another supervisor, while A has its own
        (who("sb", Role.SUPERVISOR), UNASSIGNED, True),  # unassigned: every supervisor is eligible
        (who("pb", Role.POSTER), UNASSIGNED, False),
        (who("eb", Role.EXECUTOR, Role.POSTER), A, False),
        (who("", Role.SUPERVISOR), A, False),
        (who("plat_a", Role.PLATFORM), {**A, "platform_id": None}, False),
    ],
)
def test_pure_rule(caller: Caller, parties: dict, expected: bool) -> None:
    assert may_see_workflow(caller, **parties) is expected


def test_sql_clause_matches_the_pure_rule(db) -> None:
    """Every caller x every workflow shape: the WHERE clause selects exactly what the pure rule allows."""
    shapes = {
        "wf_a": A,
        "wf_u": UNASSIGNED,
        "wf_n": {**A, "platform_id": None},
        "wf_b": {"poster_id": "pb", "executor_id": "eb", "supervisor_id": "sb", "platform_id": "plat_b"},
    }
    with db.transaction() as conn:
        for wid, p in shapes.items():
            cfg = {"platform_id": p["platform_id"]} if p["platform_id"] else {}
            wf_store.insert_workflow(
                conn, workflow_id=wid, name=wid, description="", state="initialized", config=cfg,
                poster_id=p["poster_id"], executor_id=p["executor_id"], supervisor_id=p["supervisor_id"],
                escrow_micro=0,
            )
    people = ["pa", "ea", "sa", "sb", "pb", "plat_a", "plat_b", "root", ""]
    role_sets = [(), (Role.SUPERVISOR,), (Role.PLATFORM,), (Role.ADMIN,), (Role.POSTER, Role.EXECUTOR)]
    callers = [Caller.open()] + [who(p, *r) for p, r in itertools.product(people, role_sets)]
    with db.read() as conn:
        for caller in callers:
            rows = conn.execute(select(workflows.c.workflow_id).where(visibility.visible_workflows(caller)))
            got = {r[0] for r in rows}
            want = {wid for wid, p in shapes.items() if may_see_workflow(caller, **p)}
            assert got == want, caller
            assert visibility.visible_among(conn, caller, shapes) == want
