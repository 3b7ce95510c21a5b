"""Decided elsewhere, in real Chromium (issue 14, item 6): with the review page open, a rejection made
through the REST API turns the status chip from "pending · expires" into "decided · rejected", replaces
the decision buttons with the outcome, and the page never reloads (the change arrives over /api/events).
Screenshots: ``review-decided-elsewhere.png``, ``decide-link-stakes.png``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from saferun.api.server import create_app
from saferun.core.state_machine.models import ApprovalDecision, ApprovalResponse
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.notifications import links
from saferun.storage import approvals
from tests import ui_support as ui
from tests.test_ui_browser import WIDE, Watch, browser, orch, shot

__all__ = ["browser", "orch"]  # fixtures, used by name


def test_a_decision_made_through_the_api_updates_an_open_review_page(
    browser: Any, orch: WorkflowOrchestrator
) -> None:
    from playwright.sync_api import expect

    wf, req = ui.pizza_workflow(orch)
    app = create_app(orch, auth="open", sweep=False)
    with ui.serve(app) as base:
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        watch = Watch(page)
        try:
            page.goto(f"{base}/approvals/{req}")
            expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
            expect(page.locator("#request-state")).to_have_text("pending")
            expect(page.locator("#request-expiry")).to_contain_text("Expires in")
            expect(page.locator("#form-approve button[type=submit]")).to_be_enabled()
            page.evaluate("window.__sameDocument = true")

            answer = httpx.post(
                f"{base}/api/approvals/submit",
                json={
                    "request_id": req,
                    "decision": "REJECTED",
                    "rationale": "100 pizzas for 10 people",
                    "approved_by": "reviewer",
                },
            )
            assert answer.status_code == 200, answer.text

            expect(page.locator("#request-state")).to_have_text("decided · rejected", timeout=15_000)
            expect(page.locator("#request-expiry")).to_have_count(0)
            expect(page.locator("#request-outcome")).to_contain_text("REJECTED by reviewer")
            # the buttons are gone, replaced by the outcome; nothing left to click
            expect(page.locator("#form-approve")).to_have_count(0)
            expect(page.locator("#form-reject")).to_have_count(0)
            expect(page.locator(".decision-card #outcome")).to_contain_text("by reviewer")
            expect(page.locator(".decision-card #outcome")).to_contain_text("100 pizzas for 10 people")
            assert "now executing" not in page.locator("body").inner_text()
            assert page.evaluate("window.__sameDocument") is True
            shot(page, "review-decided-elsewhere", full_page=False)
            assert orch.get_workflow(wf).current_state.value == "rolling_back"
            assert not watch.errors, watch.errors
        finally:
            context.close()


def test_the_decision_link_page_shows_context_stakes_and_what_reject_undoes(
    browser: Any, orch: WorkflowOrchestrator
) -> None:
    from playwright.sync_api import expect

    _, req = ui.pizza_workflow(orch)
    with orch.db.transaction() as conn:
        token = links.mint(conn, approvals.get(conn, req), None, datetime.now(UTC))
    assert token is not None
    app = create_app(orch, auth="open", sweep=False)
    with ui.serve(app) as base:
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        try:
            page.goto(f"{base}/decide/{token}")
            expect(page.locator("#stakes")).to_contain_text("Escrow held")
            expect(page.locator("#stakes-approve")).to_contain_text("$")
            expect(page.locator("#reject-undoes")).to_contain_text("add_items")
            expect(page.locator("#alerts")).to_contain_text("8x the $150 budget")
            expect(page.locator("#link-context")).to_contain_text("Friday all-hands")
            shot(page, "decide-link-stakes")
            page.fill("#rationale", "Order 10, not 100")
            page.click("button[value=REJECTED]")
            expect(page.locator("h1")).to_contain_text("Recorded: rejected")
            expect(page.locator("main")).not_to_contain_text("now executing")
        finally:
            context.close()


def test_an_open_decision_link_page_turns_when_the_request_is_decided_elsewhere(
    browser: Any, orch: WorkflowOrchestrator
) -> None:
    """Open the link page, decide the request elsewhere (here: the engine, as the dashboard would): within
    a poll the page's Approve/Reject buttons give way to what happened, with no reload."""
    from playwright.sync_api import expect

    _, req = ui.data_workflow(orch)
    with orch.db.transaction() as conn:
        token = links.mint(conn, approvals.get(conn, req), None, datetime.now(UTC))
    assert token is not None
    app = create_app(orch, auth="open", sweep=False)
    with ui.serve(app) as base:
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        try:
            page.goto(f"{base}/decide/{token}")
            expect(page.locator("button[value=APPROVED]")).to_be_visible()
            page.evaluate("window.__sameDocument = true")
            orch.submit_approval(
                None,
                ApprovalResponse(
                    request_id=req,
                    decision=ApprovalDecision.APPROVED,
                    rationale="looks right",
                    approved_by="human_2",
                ),
            )
            expect(page.locator("#link-outcome")).to_contain_text("Approved", timeout=15_000)
            expect(page.locator("#link-outcome")).to_contain_text("by human_2")
            expect(page.locator("button[value=APPROVED]")).to_have_count(0)
            expect(page.locator("button[value=REJECTED]")).to_have_count(0)
            assert page.evaluate("window.__sameDocument") is True  # updated in place, not reloaded
            shot(page, "decide-link-decided-elsewhere", full_page=False)
        finally:
            context.close()


def test_batch_reject_from_the_queue_in_chromium(browser: Any, orch: WorkflowOrchestrator) -> None:
    """Tick two requests on the queue, try to reject without a rationale (refused in the browser), give
    one, reject: both are decided once and the page lists one result per request."""
    from playwright.sync_api import expect

    _, first = ui.data_workflow(orch, "Quarterly report")
    _, second = ui.data_workflow(orch, "Churn analysis")
    _, kept = ui.data_workflow(orch, "Board summary")
    app = create_app(orch, auth="open", sweep=False)
    with ui.serve(app) as base:
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        watch = Watch(page)
        try:
            page.goto(f"{base}/approvals")
            expect(page.locator("#batch-approve")).to_be_disabled()  # nothing selected yet
            page.check(f'input[name="request_id"][value="{first}"]')
            page.check(f'input[name="request_id"][value="{second}"]')
            expect(page.locator("#batch-count")).to_have_text("2 selected")
            expect(page.locator("#batch-all")).to_have_js_property("indeterminate", True)
            page.fill('#batch-form [name="acting_as"]', "reviewer")
            shot(page, "queue-batch-selected", full_page=False)

            page.click("#batch-reject")  # no rationale: the browser says why and nothing is posted
            expect(page.locator("#batch-count")).to_contain_text("Say why you reject")
            assert orch.get_approval_response(first) is None

            page.fill('#batch-form [name="rationale"]', "Wrong quarter: use Q3 data")
            page.click("#batch-reject")
            expect(page.locator("#batch-report")).to_contain_text("Rejected 2 of 2.")
            expect(page.locator("#batch-report [data-result=decided]")).to_have_count(2)
            expect(page.locator(f'[data-request-id="{kept}"]')).to_be_visible()
            expect(page.locator(f'[data-request-id="{first}"]')).to_have_count(0)
            shot(page, "queue-batch-result", full_page=False)
            for rid in (first, second):
                response = orch.get_approval_response(rid)
                assert response is not None and response.decision.value == "REJECTED"
                assert (
                    response.rationale == "Wrong quarter: use Q3 data" and response.approved_by == "reviewer"
                )
            assert orch.get_approval_response(kept) is None
            assert not watch.errors, watch.errors
        finally:
            context.close()
