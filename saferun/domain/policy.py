"""Who may do what: the authorization rules of the server, as pure functions of the caller and the workflow.

Each check returns ``None`` when the action is allowed, or a ``Refusal`` naming the rule that refused it
(the server answers ``403`` with that rule and message). Nothing here knows about HTTP, keys or storage:
the caller is already identified (``Caller``) and the workflow is given as its ids.

Two modes:

- **authenticated** (API key or dashboard session): the caller is the identity the key belongs to, with
  that identity's roles;
- **open** (local development, loopback only): nobody is authenticated, so the caller is whoever the
  request names (``approved_by`` for a decision). Rules about roles and about "the caller is who the request
  says" cannot apply; the rules about *people* still do: four eyes and the assigned supervisor.

Deciding (``may_decide``), first refusal wins, in this order:

1. ``four_eyes`` (every mode): the caller or ``approved_by`` is the workflow's poster or executor;
2. ``approved_by_is_caller`` (authenticated): ``approved_by`` names someone other than the caller;
3. ``supervisor_role`` (authenticated): the caller has neither the supervisor nor the admin role;
4. ``assigned_supervisor`` (every mode): the workflow names a supervisor and the decider is not it.

An admin decides like a supervisor and nothing more: never on a workflow they post or execute, and on a
workflow with an assigned supervisor only if they *are* that supervisor. Being admin is about managing
identities and acting for others (creating workflows, running agents), not about overriding the person a
poster chose to review their money.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from saferun.errors import InvalidInput


class Role(StrEnum):
    """The roles an identity can carry (the seed's Identity primitive, an admin, and a platform client)."""

    POSTER = "poster"
    EXECUTOR = "executor"
    SUPERVISOR = "supervisor"
    VERIFIER = "verifier"
    ADMIN = "admin"
    PLATFORM = "platform"  # another SafeRun (or service) using this server's /x402 platform API


def parse_roles(values: Iterable[str], field: str = "roles") -> frozenset[Role]:
    """Roles from their names (``"supervisor"``); an unknown name is ``InvalidInput`` naming ``field``."""
    if isinstance(values, str):  # "admin" would otherwise be read as five one-letter roles
        values = [values]
    roles: set[Role] = set()
    for value in values:
        try:
            roles.add(Role(str(value).strip().lower()))
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise InvalidInput(field, f"unknown role {value!r} (allowed: {allowed})") from None
    return frozenset(roles)


@dataclass(frozen=True)
class Caller:
    """Who is asking. ``authenticated`` is False in open mode, where ``identity_id`` is only a claim."""

    identity_id: str
    roles: frozenset[Role]
    authenticated: bool

    @classmethod
    def open(cls, identity_id: str = "") -> Caller:
        """The caller in open mode: unauthenticated, no roles; ``identity_id`` is what the request says."""
        return cls(identity_id=identity_id, roles=frozenset(), authenticated=False)

    def has(self, role: Role) -> bool:
        return role in self.roles

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles


@dataclass(frozen=True)
class Refusal:
    """Why an action was refused: ``rule`` is a stable name for programs, ``message`` says it to people."""

    rule: str
    message: str

    def __str__(self) -> str:
        return self.message


def _refuse(rule: str, message: str) -> Refusal:
    return Refusal(rule=rule, message=f"refused by rule {rule}: {message}")


def may_decide(
    caller: Caller,
    *,
    poster_id: str,
    executor_id: str,
    supervisor_id: str | None,
    approved_by: str,
) -> Refusal | None:
    """May ``caller`` record a decision signed ``approved_by`` on an approval request of this workflow?"""
    # who is deciding: the authenticated identity, or in open mode whoever the request names
    decider = caller.identity_id if caller.authenticated else approved_by

    people = [approved_by, caller.identity_id] if caller.authenticated else [approved_by]
    for person in people:
        for part, holder in (("poster", poster_id), ("executor", executor_id)):
            if person == holder:
                return _refuse(
                    "four_eyes",
                    f"{person!r} is the {part} of this workflow, and its poster and executor may never "
                    "decide its approvals",
                )

    if caller.authenticated:
        if approved_by != caller.identity_id:
            return _refuse(
                "approved_by_is_caller",
                f"approved_by is {approved_by!r} but the request is authenticated as "
                f"{caller.identity_id!r}; a decision can only be signed by its caller",
            )
        if not (caller.has(Role.SUPERVISOR) or caller.is_admin):
            return _refuse(
                "supervisor_role",
                f"{caller.identity_id!r} has neither the supervisor nor the admin role",
            )

    if supervisor_id is not None and supervisor_id != "" and decider != supervisor_id:
        return _refuse(
            "assigned_supervisor",
            f"this workflow's assigned supervisor is {supervisor_id!r}; {decider!r} may not decide it",
        )
    return None


def may_create_workflow(caller: Caller, poster_id: str) -> Refusal | None:
    """May ``caller`` create (and fund) a workflow posted by ``poster_id``?

    Authenticated: an admin may post for anyone; anyone else needs the poster role and must be the poster.
    Open mode: allowed (the configuration's own four-eyes check still runs in the engine).
    """
    if not caller.authenticated or caller.is_admin:
        return None
    if not caller.has(Role.POSTER):
        return _refuse("poster_role", f"{caller.identity_id!r} does not have the poster role")
    if poster_id != caller.identity_id:
        return _refuse(
            "poster_is_caller",
            f"poster_id is {poster_id!r} but the request is authenticated as {caller.identity_id!r}; "
            "only an admin may post a workflow for someone else",
        )
    return None


def may_act_as_agent(caller: Caller, executor_id: str) -> Refusal | None:
    """May ``caller`` drive this workflow as its agent (start, checkpoints, steps, settle, complete, fail)?

    Authenticated: an admin may; anyone else must be the workflow's executor and have the executor role.
    Open mode: allowed.
    """
    if not caller.authenticated or caller.is_admin:
        return None
    if caller.identity_id != executor_id:
        return _refuse(
            "executor_is_caller",
            f"this workflow's executor is {executor_id!r}; {caller.identity_id!r} may not act as its agent",
        )
    if not caller.has(Role.EXECUTOR):
        return _refuse("executor_role", f"{caller.identity_id!r} does not have the executor role")
    return None


def may_use_platform(caller: Caller) -> Refusal | None:
    """May ``caller`` use the x402 platform API (``/x402``: jobs, escrow, artifacts, identity, marketplace)?

    With a key the caller needs the ``platform`` role (a service account, typically another SafeRun whose
    ``X402_API_URL`` points here) or ``admin``. Open mode: allowed (loopback development, like every other
    route). This is only the door: what each call may then do to which workflow (its own platform's only,
    money only by the engine's rules, an admin reads and moves nothing) is
    ``saferun.domain.platform_policy``.
    """
    if not caller.authenticated or caller.is_admin or caller.has(Role.PLATFORM):
        return None
    return _refuse("platform_role", f"{caller.identity_id!r} has neither the platform nor the admin role")


def may_see_workflow(
    caller: Caller,
    *,
    poster_id: str,
    executor_id: str,
    supervisor_id: str | None,
    platform_id: str | None,
) -> bool:
    """May ``caller`` read this workflow and everything under it (snapshots, state, artifacts, steps,
    audit, ledger, escrow, events, pending requests, dashboard pages)? The one visibility rule.

    Visible to its poster, its executor, its assigned supervisor (while none is assigned: every
    supervisor, since the marketplace found nobody eligible and any supervisor may then decide it),
    admins, and a platform identity only when the workflow is on that platform (``platform_id``).
    Open mode (loopback, nobody authenticated) is the local single-user mode: everything is visible.
    ``saferun.storage.visibility.visible_workflows`` is the same rule as a SQL clause; keep them equal.
    """
    if not caller.authenticated or caller.is_admin:
        return True
    me = caller.identity_id
    if not me:
        return False
    if me in (poster_id, executor_id):
        return True
    if supervisor_id:
        if me == supervisor_id:
            return True
    elif caller.has(Role.SUPERVISOR):
        return True
    return caller.has(Role.PLATFORM) and platform_id is not None and me == platform_id


def assignee(request_supervisor: str | None, workflow_supervisor: str | None, escalated: bool) -> str | None:
    """Who may decide a request: the workflow's assigned supervisor, until an escalation ladder moved the
    request (issue 16): from then on the request's own assignee (None: any eligible supervisor)."""
    return request_supervisor if escalated else workflow_supervisor
