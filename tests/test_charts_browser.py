"""The charts in real Chromium (issue 14, item 5): ``/stats`` and a workflow's page over a seeded week of
decisions draw every chart as a visible, labelled SVG with no script error, and keep a screenshot of
each in ``test-artifacts/screenshots/`` (``stats-charts.png``, ``workflow-charts.png``)."""

from __future__ import annotations

from typing import Any

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from tests import ui_support as ui
from tests.chart_support import seed_history
from tests.test_ui_browser import WIDE, Watch, browser, orch, shot

__all__ = ["browser", "orch"]  # fixtures, used by name


def test_stats_and_workflow_charts_render_in_chromium(browser: Any, orch: WorkflowOrchestrator) -> None:
    from playwright.sync_api import expect

    seeded = seed_history(orch, 120)
    app = create_app(orch, auth="open", sweep=False)
    with ui.serve(app) as base:
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        watch = Watch(page)
        try:
            page.goto(f"{base}/stats")
            for key in ("latency", "decisions", "pending-age", "money", "load"):
                svg = page.locator(f"#chart-{key} svg.chart-svg")
                expect(svg).to_be_visible()
                box = svg.bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 100, (key, box)
                expect(svg).to_have_attribute("role", "img")
            expect(page.locator("#chart-latency [data-stat=p50]")).to_contain_text("p50")
            expect(page.locator("#chart-latency [data-stat=p99]")).to_be_visible()
            latency_bars = page.locator("#chart-latency svg.chart-svg rect")
            assert latency_bars.count() >= 5
            expect(page.locator("#chart-decisions .chart-legend")).to_contain_text("timed out")
            expect(page.locator("#chart-load svg.chart-svg")).to_contain_text("dana")
            # the numbers as a table, for screen readers and copying
            page.click("#chart-decisions summary")
            expect(page.locator("#chart-decisions table")).to_be_visible()
            assert page.locator("#chart-decisions tbody tr").count() >= 7
            page.click("#chart-decisions summary")
            shot(page, "stats-charts")

            wf = seeded.workflow_ids[0]
            page.goto(f"{base}/workflows/{wf}")
            expect(page.locator("#chart-wf-decisions svg.chart-svg")).to_be_visible()
            expect(page.locator("#chart-wf-money svg.chart-svg")).to_be_visible()
            page.locator("#h-wf-charts").scroll_into_view_if_needed()
            shot(page, "workflow-charts")
            assert not watch.errors, watch.errors
        finally:
            context.close()


def test_the_stats_page_refreshes_its_charts_at_most_every_five_seconds(
    browser: Any, orch: WorkflowOrchestrator
) -> None:
    """Six changes over ~4 s cost the stats page one or two refreshes, not six (each runs the charts'
    aggregate queries), and the last refresh shows the state after them."""
    from playwright.sync_api import expect

    ui.data_workflow(orch, "Before")
    app = create_app(orch, auth="open", sweep=False)
    with ui.serve(app) as base:
        context = browser.new_context(viewport=WIDE)
        page = context.new_page()
        fetched: list[str] = []
        page.on("request", lambda r: fetched.append(r.url) if "/ui/fragments/stats" in r.url else None)
        try:
            page.goto(f"{base}/stats")
            expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
            expect(page.locator("#stat-total")).to_have_text("1")
            for i in range(6):  # paced wider than the 200 ms coalescing, so each would be its own fetch
                ui.data_workflow(orch, f"Burst {i}")
                page.wait_for_timeout(600)
            expect(page.locator("#stat-total")).to_have_text("7", timeout=20_000)
            expect(page.locator("#stat-pending")).to_have_text("7")
            assert 1 <= len(fetched) <= 2, fetched
        finally:
            context.close()
