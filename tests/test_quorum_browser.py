"""The quorum view in real Chromium (issue 16, item 2): two approvers vote through the dashboard's review
page; after the first the page shows "Votes: 1 of 2 (alice approved ..)" and who may still vote, the queue
shows the progress and nothing is paid; after the second the workflow resumes."""

from __future__ import annotations

from typing import Any

from saferun.api.server import create_app
from saferun.core.state_machine.models import CheckpointConfig, ExecutionState
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.quorum import QuorumRule
from saferun.domain.states import WorkflowState
from saferun.storage import ledger as book
from tests import ui_support as ui
from tests.helpers import make_config, quorum_group
from tests.test_ui_browser import WIDE, Watch, browser, orch, shot

__all__ = ["browser", "orch"]


def _paused(orch: WorkflowOrchestrator) -> tuple[str, str]:
    quorum_group(orch.db, "risk", {"alice": "north", "bob": "south", "carol": "north"})
    config = make_config(
        escrow="10.00",
        checkpoints=[
            CheckpointConfig(
                name="Wire the payout",
                checkpoint_id="pay",
                quorum=QuorumRule(approvals=2, of="risk", distinct_teams=True),
            ),
            CheckpointConfig(name="Close", checkpoint_id="close"),
        ],
    )
    orch.initialize_workflow(config)
    orch.start_execution(config.workflow_id)
    snap = orch.create_checkpoint_sync(
        config.workflow_id, ExecutionState(checkpoint_id="pay", parameters={"amount": 5000, "to": "acme"})
    )
    req = orch.request_approval(config.workflow_id, snap.snapshot_id, "Wire 5,000 to ACME?")
    return config.workflow_id, req.request_id


def _vote(browser: Any, base: str, req: str, who: str, watch_errors: list[str]) -> Any:
    context = browser.new_context(viewport=WIDE)  # each approver in their own browser
    page = context.new_page()
    watch = Watch(page)
    page.goto(f"{base}/approvals/{req}")
    page.fill('#form-approve [name="acting_as"]', who)
    page.fill('#form-approve [name="rationale"]', f"{who} checked the payee")
    page.click('#form-approve button[type="submit"]')
    watch_errors.extend(watch.errors)
    return context, page


def test_two_approvers_vote_through_the_dashboard(browser: Any, orch: WorkflowOrchestrator) -> None:
    from playwright.sync_api import expect

    wf, req = _paused(orch)
    errors: list[str] = []
    contexts = []
    with ui.serve(create_app(orch, auth="open")) as base:
        try:
            first, page = _vote(browser, base, req, "alice", errors)
            contexts.append(first)
            expect(page.locator("#quorum")).to_contain_text("Quorum: 2 approvals of risk")
            expect(page.locator("#quorum-votes")).to_contain_text("Votes: 1 of 2 (alice approved")
            expect(page.locator("#quorum-vote-list")).to_contain_text("alice checked the payee")
            expect(page.locator("#quorum-may-vote")).to_have_text("May still vote: bob")  # carol: north
            expect(page.locator(".tab-modify")).to_have_count(0)  # a quorum takes votes only
            shot(page, "quorum-one-of-two")
            assert orch.get_workflow(wf).current_state == WorkflowState.AWAITING_APPROVAL
            with orch.db.read() as conn:
                assert book.escrow_position(conn, wf).released == 0

            page.goto(f"{base}/approvals")
            expect(page.locator(f'[data-request-id="{req}"] .quorum-progress')).to_have_text("Votes 1 of 2")

            # carol is in the team that approved already: refused on the page, nothing recorded
            refused, page = _vote(browser, base, req, "carol", errors)
            contexts.append(refused)
            expect(page.locator("#refusal")).to_contain_text("quorum_distinct_teams")
            expect(page.locator("#refusal")).to_contain_text("team 'north', which already approved")
            assert len(orch.get_approval_request(req).votes) == 1

            second, page = _vote(browser, base, req, "bob", errors)
            contexts.append(second)
            expect(page.locator("#flash")).to_be_visible()
            assert orch.get_workflow(wf).current_state == WorkflowState.EXECUTING
            decided = orch.get_approval_response(req)
            assert decided is not None and decided.approved_by == "bob"
            with orch.db.read() as conn:
                assert book.escrow_position(conn, wf).released == 5_000_000

            page.goto(f"{base}/approvals/{req}")
            expect(page.locator("#quorum-votes")).to_contain_text("Votes: 2 of 2 (alice approved")
            expect(page.locator("#quorum-vote-list li")).to_have_count(2)
            shot(page, "quorum-decided")
            assert errors == []
        finally:
            for context in contexts:
                context.close()


def test_an_open_review_page_shows_another_approvers_vote_live(
    browser: Any, orch: WorkflowOrchestrator
) -> None:
    """Bob has the review page open; Alice votes elsewhere (the API): the vote moves no workflow state,
    but the event stream's hint refreshes Bob's quorum panel in place: her vote, and Bob still may vote."""
    from playwright.sync_api import expect

    from saferun.core.state_machine.models import ApprovalDecision, ApprovalResponse

    _, req = _paused(orch)
    with ui.serve(create_app(orch, auth="open")) as base:
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        watch = Watch(page)
        try:
            page.goto(f"{base}/approvals/{req}")
            expect(page.locator("#quorum-may-vote")).to_contain_text("alice")
            expect(page.locator("#live-status")).to_contain_text("Live")
            page.evaluate("window.__sameDocument = true")
            orch.submit_approval(
                None,
                ApprovalResponse(
                    request_id=req,
                    decision=ApprovalDecision.APPROVED,
                    rationale="payee checked",
                    approved_by="alice",
                ),
            )
            votes = page.locator("#quorum-votes")
            expect(votes).to_contain_text("Votes: 1 of 2 (alice approved", timeout=15_000)
            expect(page.locator("#quorum-may-vote")).to_have_text("May still vote: bob")
            expect(page.locator('#form-approve button[type="submit"]')).to_be_visible()
            assert page.evaluate("window.__sameDocument") is True
            assert watch.errors == []
        finally:
            context.close()
