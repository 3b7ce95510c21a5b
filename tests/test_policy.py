"""The authorization rules (``saferun.domain.policy``): every rule refuses when it should, and only then."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saferun.domain.policy import (
    Caller,
    Refusal,
    Role,
    may_act_as_agent,
    may_create_workflow,
    may_decide,
    parse_roles,
)
from saferun.errors import InvalidInput

POSTER, EXECUTOR, SUPERVISOR = "poster_1", "agent_1", "alice"


def who(identity_id: str, *roles: Role) -> Caller:
    return Caller(identity_id=identity_id, roles=frozenset(roles), authenticated=True)


def decide(caller: Caller, approved_by: str, supervisor_id: str | None = SUPERVISOR) -> Refusal | None:
    return may_decide(
        caller, poster_id=POSTER, executor_id=EXECUTOR, supervisor_id=supervisor_id, approved_by=approved_by
    )


def refused_by(result: Refusal | None) -> str | None:
    if result is not None:
        assert result.rule in result.message  # the message names the rule that refused
        assert str(result) == result.message
    return None if result is None else result.rule


# --- may_decide, authenticated ----------------------------------------------------------------------------


def test_the_assigned_supervisor_may_decide() -> None:
    assert decide(who(SUPERVISOR, Role.SUPERVISOR), SUPERVISOR) is None


def test_any_supervisor_may_decide_when_none_is_assigned() -> None:
    assert decide(who("bob", Role.SUPERVISOR), "bob", supervisor_id=None) is None
    assert decide(who("bob", Role.SUPERVISOR), "bob", supervisor_id="") is None


@pytest.mark.parametrize("person", [POSTER, EXECUTOR])
def test_four_eyes_refuses_poster_and_executor_even_with_every_role(person: str) -> None:
    everything = who(person, *Role)
    assert refused_by(decide(everything, person)) == "four_eyes"
    assert refused_by(decide(everything, person, supervisor_id=None)) == "four_eyes"
    # naming the poster or executor as approver is refused too, whoever calls
    assert refused_by(decide(who(SUPERVISOR, Role.SUPERVISOR), person)) == "four_eyes"


def test_four_eyes_applies_even_when_the_poster_is_the_assigned_supervisor() -> None:
    # the engine refuses such a config, but the rule must not depend on it
    result = may_decide(
        who(POSTER, Role.SUPERVISOR), poster_id=POSTER, executor_id=EXECUTOR, supervisor_id=POSTER,
        approved_by=POSTER,
    )  # fmt: skip
    assert refused_by(result) == "four_eyes"


def test_approved_by_must_be_the_caller() -> None:
    result = decide(who("bob", Role.SUPERVISOR), SUPERVISOR)
    assert refused_by(result) == "approved_by_is_caller"
    assert result is not None and "'bob'" in result.message and f"'{SUPERVISOR}'" in result.message


@pytest.mark.parametrize("roles", [(), (Role.POSTER,), (Role.EXECUTOR,), (Role.VERIFIER,)])
def test_supervisor_role_is_required(roles: tuple[Role, ...]) -> None:
    assert refused_by(decide(who(SUPERVISOR, *roles), SUPERVISOR)) == "supervisor_role"
    assert refused_by(decide(who("bob", *roles), "bob", supervisor_id=None)) == "supervisor_role"


def test_a_supervisor_not_assigned_is_refused() -> None:
    assert refused_by(decide(who("bob", Role.SUPERVISOR), "bob")) == "assigned_supervisor"


def test_admin_decides_like_a_supervisor_and_no_more() -> None:
    admin = who("root", Role.ADMIN)
    assert decide(admin, "root", supervisor_id=None) is None  # no supervisor assigned: eligible
    assert decide(admin, "root", supervisor_id="root") is None  # assigned: may
    assert refused_by(decide(admin, "root")) == "assigned_supervisor"  # someone else assigned: no override
    assert refused_by(decide(admin, SUPERVISOR)) == "approved_by_is_caller"  # cannot sign for others
    poster_admin = who(POSTER, Role.ADMIN)
    assert refused_by(decide(poster_admin, POSTER, supervisor_id=None)) == "four_eyes"


# --- may_decide, open mode ---------------------------------------------------------------------------------


def test_open_mode_the_decider_is_approved_by() -> None:
    anyone = Caller.open()
    assert not anyone.authenticated and anyone.roles == frozenset()
    assert decide(anyone, SUPERVISOR) is None
    assert decide(anyone, "bob", supervisor_id=None) is None  # no role check without authentication
    assert refused_by(decide(anyone, "bob")) == "assigned_supervisor"
    assert refused_by(decide(anyone, POSTER)) == "four_eyes"
    assert refused_by(decide(anyone, EXECUTOR, supervisor_id=None)) == "four_eyes"


def test_open_mode_ignores_the_claimed_identity_and_roles() -> None:
    # an unauthenticated caller's id and roles are claims: only approved_by counts
    claimed = Caller(identity_id=POSTER, roles=frozenset({Role.ADMIN}), authenticated=False)
    assert decide(claimed, SUPERVISOR) is None
    assert refused_by(decide(claimed, "bob")) == "assigned_supervisor"


# --- the whole rule set, as one property ------------------------------------------------------------------

PEOPLE = st.sampled_from([POSTER, EXECUTOR, SUPERVISOR, "bob", "root"])


@given(
    identity_id=PEOPLE,
    roles=st.frozensets(st.sampled_from(list(Role))),
    authenticated=st.booleans(),
    approved_by=PEOPLE,
    supervisor_id=st.one_of(st.none(), PEOPLE.filter(lambda p: p not in (POSTER, EXECUTOR))),
)
def test_may_decide_allows_exactly_what_the_rules_say(
    identity_id: str, roles: frozenset[Role], authenticated: bool, approved_by: str, supervisor_id: str | None
) -> None:
    caller = Caller(identity_id, roles, authenticated)
    result = decide(caller, approved_by, supervisor_id)
    decider = identity_id if authenticated else approved_by
    deciders = {identity_id, approved_by} if authenticated else {approved_by}
    allowed = (
        not deciders & {POSTER, EXECUTOR}
        and (
            not authenticated or (approved_by == identity_id and bool(roles & {Role.SUPERVISOR, Role.ADMIN}))
        )
        and (supervisor_id is None or supervisor_id == decider)
    )
    assert (result is None) == allowed, result
    if deciders & {POSTER, EXECUTOR}:
        assert refused_by(result) == "four_eyes"  # the poster and the executor never approve, in any mode


# --- may_create_workflow ------------------------------------------------------------------------------------


def test_a_poster_creates_their_own_workflows_only() -> None:
    assert may_create_workflow(who(POSTER, Role.POSTER), POSTER) is None
    assert refused_by(may_create_workflow(who(POSTER, Role.POSTER), "someone_else")) == "poster_is_caller"
    assert refused_by(may_create_workflow(who(POSTER, Role.EXECUTOR), POSTER)) == "poster_role"
    assert refused_by(may_create_workflow(who(POSTER), POSTER)) == "poster_role"


def test_an_admin_may_post_for_anyone() -> None:
    assert may_create_workflow(who("root", Role.ADMIN), POSTER) is None


def test_open_mode_may_create_any_workflow() -> None:
    assert may_create_workflow(Caller.open(), POSTER) is None


# --- may_act_as_agent ---------------------------------------------------------------------------------------


def test_only_the_executor_acts_as_the_agent() -> None:
    assert may_act_as_agent(who(EXECUTOR, Role.EXECUTOR), EXECUTOR) is None
    assert refused_by(may_act_as_agent(who("bob", Role.EXECUTOR), EXECUTOR)) == "executor_is_caller"
    assert refused_by(may_act_as_agent(who(POSTER, Role.POSTER), EXECUTOR)) == "executor_is_caller"
    assert refused_by(may_act_as_agent(who(EXECUTOR, Role.SUPERVISOR), EXECUTOR)) == "executor_role"


def test_an_admin_and_open_mode_may_act_as_the_agent() -> None:
    assert may_act_as_agent(who("root", Role.ADMIN), EXECUTOR) is None
    assert may_act_as_agent(Caller.open(), EXECUTOR) is None


# --- roles --------------------------------------------------------------------------------------------------


def test_parse_roles() -> None:
    assert parse_roles(["Supervisor", " admin ", "admin"]) == {Role.SUPERVISOR, Role.ADMIN}
    assert parse_roles("poster") == {Role.POSTER}
    assert parse_roles([]) == frozenset()
    with pytest.raises(InvalidInput) as err:
        parse_roles(["supervisor", "king"])
    assert err.value.field == "roles" and "king" in err.value.message
    with pytest.raises(InvalidInput) as err:
        parse_roles(["x"], field="role")
    assert err.value.field == "role"


def test_caller_helpers() -> None:
    caller = who("root", Role.ADMIN)
    assert caller.is_admin and caller.has(Role.ADMIN) and not caller.has(Role.SUPERVISOR)
    with pytest.raises(AttributeError):
        caller.identity_id = "x"  # type: ignore[misc]
