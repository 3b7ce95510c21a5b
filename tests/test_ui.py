"""The reviewer dashboard over HTTP (ASGI): pages, CSRF, decisions through forms, sign-in, the policy."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from saferun.api.server import create_app
from saferun.core.identity import IdentityService
from saferun.core.state_machine.models import ExecutionState
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from saferun.ui import review
from saferun.ui.viewer import safe_next
from tests import ui_support as ui

OPEN_BANNER = "Open mode: no authentication, loopback only"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def login_token_of(html: str) -> str:
    found = re.search(r'name="login_token" value="([^"]+)"', html)
    assert found
    return found.group(1)


def client_for(orch: WorkflowOrchestrator, auth: str, base_url: str = "http://test") -> httpx.AsyncClient:
    app = create_app(orch, auth=auth, sweep=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


@pytest.fixture
def orch(db: Database) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=db)


@pytest.fixture
async def client(orch: WorkflowOrchestrator) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(orch, "open") as c:
        yield c


async def decide(
    client: httpx.AsyncClient, request_id: str, fields: dict[str, str], *, token: str | None = None
) -> httpx.Response:
    if token is None:
        token = csrf_of((await client.get(f"/approvals/{request_id}")).text)
    return await client.post(f"/ui/approvals/{request_id}/decision", data={"csrf_token": token, **fields})


# ---------------------------------------------------------------------- pages


async def test_the_queue_lists_pending_requests_with_what_a_reviewer_triages_by(
    client: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    _, pizza = ui.pizza_workflow(orch)
    _, data = ui.data_workflow(orch)
    res = await client.get("/approvals")
    assert res.status_code == 200
    html = res.text
    assert OPEN_BANNER in html
    assert f'href="/approvals/{pizza}"' in html and f'href="/approvals/{data}"' in html
    assert "Order 100 pizzas from Tony&#39;s Pizzeria for $1,200" in html
    assert (
        "Agent recommends: modify" in html and "Agent&#39;s confidence 62%" in html and "Risk: high" in html
    )
    assert "2 alerts" in html
    assert res.headers["content-security-policy"].startswith("default-src 'self'")
    assert res.headers["cache-control"] == "no-store"
    assert (await client.get("/")).headers["location"] == "/approvals"


async def test_the_review_page_shows_layers_1_and_2_and_what_changed(
    client: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    wf, request_id = ui.pizza_workflow(orch)
    html = (await client.get(f"/approvals/{request_id}")).text
    # Layer 1: summary, decision needed, recommendation and confidence, alerts and risk, artifacts
    assert "Place this order as is, change the quantity, or stop?" in html
    # whose is each number: the agent proposed "modify" at 62 %; SafeRun's own rule, from the alerts, the
    # risk and the agent's lowest score (quantity 41 %), advises rejecting
    assert 'id="agent-proposal">modify<' in html and "its confidence: <strong>62%</strong>" in html
    assert 'id="agent-lowest">lowest score: quantity 41%<' in html
    assert 'id="recommendation">reject<' in html and 'id="confidence">' in html
    assert 'id="risk-level">high<' in html and "the agent's assessment" in html
    assert "Order total $1,200 is 8x the $150 budget" in html and "100 pizzas for a team of 10" in html
    assert "x402://artifacts/sha256:" in html
    # recent actions and API calls, decision trace, outputs, resources
    assert "/v1/cart/quote" in html and "/v1/cart/items" in html
    assert "Read &#39;order pizzas for the team&#39; as 10 per person" in html
    assert "cart_8841" in html and "subtotal_usd" in html
    assert "llm_tokens" in html and "18,452" in html and "metric-cost" in html
    assert "Pay with the team card" in html and "vendor_choice" in html
    steps = html[html.index('id="saga-steps"') :]
    assert "create_cart" in steps and "delete_cart" in steps and "Rejecting undoes these" in steps
    # what changed since the approved vendor-selection checkpoint: three new calls, a new output
    changes = html[html.index('id="changes"') : html.index('id="actions"')]
    assert "compared with cp1" in changes
    assert re.search(
        r'<span class="mono">api_calls</span>\s*<span class="diff-counts"><span class="plus">\+3<', changes
    )
    assert "cart_id" in changes and "vendors_considered" in changes
    # one typed input per proposed parameter
    assert re.search(r'type="number" step="1"[^>]*name="param.pizza_count" value="100"', html)
    assert re.search(r'<select [^>]*name="param.include_drinks"', html)
    assert re.search(r'type="text" name="param.vendor" value="Tony&#39;s Pizzeria"', html)
    assert re.search(r'name="param.toppings"[^>]*>\[\n  &#34;margherita&#34;', html)
    assert 'data-kind="json" data-json-type="array"' in html
    assert f'href="/workflows/{wf}"' in html


async def test_the_first_checkpoint_has_nothing_approved_before_it(
    client: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    _, request_id = ui.data_workflow(orch)
    html = (await client.get(f"/approvals/{request_id}")).text
    assert "first checkpoint: nothing approved before" in html
    assert "records_fetched" in html


async def test_workflow_list_timeline_and_stats(
    client: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    wf, request_id = ui.pizza_workflow(orch)
    ui.data_workflow(orch)
    listing = (await client.get("/workflows")).text
    assert "Team lunch order" in listing and "Customer data analysis" in listing
    assert f'href="/approvals/{request_id}"' in listing and "120.00" in listing
    filtered = (await client.get("/workflows?status=completed")).text
    assert "No workflows in state completed" in filtered
    assert (await client.get("/workflows?status=nonsense")).status_code == 422

    detail = (await client.get(f"/workflows/{wf}")).text
    timeline = detail[detail.index('id="timeline"') :]
    order = [
        "Created (initialized)",
        "Escrow locked: 120.00",
        "initialized → executing",
        "Approval requested: Vendor selection",
        "Approved: Vendor selection",
        "Milestone paid: 40.00",
        "Approval requested: Place order",
    ]
    positions = [timeline.index(text) for text in order]
    assert positions == sorted(positions)
    assert "wallet:agent +36.00" in timeline and "wallet:reviewer +4.00" in timeline
    assert "released 40.00" in detail and "held 80.00" in detail
    assert 'id="pending-callout"' in detail

    stats = (await client.get("/stats")).text
    assert (
        'id="stat-total">2<' in stats
        and 'id="stat-pending">2<' in stats
        and 'id="stat-decisions">1<' in stats
    )
    assert (await client.get("/workflows/wf_missing")).status_code == 404


async def test_fragments_and_static_files(client: httpx.AsyncClient, orch: WorkflowOrchestrator) -> None:
    _, request_id = ui.data_workflow(orch)
    fragment = await client.get("/ui/fragments/pending")
    assert fragment.status_code == 200 and f'data-request-id="{request_id}"' in fragment.text
    assert "<html" not in fragment.text
    assert (await client.get("/ui/fragments/nav")).text == "1"
    css = await client.get("/ui/static/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    js = await client.get("/ui/static/app.js")
    assert js.status_code == 200 and "EventSource" in js.text
    assert (await client.get("/ui/static/..%2Froutes.py")).status_code == 404
    assert (await client.get("/ui/static/routes.py")).status_code == 404


# ---------------------------------------------------------------------- CSRF


async def test_a_form_post_without_or_with_a_wrong_csrf_token_is_refused(
    client: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    _, request_id = ui.data_workflow(orch)
    token = csrf_of((await client.get(f"/approvals/{request_id}")).text)
    url = f"/ui/approvals/{request_id}/decision"
    fields = {"decision": "APPROVED", "acting_as": "reviewer"}

    missing = await client.post(url, data=fields)
    assert missing.status_code == 403 and "security token is missing" in missing.text
    wrong = await client.post(url, data={**fields, "csrf_token": token[:-2] + "xx"})
    assert wrong.status_code == 403 and "does not match" in wrong.text
    other_site = await client.post(
        url, data={**fields, "csrf_token": token}, headers={"origin": "http://evil.example"}
    )
    assert other_site.status_code == 403 and "posted from another site" in other_site.text
    # a fresh browser (no CSRF cookie yet) cannot reuse a token seen elsewhere
    async with client_for(orch, "open") as stranger:
        assert (await stranger.post(url, data={**fields, "csrf_token": token})).status_code == 403
    assert orch.get_approval_request(request_id).status == "pending"

    ok = await client.post(url, data={**fields, "csrf_token": token})
    assert ok.status_code == 303


# ---------------------------------------------------------------------- decisions


async def test_approve_through_the_form(client: httpx.AsyncClient, orch: WorkflowOrchestrator) -> None:
    wf, request_id = ui.data_workflow(orch)
    res = await decide(
        client, request_id, {"decision": "APPROVED", "acting_as": "reviewer", "rationale": "fine"}
    )
    assert res.status_code == 303 and res.headers["location"] == f"/approvals?done={request_id}"
    assert "saferun_acting_as=reviewer" in res.headers["set-cookie"]
    decision = orch.get_approval_response(request_id)
    assert decision is not None and decision.decision.value == "APPROVED"
    assert decision.approved_by == "reviewer" and decision.rationale == "fine"
    assert orch.get_workflow(wf).status == "executing"
    queue = (await client.get(res.headers["location"])).text
    assert 'id="flash"' in queue and "<strong>Approved</strong>" in queue and "as reviewer" in queue
    # the typed name is remembered for the next review
    _, second = ui.data_workflow(orch, "Second analysis")
    second_page = (await client.get(f"/approvals/{second}")).text
    assert 'name="acting_as" value="reviewer"' in second_page
    # the decided request shows its outcome instead of the forms; a second decision is a 409
    decided = (await client.get(f"/approvals/{request_id}")).text
    assert "outcome-approved" in decided and 'id="form-approve"' not in decided
    again = await decide(
        client,
        request_id,
        {"decision": "REJECTED", "acting_as": "reviewer", "rationale": "x"},
        token=csrf_of(second_page),
    )
    assert again.status_code == 409 and "already decided" in again.text


async def test_modify_through_the_form_changes_what_the_agent_resumes_with(
    client: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    wf, request_id = ui.pizza_workflow(orch)
    fields = {f"param.{k}": review.as_input(v) for k, v in ui.PIZZA_PARAMETERS.items()}
    fields.update({"param.pizza_count": "10", "decision": "MODIFIED", "acting_as": "reviewer"})
    res = await decide(client, request_id, fields)
    assert res.status_code == 303
    decision = orch.get_approval_response(request_id)
    assert decision is not None and decision.modifications == {"pizza_count": 10}
    state = orch.latest_approved_state(wf)
    assert state is not None and state.parameters == {**ui.PIZZA_PARAMETERS, "pizza_count": 10}
    assert "<strong>Modified</strong>" in (await client.get(res.headers["location"])).text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"param.pizza_count": "ten"}, "expected a whole number, got &#34;ten&#34;"),
        ({"param.pizza_count": "10.5"}, "expected a whole number"),
        ({"param.include_drinks": "maybe"}, "expected true or false"),
        ({"param.toppings": '{"a": 1}'}, "expected a JSON array like the proposed value, got object"),
        ({"param.toppings": "[oops"}, "not valid JSON"),
        ({"param.bogus": "1"}, "not a parameter of this checkpoint"),
        ({"param.pizza_count": "100"}, "Change at least one parameter"),
    ],
)
async def test_modify_with_a_wrong_value_is_refused_with_a_message_and_nothing_decided(
    client: httpx.AsyncClient, orch: WorkflowOrchestrator, fields: dict[str, str], message: str
) -> None:
    wf, request_id = ui.pizza_workflow(orch)
    res = await decide(client, request_id, {"decision": "MODIFIED", "acting_as": "reviewer", **fields})
    assert res.status_code == 422
    assert message in res.text
    # the editor is shown again with what the reviewer typed, on the Modify tab
    assert 'data-tab="MODIFIED" aria-selected="true"' in res.text
    if "param.pizza_count" in fields:
        assert f'name="param.pizza_count" value="{fields["param.pizza_count"]}"' in res.text
    assert orch.get_approval_request(request_id).status == "pending"
    assert orch.get_approval_response(request_id) is None
    assert orch.get_workflow(wf).status == "awaiting_approval"


async def test_modify_when_the_agent_proposed_no_parameters_takes_a_json_object(
    client: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    wf = ui.new_workflow(orch, "No parameters", ["Only"])
    request_id = ui.pause(orch, wf, "cp1", "Nothing to tune")
    html = (await client.get(f"/approvals/{request_id}")).text
    assert 'name="patch"' in html
    bad = await decide(client, request_id, {"decision": "MODIFIED", "acting_as": "reviewer", "patch": "[1]"})
    assert bad.status_code == 422 and "expected a non-empty JSON object" in bad.text
    ok = await decide(
        client, request_id, {"decision": "MODIFIED", "acting_as": "reviewer", "patch": '{"limit": 5}'}
    )
    assert ok.status_code == 303
    state = orch.latest_approved_state(wf)
    assert state is not None and state.parameters == {"limit": 5}


async def test_reject_needs_a_rationale_and_rolls_back(
    client: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    wf, request_id = ui.pizza_workflow(orch)
    empty = await decide(
        client, request_id, {"decision": "REJECTED", "acting_as": "reviewer", "rationale": "  "}
    )
    assert empty.status_code == 422 and "Say why you reject" in empty.text
    assert orch.get_approval_request(request_id).status == "pending"
    res = await decide(
        client,
        request_id,
        {"decision": "REJECTED", "acting_as": "reviewer", "rationale": "10 pizzas, not 100"},
    )
    assert res.status_code == 303
    decision = orch.get_approval_response(request_id)
    assert decision is not None and decision.decision.value == "REJECTED"
    assert decision.rationale == "10 pizzas, not 100"
    assert orch.get_workflow(wf).status == "rolling_back"
    assert "<strong>Rejected</strong>" in (await client.get(res.headers["location"])).text


async def test_open_mode_needs_an_acting_as_name(
    client: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    _, request_id = ui.data_workflow(orch)
    res = await decide(client, request_id, {"decision": "APPROVED", "acting_as": ""})
    assert res.status_code == 422 and "Type the name you decide as" in res.text
    bad = await decide(client, request_id, {"decision": "MAYBE", "acting_as": "reviewer"})
    assert bad.status_code == 422 and "Choose Approve, Modify or Reject" in bad.text
    assert orch.get_approval_request(request_id).status == "pending"


@pytest.mark.parametrize(
    ("acting_as", "rule", "message"),
    [
        ("agent", "four_eyes", "&#39;agent&#39; is the executor of this workflow"),
        ("poster", "four_eyes", "&#39;poster&#39; is the poster of this workflow"),
        ("mallory", "assigned_supervisor", "assigned supervisor is &#39;reviewer&#39;"),
    ],
)
async def test_the_decision_policy_refusal_is_shown_and_nothing_is_decided(
    client: httpx.AsyncClient, orch: WorkflowOrchestrator, acting_as: str, rule: str, message: str
) -> None:
    _, request_id = ui.data_workflow(orch)
    res = await decide(client, request_id, {"decision": "APPROVED", "acting_as": acting_as})
    assert res.status_code == 403
    box = res.text[res.text.index('id="refusal"') :]
    assert f"Not allowed ({rule})" in box and message in box
    assert orch.get_approval_request(request_id).status == "pending"
    # the page warns before the next attempt, too (the name is not remembered after a refusal)
    assert "saferun_acting_as" not in res.headers.get("set-cookie", "")


# ---------------------------------------------------------------------- keys mode: sign-in


async def sign_in(client: httpx.AsyncClient, key: str, next_url: str = "/approvals") -> httpx.Response:
    page = await client.get(f"/login?next={next_url}")
    return await client.post(
        "/login", data={"login_token": login_token_of(page.text), "api_key": key, "next": next_url}
    )


async def test_keys_mode_sign_in_decide_and_sign_out(orch: WorkflowOrchestrator) -> None:
    service = IdentityService(orch.db)
    _, key = service.create_identity_with_key("reviewer", "Rita Reviewer", ["supervisor"])
    wf, request_id = ui.data_workflow(orch)
    async with client_for(orch, "keys") as client:
        res = await client.get(f"/approvals/{request_id}")
        assert res.status_code == 303 and res.headers["location"] == f"/login?next=/approvals/{request_id}"
        assert (await client.get("/ui/fragments/pending")).status_code == 401
        login_page = await client.get("/login")
        assert OPEN_BANNER not in login_page.text and 'type="password" name="api_key"' in login_page.text

        wrong = await sign_in(client, "sr_key_not_a_key")
        assert wrong.status_code == 401 and "unknown, revoked or malformed" in wrong.text
        forged = await client.post("/login", data={"api_key": key.api_key, "next": "/approvals"})
        assert forged.status_code == 403 and "saferun_session" not in forged.headers.get("set-cookie", "")

        res = await sign_in(client, key.api_key, f"/approvals/{request_id}")
        assert res.status_code == 303 and res.headers["location"] == f"/approvals/{request_id}"
        cookie = next(c for c in res.headers.get_list("set-cookie") if c.startswith("saferun_session="))
        attributes = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in attributes and "samesite=lax" in attributes and "secure" not in attributes

        page = (await client.get(f"/approvals/{request_id}")).text
        assert "Rita Reviewer" in page and OPEN_BANNER not in page and 'name="acting_as"' not in page
        assert "Signed as <strong>reviewer</strong>" in page
        # the session's token is required; an acting-as name cannot override the signed-in identity
        assert (await decide(client, request_id, {"decision": "APPROVED"}, token="nope")).status_code == 403
        res = await decide(client, request_id, {"decision": "APPROVED", "acting_as": "someone-else"})
        assert res.status_code == 303
        decision = orch.get_approval_response(request_id)
        assert decision is not None and decision.approved_by == "reviewer"
        assert orch.get_workflow(wf).status == "executing"

        queue = (await client.get("/approvals")).text
        assert (await client.post("/logout", data={"csrf_token": "wrong"})).status_code == 403
        out = await client.post("/logout", data={"csrf_token": csrf_of(queue)})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert (await client.get("/approvals")).status_code == 303


async def test_keys_mode_refuses_a_signed_in_poster_by_four_eyes(orch: WorkflowOrchestrator) -> None:
    service = IdentityService(orch.db)
    _, key = service.create_identity_with_key("poster", "Pat Poster", ["poster", "supervisor"])
    _, request_id = ui.data_workflow(orch)
    async with client_for(orch, "keys") as client:
        assert (await sign_in(client, key.api_key)).status_code == 303
        page = (await client.get(f"/approvals/{request_id}")).text
        assert 'id="predicted-refusal"' in page and "four_eyes" not in page.split('id="predicted-refusal"')[0]
        res = await decide(client, request_id, {"decision": "APPROVED"})
        assert res.status_code == 403 and "Not allowed (four_eyes)" in res.text
    assert orch.get_approval_request(request_id).status == "pending"


async def test_keys_mode_needs_the_supervisor_role(orch: WorkflowOrchestrator) -> None:
    _, request_id = ui.data_workflow(orch)  # before "reviewer" is registered: creation would refuse it
    service = IdentityService(orch.db)
    _, key = service.create_identity_with_key("reviewer", "Not a supervisor", ["verifier"])
    async with client_for(orch, "keys") as client:
        await sign_in(client, key.api_key)
        res = await decide(client, request_id, {"decision": "APPROVED"})
        assert res.status_code == 403 and "Not allowed (supervisor_role)" in res.text


async def test_the_session_cookie_is_secure_over_https(orch: WorkflowOrchestrator) -> None:
    service = IdentityService(orch.db)
    _, key = service.create_identity_with_key("reviewer", "Rita", ["supervisor"])
    async with client_for(orch, "keys", base_url="https://test") as client:
        res = await sign_in(client, key.api_key)
        cookies = res.headers.get_list("set-cookie")
        cookie = next(c for c in cookies if c.startswith("__Host-saferun_session="))  # TLS: __Host- name
        assert "secure" in [part.strip().lower() for part in cookie.split(";")]


async def test_an_api_key_header_opens_pages_in_keys_mode(orch: WorkflowOrchestrator) -> None:
    service = IdentityService(orch.db)
    _, key = service.create_identity_with_key("reviewer", "Rita", ["supervisor"])
    async with client_for(orch, "keys") as client:
        ok = await client.get("/stats", headers={"Authorization": f"Bearer {key.api_key}"})
        assert ok.status_code == 200 and 'class="who-name">reviewer<' in ok.text
        bad = await client.get("/stats", headers={"Authorization": "Bearer sr_key_nope"})
        assert bad.status_code == 401


def test_after_sign_in_only_local_paths_are_followed() -> None:
    assert safe_next("/workflows/wf_1?x=1") == "/workflows/wf_1?x=1"
    for target in (
        "https://evil.example/",
        "//evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
        "",
        None,
    ):
        assert safe_next(target) == "/approvals"


# ---------------------------------------------------------------------- pure helpers


def test_parse_modifications_keeps_only_real_changes() -> None:
    params = {"count": 100, "ratio": 0.5, "name": "a", "flag": True, "tags": ["x"], "extra": None}
    form = {
        "param.count": "10",
        "param.ratio": "0.5",
        "param.name": "a",
        "param.flag": "false",
        "param.tags": '["x", "y"]',
        "param.extra": '{"k": 1}',
    }
    parsed = review.parse_modifications(params, form)
    assert parsed.errors == {}
    assert parsed.modifications == {"count": 10, "flag": False, "tags": ["x", "y"], "extra": {"k": 1}}
    assert (
        review.parse_modifications(params, {"param.ratio": "inf"})
        .errors["ratio"]
        .startswith("expected a number")
    )
    assert review.parse_modifications({"n": 1}, {"param.n": " 2 "}).modifications == {"n": 2}


def test_state_diff_names_added_removed_and_changed_keys() -> None:
    before = ExecutionState(
        checkpoint_id="a", intermediate_outputs={"a": 1, "b": 2}, api_calls=[{"e": "/x"}], parameters={"n": 1}
    )
    after = ExecutionState(
        checkpoint_id="b",
        intermediate_outputs={"a": 1, "b": 3, "c": 4},
        api_calls=[{"e": "/x"}, {"e": "/y"}],
        parameters={},
    )
    diff = {d.field: d for d in review.state_diff(before, after)}
    assert set(diff) == {"intermediate_outputs", "api_calls", "parameters"}
    outputs = diff["intermediate_outputs"]
    assert [c.key for c in outputs.added] == ["c"] and [
        (c.key, c.before, c.after) for c in outputs.changed
    ] == [("b", 2, 3)]
    assert [c.key for c in diff["api_calls"].added] == ["[1]"]
    assert [c.key for c in diff["parameters"].removed] == ["n"]
    assert review.state_diff(after, after) == []


async def test_the_supervisor_agents_reason_sits_beside_its_recommendation(
    client: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    from saferun.agents.supervisor.agent import SupervisorAgent
    from saferun.core.state_machine.models import ExecutionState
    from tests.helpers import make_config, started

    wf = started(orch, make_config())
    state = ExecutionState(checkpoint_id="cp1", confidence_scores={"plan": 0.55})
    snap = await orch.create_checkpoint(wf, state)
    request = SupervisorAgent("reviewer", orch).create_approval_request(wf, "cp1", snap.snapshot_id, state)
    assert request.recommendation and request.risk.get("recommendation_reason")
    page = (await client.get(f"/approvals/{request.request_id}")).text
    why = page.split('id="recommendation-why">', 1)[1].split("</p>", 1)[0]
    assert html.unescape(why) == request.risk["recommendation_reason"]
    assert "recommendation_reason" not in page  # not repeated among the risk details
