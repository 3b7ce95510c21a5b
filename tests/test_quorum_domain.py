"""The pure M-of-N quorum rules (saferun/domain/quorum.py) and the policy file's quorum field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from saferun.domain import approval_policy
from saferun.domain.approval_policy import Case
from saferun.domain.quorum import CastVote, Member, QuorumRule, infeasible, may_still_vote, refusal, tally
from saferun.errors import InvalidInput

RULE = QuorumRule(approvals=2, of="risk")
TEAMS = QuorumRule(approvals=2, of="risk", distinct_teams=True)
MEMBERS = {
    "alice": Member("alice", "north"),
    "bob": Member("bob", "south"),
    "carol": Member("carol", "north"),
    "dave": Member("dave", None),
    "erin": Member("erin", "east", enabled=False),
    "poster": Member("poster", "west"),
}
PARTIES = {"poster_id": "poster", "executor_id": "agent"}


def why(
    rule: QuorumRule, voter: str, vote: str = "APPROVED", votes: list[CastVote] | None = None
) -> str | None:
    found = refusal(rule, voter, vote, MEMBERS.get(voter), votes=votes or [], **PARTIES)
    return None if found is None else found.rule


def test_who_may_vote() -> None:
    assert why(RULE, "alice") is None
    assert why(RULE, "dave") is None  # no team needed without distinct_teams
    assert why(RULE, "mallory") == "quorum_group"
    assert why(RULE, "erin") == "quorum_group"  # disabled
    assert why(RULE, "poster") == "quorum_party"  # a member, but the poster never counts
    assert why(RULE, "agent") == "quorum_party"
    assert why(RULE, "alice", votes=[CastVote("alice", "REJECTED")]) == "quorum_one_vote"
    assert why(RULE, "alice", "MODIFIED") == "quorum_votes_only"


def test_distinct_teams() -> None:
    north = [CastVote("alice", "APPROVED", "north")]
    assert why(TEAMS, "carol", votes=north) == "quorum_distinct_teams"
    assert why(TEAMS, "carol", "REJECTED", votes=north) is None  # a rejection from any team counts
    assert why(TEAMS, "bob", votes=north) is None
    assert why(TEAMS, "dave") == "quorum_distinct_teams"  # no team: cannot approve under this rule
    conflict = refusal(RULE, "alice", "APPROVED", MEMBERS["alice"], votes=north, **PARTIES)
    assert conflict is not None and conflict.conflict


def test_tally_thresholds() -> None:
    assert tally(RULE, []).outcome is None
    assert tally(RULE, [CastVote("a", "APPROVED")]).outcome is None
    assert tally(RULE, [CastVote("a", "APPROVED"), CastVote("b", "APPROVED")]).outcome == "APPROVED"
    assert tally(RULE, [CastVote("a", "APPROVED"), CastVote("b", "REJECTED")]).outcome == "REJECTED"
    two_no = QuorumRule(approvals=3, of="risk", rejections=2)
    assert tally(two_no, [CastVote("a", "REJECTED")]).outcome is None
    counted = tally(two_no, [CastVote("a", "REJECTED"), CastVote("b", "REJECTED")])
    assert counted.outcome == "REJECTED" and counted.as_dict()["rejections"] == 2


def test_who_may_still_vote() -> None:
    members = list(MEMBERS.values())
    assert may_still_vote(RULE, members, [], **PARTIES) == ["alice", "bob", "carol", "dave"]
    north = [CastVote("alice", "APPROVED", "north")]
    assert may_still_vote(RULE, members, north, **PARTIES) == ["bob", "carol", "dave"]
    assert may_still_vote(TEAMS, members, north, **PARTIES) == ["bob"]


def test_infeasible_rules_are_named() -> None:
    members = list(MEMBERS.values())
    assert infeasible(RULE, members, **PARTIES) is None
    assert "no members" in (infeasible(QuorumRule(approvals=1, of="x"), [], **PARTIES) or "")
    assert "4 eligible" in (infeasible(QuorumRule(approvals=5, of="risk"), members, **PARTIES) or "")
    assert "2 team" in (
        infeasible(QuorumRule(approvals=3, of="risk", distinct_teams=True), members, **PARTIES) or ""
    )
    assert "no vote could ever reject" in (
        infeasible(QuorumRule(approvals=2, of="risk", rejections=5), members, **PARTIES) or ""
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"approvals": 0, "of": "risk"},
        {"approvals": 2},
        {"approvals": 2, "of": "no spaces"},
        {"approvals": "2", "of": "risk"},
        {"approvals": 2, "of": "risk", "rejections": 0},
        {"approvals": 2, "of": "risk", "approvers": ["alice"]},
    ],
)
def test_bad_rules_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        QuorumRule.model_validate(bad)


POLICY = """
name: payments
version: 4
rules:
  - id: BIG
    when: {params: {amount: {gt: "1000"}}}
    then: require_approval
    quorum: {approvals: 2, of: risk_officers, rejections: 1, distinct_teams: true}
"""


def test_the_policy_takes_a_quorum_and_puts_it_on_the_verdict() -> None:
    policy = approval_policy.load(POLICY)
    verdict = policy.evaluate(Case("cp", parameters={"amount": 5000}))
    assert verdict.quorum == QuorumRule(approvals=2, of="risk_officers", distinct_teams=True)
    assert verdict.as_dict()["quorum"]["approvals"] == 2
    assert "quorum: 2 approvals of risk_officers" in verdict.because
    small = policy.evaluate(Case("cp", parameters={"amount": 5}))
    assert small.quorum is None and "quorum" not in small.as_dict()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            POLICY.replace("distinct_teams: true", "distinct_teams: true, approvers: [a]"),
            "rules[BIG].quorum.approvers",
        ),
        (POLICY.replace("approvals: 2", "approvals: 0"), "rules[BIG].quorum.approvals"),
        (POLICY.replace("then: require_approval", "then: auto_approve"), "rules[BIG]"),
        (POLICY.replace("of: risk_officers", "of: 'risk officers'"), "rules[BIG].quorum.of"),
    ],
)
def test_bad_policy_quorums_are_refused_naming_the_rule(text: str, where: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        approval_policy.load(text)
    assert exc.value.fields["field"] == f"policy.{where}"
