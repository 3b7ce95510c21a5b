"""Who is calling, and the engine to call: the two things every route needs.

Authentication modes (``SAFERUN_AUTH``):

- ``open``: local development. Requests need no key; the caller is whoever the request names. Only
  served on a loopback address (``saferun serve`` refuses to start otherwise, and a request arriving on
  any other address is refused with 401).
- ``keys``: every request carries an API key (``Authorization: Bearer sr_key_...`` or ``X-API-Key``) or a
  dashboard session cookie (then unsafe methods also need the ``X-CSRF-Token`` header).
- ``auto`` (default): ``open`` when the server is bound to loopback, ``keys`` otherwise.

A key is honoured in every mode, so a client can use the same key locally and in production.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from saferun.api.local_guard import UNTRUSTED_FORWARD
from saferun.config import get_settings
from saferun.core.identity import IdentityService
from saferun.core.state_machine.access import RequestGate, RequestView, WorkflowView
from saferun.core.state_machine.models import WorkflowExecution
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.policy import Caller, Refusal, may_see_workflow
from saferun.errors import Forbidden, SafeRunError, Unauthorized, WorkflowNotFound

LOOPBACK = {"127.0.0.1", "::1", "localhost", "testclient", "test"}
SESSION_COOKIE = "saferun_session"  # the name on plain-http loopback
# over TLS the cookie is ``__Host-``: the browser then insists on Secure, Path=/ and no Domain, so a sibling
# subdomain or a plain-http page cannot plant (toss) a session cookie for the dashboard
SECURE_SESSION_COOKIE = "__Host-saferun_session"
MODES = ("auto", "open", "keys")


def auth_mode() -> str:
    """``SAFERUN_AUTH`` from the one ``Settings`` (environment or ``.env``), checked there."""
    return get_settings().auth


def is_loopback(host: str | None) -> bool:
    return bool(host) and (host in LOOPBACK or str(host).startswith("127."))


def orchestrator(request: Request) -> WorkflowOrchestrator:
    state = request.app.state
    if state.orchestrator is None:  # served without lifespan (an ASGI test transport)
        state.orchestrator = WorkflowOrchestrator()
    return state.orchestrator  # type: ignore[no-any-return]


async def orchestrator_dep(request: Request) -> WorkflowOrchestrator:
    """``orchestrator`` as a dependency: the server's engine is returned as it is, with no thread hop (a
    plain ``def`` dependency costs every request one); only building one (served without lifespan)
    opens the store, in a worker thread."""
    orch = request.app.state.orchestrator
    if orch is None:
        return await run_in_threadpool(orchestrator, request)
    return orch  # type: ignore[no-any-return]


def identities(request: Request) -> IdentityService:
    state = request.app.state
    if getattr(state, "identities", None) is None:
        state.identities = IdentityService(orchestrator(request).db)
    return state.identities  # type: ignore[no-any-return]


def effective_mode(request: Request) -> str:
    mode = request.app.state.auth_mode
    if mode != "auto":
        return mode  # type: ignore[no-any-return]
    server = request.scope.get("server")
    return "open" if server is None or is_loopback(server[0]) else "keys"


def is_tls(request: Request) -> bool:
    """Served over TLS: the request's own scheme (uvicorn sets it from a trusted proxy's header). Read off
    the scope: ``request.url`` builds and parses the whole URL, 2.4 % of a server's cycle (py-spy)."""
    return request.scope.get("scheme") == "https"


def session_cookie_name(request: Request) -> str:
    """``__Host-saferun_session`` over TLS, ``saferun_session`` on plain http (a browser refuses a
    ``__Host-`` cookie without Secure, so loopback http keeps the plain name)."""
    return SECURE_SESSION_COOKIE if is_tls(request) else SESSION_COOKIE


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def not_local(request: Request) -> str | None:
    """Why this request may not be served as open mode's local user, or None when it may: it must reach a
    loopback socket, from a loopback client, and not through a proxy we cannot vouch for
    (``api/local_guard.py`` marks forwarding headers from a peer outside ``SAFERUN_TRUSTED_PROXIES``)."""
    server = request.scope.get("server")
    if server is not None and not is_loopback(server[0]):
        return "open mode serves loopback only; use an API key"
    if request.scope.get(UNTRUSTED_FORWARD):
        return (
            "open mode: this request came through a proxy not named in SAFERUN_TRUSTED_PROXIES, "
            "so it is not known to be local; use an API key"
        )
    client = request.client.host if request.client else None
    if client is not None and not is_loopback(client):  # a trusted proxy said: a remote client
        return "open mode serves loopback clients only; use an API key"
    return None


