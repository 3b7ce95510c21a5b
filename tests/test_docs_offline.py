"""/docs and /redoc work offline (issue 13): each page references only this server's own URLs, the
bundled assets it names are served, and in Chromium with every non-loopback request blocked both render
the API (so neither is ever blank without internet)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests import ui_support as ui
from tests.test_ui_browser import browser, orch  # noqa: F401  (that module's Chromium and database)

REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"  # in redoc.standalone.js, with an onError hide
LOCAL_URL = re.compile(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""")


def _local_urls(html: str) -> list[str]:
    urls = LOCAL_URL.findall(html)
    assert urls, html
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "cdn" not in html.lower() and "googleapis" not in html.lower()
    return urls


async def test_docs_page_uses_only_local_assets_and_they_are_served(db: Database) -> None:
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        page = await c.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
        assert urls, page.text
        assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
        assert "cdn" not in page.text.lower()
        assets = {u for u in urls if u.startswith("/docs/assets/")}
        assert {a.rsplit("/", 1)[1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
        for asset in assets:
            got = await c.get(asset)
            assert got.status_code == 200, asset
            assert len(got.content) > 500, asset
        assert "SwaggerUIBundle" in (await c.get("/docs/assets/swagger-ui-bundle.js")).text
        assert (await c.get("/docs/assets/nope.js")).status_code == 404
        assert (await c.get("/docs/assets/..%2Fopenapi.py")).status_code == 404


async def test_redoc_page_uses_only_the_bundled_script(db: Database) -> None:
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        page = await c.get("/redoc")
        assert page.status_code == 200
        urls = _local_urls(page.text)
        assert "/docs/assets/redoc.standalone.js" in urls
        script = await c.get("/docs/assets/redoc.standalone.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert "Redoc" in script.text and len(script.content) > 500_000


@pytest.mark.parametrize(("path", "rendered"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")])
def test_docs_render_in_chromium_with_the_internet_blocked(
    browser: Any,  # noqa: F811
    orch: WorkflowOrchestrator,  # noqa: F811
    path: str,
    rendered: str,
) -> None:
    app = create_app(orch, auth="open", sweep=False)
    with ui.serve(app) as base:
        context = browser.new_context()
        outside: list[str] = []

        def only_loopback(route: Any) -> None:
            if route.request.url.startswith(base):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        context.route("**/*", only_loopback)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(base + path)
        page.wait_for_selector(rendered, timeout=30_000)  # the API's operations are on the page
        assert "/api/workflows" in page.content()
        context.close()
    # ReDoc's sidebar "by Redocly" logo is the one outside request; it hides itself when it fails to load
    assert [u for u in outside if u != REDOCLY_LOGO] == [] and errors == []


def test_every_operation_is_described_and_the_seeds_bodies_have_examples(db: Database) -> None:
    spec = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False).openapi()
    ops = [(m.upper(), p, op) for p, item in spec["paths"].items() for m, op in item.items()]
    assert len(ops) > 50
    assert [(m, p) for m, p, op in ops if len(op.get("description", "")) < 20] == []
    schemas = spec["components"]["schemas"]
    for name in ("CreateWorkflow", "SubmitDecision", "CheckpointIn", "StepIn", "ResolveIn"):
        (example,) = schemas[name]["examples"]
        assert set(example) <= set(schemas[name]["properties"]), name  # no field the model refuses
