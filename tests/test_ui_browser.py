"""The dashboard in real headless Chromium (Debian's ``chromium``, driven by Playwright), against a real
uvicorn server on a loopback port: click through approve, modify and reject, see a new request arrive
without a reload, and keep a screenshot of each view in ``test-artifacts/screenshots/``.

Skipped with the reason when Playwright or Chromium is missing; under CI (``CI=true``) that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saferun.api.server import create_app
from saferun.core.identity import IdentityService
from saferun.core.state_machine.models import ApprovalDecision
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests import ui_support as ui
from tests.conftest import IN_CI

CHROMIUM = os.environ.get("SAFERUN_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
WIDE = {"width": 1360, "height": 900}
PHONE = {"width": 390, "height": 844}


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (.venv/bin/pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium is not at {CHROMIUM} (apt-get install chromium, or set SAFERUN_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason:
        if IN_CI:
            pytest.fail(f"CI must run the browser tests, but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def orch(tmp_path: Path) -> Iterator[WorkflowOrchestrator]:
    database = Database(f"sqlite:///{tmp_path / 'ui.db'}")
    yield WorkflowOrchestrator(database=database)
    database.dispose()


def shot(page: Any, name: str, *, full_page: bool = True) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


class Watch:
    """Collects script errors and failed sub-requests (scripts, styles, fragments, the event stream), so a
    broken page fails the test. A page answered with 4xx on purpose (a refused decision) is not an error."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"script error: {exc}"))
        page.on("response", self._response)

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            self.errors.append(f"{response.status} for {response.request.resource_type} {response.url}")


