"""The reviewer dashboard: HTML pages, their live fragments, the decision form and sign-in.

Pages: ``/approvals`` (the seed's URL) and ``/approvals/{request_id}`` (the review), ``/workflows`` and
``/workflows/{workflow_id}`` (timeline), ``/stats``, ``/login`` and ``/logout``. Forms post under ``/ui``
with a CSRF token (``viewer.check_csrf``). Fragments under ``/ui/fragments`` are what the page's script
fetches when the event stream (``/api/events``) says something changed, so lists refresh without a
reload. The decision goes through the same policy as the API (``may_decide``): in keys mode the decision
is signed by the signed-in identity, in open mode by the name the reviewer types ("acting as").
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Depends, Request
from starlette.responses import FileResponse, RedirectResponse, Response

from saferun.api import approvals as approvals_api
from saferun.api import deps
from saferun.api.one_hop import OneHopRoute
from saferun.core.state_machine.models import ApprovalDecision, ApprovalResponse
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain import review_digest
from saferun.domain.policy import Refusal
from saferun.domain.states import WorkflowState
from saferun.errors import (
    ApprovalRequestNotFound,
    Conflict,
    DecisionConflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    SafeRunError,
    StaleReview,
)
from saferun.ui import batch, pages, queue, render, review
from saferun.ui import viewer as auth
from saferun.ui.viewer import Viewer

router = APIRouter(include_in_schema=False, route_class=OneHopRoute)
MAX_FORM_BYTES = 256 * 1024
STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


async def form_pairs(request: Request) -> list[tuple[str, str]]:
    """The posted url-encoded form as (name, value) pairs, in order (a repeated name keeps every value)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"form body exceeds {MAX_FORM_BYTES} bytes", limit=MAX_FORM_BYTES)
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return []
    return parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)


async def form_fields(request: Request) -> dict[str, str]:
    """The posted url-encoded form (the last value of a repeated name wins)."""
    return dict(await form_pairs(request))


FormDep = Depends(form_fields)
FormPairsDep = Depends(form_pairs)


def page(request: Request, v: Viewer, template: str, status: int = 200, **context: Any) -> Response:
    response = render.html(
        template,
        status,
        request=request,
        viewer=v,
        path=request.url.path,
        events_after=getattr(request.state, "events_after", 0),
        pending_count=context.pop("pending_count", None),
        **context,
    )
    return auth.remember(request, response, v)


def _error(request: Request, v: Viewer | None, exc: SafeRunError) -> Response:
    titles = {401: "Sign-in needed", 403: "Not allowed", 404: "Not found", 409: "Conflict", 413: "Too large"}
    status = exc.http_status if exc.http_status < 500 else 500
    v = v or Viewer(mode=deps.effective_mode(request), caller=None)
    message = exc.message if status < 500 else "The server could not do that; the error is in its log."
    return page(request, v, "error.html", status, title=titles.get(status, "Error"), message=message)


def dashboard(*, fragment: bool = False) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """Resolve the viewer (or send them to sign in) and show engine errors as a page, for one route.

    The route function takes ``viewer`` as its second parameter; FastAPI sees the signature without it.
    """

    def wrap(fn: Callable[..., Response]) -> Callable[..., Response]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def route(request: Request, **kwargs: Any) -> Response:
            try:
                v = auth.resolve(request)
            except SafeRunError as exc:
                return _error(request, None, exc)
            if v.caller is None:
                if fragment or request.method != "GET":
                    return Response("sign in first", status_code=401, media_type="text/plain")
                target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
                return RedirectResponse(f"/login?next={target}", status_code=303)
            if not fragment:
                request.state.events_after = _last_event_id(request)
            try:
                return fn(request, v, **kwargs)
            except SafeRunError as exc:
                if fragment:
                    return Response(exc.message, status_code=exc.http_status, media_type="text/plain")
                return _error(request, v, exc)

        params = [p for name, p in signature.parameters.items() if name != "v"]
        route.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return route

    return wrap


def _orch(request: Request) -> WorkflowOrchestrator:
    return deps.orchestrator(request)


def _last_event_id(request: Request) -> int:
    """Where the page's event stream starts: read before the page's content, so no change is missed."""
    from saferun.core import events

    with _orch(request).db.read() as conn:
        return events.last_event_id(conn)


# ---------------------------------------------------------------------- pages


@router.get("/")
def home() -> Response:
    return RedirectResponse("/approvals", status_code=303)


