"""M-of-N quorum with separation of duties, as pure rules (issue 16, item 2).

A checkpoint (``CheckpointConfig.quorum``) or an approval-policy rule (``require_approval`` with
``quorum:``) may ask for ``approvals`` votes out of a named ``group`` of identities instead of one
person's decision. The rules, each with a stable name a refusal carries:

``quorum_group``         only an enabled member of the group votes (membership is kept on identities);
``quorum_party``         the workflow's poster and executor never count, even when they are members;
``quorum_one_vote``      nobody votes twice on one request (409: the first vote stands);
``quorum_distinct_teams`` with ``distinct_teams``, an approval from a team that already approved does not
                         count, so it is refused; a member with no team cannot approve under this rule;
``quorum_votes_only``    a quorum takes approve/reject votes: a modification is refused (422), because
                         N people approving N different modifications would approve none of them.

``approvals`` approvals decide APPROVED; ``rejections`` rejections (default 1) decide REJECTED; before
either, the request stays pending. A quorum that cannot be reached (fewer eligible members, or fewer
distinct teams, than ``approvals``; an unknown group) is refused when the workflow is created and again
when a request opens, naming the rule, rather than leaving an agent waiting for votes nobody can cast.

No I/O here: the engine (saferun/core/quorum.py) reads members and votes and applies these functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

GROUP_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
MAX_APPROVALS = 50

Vote = Literal["APPROVED", "REJECTED"]


class QuorumRule(BaseModel):
    """``approvals`` of group ``of`` approve; ``rejections`` reject; ``distinct_teams``: one per team."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approvals: int = Field(ge=1, le=MAX_APPROVALS, strict=True)
    of: str = Field(pattern=GROUP_PATTERN, description="the group whose members vote")
    rejections: int = Field(default=1, ge=1, le=MAX_APPROVALS, strict=True)
    distinct_teams: bool = Field(default=False, strict=True)

    @field_validator("approvals", "rejections", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        """JSON Schema's ``integer`` includes ``2.0`` (the OpenAPI schema says integer): read it as 2;
        strict mode still refuses ``true``, ``"2"`` and ``2.5``. Found by Schemathesis (``49.0``)."""
        return int(value) if isinstance(value, float) and value.is_integer() else value

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @property
    def text(self) -> str:
        teams = ", each from a different team" if self.distinct_teams else ""
        rejects = (
            f"; {self.rejections} rejections reject" if self.rejections > 1 else "; one rejection rejects"
        )
        return f"{self.approvals} approvals of {self.of}{teams}{rejects}"


def parse(value: Mapping[str, Any] | QuorumRule | None) -> QuorumRule | None:
    """A stored rule (the request's ``quorum`` column) as a ``QuorumRule``."""
    if value is None or isinstance(value, QuorumRule):
        return value
    return QuorumRule.model_validate(dict(value))


@dataclass(frozen=True)
class Member:
    """A member of a group as the rules see it."""

    identity_id: str
    team: str | None
    enabled: bool = True  # registered, not disabled, holding the supervisor role (as the mode requires)


@dataclass(frozen=True)
class CastVote:
    voter: str
    vote: str  # APPROVED | REJECTED
    team: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class Refusal:
    rule: str
    message: str
    conflict: bool = False  # 409 (the vote exists already) rather than 403
    invalid: bool = False  # 422 (not a vote at all)


@dataclass(frozen=True)
class Tally:
    rule: QuorumRule
    approvals: int
    rejections: int
    outcome: Vote | None  # None: still pending

    @property
    def needed(self) -> int:
        return self.rule.approvals

    def as_dict(self) -> dict[str, Any]:
        return {
            "approvals": self.approvals,
            "rejections": self.rejections,
            "needed": self.rule.approvals,
            "rejections_to_reject": self.rule.rejections,
            "outcome": self.outcome,
        }


def tally(rule: QuorumRule, votes: Iterable[CastVote]) -> Tally:
    """Count the votes; the outcome is the first threshold reached (they cannot both be: each vote is
    counted as it is cast and the request is decided by the vote that reaches one)."""
    votes = list(votes)
    yes = sum(1 for v in votes if v.vote == "APPROVED")
    no = sum(1 for v in votes if v.vote == "REJECTED")
    outcome: Vote | None = None
    if no >= rule.rejections:
        outcome = "REJECTED"
    elif yes >= rule.approvals:
        outcome = "APPROVED"
    return Tally(rule, yes, no, outcome)


def refusal(
    rule: QuorumRule,
    voter: str,
    vote: str,
    member: Member | None,
    *,
    poster_id: str,
    executor_id: str,
    votes: Sequence[CastVote],
) -> Refusal | None:
    """Why ``voter`` may not cast ``vote`` now (None: the vote counts). Checked in the order a person
    would want to hear it: not a vote at all, not theirs to cast, cast already, same team."""
    if vote not in ("APPROVED", "REJECTED"):
        return Refusal(
            "quorum_votes_only",
            "a quorum request takes approve/reject votes; a modification cannot be voted on "
            "(reject it with the change you want in the rationale)",
            invalid=True,
        )
    if voter in (poster_id, executor_id):
        part = "poster" if voter == poster_id else "executor"
        return Refusal(
            "quorum_party", f"{voter!r} is this workflow's {part} and never counts toward its quorum"
        )
    if member is None:
        return Refusal(
            "quorum_group", f"{voter!r} is not a member of group {rule.of!r}, which votes on this request"
        )
    if not member.enabled:
        return Refusal(
            "quorum_group",
            f"{voter!r} is a member of {rule.of!r} but is disabled or lacks the supervisor role, so "
            "cannot vote",
        )
    if any(v.voter == voter for v in votes):
        return Refusal("quorum_one_vote", f"{voter!r} has already voted on this request", conflict=True)
    if rule.distinct_teams and vote == "APPROVED":
        if not member.team:
            return Refusal(
                "quorum_distinct_teams",
                f"{voter!r} has no team, and this quorum needs approvals from different teams",
            )
        same = [v.voter for v in votes if v.vote == "APPROVED" and v.team == member.team]
        if same:
            return Refusal(
                "quorum_distinct_teams",
                f"{voter!r} is in team {member.team!r}, which already approved ({same[0]}); "
                "this quorum needs approvals from different teams",
            )
    return None


def eligible(
    rule: QuorumRule, members: Iterable[Member], *, poster_id: str, executor_id: str
) -> list[Member]:
    """Members who may vote at all (enabled, neither poster nor executor), sorted by id."""
    return sorted(
        (m for m in members if m.enabled and m.identity_id not in (poster_id, executor_id)),
        key=lambda m: m.identity_id,
    )


def may_still_vote(
    rule: QuorumRule,
    members: Iterable[Member],
    votes: Sequence[CastVote],
    *,
    poster_id: str,
    executor_id: str,
) -> list[str]:
    """Who may still vote (and have an approval count): eligible, not voted, and under
    ``distinct_teams`` in a team that has not approved yet."""
    voted = {v.voter for v in votes}
    approved_teams = {v.team for v in votes if v.vote == "APPROVED"}
    out = []
    for m in eligible(rule, members, poster_id=poster_id, executor_id=executor_id):
        if m.identity_id in voted:
            continue
        if rule.distinct_teams and (not m.team or m.team in approved_teams):
            continue
        out.append(m.identity_id)
    return out


def infeasible(
    rule: QuorumRule, members: Iterable[Member], *, poster_id: str, executor_id: str
) -> str | None:
    """Why ``rule`` could never be met by these members (None when it can): an unknown or empty group,
    fewer eligible members than ``approvals``, or (``distinct_teams``) fewer distinct teams."""
    members = list(members)
    if not members:
        return f"group {rule.of!r} has no members (an unknown group): nobody could vote"
    able = eligible(rule, members, poster_id=poster_id, executor_id=executor_id)
    if len(able) < rule.approvals:
        return (
            f"needs {rule.approvals} approvals but group {rule.of!r} has {len(able)} eligible "
            "member(s) (enabled supervisors other than the poster and the executor)"
        )
    if len(able) < rule.rejections:
        return (
            f"rejects at {rule.rejections} rejections but group {rule.of!r} has {len(able)} eligible "
            "member(s): no vote could ever reject"
        )
    if rule.distinct_teams:
        teams = {m.team for m in able if m.team}
        if len(teams) < rule.approvals:
            return (
                f"needs {rule.approvals} approvals from different teams but group {rule.of!r}'s eligible "
                f"members are in {len(teams)} team(s)"
            )
    return None


def votes_line(tally: Mapping[str, Any], votes: Sequence[Mapping[str, Any]]) -> str:
    """ "Votes: 1 of 2 (alice approved 10:02)", as the dashboard and the CLI show a quorum's progress."""
    cast = ", ".join(
        f"{v['voter']} {'approved' if v['vote'] == 'APPROVED' else 'rejected'}{_at(v.get('created_at'))}"
        for v in votes
    )
    text = f"Votes: {tally['approvals']} of {tally['needed']}"
    if tally.get("rejections"):
        text += f", {tally['rejections']} of {tally['rejections_to_reject']} rejections"
    return f"{text} ({cast})" if cast else text


def _at(value: Any) -> str:
    if isinstance(value, datetime):
        return f" {value:%H:%M}"
    if isinstance(value, str) and len(value) >= 16:
        return f" {value[11:16]}"
    return ""
