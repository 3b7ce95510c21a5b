"""M-of-N quorum in the engine, on SQLite and PostgreSQL: votes, thresholds, refusals, races, the chain."""

from __future__ import annotations

import threading
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import event

from saferun.core.identity import IdentityService
from saferun.core.state_machine.models import CheckpointConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain import approval_policy
from saferun.domain.quorum import QuorumRule
from saferun.domain.states import WorkflowState
from saferun.errors import Conflict, DecisionConflict, Forbidden, InvalidInput
from saferun.storage import ledger as book
from saferun.storage.database import Database
from saferun.storage.quorum import votes_for
from saferun.storage.schema import utcnow
from tests.helpers import decide, make_config, pause, quorum_group, started

RULE = QuorumRule(approvals=2, of="risk")


def quorum_config(rule: QuorumRule = RULE, **kwargs: Any) -> Any:
    return make_config(
        escrow="10.00",
        checkpoints=[
            CheckpointConfig(name="Pay", checkpoint_id="cp1", quorum=rule),
            CheckpointConfig(name="Ship", checkpoint_id="cp2"),
        ],
        **kwargs,
    )


async def opened(db: Database, rule: QuorumRule = RULE) -> tuple[WorkflowOrchestrator, str, str]:
    quorum_group(db, "risk", {"alice": "north", "bob": "south", "carol": "north", "dave": None})
    orch = WorkflowOrchestrator(database=db)
    config = quorum_config(rule)
    orch.initialize_workflow(config)
    orch.start_execution(config.workflow_id)
    return orch, config.workflow_id, await pause(orch, config.workflow_id, "cp1", {"amount": 5})


def released(db: Database, wf: str) -> int:
    with db.read() as conn:
        return book.escrow_position(conn, wf).released


async def test_two_approvals_decide_once_and_pay_once(db: Database) -> None:
    orch, wf, req = await opened(db)
    after = decide(orch, req, "APPROVED", by="alice")
    assert after.current_state == WorkflowState.AWAITING_APPROVAL  # 1 of 2: still waiting
    assert released(db, wf) == 0 and orch.get_approval_response(req) is None
    request = orch.get_approval_request(req)
    assert request.status == "pending" and request.tally is not None
    assert request.tally["approvals"] == 1 and request.tally["needed"] == 2
    assert [v["voter"] for v in request.votes] == ["alice"]
    assert request.may_still_vote == ["bob", "carol", "dave"]
    after = decide(orch, req, "APPROVED", by="bob")
    assert after.current_state == WorkflowState.EXECUTING
    response = orch.get_approval_response(req)
    assert response is not None and response.decision.value == "APPROVED" and response.approved_by == "bob"
    assert released(db, wf) == 5_000_000  # half the escrow (two equal checkpoints), paid once
    with pytest.raises(DecisionConflict):
        decide(orch, req, "APPROVED", by="carol")
    assert orch.verify_audit(wf)[1] is None
    events = orch.audit_events(wf)
    votes = [e for e in events if e["kind"] == "vote"]
    assert [(e["actor"], e["payload"]["tally"]["approvals"]) for e in votes] == [("alice", 1), ("bob", 2)]
    (decision,) = [e for e in events if e["kind"] == "decision"]
    assert decision["payload"]["quorum"]["approvals"] == 2 and decision["seq"] > votes[1]["seq"]


async def test_one_rejection_rejects_and_rolls_back(db: Database) -> None:
    orch, wf, req = await opened(db)
    decide(orch, req, "APPROVED", by="alice")
    after = decide(orch, req, "REJECTED", by="bob", rationale="too risky")
    assert after.current_state == WorkflowState.ROLLING_BACK
    assert released(db, wf) == 0
    assert orch.get_approval_response(req).decision.value == "REJECTED"  # type: ignore[union-attr]


async def test_configurable_rejections(db: Database) -> None:
    orch, wf, req = await opened(db, QuorumRule(approvals=2, of="risk", rejections=2))
    decide(orch, req, "REJECTED", by="alice", rationale="no")
    assert orch.get_workflow(wf).current_state == WorkflowState.AWAITING_APPROVAL
    decide(orch, req, "REJECTED", by="bob", rationale="no")
    assert orch.get_workflow(wf).current_state == WorkflowState.ROLLING_BACK


