"""/docs works offline (issue 13): the Swagger UI page references only this server's own URLs, and the
bundled assets it names are served, so the docs page is never blank without internet."""

from __future__ import annotations

import re

import httpx

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database


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