@router.get("/approvals")
@dashboard()
def approvals_page(request: Request, v: Viewer, done: str | None = None) -> Response:
    """One page of the queue with the API's filters (``ui/queue.py``); never the whole queue."""
    orch = _orch(request)
    context = queue.context(orch, v, request.query_params)
    pending_count = context["total"] if not context["filtered"] else orch.count_pending(v.who)
    return page(
        request,
        v,
        "approvals.html",
        flash=pages.flash(orch, v.who, done),
        attention=pages.attention(orch, v.who),
        pending_count=pending_count,
        **context,
    )


@router.post("/ui/approvals/batch")
@dashboard()
def decide_batch(request: Request, v: Viewer, form: list[tuple[str, str]] = FormPairsDep) -> Response:
    """Approve or reject the requests selected on the queue: CSRF, the form's checks, then the API's
    ``decide_each`` (one transaction and one result per request); the queue is shown again with them."""
    fields = dict(form)
    auth.check_csrf(request, v, fields.get("csrf_token"))
    assert v.caller is not None
    orch = _orch(request)
    parsed = batch.parse(form)
    if v.caller.authenticated:
        approved_by = v.caller.identity_id or ""
    else:
        approved_by = fields.get("acting_as", "").strip()
        if not approved_by:
            parsed.errors["acting_as"] = "Type the name you decide as (it is recorded with each decision)."
        elif len(approved_by) > auth.ACTING_AS_MAX:
            parsed.errors["acting_as"] = f"At most {auth.ACTING_AS_MAX} characters."
    report = None
    if not parsed.errors and parsed.decision is not None:
        results = approvals_api.decide_each(
            orch, v.caller, parsed.request_ids, parsed.decision, parsed.rationale, approved_by
        )
        report = batch.report(parsed.decision, results)
        # what is left selected: the requests that were not decided, to retry or look at
        selected = {r["request_id"] for r in results if r["outcome"] != "decided"}
    else:
        selected = set(parsed.request_ids)
    context = queue.context(orch, v, request.query_params)  # the queue as it is now
    common = {
        "flash": None,
        "attention": pages.attention(orch, v.who),
        "pending_count": context["total"] if not context["filtered"] else orch.count_pending(v.who),
        "selected": selected,
        "batch_form": {"rationale": parsed.rationale if report is None else "", "acting_as": approved_by},
    }
    if report is None:
        return page(request, v, "approvals.html", 422, batch_errors=parsed.errors, **common, **context)
    response = page(request, v, "approvals.html", batch_report=report, **common, **context)
    if not v.caller.authenticated:
        auth.set_acting_as(request, response, approved_by)
    return response


def _review(
    request: Request,
    v: Viewer,
    request_id: str,
    status: int = 200,
    *,
    submitted: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    param_errors: dict[str, str] | None = None,
    problem: str | None = None,
    refusal: Any = None,
    active: str | None = None,
    stale: StaleReview | None = None,
    flash: dict[str, Any] | None = None,
) -> Response:
    orch = _orch(request)
    context = pages.approval(orch, v.who, request_id)
    req = context["req"]
    submitted = submitted or {}
    patch_error = (param_errors or {}).get(review.PATCH_FIELD)
    return page(
        request,
        v,
        "review.html",
        status,
        fields=review.param_fields(req.parameters, submitted, param_errors, req.parameter_schema),
        patch_value=submitted.get(review.PATCH_FIELD, ""),
        patch_error=patch_error,
        submitted=submitted,
        errors=errors or {},
        problem=problem,
        refusal=refusal,
        predicted=pages.decide_refusal(v, req, orch) if req.status == "pending" else None,
        active=active or "APPROVED",
        stale=stale,
        flash=flash,
        **context,
    )


@router.get("/approvals/{request_id}")
@dashboard()
def review_page(request: Request, v: Viewer, request_id: str, done: str | None = None) -> Response:
    """One request's review page; ``done``: a sibling item just decided, whose outcome is shown once."""
    return _review(request, v, request_id, flash=pages.flash(_orch(request), v.who, done))


