"""A plain ``def`` route costs one worker-thread hop per request (``saferun/api/one_hop.py``).

FastAPI alone would hop twice for a route with a response model: once to run the endpoint, once more to
validate its answer. Counted here on the real app, for a route of each router kind the hot path uses."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi.routing import APIRoute

from saferun.api.one_hop import OneHopRoute
from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.test_api import SEED_CREATE


async def test_a_sync_route_with_a_response_model_hops_once(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops: list[str] = []
    real = anyio.to_thread.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as api:
        wf = (await api.post("/api/workflows", json=SEED_CREATE)).json()["workflow_id"]
        monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
        for method, path in (
            ("GET", "/api/health"),
            ("GET", f"/api/workflows/{wf}"),
            ("POST", f"/api/workflows/{wf}/start"),
        ):
            hops.clear()
            answer = await api.request(method, path)
            assert answer.status_code == 200, (path, answer.text)
            assert len(hops) == 1, (path, hops)


def _all_routes(app: Any) -> list[Any]:
    """Every route, including those behind FastAPI's included routers (as the authorization matrix)."""
    out: list[Any] = []
    for route in app.routes:
        if isinstance(route, APIRoute) or not hasattr(route, "effective_candidates"):
            out.append(route)
            continue
        candidates = route.effective_candidates
        out.extend(c.original_route for c in (candidates() if callable(candidates) else candidates))
    return out


def test_every_sync_route_of_the_app_is_a_one_hop_route() -> None:
    """A router created without ``route_class=OneHopRoute`` would hop twice again: none may be."""
    routes = [r for r in _all_routes(create_app(sweep=False)) if isinstance(r, APIRoute)]
    assert len(routes) > 100
    stray = [r.path for r in routes if not isinstance(r, OneHopRoute)]
    assert not stray, stray
