"""A checkpoint that asks three things at once, reviewed in real headless Chromium (issue 14 item 3): the
review page lists the sibling items with their own decision state; the reviewer modifies one on its page,
is taken to the next waiting item, approves the rest, and the workflow resumes once, paid once.

Skipped with the reason when Playwright or Chromium is missing; under CI (``CI=true``) that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from saferun.api.server import create_app
from saferun.core.state_machine.models import CheckpointConfig, ExecutionState, WorkflowConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests import ui_support as ui
from tests.conftest import IN_CI

CHROMIUM = os.environ.get("SAFERUN_CHROMIUM", "/usr/bin/chromium")
ITEMS = [
    {"key": "call_hotel", "summary": "Book the hotel", "parameters": {"nights": 3, "city": "Oslo"}},
    {"key": "call_flight", "summary": "Book the flight", "parameters": {"seat": "aisle"}},
    {"key": "call_car", "summary": "Rent a car", "parameters": {"days": 2}},
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "Playwright is not installed (.venv/bin/pip install -e '.[dev]')"
    if reason is None and not os.access(CHROMIUM, os.X_OK):
        reason = f"Chromium is not at {CHROMIUM} (apt-get install chromium, or set SAFERUN_CHROMIUM)"
    if reason:
        if IN_CI:
            pytest.fail(f"CI must run the browser tests, but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _paused_with_items(orch: WorkflowOrchestrator) -> tuple[str, dict[str, str]]:
    config = WorkflowConfig(
        name="Trip planner",
        checkpoints=[CheckpointConfig(name="Book the trip", checkpoint_id="cp_trip")],
        escrow_amount="40.00",
        poster_id="poster",
        executor_id="agent",
        supervisor_id="reviewer",
    )
    orch.initialize_workflow(config)
    orch.start_execution(config.workflow_id)
    _, reqs = orch.pause_items_sync(
        config.workflow_id, ExecutionState(checkpoint_id="cp_trip"), "Three bookings at once", ITEMS
    )
    return config.workflow_id, {str(r.item_key): r.request_id for r in reqs}


def test_three_items_reviewed_in_chromium_resume_the_workflow_once(browser: Any, db: Database) -> None:
    from playwright.sync_api import expect

    orch = WorkflowOrchestrator(database=db)
    wf, reqs = _paused_with_items(orch)
    errors: list[str] = []
    with ui.serve(create_app(orch, auth="open", sweep=False)) as base:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(f"{base}/approvals")
            expect(page.locator(".approval-item")).to_have_count(3)
            expect(page.locator(".item-key")).to_have_count(3)

            # the first item's page lists all three, this one marked, each pending
            page.goto(f"{base}/approvals/{reqs['call_hotel']}")
            rows = page.locator("#checkpoint-items tbody tr")
            expect(rows).to_have_count(3)
            expect(page.locator("#checkpoint-items tr.is-current")).to_have_attribute(
                "data-item-key", "call_hotel"
            )
            expect(page.locator('#checkpoint-items tr[data-status="pending"]')).to_have_count(3)
            expect(page.locator("#items-approve-all")).to_contain_text("Approve all 3 waiting items")

            # modify this item's own parameter (its own Modify form)
            page.click(".tab-modify")
            page.fill('#form-modify [name="acting_as"]', "reviewer")
            page.fill('[name="param.nights"]', "2")
            page.click('#form-modify button[type="submit"]')

            # on to the next waiting item, with what the last decision did
            expect(page.locator("#checkpoint-items tr.is-current")).to_have_attribute(
                "data-item-key", "call_flight"
            )
            expect(page.locator("#flash")).to_contain_text("Modified")
            expect(page.locator("#flash-consequence")).to_contain_text(
                "2 other items of this checkpoint still wait"
            )
            expect(
                page.locator('#checkpoint-items tr[data-item-key="call_hotel"] .item-decision')
            ).to_contain_text("modified")
            assert orch.get_workflow(wf).status == "awaiting_approval"
            assert [e for e in orch.ledger_entries(wf) if e["kind"] == "release"] == []

            page.click('#form-approve button[type="submit"]')
            expect(page.locator("#checkpoint-items tr.is-current")).to_have_attribute(
                "data-item-key", "call_car"
            )
            expect(page.locator("#flash-consequence")).to_contain_text(
                "1 other item of this checkpoint still waits"
            )
            page.click('#form-approve button[type="submit"]')

            # the last one completes the checkpoint: back on the queue, paid once, the agent resumes
            expect(page.locator("#flash")).to_contain_text("Approved")
            expect(page.locator("#flash-consequence")).to_contain_text("The milestone is paid")
            expect(page.locator(".approval-item")).to_have_count(0)
        finally:
            context.close()
    assert errors == []
    assert orch.get_workflow(wf).status == "executing"
    assert len([e for e in orch.ledger_entries(wf) if e["kind"] == "release"]) == 1
    state = orch.latest_approved_state(wf)
    assert state is not None and state.parameters == {
        "call_hotel": {"nights": 2, "city": "Oslo"},
        "call_flight": {"seat": "aisle"},
        "call_car": {"days": 2},
    }


def test_reject_the_checkpoint_from_an_items_page_closes_the_rest(browser: Any, db: Database) -> None:
    from playwright.sync_api import expect

    orch = WorkflowOrchestrator(database=db)
    wf, reqs = _paused_with_items(orch)
    with ui.serve(create_app(orch, auth="open", sweep=False)) as base:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        try:
            page.goto(f"{base}/approvals/{reqs['call_car']}")
            page.fill('#items-batch [name="acting_as"]', "reviewer")
            page.fill('#items-batch [name="rationale"]', "wrong dates")
            page.click("#items-reject-all")
            expect(page.locator("#batch-report")).to_contain_text("Rejected 1 of 3")
            expect(page.locator('#batch-report li[data-result="closed"]')).to_have_count(2)
            expect(page.locator("#batch-report")).to_contain_text("Book the trip · item call_flight")
            page.goto(f"{base}/approvals/{reqs['call_flight']}")
            expect(page.locator("#request-outcome")).to_contain_text("closed")
            expect(page.locator("#form-approve")).to_have_count(0)
        finally:
            context.close()
    assert orch.get_workflow(wf).status in ("rolling_back", "executing")
    statuses = sorted(r.status for r, _ in orch.approval_history(wf))
    assert statuses == ["closed", "closed", "decided"]


@contextmanager
def _hotel_items_page(
    browser: Any, db: Database
) -> Iterator[tuple[WorkflowOrchestrator, dict[str, str], Any]]:
    """The three-item checkpoint, its call_hotel page open in Chromium (marked so a reload shows), no
    page errors allowed; yields the orchestrator, the item request ids and the page."""
    orch = WorkflowOrchestrator(database=db)
    _, reqs = _paused_with_items(orch)
    errors: list[str] = []
    with ui.serve(create_app(orch, auth="open", sweep=False)) as base:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(f"{base}/approvals/{reqs['call_hotel']}")
            page.evaluate("window.__sameDocument = true")
            yield orch, reqs, page
            assert page.evaluate("window.__sameDocument") is True  # updated in place, never reloaded
        finally:
            context.close()
    assert errors == []


def _decided_elsewhere(orch: WorkflowOrchestrator, request_id: str, decision: str, rationale: str) -> None:
    from saferun.core.state_machine.models import ApprovalDecision, ApprovalResponse

    response = ApprovalResponse(
        request_id=request_id,
        decision=ApprovalDecision(decision),
        rationale=rationale,
        approved_by="reviewer",
    )
    orch.submit_approval(None, response)


def test_a_sibling_rejected_elsewhere_shows_on_an_open_items_page(browser: Any, db: Database) -> None:
    """With one item's page open, a sibling rejected elsewhere (the API, another reviewer) turns the items
    table live, without a reload: that row rejected, the others closed, nothing left waiting (issue 14
    item 6)."""
    from playwright.sync_api import expect

    with _hotel_items_page(browser, db) as (orch, reqs, page):
        flight = page.locator('#checkpoint-items tr[data-item-key="call_flight"]')
        car = page.locator('#checkpoint-items tr[data-item-key="call_car"]')
        expect(flight).to_have_attribute("data-status", "pending")
        expect(page.locator("#items-waiting")).to_contain_text("3 waiting")
        _decided_elsewhere(orch, reqs["call_flight"], "REJECTED", "no flights this week")
        expect(flight.locator(".item-decision")).to_contain_text("rejected", timeout=15_000)
        expect(car).to_have_attribute("data-status", "closed")
        expect(page.locator("#items-waiting")).to_contain_text("0 waiting")


def test_an_item_approved_elsewhere_shows_on_an_open_items_page(browser: Any, db: Database) -> None:
    """An item approved elsewhere while its siblings still wait moves no workflow state; the event stream's
    hint for that workflow still turns its row on an open items page, without a reload."""
    from playwright.sync_api import expect

    with _hotel_items_page(browser, db) as (orch, reqs, page):
        flight = page.locator('#checkpoint-items tr[data-item-key="call_flight"]')
        expect(flight).to_have_attribute("data-status", "pending")
        expect(page.locator("#live-status")).to_contain_text("Live")
        _decided_elsewhere(orch, reqs["call_flight"], "APPROVED", "fine")
        expect(flight.locator(".item-decision")).to_contain_text("approved", timeout=15_000)
        expect(page.locator("#items-waiting")).to_contain_text("2 waiting")
        expect(page.locator('#form-approve button[type="submit"]')).to_be_visible()  # still open


def test_the_event_stream_hints_a_change_that_moved_no_state(db: Database) -> None:
    """``/api/events`` sends an id-less ``workflow`` hint for a decision that moved no state (an item whose
    siblings wait), naming only that workflow; the resumable feed (events with ids) is unchanged."""
    import json
    import threading

    import httpx

    from saferun.core.state_machine.models import ApprovalDecision, ApprovalResponse

    orch = WorkflowOrchestrator(database=db)
    wf, reqs = _paused_with_items(orch)
    from saferun.core import events as feed

    with orch.db.read() as conn:
        last = feed.last_event_id(conn)
    got: list[tuple[str | None, dict[str, Any]]] = []
    with (
        ui.serve(create_app(orch, auth="open", sweep=False)) as base,
        httpx.Client(base_url=base, timeout=20) as client,
        client.stream("GET", f"/api/events?after={last}") as stream,
    ):
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        decided = threading.Timer(
            0.5,
            orch.submit_approval,
            (
                None,
                ApprovalResponse(
                    request_id=reqs["call_car"],
                    decision=ApprovalDecision.APPROVED,
                    rationale="fine",
                    approved_by="reviewer",
                ),
            ),
        )
        decided.start()
        event_id = None
        for line in lines:
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                got.append((event_id, json.loads(line[6:])))
                break
        decided.join()
    assert got == [(None, {"workflow_id": wf, "hint": True})]
    assert orch.get_workflow(wf).status == "awaiting_approval"  # it moved no state