@router.post("/ui/approvals/{request_id}/decision")
@dashboard()
def decide(request: Request, v: Viewer, request_id: str, form: dict[str, str] = FormDep) -> Response:
    """Record the reviewer's decision: CSRF, input checks, the decision policy, then the engine."""
    auth.check_csrf(request, v, form.get("csrf_token"))
    orch = _orch(request)
    assert v.caller is not None
    req = orch.get_approval_request(request_id)
    deps.visible(orch, v.who, req.workflow_id, ApprovalRequestNotFound(request_id))
    errors: dict[str, str] = {}
    try:
        decision = ApprovalDecision(form.get("decision", ""))
    except ValueError:
        return _review(
            request, v, request_id, 422, submitted=form, problem="Choose Approve, Modify or Reject."
        )
    rationale = form.get("rationale", "").replace("\r\n", "\n").strip()
    if v.caller.authenticated:
        approved_by = v.caller.identity_id
    else:
        approved_by = form.get("acting_as", "").strip()
        if not approved_by:
            errors["acting_as"] = "Type the name you decide as (it is recorded with the decision)."
        elif len(approved_by) > auth.ACTING_AS_MAX:
            errors["acting_as"] = f"At most {auth.ACTING_AS_MAX} characters."
    if decision == ApprovalDecision.REJECTED and not rationale:
        errors["rationale"] = "Say why you reject: the agent and the poster see this rationale."
    if len(rationale) > 20_000:
        errors["rationale"] = "At most 20,000 characters."
    modifications = None
    param_errors: dict[str, str] = {}
    if decision == ApprovalDecision.MODIFIED:
        parsed = review.parse_modifications(req.parameters, form, req.parameter_schema)
        param_errors = parsed.errors
        if not param_errors and not parsed.modifications:
            errors["parameters"] = "Change at least one parameter to modify (or approve as proposed)."
        modifications = parsed.modifications
    retry = functools.partial(_review, request, v, request_id, submitted=form, active=decision.value)
    if errors or param_errors:
        stray = [
            f"{k}: {m}"
            for k, m in param_errors.items()
            if k not in req.parameters and k != review.PATCH_FIELD
        ]
        problem = " ".join(["Fix the marked fields.", *stray])
        return retry(422, errors=errors, param_errors=param_errors, problem=problem)
    refusal = pages.refusal_for(orch, req, v.caller, approved_by, predict=False)
    if refusal is not None:
        return retry(403, refusal=refusal)
    seen = form.get("review_digest") or None
    if seen is not None and not review_digest.well_formed(seen):
        return retry(422, problem="The form's review digest is malformed: reload the page and decide again.")
    try:
        after = orch.decide_request(
            ApprovalResponse(
                request_id=request_id,
                decision=decision,
                rationale=rationale,
                approved_by=approved_by,
                modifications=modifications or None,
                review_digest=seen,
            ),
            workflow_id=req.workflow_id,
        )
    except StaleReview as exc:  # the page is re-rendered as the request is now, with the new digest
        return retry(409, stale=exc)
    except DecisionConflict as exc:
        return retry(409, problem=f"Nothing was recorded: {exc.message}.")
    except Forbidden as exc:  # a quorum rule the page could not foresee (docs/quorum.md)
        return retry(403, refusal=Refusal(exc.rule, exc.message))
    except Conflict as exc:  # quorum_one_vote: a vote cast meanwhile from another tab
        return retry(409, problem=f"Nothing was recorded: {exc.message}.")
    except InvalidInput as exc:
        name = exc.field.removeprefix("modifications.")
        if exc.field.startswith("modifications.") and name in req.parameters:
            detail = exc.message.split(": ", 1)[-1]
            return retry(422, param_errors={name: detail}, problem="Fix the marked fields.")
        return retry(422, problem=exc.message)
    # an item whose siblings still wait: on to the next of them, with this outcome shown there
    waiting = (
        [r for r, _ in orch.checkpoint_items(request_id) if r.status == "pending"] if req.group_id else []
    )
    where = f"/approvals/{quote(waiting[0].request_id)}" if waiting else "/approvals"
    target = f"{where}?done={quote(request_id)}"
    if req.quorum is not None and after.workflow_state == WorkflowState.AWAITING_APPROVAL:
        target = f"/approvals/{quote(request_id)}?voted=1"  # a vote recorded, the quorum not yet reached
    response = RedirectResponse(target, status_code=303)
    if not v.caller.authenticated:
        auth.set_acting_as(request, response, approved_by)
    return response


@router.get("/workflows")
@dashboard()
def workflows_page(request: Request, v: Viewer, status: str | None = None) -> Response:
    """One keyset page of workflows (``pages.workflows``), the API's cursor in the query string."""
    context = _workflows_context(request, v, status)
    return page(request, v, "workflows.html", pending_count=_orch(request).count_pending(v.who), **context)


def _workflows_context(request: Request, v: Viewer, status: str | None) -> dict[str, Any]:
    try:
        state = WorkflowState(status).value if status else None
    except ValueError:
        raise InvalidInput("status", f"unknown workflow state {status!r}") from None
    query = request.query_params
    cursor = (query.get("cursor") or "").strip() or None
    return pages.workflows(
        _orch(request), v.who, state, cursor=cursor, limit=queue.parse_limit(query, pages.WORKFLOWS_PAGE)
    )


