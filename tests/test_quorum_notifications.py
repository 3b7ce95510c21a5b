"""Notifications of a quorum request go to every member who may still vote, and carry no one-click
decision link (a link stands for one assigned supervisor; a vote is cast on the review page, API or CLI)."""

from __future__ import annotations

from saferun.core.state_machine.models import CheckpointConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.quorum import QuorumRule
from saferun.notifications.dispatcher import OWN_WEBHOOK, WEBHOOK, Dispatcher
from saferun.notifications.settings import NotificationSettings
from saferun.storage import notifications as store
from saferun.storage.database import Database
from saferun.storage.schema import utcnow
from tests.helpers import decide, make_config, pause, quorum_group, started

HOOKS = {name: f"https://hooks.example/{name}" for name in ("alice", "bob", "carol", "reviewer")}


def dispatcher(db: Database) -> Dispatcher:
    config = NotificationSettings(
        webhook_urls=("https://hooks.example/team",),
        supervisor_webhooks=HOOKS,
        webhook_secret="s" * 32,
        public_url="https://saferun.example",
    )
    return Dispatcher(db, config, rng=lambda: 1.0)


async def test_every_eligible_voter_is_notified_without_a_decision_link(db: Database) -> None:
    quorum_group(db, "risk", {"alice": "north", "bob": "south", "carol": None})
    quorum_group(db, "risk", {"agent": "x"}, roles=("supervisor", "executor"))  # a member, but the executor
    orch = WorkflowOrchestrator(database=db)
    rule = QuorumRule(approvals=2, of="risk")
    wf = started(
        orch,
        make_config(checkpoints=[CheckpointConfig(name="Pay", checkpoint_id="cp1", quorum=rule)]),
    )
    req = await pause(orch, wf, "cp1", {"amount": 5})
    notices = dispatcher(db)
    assert notices.fan_out(utcnow()) == 1
    with db.read() as conn:
        sent = {(d["channel"], d["target"]) for d in store.deliveries(conn, req)}
    # the members (not the executor "agent", though in the group; not the assigned supervisor "reviewer")
    assert sent == {
        (WEBHOOK, "https://hooks.example/team"),
        (OWN_WEBHOOK, HOOKS["alice"]),
        (OWN_WEBHOOK, HOOKS["bob"]),
        (OWN_WEBHOOK, HOOKS["carol"]),
    }
    attempts = notices._claim_due(utcnow())
    assert len(attempts) == 4
    for attempt in attempts:
        assert attempt.view is not None and attempt.view.decide_url is None  # no link decides a vote
        assert attempt.view.review_url == f"https://saferun.example/approvals/{req}"
    with db.read() as conn:
        assert store.links_for(conn, req) == []

    decide(orch, req, "APPROVED", by="alice")
    assert orch.get_approval_request(req).may_still_vote == ["bob", "carol"]
