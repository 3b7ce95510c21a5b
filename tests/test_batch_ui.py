"""Batch decisions from the dashboard's queue (issue 14, item 3): checkboxes post several ``request_id``s
with Approve selected / Reject selected; the API's ``decide_each`` decides each once and the queue shows
one result per request. CSRF like every form; a reject needs a rationale; nothing is decided on a bad form.
"""

from __future__ import annotations

import re

import httpx
import pytest

from saferun.core.identity import IdentityService
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from saferun.ui import batch
from tests import ui_support as ui
from tests.test_ui import client_for, csrf_of, sign_in


@pytest.fixture
def orch(db: Database) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=db)


async def post_batch(
    client: httpx.AsyncClient, pairs: list[tuple[str, str]], token: str | None = None
) -> httpx.Response:
    if token is None:
        token = csrf_of((await client.get("/approvals")).text)
    return await client.post(
        "/ui/approvals/batch",
        content=httpx.QueryParams([("csrf_token", token), *pairs]).__str__(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def results_of(page: str) -> dict[str, str]:
    """The per-item results the page lists: {request id: outcome}."""
    found = re.findall(r'<li data-result="([a-z_]+)"><a class="mono" href="/approvals/([^"]+)"', page)
    return {rid: outcome for outcome, rid in found}


async def test_the_queue_has_a_checkbox_per_request_bound_to_the_batch_form(
    orch: WorkflowOrchestrator,
) -> None:
    _, a = ui.data_workflow(orch, "First")
    _, b = ui.data_workflow(orch, "Second")
    async with client_for(orch, "open") as client:
        page = (await client.get("/approvals")).text
        fragment = (await client.get("/ui/fragments/pending")).text
    assert '<form id="batch-form"' in page and 'name="csrf_token"' in page
    for rid in (a, b):
        box = f'name="request_id" value="{rid}" form="batch-form"'
        assert box in page and box in fragment  # the live list keeps the checkboxes
    assert 'value="APPROVED" id="batch-approve"' in page and 'value="REJECTED" id="batch-reject"' in page


async def test_approve_selected_decides_each_once_and_reports_every_item(orch: WorkflowOrchestrator) -> None:
    wf_a, a = ui.data_workflow(orch, "First")
    _, b = ui.data_workflow(orch, "Second")
    _, c = ui.data_workflow(orch, "Third, decided elsewhere")
    ui.approve(orch, c)
    async with client_for(orch, "open") as client:
        res = await post_batch(
            client,
            [
                ("request_id", a),
                ("request_id", b),
                ("request_id", c),
                ("request_id", "req_unknown"),
                ("decision", "APPROVED"),
                ("rationale", "all fine"),
                ("acting_as", "reviewer"),
            ],
        )
    assert res.status_code == 200, res.text
    page = res.text
    assert "Approved 2 of 4; 1 already decided (nothing changed); 1 not found." in page
    assert results_of(page) == {a: "decided", b: "decided", c: "already_decided", "req_unknown": "not_found"}
    for rid in (a, b):
        response = orch.get_approval_response(rid)
        assert (
            response is not None and response.approved_by == "reviewer" and response.rationale == "all fine"
        )
    assert orch.get_workflow(wf_a).status == "executing"
    # the decided ones left the queue; the undecided ids stay ticked for a retry
    assert f'data-request-id="{a}"' not in page
    assert "saferun_acting_as" in res.headers.get("set-cookie", "")


async def test_reject_selected_needs_a_rationale_and_decides_nothing_without_one(
    orch: WorkflowOrchestrator,
) -> None:
    _, a = ui.data_workflow(orch, "First")
    _, b = ui.data_workflow(orch, "Second")
    async with client_for(orch, "open") as client:
        res = await post_batch(
            client,
            [("request_id", a), ("request_id", b), ("decision", "REJECTED"), ("acting_as", "reviewer")],
        )
        assert res.status_code == 422
        assert 'data-field="rationale"' in res.text and "Say why you reject" in res.text
        # the selection survives the refusal
        assert f'value="{a}" form="batch-form" aria-label' in res.text and "checked" in res.text
        assert orch.get_approval_response(a) is None and orch.get_approval_response(b) is None

        res = await post_batch(
            client,
            [
                ("request_id", a),
                ("request_id", b),
                ("decision", "REJECTED"),
                ("rationale", "wrong table"),
                ("acting_as", "reviewer"),
            ],
        )
    assert res.status_code == 200 and "Rejected 2 of 2." in res.text
    for rid in (a, b):
        response = orch.get_approval_response(rid)
        assert response is not None and response.decision.value == "REJECTED"


@pytest.mark.parametrize(
    ("pairs", "field"),
    [
        ([("decision", "APPROVED"), ("acting_as", "r")], "request_id"),
        ([("request_id", "{a}"), ("decision", "MODIFIED"), ("acting_as", "r")], "decision"),
        ([("request_id", "{a}"), ("acting_as", "r")], "decision"),
        ([("request_id", "{a}"), ("decision", "APPROVED")], "acting_as"),
        ([("request_id", "x" * 65), ("decision", "APPROVED"), ("acting_as", "r")], "request_id"),
    ],
)
async def test_a_bad_batch_form_is_422_naming_the_field_and_decides_nothing(
    orch: WorkflowOrchestrator, pairs: list[tuple[str, str]], field: str
) -> None:
    _, a = ui.data_workflow(orch)
    async with client_for(orch, "open") as client:
        res = await post_batch(client, [(k, v.replace("{a}", a)) for k, v in pairs])
    assert res.status_code == 422 and f'data-field="{field}"' in res.text
    assert orch.get_approval_response(a) is None


async def test_a_batch_without_the_csrf_token_is_refused(orch: WorkflowOrchestrator) -> None:
    _, a = ui.data_workflow(orch)
    async with client_for(orch, "open") as client:
        await client.get("/approvals")
        res = await post_batch(
            client, [("request_id", a), ("decision", "APPROVED"), ("acting_as", "r")], token="x"
        )
        forged = await client.post(
            "/ui/approvals/batch",
            data={"request_id": a, "decision": "APPROVED", "acting_as": "r"},
            headers={"Origin": "https://evil.example"},
        )
    assert res.status_code == 403 and forged.status_code == 403
    assert orch.get_approval_response(a) is None


async def test_keys_mode_signs_each_decision_and_reports_a_policy_refusal(orch: WorkflowOrchestrator) -> None:
    service = IdentityService(orch.db)
    _, key = service.create_identity_with_key("reviewer", "Rita Reviewer", ["supervisor"])
    _, mine = ui.data_workflow(orch, "Assigned to reviewer")
    other_wf = ui.new_workflow(orch, "Someone else's", ["Check"], supervisor_id="someone_else")
    theirs = ui.pause(orch, other_wf, "cp1", "Not for reviewer")
    async with client_for(orch, "keys") as client:
        await sign_in(client, key.api_key)
        page = (await client.get("/approvals")).text
        assert 'name="acting_as"' not in page.split('id="batch-form"', 1)[1].split("</form>", 1)[0]
        res = await post_batch(
            client, [("request_id", mine), ("request_id", theirs), ("decision", "APPROVED")]
        )
    assert res.status_code == 200, res.text
    outcomes = results_of(res.text)
    assert outcomes[mine] == "decided" and outcomes[theirs] in ("refused", "not_found")
    response = orch.get_approval_response(mine)
    assert response is not None and response.approved_by == "reviewer"
    assert orch.get_approval_response(theirs) is None


def test_the_report_counts_each_outcome() -> None:
    from saferun.core.state_machine.models import ApprovalDecision

    report = batch.report(
        ApprovalDecision.REJECTED,
        [
            {"request_id": "r1", "outcome": "decided", "workflow_status": "rolling_back"},
            {"request_id": "r2", "outcome": "refused", "error": {"message": "refused by rule four_eyes"}},
        ],
    )
    assert report["summary"] == "Rejected 1 of 2; 1 refused." and report["tone"] == "warn"
    assert report["rows"][0]["detail"] == "workflow now rolling back"
    assert report["rows"][1]["detail"] == "refused by rule four_eyes"
