"""Health, stats, Prometheus metrics, verified artifact bytes and the live event stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from saferun import __version__
from saferun.api import metrics
from saferun.api import schemas as s
from saferun.api.deps import CallerDep, DocsGuard, OrchestratorDep, visible
from saferun.api.one_hop import OneHopRoute
from saferun.domain.canonical import canonical_loads
from saferun.errors import ArtifactNotFound, InvalidInput, SnapshotNotFound
from saferun.storage import snapshots as snapshots_store
from saferun.storage.artifacts import make_uri
from saferun.storage.visibility import artifact_visible, visible_among

SHA256_PATTERN = "^[0-9a-f]{64}$"  # in the schema too, so clients (and fuzzers) know the form

router = APIRouter(tags=["system"], route_class=OneHopRoute)


@router.get("/api/health", response_model=s.Health)
def health(orch: OrchestratorDep) -> Any:
    """Healthy only when the database answers: the container HEALTHCHECK and Kubernetes readiness probe
    use this, so a replica that lost its database stops getting traffic (503)."""
    try:
        with orch.db.read() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # any driver failure means "not ready"; the reason is in the body
        cause = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return JSONResponse(
            status_code=503,
            content={
                "status": "unhealthy",
                "service": "SafeRun X402",
                "version": __version__,
                "error": cause,
            },
        )
    return {"status": "healthy", "service": "SafeRun X402", "version": __version__}


@router.get("/api/stats", response_model=s.Stats)
def stats(orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """The seed's numbers over the workflows the caller may see: totals by state, pending approvals,
    approval rate, average approval time, active executors and supervisors, escrow totals."""
    return orch.stats(visible_to=caller)


@router.get("/metrics", include_in_schema=False)
def prometheus(orch: OrchestratorDep, _: DocsGuard) -> Response:
    body, content_type = metrics.render(orch)
    return Response(content=body, media_type=content_type)


@router.get("/api/snapshots/{snapshot_id}")
def snapshot(snapshot_id: str, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """One snapshot: where it is stored, its sizes, and the verified state it holds."""
    with orch.db.read() as conn:
        row = snapshots_store.get(conn, snapshot_id)
    visible(orch, caller, row["workflow_id"], SnapshotNotFound(snapshot_id))
    state = orch.get_snapshot_state(snapshot_id)
    return {
        **orch._snapshot(row).model_dump(mode="json", exclude={"execution_state"}),
        "execution_state": state.model_dump(mode="json"),
    }


@router.get("/api/artifacts/{sha256}")
def artifact(
    sha256: Annotated[str, Path(pattern=SHA256_PATTERN)], orch: OrchestratorDep, caller: CallerDep
) -> Response:
    """An artifact's bytes, verified against their hashes before they are sent (a tampered byte is a 500
    naming the damaged blob, never silently served)."""
    uri = make_uri(sha256) if not sha256.startswith("x402://") else sha256
    store = orch.capture.store
    with orch.db.read() as conn:
        info = store.info(conn, uri)
        if info is None or not artifact_visible(conn, caller, uri):
            raise ArtifactNotFound(uri)  # a hash no workflow of the caller's references: as if absent
        parts = store.get(conn, uri)
    headers = {
        "X-Artifact-Uri": uri,
        "X-Artifact-Type": info["artifact_type"],
        # arbitrary agent bytes: never sniffed into HTML/script, never rendered inline on our origin
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'attachment; filename="{sha256[:64]}"',
    }
    if set(parts) == {"content"}:
        return Response(parts["content"], media_type="application/octet-stream", headers=headers)
    try:
        body = {name: canonical_loads(data) for name, data in parts.items()}
    except ValueError:
        raise InvalidInput("sha256", "artifact has non-JSON parts; fetch it with the Python client") from None
    return Response(json.dumps(body), media_type="application/json", headers=headers)


@router.get("/api/events")
async def events(request: Request, orch: OrchestratorDep, caller: CallerDep) -> StreamingResponse:
    """Server-sent events: one ``workflow`` event per state change, resumable with ``Last-Event-ID``, plus
    an id-less ``workflow`` hint (``{"workflow_id", "hint": true}``) for a change that moved no state."""
    from saferun.core import events as feed
    from saferun.core import notify

    try:
        after = int(request.headers.get("last-event-id") or request.query_params.get("after") or 0)
    except ValueError:
        raise InvalidInput("Last-Event-ID", "must be an integer event id") from None

    def read(after: int, woken: set[str]) -> tuple[list[dict[str, Any]], set[str]]:
        """The next events and which of their (and of the ``woken``) workflows the caller may see (in a
        worker thread)."""
        with orch.db.read() as conn:
            batch = feed.events_since(conn, after, 200)
            # the one visibility rule: a caller's stream carries only workflows they may see
            return batch, visible_among(conn, caller, {ev["workflow_id"] for ev in batch} | woken)

    async def stream() -> AsyncIterator[bytes]:
        nonlocal after
        yield b"retry: 2000\n\n"
        idle = 0
        woken: set[str] = set()
        # subscribe before the first read, so a change committed between a read and the wait is not missed
        with notify.notifier_for(orch.db).subscribe({"workflow", "resync"}) as changes:
            while not await request.is_disconnected():
                woken |= {key for topic, key in changes.drain() if topic == "workflow"}
                batch, seen = await run_in_threadpool(read, after, woken)
                sent: set[str] = set()
                for ev in batch:
                    after = ev["id"]  # the cursor passes foreign events too, it just does not send them
                    if ev["workflow_id"] not in seen:
                        continue
                    sent.add(ev["workflow_id"])
                    yield f"id: {ev['id']}\nevent: workflow\ndata: {json.dumps(ev, default=str)}\n\n".encode()
                # A change that moved no state (a quorum vote, an item decided while its siblings wait, an
                # escalation rung) has no transition to send: a hint without an id tells a page to refresh
                # that workflow's regions. It is not part of the resumable feed (a missed hint costs a
                # refresh, never a state), and only workflows the caller may see are named.
                for workflow_id in sorted((woken & seen) - sent):
                    hint = json.dumps({"workflow_id": workflow_id, "hint": True})
                    yield f"event: workflow\ndata: {hint}\n\n".encode()
                woken = set()
                if batch:
                    idle = 0
                    continue
                idle += 1
                if idle % 30 == 0:
                    yield b": keep-alive\n\n"
                notice = await changes.get(0.5)
                if notice is not None and notice[0] == "workflow":
                    woken.add(notice[1])

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