def test_click_through_approve_modify_reject_and_live_update(
    browser: Any, orch: WorkflowOrchestrator
) -> None:
    from playwright.sync_api import expect

    pizza_wf, pizza_req = ui.pizza_workflow(orch)
    data_wf, data_req = ui.data_workflow(orch)
    draft_wf, draft_req = ui.data_workflow(orch, "Vendor contract draft")
    app = create_app(orch, auth="open")
    with ui.serve(app) as base:
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        watch = Watch(page)
        try:
            page.goto(f"{base}/approvals")
            expect(page.locator(".banner-open")).to_contain_text(
                "Open mode: no authentication, loopback only"
            )
            expect(page.locator(".approval-item")).to_have_count(3)
            expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
            expect(page.locator("#nav-pending-count")).to_have_text("3")
            shot(page, "approvals")

            # Approve: the low-risk data collection
            page.click(f'[data-request-id="{data_req}"] a')
            expect(page.locator("h1")).to_contain_text("Fetched 1,000 customer records")
            expect(page.locator("#form-approve")).to_be_visible()
            expect(page.locator("#form-reject")).to_be_hidden()
            shot(page, "review")
            page.fill('#form-approve [name="acting_as"]', "reviewer")
            page.click('#form-approve button[type="submit"]')
            expect(page.locator("#flash")).to_contain_text("Approved")
            expect(page.locator(".approval-item")).to_have_count(2)
            approved = orch.get_approval_response(data_req)
            assert approved is not None and approved.decision == ApprovalDecision.APPROVED
            assert approved.approved_by == "reviewer" and orch.get_workflow(data_wf).status == "executing"

            # Modify: 100 pizzas -> 10, after the browser refused an empty count
            page.click(f'[data-request-id="{pizza_req}"] a')
            expect(page.locator("#agent-proposal")).to_have_text("modify")
            expect(page.locator("#alerts")).to_contain_text("8x the $150 budget")
            shot(page, "review-full")
            page.click(".tab-modify")
            expect(page.locator("#form-modify")).to_be_visible()
            expect(page.locator('#form-modify [name="acting_as"]')).to_have_value("reviewer")  # remembered
            count = page.locator('[name="param.pizza_count"]')
            expect(count).to_have_attribute("type", "number")
            count.fill("")
            page.click('#form-modify button[type="submit"]')
            error = page.locator('#form-modify .param[data-kind="integer"] .field-error')
            expect(error).to_contain_text("expected a whole number")
            assert page.url.endswith(f"/approvals/{pizza_req}")
            assert orch.get_approval_request(pizza_req).status == "pending"
            toppings = page.locator('[name="param.toppings"]')
            toppings.fill('{"not": "a list"}')
            toppings.dispatch_event("change")
            expect(page.locator('#form-modify .param[data-kind="json"] .field-error')).to_contain_text(
                "expected a JSON array"
            )
            toppings.fill('["margherita", "pepperoni", "veggie"]')
            count.fill("10")
            expect(page.locator('#form-modify .param[data-kind="integer"]')).to_have_class(
                "field param is-changed"
            )
            shot(page, "review-modify", full_page=False)
            page.click('#form-modify button[type="submit"]')
            expect(page.locator("#flash")).to_contain_text("Modified")
            resumed = orch.latest_approved_state(pizza_wf)
            assert resumed is not None and resumed.parameters["pizza_count"] == 10
            assert resumed.parameters["toppings"] == ["margherita", "pepperoni", "veggie"]
            assert orch.get_workflow(pizza_wf).status == "executing"

            # Reject: four eyes refuses the executor, an empty rationale is refused, then it goes through
            page.click(f'[data-request-id="{draft_req}"] a')
            page.click(".tab-reject")
            page.fill('#form-reject [name="acting_as"]', "agent")
            page.fill('#form-reject [name="rationale"]', "The draft cites the wrong vendor")
            page.click('#form-reject button[type="submit"]')
            expect(page.locator("#refusal")).to_contain_text("four_eyes")
            expect(page.locator("#refusal")).to_contain_text("'agent' is the executor of this workflow")
            expect(page.locator("#form-reject")).to_be_visible()
            shot(page, "review-refused")
            assert orch.get_approval_request(draft_req).status == "pending"
            page.fill('#form-reject [name="acting_as"]', "reviewer")
            page.fill('#form-reject [name="rationale"]', "")
            page.click('#form-reject button[type="submit"]')
            expect(page.locator("#form-reject .field-error").last).to_contain_text("Say why you reject")
            page.fill('#form-reject [name="rationale"]', "The draft cites the wrong vendor")
            page.click('#form-reject button[type="submit"]')
            expect(page.locator("#flash")).to_contain_text("Rejected")
            rejected = orch.get_approval_response(draft_req)
            assert rejected is not None and rejected.decision == ApprovalDecision.REJECTED
            assert rejected.rationale == "The draft cites the wrong vendor"
            assert orch.get_workflow(draft_wf).status in ("rolling_back", "executing")

            # Live: a request created while the queue is open appears without a reload
            expect(page.locator(".empty")).to_be_visible()
            page.evaluate("window.__sameDocument = true")
            _, live_req = ui.data_workflow(orch, "Quarterly report")
            arrived = page.locator(f'[data-request-id="{live_req}"]')
            expect(arrived).to_be_visible(timeout=15_000)
            expect(page.locator("#nav-pending-count")).to_have_text("1")
            assert page.evaluate("window.__sameDocument") is True
            shot(page, "approvals-live-update")

            # A decision made elsewhere shows on an open review page
            page.goto(f"{base}/approvals/{live_req}")
            page.evaluate("window.__sameDocument = true")
            ui.approve(orch, live_req)
            expect(page.locator("#request-status [data-closed]")).to_contain_text("APPROVED", timeout=15_000)
            assert page.evaluate("window.__sameDocument") is True

            # Workflows, the timeline, stats
            page.goto(f"{base}/workflows")
            expect(page.locator("#workflow-table tbody tr")).to_have_count(4)
            shot(page, "workflows")
            page.click("text=Team lunch order")
            timeline = page.locator("#timeline")
            expect(timeline).to_contain_text("Modified: Place order")
            expect(timeline).to_contain_text("Milestone paid: 40.00")
            expect(timeline).to_contain_text("pizza_count → 10")
            shot(page, "workflow-timeline")
            page.goto(f"{base}/stats")
            expect(page.locator("#stat-total")).to_have_text("4")
            expect(page.locator("#stat-decisions")).to_have_text("5")
            shot(page, "stats")
            assert watch.errors == []
        finally:
            context.close()


def test_the_review_page_fits_a_phone(browser: Any, orch: WorkflowOrchestrator) -> None:
    from playwright.sync_api import expect

    _, request_id = ui.pizza_workflow(orch)
    with ui.serve(create_app(orch, auth="open")) as base:
        context = browser.new_context(viewport=PHONE, is_mobile=True)
        page = context.new_page()
        try:
            page.goto(f"{base}/approvals/{request_id}")
            expect(page.locator("h1")).to_contain_text("Order 100 pizzas")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width}px)"
            shot(page, "review-phone", full_page=False)
            page.click(".jump-decision")
            expect(page.locator(".decision-card h2")).to_be_in_viewport()
            shot(page, "review-phone-decision", full_page=False)
        finally:
            context.close()


