"""M-of-N quorum in the engine: which rule a request gets, whether it can be met, and casting a vote.

The rules are pure (``saferun.domain.quorum``); this module reads a group's members and a request's votes
and writes a vote. ``cast`` runs inside ``core.decisions.decide``, under the workflow's lock and before
the claim: a vote that does not reach a threshold is recorded (row + ``vote`` event bound to the chain)
and the request stays pending; the vote that reaches one goes on to the ordinary claim and decision, so
"decided exactly once, paid once" is kept by the same conditional UPDATE as for one person's decision.
Two last votes at once serialize on the workflow lock; the second finds the request decided (409).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from saferun.core.parties import IdentityChecks
from saferun.domain import quorum as rules
from saferun.domain.audit import bind
from saferun.domain.ids import new_id
from saferun.domain.policy import Role
from saferun.domain.quorum import CastVote, Member, QuorumRule, Tally
from saferun.errors import Conflict, DecisionConflict, Forbidden, InvalidInput
from saferun.storage import audit
from saferun.storage import identities as id_store
from saferun.storage import quorum as store

VOTE_EVENT = "vote"


def members(conn: Connection, group: str, mode: IdentityChecks) -> list[Member]:
    """The group's members as the rules see them: enabled means not disabled and, unless identity checks
    are off, holding the supervisor role (a vote is a decision)."""
    out = []
    for row in store.members(conn, group):
        enabled = not row["disabled"] and (
            mode is IdentityChecks.OFF or Role.SUPERVISOR in id_store.roles_of(row)
        )
        out.append(Member(row["identity_id"], row["team"], enabled))
    return out


def cast_votes(rows: list[RowMapping] | list[dict[str, Any]]) -> list[CastVote]:
    return [CastVote(r["voter"], r["vote"], r["team"], r["created_at"]) for r in rows]


def require_feasible(
    conn: Connection,
    rule: QuorumRule,
    *,
    poster_id: str,
    executor_id: str,
    mode: IdentityChecks,
    field: str,
) -> None:
    """``InvalidInput`` naming ``field`` (the checkpoint's or the policy rule's quorum) when the group
    could never reach the rule: an agent must not wait for votes nobody can cast."""
    problem = rules.infeasible(
        rule, members(conn, rule.of, mode), poster_id=poster_id, executor_id=executor_id
    )
    if problem is not None:
        raise InvalidInput(field, problem)


def cast(
    conn: Connection,
    req: Mapping[str, Any],
    wf: Mapping[str, Any],
    *,
    voter: str,
    vote: str,
    rationale: str,
    now: datetime,
    mode: IdentityChecks,
) -> tuple[Tally, str]:
    """Record ``voter``'s vote on the quorum request ``req`` (read under the workflow's lock); returns
    the tally with it and the vote's id. Refused before any write: 422 ``quorum_votes_only``, 403 naming
    the rule (``quorum_group``, ``quorum_party``, ``quorum_distinct_teams``), 409 ``quorum_one_vote``,
    409 when the request is no longer pending or has expired."""
    rule = rules.parse(req["quorum"])
    assert rule is not None
    if req["status"] != "pending":
        raise DecisionConflict(req["request_id"], req["status"])
    if req["expires_at"] <= now:
        raise DecisionConflict(req["request_id"], "expired")
    existing = store.votes_for(conn, req["request_id"])
    # votes are counted only as the chain recorded them: a forged, altered or deleted one is refused
    audit.check_read(conn, req["workflow_id"], {"approval_votes": existing}, votes_of=req["request_id"])
    votes = cast_votes(existing)
    by_id = {m.identity_id: m for m in members(conn, rule.of, mode)}
    member = by_id.get(voter)
    refused = rules.refusal(
        rule,
        voter,
        vote,
        member,
        poster_id=wf["poster_id"],
        executor_id=wf["executor_id"],
        votes=votes,
    )
    if refused is not None:
        if refused.invalid:
            raise InvalidInput("decision", f"refused by rule {refused.rule}: {refused.message}")
        if refused.conflict:
            raise Conflict(
                f"refused by rule {refused.rule}: {refused.message}",
                rule=refused.rule,
                request_id=req["request_id"],
            )
        raise Forbidden(refused.rule, f"refused by rule {refused.rule}: {refused.message}")
    assert member is not None
    row = {
        "vote_id": new_id("vote"),
        "request_id": req["request_id"],
        "workflow_id": req["workflow_id"],
        "voter": voter,
        "vote": vote,
        "rationale": rationale,
        "team": member.team,
        "created_at": now,
    }
    store.insert_vote(conn, **row)
    result = rules.tally(rule, [*votes, CastVote(voter, vote, member.team, now)])
    audit.append(
        conn,
        req["workflow_id"],
        VOTE_EVENT,
        voter,
        {
            "request_id": req["request_id"],
            "vote_id": row["vote_id"],
            "vote": vote,
            "rationale": rationale,
            "team": member.team,
            "quorum": rule.as_dict(),
            "tally": result.as_dict(),
            "bind": [bind("approval_votes", "row", row)],
        },
    )
    return result, row["vote_id"]


def progress(
    conn: Connection,
    req: Mapping[str, Any],
    wf: Mapping[str, Any],
    mode: IdentityChecks,
    rows: list[RowMapping] | None = None,
) -> dict[str, Any] | None:
    """A quorum request's votes, tally and who may still vote, for reads (None: not a quorum request).
    ``rows``: its votes when the caller already read (and checked) them."""
    rule = rules.parse(req.get("quorum"))
    if rule is None:
        return None
    rows = store.votes_for(conn, req["request_id"]) if rows is None else rows
    votes = cast_votes(rows)
    still = (
        rules.may_still_vote(
            rule,
            members(conn, rule.of, mode),
            votes,
            poster_id=wf["poster_id"],
            executor_id=wf["executor_id"],
        )
        if req["status"] == "pending"
        else []
    )
    return {
        "votes": [vote_dict(r) for r in rows],
        "tally": rules.tally(rule, votes).as_dict(),
        "may_still_vote": still,
    }


def vote_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "vote_id": row["vote_id"],
        "voter": row["voter"],
        "vote": row["vote"],
        "rationale": row["rationale"],
        "team": row["team"],
        "created_at": row["created_at"],
    }


def rule_for(
    conn: Connection, wf: Mapping[str, Any], cp: Any, verdict: Any, mode: IdentityChecks
) -> dict[str, Any] | None:
    """The quorum a request opening at checkpoint ``cp`` is decided by, checked against the group now:
    the approval policy's (a ``require_approval`` rule with ``quorum``) when it names one, since risk
    owners set it; else the checkpoint's own; else None (one person decides)."""
    rule, field = None, ""
    if verdict is not None and verdict.action != "require_approval":
        return None  # decided by the policy as it opens: nobody votes
    if verdict is not None and verdict.quorum is not None:
        rule, field = verdict.quorum, f"policy.rules[{verdict.rule}].quorum"
    elif cp.quorum is not None:
        rule, field = cp.quorum, f"checkpoints[{cp.checkpoint_id}].quorum"
    if rule is None:
        return None
    require_feasible(
        conn, rule, poster_id=wf["poster_id"], executor_id=wf["executor_id"], mode=mode, field=field
    )
    return rule.as_dict()


def with_tally(request: Any, rows: list[RowMapping] | None) -> Any:
    """``request`` (an ``ApprovalRequest``) with its votes and tally, for lists (None rows: unchanged)."""
    rule = rules.parse(request.quorum) if rows is not None else None
    if rule is None or rows is None:
        return request
    tally = rules.tally(rule, cast_votes(rows)).as_dict()
    return request.model_copy(update={"votes": [vote_dict(r) for r in rows], "tally": tally})
