"""Decision links: act on one request, once, as its assigned supervisor, without signing in.

A link is ``<SAFERUN_PUBLIC_URL>/decide/<token>``; the token is 32 random bytes (``secrets``), and only its
SHA-256 is stored, beside the request, the supervisor it acts as and the request's own expiry. It is:

- **minted only for an assigned supervisor** (``mint``): a request whose workflow has no assigned
  supervisor gets no link (any supervisor may decide it, so there is nobody the link could stand for);
- **single use**: spending it is a conditional UPDATE (``used_at IS NULL AND expires_at > now``) in the
  *same transaction* as the decision itself, so a link is spent exactly when its decision is recorded:
  a refused decision (already decided elsewhere, a policy rule, a bad rationale) leaves it unspent, and
  two clicks racing each other decide once;
- **expiring with the request**: after the request's deadline the link is refused even if the sweep has
  not applied the timeout policy yet;
- **checked like any decision**: the ``four_eyes`` and ``assigned_supervisor`` rules (``may_decide``) and
  the supervisor's identity checks (``SAFERUN_IDENTITY_CHECKS``; a disabled identity's links stop
  working like its keys) run before anything is written, and the decision goes through
  ``core.decisions.decide``, the engine's one exactly-once decision path, signed by the supervisor.

An unknown, malformed or altered token is ``NotFound`` (404); a spent or expired one is a ``Conflict``
(409) whose ``reason`` is ``used`` or ``expired``. None of them writes anything.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from saferun.core import decisions, parties
from saferun.core.decisions import Outcome
from saferun.core.review import ReviewCheck, policy_of
from saferun.core.state_machine.models import ApprovalDecision
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.policy import Caller, Role, assignee, may_decide
from saferun.errors import Conflict, DecisionConflict, Forbidden, InvalidInput, NotFound
from saferun.storage import approvals, audit
from saferun.storage import identities as id_store
from saferun.storage import notifications as store
from saferun.storage import workflows as wf_store
from saferun.storage.schema import utcnow

TOKEN_BYTES = 32
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # what secrets.token_urlsafe(32) produces
LINK_DECISIONS = (ApprovalDecision.APPROVED, ApprovalDecision.REJECTED)
MAX_RATIONALE = 20_000


def mint(conn: Connection, request: RowMapping, delivery_id: int | None, now: datetime) -> str | None:
    """A fresh token for ``request``'s assigned supervisor, stored hashed; None when the request has no
    assigned supervisor or can no longer be decided."""
    supervisor = request["supervisor_id"]
    if not supervisor or request["status"] != "pending" or request["expires_at"] <= now:
        return None
    token = secrets.token_urlsafe(TOKEN_BYTES)
    store.add_link(
        conn,
        store.hash_token(token),
        request["request_id"],
        supervisor,
        request["expires_at"],
        delivery_id,
        now,
    )
    return token


def url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/decide/{token}"


@dataclass(frozen=True)
class LinkView:
    """What the confirmation page shows: the request, its workflow, and who the link decides as."""

    request: RowMapping
    workflow_name: str
    supervisor_id: str
    expires_at: datetime


def _token_hash(token: Any) -> str:
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise _unknown()
    return store.hash_token(token)


def _unknown() -> NotFound:
    return NotFound(
        "this decision link is unknown or has been altered; nothing was decided", reason="unknown"
    )


def _usable(conn: Connection, token_hash: str, now: datetime) -> RowMapping:
    """The link row if it can still decide, else the error that says why (nothing is written)."""
    link = store.find_link(conn, token_hash)
    if link is None:
        raise _unknown()
    if link["used_at"] is not None:
        raise Conflict(
            f"this decision link was already used ({link['decision']} at {link['used_at']:%Y-%m-%d %H:%M:%S} "
            "UTC); a link decides once, and nothing more was decided",
            reason="used",
            request_id=link["request_id"],
        )
    if link["expires_at"] <= now:
        raise Conflict(
            f"this decision link expired at {link['expires_at']:%Y-%m-%d %H:%M:%S} UTC, with its request; "
            "nothing was decided",
            reason="expired",
            request_id=link["request_id"],
        )
    return link


def inspect(orch: WorkflowOrchestrator, token: str, now: datetime | None = None) -> LinkView:
    """The request a usable link decides, for its confirmation page (reading only)."""
    now = now or utcnow()
    token_hash = _token_hash(token)
    with orch.db.read() as conn:
        link = _usable(conn, token_hash, now)
        request = approvals.get(conn, link["request_id"])
        if request["status"] != "pending":
            raise DecisionConflict(request["request_id"], request["status"])
        name = wf_store.get(conn, request["workflow_id"])["name"]
    return LinkView(request, name, link["supervisor_id"], link["expires_at"])


@dataclass(frozen=True)
class LinkState:
    """Where a link's request stands now, for the link page's live status (``status``)."""

    request: RowMapping
    response: RowMapping | None
    workflow_state: str


def status(orch: WorkflowOrchestrator, token: str) -> LinkState:
    """The link's request as it is now, decided or not: the open link page polls it, so a decision made
    elsewhere (the dashboard, another channel, the timeout) replaces its buttons without a reload.

    Reading only, and the token is the credential, as for ``inspect``: an unknown or altered token is
    ``NotFound``. A spent or expired link still reads its own request's outcome (it names nothing the
    link's holder was not already shown), so the page can say what happened instead of going stale."""
    token_hash = _token_hash(token)
    with orch.db.read() as conn:
        link = store.find_link(conn, token_hash)
        if link is None:
            raise _unknown()
        request = approvals.get(conn, link["request_id"])
        decided = request["status"] != "pending"
        response = approvals.response_for(conn, link["request_id"]) if decided else None
        state = wf_store.get(conn, request["workflow_id"])["state"]
    return LinkState(request, response, str(state))


