"""Decision links in real headless Chromium (issue 9, finding 8): the ``/decide`` page opened as a
supervisor opens it from an e-mail approves and rejects; a form on another origin auto-posting to the same
link is refused and decides nothing. (With ``Referrer-Policy: no-referrer`` Chromium posted
``Origin: null`` and every legitimate decision was refused; httpx tests never saw it.)"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.notifications import links
from saferun.storage import approvals
from tests import ui_support as ui
from tests.test_ui_browser import browser, orch  # noqa: F401  (that module's Chromium and database)


def _link_token(engine: WorkflowOrchestrator, request_id: str) -> str:
    """A decision link for the request's assigned supervisor, minted as the dispatcher mints one."""
    with engine.db.transaction() as conn:
        token = links.mint(conn, approvals.get(conn, request_id), None, datetime.now(UTC))
    assert token is not None
    return token


def _attacker_site(target: str, token: str) -> FastAPI:
    page = FastAPI()

    @page.get("/")
    def _() -> HTMLResponse:  # the form auto-submits the moment the page loads, as a CSRF page would
        return HTMLResponse(
            f'<form id="f" method="post" action="{target}/decide/{token}">'
            f'<input name="token" value="{token}"><input name="decision" value="APPROVED"></form>'
            '<script>document.getElementById("f").submit()</script>'
        )

    return page


def test_decision_links_decide_in_chromium_and_a_cross_site_post_is_refused(
    browser: Any,  # noqa: F811
    orch: WorkflowOrchestrator,  # noqa: F811
) -> None:
    _, approve_id = ui.data_workflow(orch, "Approve by link")
    _, reject_id = ui.data_workflow(orch, "Reject by link")
    _, forged_id = ui.data_workflow(orch, "Forged by another site")
    approve_token, reject_token = _link_token(orch, approve_id), _link_token(orch, reject_id)
    forged_token = _link_token(orch, forged_id)
    with ui.serve(create_app(orch, auth="keys", sweep=False)) as base:
        context = browser.new_context()  # a fresh browser: the supervisor is signed in nowhere
        try:
            page = context.new_page()
            response = page.goto(f"{base}/decide/{approve_token}")
            assert response is not None and response.headers["referrer-policy"] == "same-origin"
            page.click("button[value=APPROVED]")
            page.wait_for_load_state()
            assert "Recorded: approved" in page.content()

            page.goto(f"{base}/decide/{reject_token}")
            page.fill("#rationale", "numbers look wrong")
            page.click("button[value=REJECTED]")
            page.wait_for_load_state()
            assert "Recorded: rejected" in page.content()

            with ui.serve(_attacker_site(base, forged_token)) as evil:  # another origin (another port)
                statuses: list[int] = []
                page.on("response", lambda r: statuses.append(r.status) if "/decide/" in r.url else None)
                page.goto(evil)
                page.wait_for_url(f"{base}/decide/{forged_token}")
                page.wait_for_load_state()
                assert statuses == [403] and "another site" in page.content()
        finally:
            context.close()
    with orch.db.read() as conn:
        approved = approvals.response_for(conn, approve_id)
        rejected = approvals.response_for(conn, reject_id)
        forged = approvals.response_for(conn, forged_id)
    assert approved is not None and approved["decision"] == "APPROVED"
    assert rejected is not None and rejected["decision"] == "REJECTED"
    assert rejected["rationale"] == "numbers look wrong"
    assert forged is None and orch.get_approval_request(forged_id).status.lower() == "pending"