@router.get("/workflows/{workflow_id}")
@dashboard()
def workflow_page(request: Request, v: Viewer, workflow_id: str, resolved: str | None = None) -> Response:
    return _workflow_page(request, v, workflow_id, resolved=resolved)


def _workflow_page(
    request: Request,
    v: Viewer,
    workflow_id: str,
    status: int = 200,
    *,
    resolved: str | None = None,
    problem: str | None = None,
    submitted: dict[str, str] | None = None,
) -> Response:
    orch = _orch(request)
    context = pages.workflow(orch, v.who, workflow_id)
    return page(
        request,
        v,
        "workflow.html",
        status,
        stuck=pages.stuck_panel(orch, v.who, workflow_id),
        resolved=resolved if resolved in RESOLVE_ACTIONS else None,
        problem=problem,
        submitted=submitted or {},
        **context,
    )


RESOLVE_ACTIONS = ("retry", "mark_compensated", "fail")


def _posters_act(
    request: Request,
    v: Viewer,
    workflow_id: str,
    form: dict[str, str],
    refused: str,
    unchanged: str,
    act: Callable[[WorkflowOrchestrator, str], str],
) -> Response:
    """A poster's (or an admin's) form post on a workflow page — resolve stuck work, fork — with the API's
    rule: CSRF, visible, poster or admin, then ``act(orch, actor)`` returns where to go; a refusal
    re-renders the page with the problem and what was submitted."""
    auth.check_csrf(request, v, form.get("csrf_token"))
    orch = _orch(request)
    wf = deps.visible(orch, v.who, workflow_id)
    retry = functools.partial(_workflow_page, request, v, workflow_id, submitted=form)
    if not pages.may_resolve(v.who, wf.config.poster_id):
        return retry(403, problem=refused)
    actor = v.who.identity_id or form.get("acting_as", "").strip() or wf.config.poster_id
    try:
        target = act(orch, actor)
    except InvalidInput as exc:
        return retry(422, problem=exc.message)
    except Conflict as exc:
        return retry(409, problem=f"{unchanged}: {exc.message}.")
    return RedirectResponse(target, status_code=303)


@router.post("/ui/workflows/{workflow_id}/resolve")
@dashboard()
def resolve(request: Request, v: Viewer, workflow_id: str, form: dict[str, str] = FormDep) -> Response:
    """Resolve stuck work from the dashboard: same rule (poster or admin) and engine call as the API."""
    action = form.get("action", "")

    def act(orch: WorkflowOrchestrator, actor: str) -> str:
        if action not in RESOLVE_ACTIONS:
            raise InvalidInput("action", "Choose retry, mark compensated or fail.")
        asyncio.run(orch.resolve_stuck(workflow_id, action, form.get("reason", ""), actor=actor))
        return f"/workflows/{quote(workflow_id)}?resolved={action}"

    return _posters_act(
        request,
        v,
        workflow_id,
        form,
        "Only the workflow's poster or an admin may resolve stuck work.",
        "Nothing was changed",
        act,
    )


@router.post("/ui/workflows/{workflow_id}/fork")
@dashboard()
def fork(request: Request, v: Viewer, workflow_id: str, form: dict[str, str] = FormDep) -> Response:
    """Fork from an approved snapshot (issue 16): the API's rule (poster or admin) and engine call; on
    success the new workflow's page."""

    def act(orch: WorkflowOrchestrator, actor: str) -> str:
        new = orch.fork_workflow(workflow_id, form.get("checkpoint", ""), actor=actor)
        return f"/workflows/{quote(new.workflow_id)}"

    return _posters_act(
        request,
        v,
        workflow_id,
        form,
        "Only the workflow's poster or an admin may fork it (a fork locks new escrow).",
        "Nothing was created",
        act,
    )


@router.get("/stats")
@dashboard()
def stats_page(request: Request, v: Viewer) -> Response:
    context = pages.stats(_orch(request), v.who)
    return page(request, v, "stats.html", pending_count=context["stats"]["pending_approvals"], **context)


# ---------------------------------------------------------------------- live fragments


@router.get("/ui/fragments/pending")
@dashboard(fragment=True)
def pending_fragment(request: Request, v: Viewer) -> Response:
    return page(request, v, "_pending.html", **queue.context(_orch(request), v, request.query_params))


