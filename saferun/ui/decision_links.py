"""``/decide/{token}``: the page a notice's decision link opens, and the form that decides.

No sign-in: the token is the credential (``saferun.notifications.links``). ``GET`` only shows the request
and never spends the link, because mail scanners and chat unfurlers fetch links on their own. ``POST``
decides, once. The form carries the token again in a field (``token``) and is refused when the browser
says it came from another site: a page elsewhere cannot forge a decision without already holding the
link. Every refusal is a page with the status that says why (404 unknown or altered, 409 used, expired
or already decided, 403 a policy rule, 422 a bad form) and decides nothing. The pages send
``Referrer-Policy: same-origin``: the token in the address never leaves for another origin, while the
page's own form post still carries its real ``Origin`` (with ``no-referrer`` Chromium posts
``Origin: null`` and every decision was refused, issue 9 finding 8).
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from saferun.api import deps
from saferun.api.one_hop import OneHopRoute
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain import review_digest
from saferun.errors import Forbidden, InvalidInput, SafeRunError, StaleReview
from saferun.notifications import links
from saferun.ui import pages, render
from saferun.ui.outcome import outcome
from saferun.ui.routes import FormDep
from saferun.ui.viewer import same_origin

router = APIRouter(include_in_schema=False, route_class=OneHopRoute)
TITLES = {403: "Not allowed", 404: "Unknown link", 409: "Link can no longer decide", 422: "Check the form"}
HEADERS = {"Referrer-Policy": "same-origin"}
STALE_TITLE = "This request changed while you were reviewing it"
STALE_MESSAGE = (
    "Nothing was decided. Changed: {}. The page now shows it as it is; review it again and decide."
)


def _changed(exc: StaleReview) -> str:
    return ", ".join(exc.changed) if exc.changed else "its content"


def _page(status: int, title: str, message: str = "", **context: Any) -> Response:
    context.setdefault("view", None)
    context.setdefault("review", None)
    context.setdefault("token", "")
    return render.html(
        "decide_link.html", status, headers=HEADERS, code=status, title=title, message=message, **context
    )


def _review(orch: WorkflowOrchestrator, view: links.LinkView) -> dict[str, Any]:
    """The same context and stakes the review page shows (``pages.review_context``), for the link's
    request: a reviewer deciding from a message sees what a signed-in one sees, except the modify form."""
    req = orch.get_approval_request(view.request["request_id"])
    return pages.review_context(orch, req, orch.get_workflow(req.workflow_id))


def _refused(exc: SafeRunError) -> Response:
    status = exc.http_status if exc.http_status < 500 else 500
    message = exc.message if status < 500 else "The server could not do that; the error is in its log."
    return _page(status, TITLES.get(status, "Error"), message)


@router.get("/decide/{token}")
def show(request: Request, token: str) -> Response:
    """The request the link decides, with Approve and Reject (reading only: the link stays unused)."""
    orch = deps.orchestrator(request)
    try:
        view = links.inspect(orch, token)
        review = _review(orch, view)
    except SafeRunError as exc:
        return _refused(exc)
    return _page(200, "Approve or reject", view=view, token=token, review=review)


@router.get("/decide/{token}/status")
def live_status(request: Request, token: str) -> Response:
    """The open link page's live status (polled by ``decide_link.js``): empty while the request is
    pending, else what happened to it, which replaces the page's buttons. Reading only; the link stays
    unspent. An unknown or altered token is the same 404 page as ``GET /decide/{token}``."""
    orch = deps.orchestrator(request)
    try:
        now = links.status(orch, token)
    except SafeRunError as exc:
        return _refused(exc)
    req, resp = now.request, now.response
    said = None
    if resp is not None:
        automatic = bool(resp["automatic"])
        timeout_rule = req["on_timeout"]
        said = outcome(resp["decision"], now.workflow_state, automatic=automatic, on_timeout=timeout_rule)
    return render.html(
        "_link_status.html",
        200,
        headers={**HEADERS, "Cache-Control": "no-store"},
        req=req,
        response=resp,
        said=said,
    )


@router.post("/decide/{token}")
def decide(request: Request, token: str, form: dict[str, str] = FormDep) -> Response:
    """Decide the link's request as its assigned supervisor, spending the link in the same transaction."""
    orch = deps.orchestrator(request)
    try:
        if not same_origin(request):
            raise Forbidden("csrf", "refused by rule csrf: the form was posted from another site")
        if not hmac.compare_digest(form.get("token", "").encode(), token.encode()):
            raise Forbidden("csrf", "refused by rule csrf: the form does not carry this link's token")
        seen = form.get("review_digest") or None
        if seen is not None and not review_digest.well_formed(seen):
            raise InvalidInput("review_digest", "the form's review digest is malformed: reload the page")
        decided = links.decide(
            orch, token, form.get("decision", ""), form.get("rationale", ""), review_digest=seen
        )
    except (InvalidInput, StaleReview) as exc:
        try:  # the link is unspent: show the form again, as the request is now, with what to fix
            view = links.inspect(orch, token)
            review = _review(orch, view)
        except SafeRunError as again:
            return _refused(again)
        if isinstance(exc, StaleReview):
            return _page(
                409, STALE_TITLE, STALE_MESSAGE.format(_changed(exc)), view=view, token=token, review=review
            )
        return _page(422, TITLES[422], exc.message, view=view, token=token, review=review)
    except SafeRunError as exc:
        return _refused(exc)
    items = orch.checkpoint_items(decided.request_id)  # one row unless several were asked at once
    waiting = sum(1 for r, _ in items if r.status == "pending") if len(items) > 1 else 0
    said = outcome(decided.decision.value, decided.workflow_state.value, siblings_pending=waiting)
    return _page(
        200,
        f"Recorded: {said.word.lower()}",
        f"Request {decided.request_id} is {said.word.lower()}. {said.consequence} "
        "This link cannot be used again.",
    )
