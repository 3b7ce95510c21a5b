"""The dashboard's ``/workflows`` in real Chromium, paged by the API's keyset cursor (issue 12 target 4).

130 workflows (bulk-created) are read page by page through the "Next page" link: every workflow once,
newest first, with the true total on every page, the live region refreshing the page it is on, and the
state filter kept across pages. A forged cursor is a 422 naming ``cursor``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from saferun.api.server import create_app
from saferun.core.bulk import PausedWorkflow, create_paused
from saferun.core.state_machine.models import CheckpointConfig, ExecutionState, WorkflowConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests import ui_support as ui
from tests.conftest import IN_CI

CHROMIUM = os.environ.get("SAFERUN_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
N = 130


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "Playwright is not installed (.venv/bin/pip install -e '.[dev]')"
    else:
        reason = None if os.access(CHROMIUM, os.X_OK) else f"Chromium is not at {CHROMIUM}"
    if reason:
        if IN_CI:
            pytest.fail(f"CI must run the browser tests, but {reason}")
        pytest.skip(reason)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def orch(tmp_path: Path) -> Iterator[WorkflowOrchestrator]:
    database = Database(f"sqlite:///{tmp_path / 'paging.db'}")
    orchestrator = WorkflowOrchestrator(database=database)
    items = [
        PausedWorkflow(
            WorkflowConfig(
                name=f"Job {i:03d}",
                checkpoints=[CheckpointConfig(name="Plan", checkpoint_id="plan", timeout_seconds=3600)],
                escrow_amount="5.00",
                poster_id="poster",
                executor_id="agent",
                supervisor_id="reviewer",
            ),
            ExecutionState(checkpoint_id="plan", parameters={"n": i}),
            f"Approve plan {i}?",
        )
        for i in range(N)
    ]
    create_paused(orchestrator, items, per_transaction=50)
    yield orchestrator
    database.dispose()


def _rows(page: Any) -> list[str]:
    return page.locator("#workflow-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.workflowId)"
    )


def test_paging_through_many_workflows_in_chromium(browser: Any, orch: WorkflowOrchestrator) -> None:
    from playwright.sync_api import expect

    app = create_app(orch, auth="open", sweep=False)
    expected = [w.workflow_id for w in orch.list_workflows(limit=500)]  # newest first
    assert len(expected) == N
    with ui.serve(app) as base:
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(f"{base}/workflows")
            seen: list[str] = []
            pages = 0
            while True:
                pages += 1
                summary = page.locator(".queue-summary")
                expect(summary).to_have_attribute("data-total", str(N))  # the true total, every page
                rows = _rows(page)
                assert rows and len(rows) <= 50
                seen.extend(rows)
                # the live region refreshes this page, not the first one
                live = page.locator("#workflows").get_attribute("data-live") or ""
                assert ("cursor=" in live) is (pages > 1), live
                nxt = page.locator("nav.pager a[rel=next]")
                if nxt.count() == 0:
                    break
                if pages == 2:
                    SHOTS.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(SHOTS / "workflows-paged.png"), full_page=True)
                nxt.click()
                page.wait_for_load_state()
            assert pages == 3
            assert seen == expected  # each once, in order: no repeat, no gap
            page.locator("nav.pager a[rel=first]").click()
            assert _rows(page) == expected[:50]

            # the state filter is kept across pages, and its total is that state's
            page.goto(f"{base}/workflows?status=awaiting_approval&limit=60")
            expect(page.locator(".queue-summary")).to_have_attribute("data-total", str(N))
            assert len(_rows(page)) == 60
            page.locator("nav.pager a[rel=next]").click()
            page.wait_for_load_state()
            assert "status=awaiting_approval" in page.url and "limit=60" in page.url
            assert _rows(page) == expected[60:120]
            page.goto(f"{base}/workflows?status=completed")
            expect(page.locator(".empty h2")).to_contain_text("No workflows")
            assert not errors, errors
        finally:
            context.close()


def test_a_forged_or_foreign_cursor_is_422_naming_cursor(orch: WorkflowOrchestrator) -> None:
    app = create_app(orch, auth="open", sweep=False)
    with ui.serve(app) as base:
        first = httpx.get(f"{base}/workflows")
        assert first.status_code == 200
        cursor = first.text.split("cursor=", 1)[1].split('"', 1)[0].split("&", 1)[0]
        ok = httpx.get(f"{base}/workflows", params={"cursor": httpx.QueryParams(f"c={cursor}")["c"]})
        assert ok.status_code == 200
        for bad in ("garbage", cursor[:-4] + "AAAA"):
            res = httpx.get(f"{base}/workflows", params={"cursor": bad})
            assert res.status_code == 422 and "cursor" in res.text, (bad, res.status_code)
        # a cursor of the unfiltered list does not page a filtered one
        other = httpx.get(
            f"{base}/workflows", params={"status": "executing", "cursor": ok.url.params["cursor"]}
        )
        assert other.status_code == 422 and "cursor" in other.text
        assert httpx.get(f"{base}/workflows", params={"limit": "0"}).status_code == 422