def test_sign_in_with_a_key_decide_and_sign_out(browser: Any, orch: WorkflowOrchestrator) -> None:
    from playwright.sync_api import expect

    _, key = IdentityService(orch.db).create_identity_with_key("reviewer", "Rita Reviewer", ["supervisor"])
    wf, request_id = ui.data_workflow(orch)
    with ui.serve(create_app(orch, auth="keys")) as base:
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        watch = Watch(page)
        try:
            page.goto(f"{base}/approvals")
            expect(page).to_have_url(f"{base}/login?next=/approvals")
            expect(page.locator(".banner-open")).to_have_count(0)
            shot(page, "login")
            page.fill('[name="api_key"]', "sr_key_wrong")
            page.click('button:has-text("Sign in")')
            expect(page.locator(".alert-bad")).to_contain_text("unknown, revoked or malformed")
            page.fill('[name="api_key"]', key.api_key)
            page.click('button:has-text("Sign in")')
            expect(page).to_have_url(f"{base}/approvals")
            expect(page.locator(".who")).to_contain_text("Rita Reviewer")
            cookie = next(c for c in context.cookies() if c["name"] == "saferun_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
            expect(page.locator("#live-status")).to_have_attribute("data-state", "live")

            page.click(f'[data-request-id="{request_id}"] a')
            expect(page.locator(".signing")).to_contain_text("reviewer")
            expect(page.locator('[name="acting_as"]')).to_have_count(0)
            page.click('#form-approve button[type="submit"]')
            expect(page.locator("#flash")).to_contain_text("Approved")
            decision = orch.get_approval_response(request_id)
            assert decision is not None and decision.approved_by == "reviewer"
            assert orch.get_workflow(wf).status == "executing"

            page.click('button:has-text("Sign out")')
            expect(page).to_have_url(f"{base}/login")
            page.goto(f"{base}/stats")
            expect(page).to_have_url(f"{base}/login?next=/stats")
            assert watch.errors == []
        finally:
            context.close()


def test_a_declared_parameter_schema_drives_the_modify_form(browser: Any, orch: WorkflowOrchestrator) -> None:
    """The agent's declared schema types the form (a choice for an enum, limits as attributes); the
    browser refuses 60 pizzas with the schema's words, and the server refuses the same post made without
    the page's script with the same words; nothing is decided until the value fits."""
    from playwright.sync_api import expect

    schema = {
        "type": "object",
        "properties": {
            "pizza_count": {"type": "integer", "minimum": 1, "maximum": 50, "description": "how many"},
            "size": {"enum": ["small", "medium", "large"]},
        },
        "additionalProperties": False,
    }
    wf = ui.new_workflow(orch, "Typed order", ["Place order"])
    req = ui.pause(
        orch,
        wf,
        "cp1",
        "Order 20 large pizzas",
        state={"parameters": {"pizza_count": 20, "size": "large"}},
        parameter_schema=schema,
    )
    words = "must be at most 50, got 60"
    app = create_app(orch, auth="open")
    with ui.serve(app) as base:
        for scripted in (True, False):
            context = browser.new_context(viewport=WIDE, java_script_enabled=scripted)
            page = context.new_page()
            try:
                page.goto(f"{base}/approvals/{req}")
                if scripted:
                    page.click(".tab-modify")
                expect(page.locator('select[name="param.size"] option')).to_have_count(3)
                page.fill('#form-modify [name="acting_as"]', "reviewer")
                page.fill('[name="param.pizza_count"]', "60")
                page.click('#form-modify button[type="submit"]')
                error = page.locator('#form-modify .param[data-kind="integer"] .field-error')
                expect(error).to_have_text(words)  # the browser's check, or the server's page: same words
                assert orch.get_approval_request(req).status == "pending"
                if scripted:
                    shot(page, "review-typed-schema", full_page=False)
            finally:
                context.close()
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        try:
            page.goto(f"{base}/approvals/{req}")
            page.click(".tab-modify")
            page.fill('#form-modify [name="acting_as"]', "reviewer")
            page.fill('[name="param.pizza_count"]', "12")
            page.select_option('select[name="param.size"]', "medium")
            page.click('#form-modify button[type="submit"]')
            expect(page.locator("#flash")).to_contain_text("Modified")
        finally:
            context.close()
    state = orch.latest_approved_state(wf)
    assert state is not None and state.parameters == {"pizza_count": 12, "size": "medium"}


def test_the_workflow_page_downloads_a_signed_record_that_verifies(
    browser: Any, orch: WorkflowOrchestrator
) -> None:
    """Issue 16, item 5 from the dashboard: a signed-in reviewer downloads the record; it verifies offline
    against the server's published keys."""
    from playwright.sync_api import expect

    from saferun.core.bundles import verify_bundle
    from saferun.core.signing import KeyRing

    _, key = IdentityService(orch.db).create_identity_with_key("reviewer", "Rita Reviewer", ["supervisor"])
    wf, request_id = ui.data_workflow(orch)
    from saferun.core.state_machine.models import ApprovalResponse

    orch.submit_approval(
        None,
        ApprovalResponse(
            request_id=request_id, decision=ApprovalDecision.APPROVED, rationale="ok", approved_by="reviewer"
        ),
    )
    with ui.serve(create_app(orch, auth="keys")) as base:
        context = browser.new_context(viewport=WIDE, accept_downloads=True)
        page = context.new_page()
        watch = Watch(page)
        try:
            page.goto(f"{base}/login?next=/workflows/{wf}")
            page.fill('[name="api_key"]', key.api_key)
            page.click('button:has-text("Sign in")')
            expect(page).to_have_url(f"{base}/workflows/{wf}")
            with page.expect_download() as download:
                page.click("#export-record")
            data = Path(download.value.path()).read_bytes()
            assert download.value.suggested_filename == f"saferun-{wf}.bundle.json"
            trusted = {k.key_id: k for k in KeyRing(orch.db).public_keys()}
            assert verify_bundle(data, trusted).workflow_id == wf
            assert watch.errors == []
        finally:
            context.close()


def test_the_poster_forks_from_an_approved_snapshot_in_the_dashboard(
    browser: Any, orch: WorkflowOrchestrator
) -> None:
    """Issue 16, item 6 from the dashboard: the poster signs in, forks from the approved checkpoint and
    lands on the new workflow's page; the reviewer sees no fork button (only the poster or an admin)."""
    from playwright.sync_api import expect

    from saferun.core.state_machine.models import ApprovalResponse

    ids = IdentityService(orch.db)
    _, poster_key = ids.create_identity_with_key("poster", "Pat Poster", ["poster"])
    _, reviewer_key = ids.create_identity_with_key("reviewer", "Rita Reviewer", ["supervisor"])
    ids.create_identity_with_key("agent", "Agent", ["executor"])
    wf, request_id = ui.data_workflow(orch)
    orch.submit_approval(
        None,
        ApprovalResponse(
            request_id=request_id, decision=ApprovalDecision.APPROVED, rationale="ok", approved_by="reviewer"
        ),
    )
    with ui.serve(create_app(orch, auth="keys")) as base:
        for key, may in ((reviewer_key, False), (poster_key, True)):
            context = browser.new_context(viewport=WIDE)
            page = context.new_page()
            watch = Watch(page)
            try:
                page.goto(f"{base}/login?next=/workflows/{wf}")
                page.fill('[name="api_key"]', key.api_key)
                page.click('button:has-text("Sign in")')
                expect(page).to_have_url(f"{base}/workflows/{wf}")
                button = page.locator('.fork-form button:has-text("Fork from here")')
                if not may:
                    expect(button).to_have_count(0)
                    continue
                expect(button).to_have_count(1)
                button.click()
                expect(page).not_to_have_url(f"{base}/workflows/{wf}")
                fork_id = page.url.rsplit("/", 1)[-1]
                fork = orch.get_workflow(fork_id)
                assert fork.config.metadata["forked_from"]["workflow_id"] == wf
                expect(page.locator("#workflow-state")).to_contain_text("xecuting")
                expect(button).to_have_count(0)  # the fork's starting state is its source's to fork
                shot(page, "workflow-forked")
                assert watch.errors == []
            finally:
                context.close()


def test_an_escalation_shows_on_the_workflow_timeline(browser: Any, orch: WorkflowOrchestrator) -> None:
    """Issue 16, item 3 in the dashboard: a reminder and a reassignment appear on the timeline, and the
    request's page names the new assignee."""
    from datetime import timedelta

    from playwright.sync_api import expect

    from saferun.core.state_machine.models import CheckpointConfig
    from tests.helpers import make_config, started

    ladder = [
        {"after_seconds": 60, "action": "notify"},
        {"after_seconds": 120, "action": "reassign", "to": "oncall_lead"},
    ]
    cp = CheckpointConfig(name="Pay the vendor", checkpoint_id="cp1", timeout_seconds=3600, escalation=ladder)
    wf = started(orch, make_config(checkpoints=[cp]))
    snap = orch.create_checkpoint_sync(
        wf, __import__("saferun").ExecutionState(checkpoint_id="cp1", parameters={"amount": 10})
    )
    request = orch.request_approval(wf, snap.snapshot_id, "pay 10", {})
    report = orch.sweep(request.created_at + timedelta(seconds=121))
    assert len(report.escalated) == 2
    with ui.serve(create_app(orch, auth="open")) as base:
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        watch = Watch(page)
        try:
            page.goto(f"{base}/workflows/{wf}")
            timeline = page.locator("#timeline")
            expect(timeline).to_contain_text("Escalated: Reminder sent")
            expect(timeline).to_contain_text("Escalated: Reassigned to oncall_lead")
            shot(page, "workflow-escalated")
            assert watch.errors == []
        finally:
            context.close()