@pytest.mark.parametrize(
    ("voter", "rule_name", "error"),
    [
        ("mallory", "quorum_group", Forbidden),  # registered, not in the group
        ("poster", "quorum_party", Forbidden),
        ("agent", "quorum_party", Forbidden),
    ],
)
async def test_ineligible_voters_are_refused_and_nothing_is_recorded(
    db: Database, voter: str, rule_name: str, error: type[Exception]
) -> None:
    orch, wf, req = await opened(db)
    with pytest.raises(error) as exc:
        decide(orch, req, "APPROVED", by=voter)
    assert getattr(exc.value, "rule", None) == rule_name or rule_name in str(exc.value)
    with db.read() as conn:
        assert votes_for(conn, req) == []
    assert orch.verify_audit(wf)[1] is None


async def test_double_vote_and_same_team_and_modify_are_refused(db: Database) -> None:
    orch, wf, req = await opened(db, QuorumRule(approvals=2, of="risk", distinct_teams=True))
    decide(orch, req, "APPROVED", by="alice")
    with pytest.raises(Conflict) as double:
        decide(orch, req, "APPROVED", by="alice")
    assert "quorum_one_vote" in str(double.value)
    with pytest.raises(Forbidden) as team:
        decide(orch, req, "APPROVED", by="carol")  # north approved already
    assert team.value.rule == "quorum_distinct_teams"
    with pytest.raises(Forbidden) as teamless:
        decide(orch, req, "APPROVED", by="dave")
    assert teamless.value.rule == "quorum_distinct_teams"
    with pytest.raises(InvalidInput) as modify:
        decide(orch, req, "MODIFIED", by="bob", modifications={"amount": 4})
    assert modify.value.fields.get("field") == "decision" or "quorum_votes_only" in str(modify.value)
    with db.read() as conn:
        assert [v["voter"] for v in votes_for(conn, req)] == ["alice"]
    assert released(db, wf) == 0
    decide(orch, req, "APPROVED", by="bob")  # south: a different team
    assert orch.get_workflow(wf).current_state == WorkflowState.EXECUTING


async def test_a_quorum_larger_than_the_group_is_refused_at_creation(db: Database) -> None:
    quorum_group(db, "risk", {"alice": "north", "bob": "south"})
    orch = WorkflowOrchestrator(database=db)
    for rule in (
        QuorumRule(approvals=3, of="risk"),
        QuorumRule(approvals=1, of="nobody"),
        QuorumRule(approvals=2, of="risk", rejections=3),
    ):
        config = quorum_config(rule)
        with pytest.raises(InvalidInput) as exc:
            orch.initialize_workflow(config)
        assert exc.value.fields["field"] == "checkpoints.0.quorum.of"
        with pytest.raises(Exception):  # noqa: B017 - nothing was created
            orch.get_workflow(config.workflow_id)


async def test_the_group_shrinking_refuses_the_request_naming_the_checkpoint(db: Database) -> None:
    quorum_group(db, "risk", {"alice": "north", "bob": "south"})
    orch = WorkflowOrchestrator(database=db)
    config = quorum_config()
    orch.initialize_workflow(config)
    orch.start_execution(config.workflow_id)
    IdentityService(db).set_disabled("bob", True)
    with pytest.raises(InvalidInput) as exc:
        await pause(orch, config.workflow_id, "cp1")
    assert exc.value.fields["field"] == "checkpoints[cp1].quorum"
    assert orch.get_workflow(config.workflow_id).current_state == WorkflowState.EXECUTING


def _race(calls: list[Any]) -> list[Any]:
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # the race's loser's error is its result
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


async def test_two_last_votes_at_once_decide_exactly_once(db: Database) -> None:
    for _ in range(3):
        orch, wf, req = await opened(db)
        decide(orch, req, "APPROVED", by="alice")
        results = _race([partial(decide, orch, req, "APPROVED", by=who) for who in ("bob", "carol")])
        winners = [r for r in results if not isinstance(r, Exception)]
        losers = [r for r in results if isinstance(r, Exception)]
        assert len(winners) == 1 and len(losers) == 1, results
        assert isinstance(losers[0], DecisionConflict)
        assert released(db, wf) == 5_000_000
        with db.read() as conn:
            assert len(votes_for(conn, req)) == 2  # the loser's vote was not recorded
        assert orch.verify_audit(wf)[1] is None


