"""The stale-review view in real Chromium (issue 16, item 1): a reviewer's page is open, a monitor adds an
alert behind its back, Approve is refused: the page is re-rendered with the alert and a notice saying
what changed, nothing is decided; approving again (now having seen it) goes through with the new digest."""

from __future__ import annotations

from typing import Any

from saferun.api.server import create_app
from saferun.core.state_machine.models import ApprovalDecision
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from tests import ui_support as ui
from tests.test_ui_browser import WIDE, Watch, browser, orch, shot

__all__ = ["browser", "orch"]


def test_an_alert_added_behind_the_reviewers_back_makes_approve_stale(
    browser: Any,
    orch: WorkflowOrchestrator,
) -> None:
    from playwright.sync_api import expect

    wf, req = ui.data_workflow(orch)
    with ui.serve(create_app(orch, auth="open")) as base:
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        watch = Watch(page)
        try:
            page.goto(f"{base}/approvals/{req}")
            expect(page.locator("#form-approve")).to_be_visible()
            shown = page.locator('#form-approve [name="review_digest"]').get_attribute("value")
            assert shown == orch.get_approval_request(req).review_digest
            expect(page.locator("#alerts")).to_have_count(0)

            # a monitor finds something while the reviewer reads
            alert = {"level": "high", "message": "Export includes a PII column not in the plan"}
            orch.add_alerts(req, [alert], actor="monitor")

            page.fill('#form-approve [name="acting_as"]', "reviewer")
            page.click('#form-approve button[type="submit"]')
            notice = page.locator("#stale-review")
            expect(notice).to_contain_text("changed while you were reviewing it")
            expect(notice).to_contain_text("Nothing was decided")
            expect(notice).to_contain_text("alerts")
            expect(page.locator("#alerts")).to_contain_text("PII column not in the plan")
            shot(page, "review-stale")
            assert orch.get_approval_request(req).status == "pending"
            assert orch.get_approval_response(req) is None
            assert not [e for e in orch.audit_events(wf) if e["kind"] == "decision"]
            fresh = page.locator('#form-approve [name="review_digest"]').get_attribute("value")
            assert fresh != shown and fresh == orch.get_approval_request(req).review_digest

            # having seen the alert, the reviewer approves: recorded with the digest of what they saw
            page.click('#form-approve button[type="submit"]')
            expect(page.locator("#flash")).to_contain_text("Approved")
            decided = orch.get_approval_response(req)
            assert decided is not None and decided.decision == ApprovalDecision.APPROVED
            assert decided.review_digest == fresh
            assert watch.errors == []
        finally:
            context.close()