def decide(
    orch: WorkflowOrchestrator,
    token: str,
    decision: ApprovalDecision | str,
    rationale: str = "",
    *,
    now: datetime | None = None,
    review_digest: str | None = None,
) -> Outcome:
    """Decide the link's request as its supervisor and spend the link, in one transaction.

    ``review_digest``: what the link's page showed; a request changed since raises ``StaleReview`` and
    the transaction (the link's use included) rolls back, so the link can decide again."""
    now = now or utcnow()
    token_hash = _token_hash(token)
    choice = _decision(decision)
    rationale = (rationale or "").replace("\r\n", "\n").strip()
    if choice == ApprovalDecision.REJECTED and not rationale:
        raise InvalidInput("rationale", "say why you reject: the agent and the poster see this rationale")
    if len(rationale) > MAX_RATIONALE:
        raise InvalidInput("rationale", f"at most {MAX_RATIONALE} characters")
    with orch.db.transaction() as conn:
        link = _usable(conn, token_hash, now)
        supervisor = link["supervisor_id"]
        request = approvals.get(conn, link["request_id"])
        _check_policy(conn, orch, request, supervisor)
        if not store.use_link(conn, token_hash, choice.value, now):  # a concurrent click won
            _usable(conn, token_hash, now)
            raise _unknown()
        outcome = decisions.decide(
            conn,
            orch.capture,
            workflow_id=request["workflow_id"],
            request_id=request["request_id"],
            decision=choice,
            rationale=rationale,
            approved_by=supervisor,
            modifications=None,
            now=now,
            reviewed=ReviewCheck(review_digest, policy_of(orch.policy_gate)),
        )
        audit.append(
            conn,
            request["workflow_id"],
            "decision_link_used",
            supervisor,
            {"request_id": request["request_id"], "decision": choice.value},
        )
        return outcome


def _decision(value: ApprovalDecision | str) -> ApprovalDecision:
    try:
        choice = ApprovalDecision(str(getattr(value, "value", value)).upper())
    except ValueError:
        choice = None
    if choice not in LINK_DECISIONS:
        raise InvalidInput("decision", "a decision link approves or rejects (APPROVED or REJECTED)")
    assert choice is not None
    return choice


def _check_policy(conn: Connection, orch: WorkflowOrchestrator, request: RowMapping, supervisor: str) -> None:
    """The rules every decision passes, with the link standing for its supervisor."""
    wf = wf_store.get(conn, request["workflow_id"])
    refusal = may_decide(
        Caller.open(),  # the link is not a signed-in caller: the person rules apply, to its supervisor
        poster_id=wf["poster_id"],
        executor_id=wf["executor_id"],
        supervisor_id=assignee(request["supervisor_id"], wf["supervisor_id"], request["escalation_step"] > 0),
        approved_by=supervisor,
    )
    if refusal is not None:
        raise Forbidden(refusal.rule, refusal.message)
    identity = id_store.find_identity(conn, supervisor)
    if identity is not None and identity["disabled"]:
        raise Forbidden(
            "identity_role", f"identity {supervisor!r} is disabled, so its decision links are too"
        )
    parties.require_role(conn, supervisor, Role.SUPERVISOR, orch.identity_checks, "decide an approval")
