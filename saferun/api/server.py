"""The SafeRun server: REST API, reviewer dashboard and the background sweep, on the configured store.

``uvicorn saferun.api.server:app`` (the seed's command) and ``saferun serve`` both run ``create_app()``.
Several processes pointed at one PostgreSQL database behave as one system: every piece of state is in
the database, decisions are claimed with conditional UPDATEs, and the sweep resolves each expired request
in exactly one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saferun import __version__, config
from saferun.api import approvals, forks, openapi, platform_grants, policy, records, system, workflows
from saferun.api import funding as x402_funding
from saferun.api import platform as x402_platform
from saferun.api import platform_original as x402_original
from saferun.api.input_guard import InputGuard
from saferun.api.local_guard import LocalGuard
from saferun.api.lock_wait import LockWait
from saferun.api.one_hop import OneHopRoute
from saferun.core import notify
from saferun.core.identity import IdentityService
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import PayloadTooLarge, SafeRunError, StoreUnavailable
from saferun.logs import RequestIdMiddleware
from saferun.notifications import settings as notification_settings
from saferun.notifications.dispatcher import Dispatcher

log = logging.getLogger(__name__)
SWEEP_INTERVAL_SECONDS = 1.0


def create_app(
    orchestrator: WorkflowOrchestrator | None = None,
    *,
    auth: str | None = None,
    max_body_bytes: int | None = None,
    sweep: bool = True,
    notifications: notification_settings.NotificationSettings | None = None,
) -> FastAPI:
    app = FastAPI(
        title="SafeRun X402",
        version=__version__,
        lifespan=_lifespan,
        # served by _include_docs behind the keys-mode guard (SAFERUN_PUBLIC_DOCS), not FastAPI's open routes
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        description="Supervised autonomy for AI agents: durable checkpoints, human decisions, "
        "saga rollback and exact escrow.",
    )
    app.router.route_class = OneHopRoute  # the app's own routes (docs) too: one thread hop per request
    # checked first: an unknown SAFERUN_* name or a malformed value stops the server before it serves
    settings = config.check()
    app.state.orchestrator = orchestrator
    if orchestrator is not None:
        orchestrator.io_in_threads = True  # no transaction of a long-poll or a rating on the event loop
    app.state.auth_mode = auth or settings.auth
    app.state.sweep = sweep
    # checked here, so a bad SAFERUN_WEBHOOK_URLS (or any notification setting) stops the server at start
    app.state.notifications = notifications or notification_settings.load(settings)
    limit = max_body_bytes or settings.max_body_bytes
    # innermost: a request waits SAFERUN_SQLITE_REQUEST_BUSY_MS for SQLite's lock, then 503 + Retry-After
    app.add_middleware(LockWait, milliseconds=settings.sqlite_request_busy_ms)
    app.add_middleware(InputGuard)  # inside BodyLimit: depth/NaN/NUL checked on a body of bounded size
    app.add_middleware(BodyLimit, max_bytes=limit)
    # before any route: a rebinding Host is refused and forwarding headers are believed only from proxies
    app.add_middleware(
        LocalGuard,
        fastapi_app=app,
        allowed_hosts=settings.allowed_hosts,
        trusted_proxies=settings.trusted_proxies,
    )
    app.add_middleware(RequestIdMiddleware)  # outermost: every log line of the request carries its id
    _install_error_handlers(app)
    openapi.install(app)  # the schema documents SafeRun's real error model and codes
    openapi.include_docs(app)
    app.include_router(workflows.router)
    app.include_router(approvals.router)
    app.include_router(system.router)
    app.include_router(x402_platform.router)
    app.include_router(x402_original.router)
    app.include_router(platform_grants.router)
    app.include_router(x402_funding.router)
    app.include_router(records.router)
    app.include_router(forks.router)
    app.include_router(policy.router)
    _include_dashboard(app)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    if app.state.orchestrator is None:
        app.state.orchestrator = WorkflowOrchestrator()
    orch: WorkflowOrchestrator = app.state.orchestrator
    orch.io_in_threads = True  # no transaction of a long-poll or a rating ever runs on the event loop
    app.state.identities = IdentityService(orch.db)
    notifier = notify.notifier_for(orch.db)
    try:
        await notifier.astart(5.0)  # LISTEN before the first request, so no wake-up is missed
    except Exception:  # waiters fall back to polling; the listener keeps retrying in the background
        log.warning("notification listener not ready; long-polls fall back to polling", exc_info=True)
    tasks = []
    if app.state.sweep:
        tasks.append(asyncio.create_task(_sweeper(orch)))
        # notices run beside the sweep, not in it: a slow webhook or SMTP server never delays an expiry
        tasks.append(asyncio.create_task(Dispatcher(orch.db, app.state.notifications).run()))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _sweeper(orch: WorkflowOrchestrator) -> None:
    """Expire due requests and finish abandoned rollbacks, forever; a failed pass is logged and retried."""
    while True:
        try:
            await asyncio.to_thread(orch.sweep)
            await orch.deliver_platform_calls()
        except Exception:
            log.exception("sweep failed")
        await asyncio.sleep(SWEEP_INTERVAL_SECONDS)


def _include_dashboard(app: FastAPI) -> None:
    try:
        from saferun.ui.decision_links import router as links_router
        from saferun.ui.routes import router as ui_router
    except ImportError:  # the dashboard is optional in embedded use; the API stands alone
        return
    app.include_router(ui_router)
    app.include_router(links_router)  # /decide/{token}: the notices' single-use decision links


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SafeRunError)
    async def _saferun(_: Request, exc: SafeRunError) -> JSONResponse:
        if exc.http_status >= 500:
            log.error("server-side failure: %s", exc.message)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, StoreUnavailable) else None
        return JSONResponse(status_code=exc.http_status, content={"detail": exc.to_dict()}, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _fields(exc.errors(), skip_first=True)})

    @app.exception_handler(ValidationError)
    async def _model_invalid(_: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _fields(exc.errors(), skip_first=False)})


def _fields(errors: Any, *, skip_first: bool) -> dict[str, Any]:
    """One message per field, named by its dotted path (``body.escrow_amount`` -> ``escrow_amount``)."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        if skip_first and loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]
        field = ".".join(loc) or "body"
        out.append({"field": field, "message": err.get("msg", "invalid"), "type": err.get("type")})
    first = out[0] if out else {"field": "body", "message": "invalid"}
    return {
        "error": "InvalidInput",
        "message": f"{first['field']}: {first['message']}",
        "field": first["field"],
        "errors": out,
    }


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413, by header and while streaming, before a route
    (or a JSON parser) ever holds them in memory."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(self.max_bytes, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _too_large(self.max_bytes, send)


class _BodyTooLarge(Exception):
    pass


async def _too_large(limit: int, send: Callable[[Message], Awaitable[None]]) -> None:
    error = PayloadTooLarge(f"request body exceeds {limit} bytes (SAFERUN_MAX_BODY_BYTES)", limit=limit)
    response = JSONResponse(status_code=413, content={"detail": error.to_dict()})
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


app = create_app()


def __getattr__(name: str) -> Any:
    """The original server's module globals (``orchestrator``, ``x402``, ``active_*``, ...), built on first
    use from the store: see ``saferun/api/seed_globals.py``."""
    from saferun.api import seed_globals

    return seed_globals.resolve(name)


if __name__ == "__main__":  # the original's ``python -m saferun.api.server``: ``saferun serve`` (port 8000)
    import sys

    from saferun.cli.main import app as _cli

    _cli(["serve", *sys.argv[1:]], prog_name="python -m saferun.api.server")