async def test_a_vote_racing_the_expiry(db: Database) -> None:
    orch, wf, req = await opened(db)
    decide(orch, req, "APPROVED", by="alice")
    later = utcnow() + timedelta(hours=1)
    results = _race([lambda: decide(orch, req, "APPROVED", by="bob"), lambda: orch.sweep_expired(later)])
    state = orch.get_workflow(wf).current_state
    response = orch.get_approval_response(req)
    assert response is not None
    if isinstance(results[0], Exception):  # the sweep won: expired, the vote refused and not recorded
        assert isinstance(results[0], DecisionConflict)
        assert response.automatic and state == WorkflowState.ROLLING_BACK
        with db.read() as conn:
            assert len(votes_for(conn, req)) == 1
    else:  # the vote won: approved once, the sweep found nothing due
        assert response.approved_by == "bob" and state == WorkflowState.EXECUTING
    assert released(db, wf) in (0, 5_000_000)
    assert orch.verify_audit(wf)[1] is None


POLICY = """
name: payments
version: 4
rules:
  - id: BIG
    when: {params: {amount: {gt: "100"}}}
    then: require_approval
    quorum: {approvals: %d, of: risk}
"""


async def test_a_policy_rule_requires_a_quorum(db: Database) -> None:
    quorum_group(db, "risk", {"alice": "north", "bob": "south"})
    orch = WorkflowOrchestrator(database=db, approval_policy=approval_policy.load(POLICY % 2))
    wf = started(orch, make_config(escrow="10.00"))
    small = await pause(orch, wf, "cp1", {"amount": 5})
    assert orch.get_approval_request(small).quorum is None  # one person decides
    decide(orch, small, "APPROVED")
    big = await pause(orch, wf, "cp2", {"amount": 500})
    request = orch.get_approval_request(big)
    assert request.quorum == {"approvals": 2, "of": "risk", "rejections": 1, "distinct_teams": False}
    with pytest.raises(Forbidden):
        decide(orch, big, "APPROVED")  # the workflow's supervisor is not in the group
    decide(orch, big, "APPROVED", by="alice")
    decide(orch, big, "APPROVED", by="bob")
    assert orch.get_workflow(wf).current_state == WorkflowState.EXECUTING
    reached = [e for e in orch.audit_events(wf) if e["payload"].get("policy", {}).get("rule") == "BIG"]
    assert reached and reached[0]["payload"]["policy"]["quorum"]["of"] == "risk"


async def test_a_policy_quorum_the_group_cannot_meet_is_refused_naming_the_rule(db: Database) -> None:
    quorum_group(db, "risk", {"alice": "north", "bob": "south"})
    orch = WorkflowOrchestrator(database=db, approval_policy=approval_policy.load(POLICY % 3))
    wf = started(orch, make_config(escrow="10.00"))
    with pytest.raises(InvalidInput) as exc:
        await pause(orch, wf, "cp1", {"amount": 500})
    assert exc.value.fields["field"] == "policy.rules[BIG].quorum"
    assert "3 approvals" in exc.value.message
    assert orch.get_workflow(wf).current_state == WorkflowState.EXECUTING  # nothing opened
    assert orch.pending_approvals(wf) == []


# measured (submit_approval, including its read of the workflow afterwards); a change that adds statements
# to a vote must raise these on purpose
VOTE_BOUND = {"sqlite": 8, "postgresql": 10}
DECIDING_BOUND = {"sqlite": 23, "postgresql": 26}


def _statements(db: Database, call: Any) -> list[str]:
    seen: list[str] = []

    def before(_conn: Any, _cur: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith(("BEGIN", "SAVEPOINT", "RELEASE")):
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        call()
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
    return seen


async def test_what_a_vote_costs_in_statements(db: Database) -> None:
    """A vote that decides nothing is one short transaction: the request with the voter's identity, the
    workflow lock, the request again (PostgreSQL), the votes so far, the chain check, the group, the vote
    row, its event and the anchor. The deciding vote adds the ordinary decision's writes."""
    orch, _wf, req = await opened(db)
    first = _statements(db, partial(decide, orch, req, "APPROVED", by="alice"))
    last = _statements(db, partial(decide, orch, req, "APPROVED", by="bob"))
    print(f"{db.engine.dialect.name}: a vote {len(first)} statements, the deciding vote {len(last)}")
    assert len(first) <= VOTE_BOUND[db.engine.dialect.name], first
    assert len(last) <= DECIDING_BOUND[db.engine.dialect.name], last