async def caller(request: Request) -> Caller:
    """The caller of this request; raises 401 when keys are required and none (valid) was given.

    A key or a session cookie is looked up in the store, in a worker thread; a request with neither (open
    mode's local user, or a 401) needs no lookup and is answered here, without a thread hop (issue 12:
    every request of an agent's cycle paid one)."""
    if _bearer(request) or request.cookies.get(session_cookie_name(request)):
        return await run_in_threadpool(resolve_caller, request)
    return resolve_caller(request)


def resolve_caller(request: Request) -> Caller:
    """``caller`` for code already off the event loop (it may read the store)."""
    key = _bearer(request)
    if key:
        found = identities(request).caller_for_key(key)
        if found is None:
            raise Unauthorized("the API key is unknown, revoked or malformed")
        return found
    cookie = request.cookies.get(session_cookie_name(request))
    if cookie:
        session = identities(request).session(cookie)
        if session is not None:
            if request.method not in ("GET", "HEAD", "OPTIONS") and not request.url.path.startswith("/ui"):
                token = request.headers.get("x-csrf-token")
                if token != session.csrf_token:
                    raise Forbidden("csrf", "a session-authenticated API call must send X-CSRF-Token")
            return session.caller
    mode = effective_mode(request)
    if mode == "open":
        server = request.scope.get("server")
        if server is not None and not is_loopback(server[0]):
            raise Unauthorized("open mode serves loopback only; use an API key")
        refusal = not_local(request)
        if refusal:
            raise Unauthorized(refusal)
        return Caller.open()
    raise Unauthorized("an API key is required (Authorization: Bearer sr_key_...)")


def docs_caller(request: Request) -> Caller | None:
    """Guard for ``/metrics`` and the API docs: in keys mode they need a valid key (or session) like any
    read, unless ``SAFERUN_PUBLIC_DOCS=true``; open mode serves them as before. Route counts and schema
    shapes are not secrets, but metrics name states and volumes an outsider has no business seeing."""
    if get_settings().public_docs or effective_mode(request) == "open":
        return None
    return resolve_caller(request)


DocsGuard = Annotated[Caller | None, Depends(docs_caller)]


def sees(caller: Caller, wf: WorkflowExecution | WorkflowView | RequestView | RequestGate) -> bool:
    """The one visibility rule (``policy.may_see_workflow``) for a loaded workflow (or the workflow of a
    loaded request)."""
    cfg = wf.config
    return may_see_workflow(
        caller,
        poster_id=cfg.poster_id,
        executor_id=cfg.executor_id,
        supervisor_id=wf.supervisor_id,
        platform_id=cfg.platform_id,
    )


def visible(
    orch: WorkflowOrchestrator, caller: Caller, workflow_id: str, hidden: SafeRunError | None = None
) -> WorkflowExecution:
    """The workflow, if ``caller`` may see it; otherwise 404 exactly as for a workflow that does not exist,
    so a foreign id reveals nothing (not even that it exists). ``hidden`` is the 404 to raise instead when
    the caller asked for something under the workflow (a request, a snapshot) and must not learn its id."""
    wf = orch.get_workflow(workflow_id)
    if not sees(caller, wf):
        raise hidden or WorkflowNotFound(workflow_id)
    return wf


def enforce(refusal: Refusal | None) -> None:
    if refusal is not None:
        raise Forbidden(refusal.rule, refusal.message)


CallerDep = Annotated[Caller, Depends(caller)]
OrchestratorDep = Annotated[WorkflowOrchestrator, Depends(orchestrator_dep)]
