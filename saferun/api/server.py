"""The HTTP face of SafeRun (``uvicorn saferun.api.server:app``), on the configured store.

This build serves the seed's read endpoints in the seed's shapes (health, workflows, pending approvals,
stats) and runs the expiry/rollback sweep in the background, so a server alone keeps timeouts honest.
Deciding over HTTP, the dashboard and authentication come with the server issue; until then decisions are
made with ``saferun approvals approve|modify|reject`` or in Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from saferun import __version__
from saferun.core.state_machine.models import WorkflowExecution
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.states import WorkflowState
from saferun.errors import SafeRunError

log = logging.getLogger(__name__)
SWEEP_INTERVAL_SECONDS = 1.0


def _orchestrator(request: Request) -> WorkflowOrchestrator:
    return request.app.state.orchestrator  # type: ignore[no-any-return]


async def _sweeper(orch: WorkflowOrchestrator) -> None:
    while True:
        try:
            await asyncio.to_thread(orch.sweep)
        except Exception:  # a failed pass is logged and retried; the loop must outlive it
            log.exception("sweep failed")
        await asyncio.sleep(SWEEP_INTERVAL_SECONDS)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.orchestrator = getattr(app.state, "orchestrator", None) or WorkflowOrchestrator()
    task = asyncio.create_task(_sweeper(app.state.orchestrator))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(orchestrator: WorkflowOrchestrator | None = None) -> FastAPI:
    app = FastAPI(title="SafeRun X402", version=__version__, lifespan=lifespan)
    if orchestrator is not None:
        app.state.orchestrator = orchestrator

    @app.exception_handler(SafeRunError)
    async def _safe_run_error(_: Request, exc: SafeRunError) -> JSONResponse:
        return JSONResponse(status_code=exc.http_status, content={"detail": exc.to_dict()})

    @app.get("/api/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy", "service": "SafeRun X402", "version": __version__}

    @app.get("/api/workflows")
    async def list_workflows(
        request: Request, status: WorkflowState | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        rows = _orchestrator(request).list_workflows(
            status, limit=max(1, min(limit, 500)), offset=max(0, offset)
        )
        return {"workflows": [_summary(w) for w in rows], "total": len(rows)}

    @app.get("/api/workflows/{workflow_id}")
    async def get_workflow(request: Request, workflow_id: str) -> dict[str, Any]:
        wf = _orchestrator(request).get_workflow(workflow_id)
        return {
            **_summary(wf),
            "description": wf.config.description,
            "snapshots": wf.snapshots,
            "approval_requests": wf.approval_requests,
            "approval_responses": wf.approval_responses,
            "completed_at": _iso(wf.completed_at),
            "error_message": wf.error_message,
        }

    @app.get("/api/approvals/pending")
    async def pending(request: Request) -> dict[str, Any]:
        reqs = _orchestrator(request).pending_approvals()
        return {
            "pending_approvals": [
                {
                    "request_id": r.request_id,
                    "workflow_id": r.workflow_id,
                    "checkpoint_name": r.checkpoint_name,
                    "summary": r.summary,
                    "context": r.context,
                    "created_at": _iso(r.created_at),
                    "expires_at": _iso(r.expires_at),
                    "parameters": r.parameters,
                    "recommendation": r.recommendation,
                    "confidence": r.confidence,
                }
                for r in reqs
            ],
            "total": len(reqs),
        }

    @app.get("/api/stats")
    async def stats(request: Request) -> dict[str, Any]:
        return _orchestrator(request).stats()

    return app


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _summary(wf: WorkflowExecution) -> dict[str, Any]:
    return {
        "workflow_id": wf.workflow_id,
        "name": wf.config.name,
        "status": wf.current_state.value,
        "current_checkpoint": wf.current_checkpoint,
        "total_checkpoints": wf.total_checkpoints,
        "started_at": _iso(wf.started_at),
    }


app = create_app()
