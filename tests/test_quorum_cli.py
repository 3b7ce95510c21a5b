"""M-of-N quorum from the CLI: groups and teams on identities, votes through ``approvals approve``,
progress in ``approvals show``; refusals exit 1 naming the rule, with nothing recorded."""

from __future__ import annotations

import json
from typing import Any

from saferun.storage.database import Database
from tests.cli_support import cli, pending_workflow


def _members(*people: tuple[str, str]) -> None:
    for who, team in people:
        made = cli("identities", "create", who, "--role", "supervisor", "--key-only")
        assert made.exit_code == 0, made.output
        grouped = cli("identities", "groups", who, "--group", "risk", "--team", team)
        assert grouped.exit_code == 0 and f"groups risk; team {team}" in grouped.output, grouped.output


def test_groups_votes_and_show(database_env: Database) -> None:
    _members(("alice", "north"), ("bob", "south"), ("carol", "north"))
    listed = json.loads(cli("identities", "list", "--json").output)
    assert {p["identity_id"]: (p["groups"], p["team"]) for p in listed}["bob"] == (["risk"], "south")
    p = pending_workflow(database_env, quorum={"approvals": 2, "of": "risk", "distinct_teams": True})

    first = cli("approvals", "approve", p.request_id, "--by", "alice", "--rationale", "north agrees")
    assert first.exit_code == 0, first.output
    assert "recorded; still pending" in first.output and "Votes: 1 of 2 (alice approved" in first.output

    same_team = cli("approvals", "approve", p.request_id, "--by", "carol")
    assert same_team.exit_code == 1 and "quorum_distinct_teams" in same_team.output
    twice = cli("approvals", "approve", p.request_id, "--by", "alice")
    assert twice.exit_code == 1 and "quorum_one_vote" in twice.output
    outsider = cli("approvals", "approve", p.request_id, "--by", "poster_1")
    assert outsider.exit_code == 1 and "quorum_party" in outsider.output
    modify = cli("approvals", "modify", p.request_id, "--by", "bob", "--set", "pizza_count=10")
    assert modify.exit_code == 1 and "quorum_votes_only" in modify.output

    shown = cli("approvals", "show", p.request_id)
    assert shown.exit_code == 0, shown.output
    assert "Quorum: 2 approvals of risk, each from a different team" in shown.output
    assert "alice (north): APPROVED north agrees" in shown.output
    assert "May still vote: bob" in shown.output
    assert len(p.orch.get_approval_request(p.request_id).votes) == 1  # the refused votes left nothing

    last = cli("approvals", "approve", p.request_id, "--by", "bob")
    assert last.exit_code == 0 and "workflow" in last.output and "executing" in last.output, last.output
    decided = p.orch.get_approval_response(p.request_id)
    assert decided is not None and decided.approved_by == "bob"


def test_bad_group_and_team_names_are_refused(database_env: Database) -> None:
    assert cli("identities", "create", "dan", "--role", "supervisor", "--key-only").exit_code == 0
    bad = cli("identities", "groups", "dan", "--group", "risk officers")
    assert bad.exit_code == 1 and "group" in bad.output
    both = cli("identities", "groups", "dan", "--team", "x", "--no-team")
    assert both.exit_code == 2
    unknown = cli("identities", "groups", "nobody", "--group", "risk")
    assert unknown.exit_code == 1 and "nobody" in unknown.output
    assert json.loads(cli("identities", "list", "--json").output)[0]["groups"] == []


POLICY = """
name: payments
version: 5
rules:
  - id: BIG
    description: large payouts
    when: {params: {amount: {gt: "1000"}}}
    then: require_approval
    quorum: {approvals: 2, of: risk_officers, distinct_teams: true}
"""


def test_policy_check_and_test_show_the_quorum(tmp_path: Any) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    checked = cli("policy", "check", str(policy))
    assert checked.exit_code == 0, checked.output
    assert "[quorum: 2 approvals of risk_officers, each from a different team" in checked.output
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "- {name: big, checkpoint: pay, parameters: {amount: 5000}, expect: require_approval}\n"
        "- {name: small, checkpoint: pay, parameters: {amount: 5}, expect: require_approval}\n"
    )
    tested = cli("policy", "test", str(policy), str(cases))
    assert tested.exit_code == 0, tested.output
    assert "(2 of risk_officers)" in tested.output and "all as expected" in tested.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.replace("distinct_teams: true", "distinct_teams: true, approvers: [a]"))
    refused = cli("policy", "check", str(bad))
    assert refused.exit_code == 1 and "rules[BIG].quorum.approvers" in refused.output