@router.get("/ui/fragments/workflows")
@dashboard(fragment=True)
def workflows_fragment(request: Request, v: Viewer, status: str | None = None) -> Response:
    return page(request, v, "_workflows.html", **_workflows_context(request, v, status))


@router.get("/ui/fragments/workflows/{workflow_id}")
@dashboard(fragment=True)
def workflow_fragment(request: Request, v: Viewer, workflow_id: str) -> Response:
    return page(request, v, "_workflow.html", **pages.workflow(_orch(request), v.who, workflow_id))


@router.get("/ui/fragments/approvals/{request_id}/status")
@dashboard(fragment=True)
def approval_status_fragment(request: Request, v: Viewer, request_id: str, part: str = "status") -> Response:
    """The review page's status (``part=status``), its items of a checkpoint that asked several things at
    once (``part=items``), a quorum request's votes (``part=quorum``), or the queue's flash after a
    decision (``part=flash``)."""
    if part not in ("status", "flash", "items", "quorum"):
        raise InvalidInput("part", f"expected status, flash, items or quorum, got {part!r}")
    context = pages.request_status(_orch(request), v.who, request_id)  # unknown or foreign: 404
    if part == "items":  # the review page's items of a checkpoint that asked several things at once
        req = context["req"]
        items = _orch(request).checkpoint_items(request_id) if req.group_id is not None else []
        return page(request, v, "_items_table.html", req=req, items=items)
    if part == "quorum":  # an M-of-N request's votes so far and who may still vote (docs/quorum.md)
        return page(request, v, "_quorum.html", req=context["req"]) if context["req"].quorum else Response()
    if part == "flash":
        return page(request, v, "_flash.html", flash=pages.flash(_orch(request), v.who, request_id))
    return page(request, v, "_request_status.html", **context)


@router.get("/ui/fragments/stats")
@dashboard(fragment=True)
def stats_fragment(request: Request, v: Viewer) -> Response:
    return page(request, v, "_stats.html", **pages.stats(_orch(request), v.who))


@router.get("/ui/fragments/nav")
@dashboard(fragment=True)
def nav_fragment(request: Request, v: Viewer) -> Response:
    count = _orch(request).count_pending(v.who)  # the caller's own queue, counted, not loaded
    return Response(str(count), media_type="text/plain", headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------------- sign-in


def _anonymous(request: Request) -> Viewer:
    try:
        return auth.resolve(request)
    except SafeRunError:
        return Viewer(mode=deps.effective_mode(request), caller=None)


def _login_page(request: Request, status: int = 200, error: str | None = None) -> Response:
    v = _anonymous(request)
    request.state.events_after = _last_event_id(request)
    token = auth.new_login_token()
    next_url = auth.safe_next(request.query_params.get("next"))
    response = page(request, v, "login.html", status, login_token=token, next_url=next_url, error=error)
    auth.set_login_token(request, response, token)
    return response


@router.get("/login")
def login_page(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
def login(request: Request, form: dict[str, str] = FormDep) -> Response:
    try:
        auth.check_login_token(request, form.get("login_token"))
    except SafeRunError as exc:
        return _login_page(request, exc.http_status, exc.message)
    service = deps.identities(request)
    found = service.authenticate_key(form.get("api_key", "").strip())
    if found is None:
        return _login_page(request, 401, "That key is unknown, revoked or malformed.")
    identity, key_id = found
    cookie_value, _ = service.create_session(identity.identity_id, key_id=key_id)
    response = RedirectResponse(auth.safe_next(form.get("next")), status_code=303)
    auth.set_session(request, response, cookie_value)
    response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/")
    return response


@router.get("/logout")
def logout_page(request: Request) -> Response:
    v = _anonymous(request)
    if v.session is None:
        return RedirectResponse("/login", status_code=303)
    return page(request, v, "logout.html")


@router.post("/logout")
def logout(request: Request, form: dict[str, str] = FormDep) -> Response:
    v = _anonymous(request)
    if v.session is not None:
        try:
            auth.check_csrf(request, v, form.get("csrf_token"))
        except SafeRunError as exc:
            return _error(request, v, exc)
        deps.identities(request).delete_session(request.cookies.get(deps.session_cookie_name(request)))
    response = RedirectResponse("/login" if v.mode == "keys" else "/approvals", status_code=303)
    auth.clear_session(request, response)
    return response


# ---------------------------------------------------------------------- static files


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    path = render.STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
        raise NotFound(f"no static file {name!r}")
    return FileResponse(
        path,
        media_type=STATIC_TYPES[path.suffix],
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )
