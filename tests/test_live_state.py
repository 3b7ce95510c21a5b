"""Decided elsewhere or after the fact (issue 14, item 6): the words for what a decision did, the review
page's status fragment (chip, outcome, the card that replaces the buttons), the queue's flash (a Reject
never reads "now executing"), and the decision-link page with the review page's context and stakes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from saferun.core.state_machine.models import ApprovalDecision, ApprovalResponse
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.notifications import links
from saferun.storage import approvals
from saferun.storage.database import Database
from saferun.ui.outcome import outcome
from tests import ui_support as ui
from tests.test_ui import client_for, csrf_of


@pytest.fixture
def orch(db: Database) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=db)


def reject(orch: WorkflowOrchestrator, request_id: str) -> None:
    orch.submit_approval(
        None,
        ApprovalResponse(
            request_id=request_id,
            decision=ApprovalDecision.REJECTED,
            rationale="too many",
            approved_by="reviewer",
        ),
    )


# ---------------------------------------------------------------------- the words (pure)


@pytest.mark.parametrize(
    ("decision", "state", "words"),
    [
        ("REJECTED", "rolling_back", "being undone"),
        (
            "REJECTED",
            "executing",
            "Rolled back: the agent's steps since the last approved checkpoint were undone",
        ),
        ("REJECTED", "awaiting_approval", "waits for review again"),
        ("REJECTED", "failed", "refunded to the poster"),
        ("APPROVED", "executing", "The milestone is paid and the agent continues."),
        ("MODIFIED", "executing", "continues with your changes"),
        ("APPROVED", "completed", "the workflow is complete"),
        ("APPROVED", "awaiting_approval", "reached its next checkpoint"),
    ],
)
def test_the_consequence_follows_the_decision_and_the_state_now(
    decision: str, state: str, words: str
) -> None:
    said = outcome(decision, state)
    assert words in said.consequence
    assert "now executing" not in said.consequence


def test_a_timeout_says_it_was_automatic() -> None:
    said = outcome("REJECTED", "rolling_back", automatic=True, on_timeout="reject")
    assert said.word == "Timed out (rejected by on_timeout=reject)" and said.tone == "bad"


# ---------------------------------------------------------------------- fragments over HTTP


async def test_the_status_fragment_carries_the_chip_the_outcome_and_the_card(
    orch: WorkflowOrchestrator,
) -> None:
    wf, req = ui.pizza_workflow(orch)
    async with client_for(orch, "open") as client:
        pending = (await client.get(f"/ui/fragments/approvals/{req}/status")).text
        assert 'id="request-state">pending<' in pending and 'id="request-expiry"' in pending
        assert "data-closed" not in pending and "data-outcome-card" not in pending

        reject(orch, req)
        decided = (await client.get(f"/ui/fragments/approvals/{req}/status")).text
        assert 'id="request-state">decided · rejected<' in decided
        assert "Expires" not in decided and "data-closed" in decided
        state = orch.get_workflow(wf).current_state.value
        assert f"workflow {state.replace('_', ' ')}" in decided
        assert outcome("REJECTED", state).consequence.replace("'", "&#39;") in decided
        assert "<template data-outcome-card>" in decided and 'class="outcome outcome-rejected"' in decided

        # the page itself, loaded after the decision, shows the card instead of the buttons
        page = (await client.get(f"/approvals/{req}")).text
        assert 'id="outcome"' in page and 'id="form-approve"' not in page

        bad = await client.get(f"/ui/fragments/approvals/{req}/status?part=chips")
        assert bad.status_code == 422 and "part" in bad.text
        unknown = await client.get("/ui/fragments/approvals/req_nope/status?part=flash")
        assert unknown.status_code == 404


async def test_the_flash_after_a_reject_says_rolled_back_not_now_executing(
    orch: WorkflowOrchestrator,
) -> None:
    wf, req = ui.data_workflow(orch)
    async with client_for(orch, "open") as client:
        token = csrf_of((await client.get(f"/approvals/{req}")).text)
        posted = await client.post(
            f"/ui/approvals/{req}/decision",
            data={
                "csrf_token": token,
                "decision": "REJECTED",
                "rationale": "10 pizzas",
                "acting_as": "reviewer",
            },
        )
        assert posted.status_code == 303
        queue = (await client.get(posted.headers["location"])).text
        assert 'id="flash-region"' in queue and f"/ui/fragments/approvals/{req}/status?part=flash" in queue
        assert "<strong>Rejected</strong>" in queue and "being undone" in queue
        assert "now executing" not in queue

        # the agent rolls back and retries: the live flash now says so, still not "now executing"
        await orch.arollback(wf)
        assert orch.get_workflow(wf).current_state.value == "executing"
        flash = (await client.get(f"/ui/fragments/approvals/{req}/status?part=flash")).text
        assert "Rolled back:" in flash and "workflow executing" in flash
        assert "now executing" not in flash


# ---------------------------------------------------------------------- the decision link


def _token(orch: WorkflowOrchestrator, request_id: str) -> str:
    with orch.db.transaction() as conn:
        token = links.mint(conn, approvals.get(conn, request_id), None, datetime.now(UTC))
    assert token is not None
    return token


async def test_the_decision_link_shows_the_review_pages_context_and_stakes(
    orch: WorkflowOrchestrator,
) -> None:
    _, req = ui.pizza_workflow(orch)
    token = _token(orch, req)
    async with client_for(orch, "open") as client:
        page = (await client.get(f"/decide/{token}")).text
        assert 'id="stakes"' in page and 'id="stakes-approve"' in page and "Escrow held" in page
        assert 'id="reject-undoes"' in page and "add_items" in page and "empty_cart" in page
        assert 'id="alerts"' in page and "8x the $150 budget" in page
        assert 'id="link-context"' in page and "Friday all-hands" in page
        assert "Reject and roll back" in page
        # the same labelled advice, confidence and risk as the review page
        assert 'id="link-advice"><strong>reject</strong>' in page
        assert 'id="link-agent">proposes modify (its confidence 62%); lowest score quantity 41%' in page
        assert 'id="link-risk">high' in page

        done = await client.post(
            f"/decide/{token}",
            data={"token": token, "decision": "REJECTED", "rationale": "too many"},
            headers={"Origin": "http://test", "Sec-Fetch-Site": "same-origin"},
        )
        assert done.status_code == 200, done.text
        assert "Recorded: rejected" in done.text and "now executing" not in done.text
        assert "being undone" in done.text


async def test_an_approve_through_the_link_says_the_milestone_is_paid(orch: WorkflowOrchestrator) -> None:
    _, req = ui.data_workflow(orch)
    token = _token(orch, req)
    async with client_for(orch, "open") as client:
        done = await client.post(
            f"/decide/{token}",
            data={"token": token, "decision": "APPROVED"},
            headers={"Origin": "http://test", "Sec-Fetch-Site": "same-origin"},
        )
    assert done.status_code == 200 and "The milestone is paid and the agent continues." in done.text


async def test_the_decision_link_status_turns_when_the_request_is_decided_elsewhere(
    orch: WorkflowOrchestrator,
) -> None:
    """The open link page polls ``/decide/{token}/status``: empty while pending; after a decision made
    in the dashboard it says what happened, and reading it never spends the link or decides anything."""
    _, req = ui.data_workflow(orch)
    token = _token(orch, req)
    async with client_for(orch, "open") as client:
        page = (await client.get(f"/decide/{token}")).text
        assert f'data-link-status="/decide/{token}/status"' in page
        assert '<script src="/ui/static/decide_link.js" defer></script>' in page
        pending = await client.get(f"/decide/{token}/status")
        assert pending.status_code == 200 and 'data-closed="1"' not in pending.text
        assert pending.headers["cache-control"] == "no-store"
        assert orch.get_approval_request(req).status == "pending"

        orch.submit_approval(None, ApprovalResponse(request_id=req, decision=ApprovalDecision.REJECTED,
                                                    rationale="wrong data", approved_by="human_1"))
        closed = await client.get(f"/decide/{token}/status")
        assert closed.status_code == 200
        assert 'id="link-outcome" data-closed="1"' in closed.text
        assert "<strong>Rejected</strong> by human_1" in closed.text
        assert "This link can no longer decide" in closed.text

        unknown = await client.get("/decide/" + "A" * 43 + "/status")
        assert unknown.status_code == 404 and "unknown or has been altered" in unknown.text
        malformed = await client.get("/decide/x/status")
        assert malformed.status_code == 404
