"""Declared and inferred parameter schemas: one check for the engine, REST, CLI and dashboard (issue 14).

A checkpoint may declare a JSON Schema for what the reviewer can change; without one it is inferred from
the proposed values. The schema travels in the approval request, a modification outside it is a 422
naming the parameter (and nothing is decided), and an invalid schema is refused when the checkpoint is
created. Also: a REST rejection needs a rationale; a library call without one records it as such.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from saferun.api.server import create_app
from saferun.core.decisions import NO_RATIONALE
from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalResponse,
    CheckpointConfig,
    ExecutionState,
    WorkflowConfig,
)
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain import parameter_schema as ps
from saferun.errors import InvalidInput
from saferun.storage.database import Database
from tests.test_api import SEED_CREATE, client_for

ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "pizza_count": {"type": "integer", "minimum": 1, "maximum": 50, "description": "how many pizzas"},
        "size": {"enum": ["small", "medium", "large"]},
        "note": {"type": "string", "pattern": "^[a-z ]*$"},
    },
    "required": ["pizza_count"],
    "additionalProperties": False,
}
PROPOSED = {"pizza_count": 20, "size": "large", "note": "no olives"}


# ------------------------------------------------------------------ the pure rules


def test_inferred_schema_keeps_whole_numbers_whole_and_keys_closed() -> None:
    schema = ps.infer(
        {"n": 100, "ratio": 0.5, "flag": True, "name": "x", "tags": [], "opt": None, "o": {"k": 1}}
    )
    assert schema["properties"]["n"] == {"type": "integer"}
    assert schema["properties"]["ratio"] == {"type": "number"}
    assert schema["properties"]["opt"] == {} and schema["additionalProperties"] is False
    params = {"n": 100, "ratio": 0.5}
    for mods, field, words in (
        ({"n": 10.5}, "modifications.n", "expected a whole number, got 10.5"),
        ({"n": "ten"}, "modifications.n", 'expected a whole number, got "ten"'),
        ({"typo": 1}, "modifications.typo", "not a parameter of this checkpoint"),
    ):
        with pytest.raises(InvalidInput) as raised:
            ps.validate(ps.infer(params), params, mods, {**params, **mods})
        assert raised.value.field == field and words in str(raised.value)
    ps.validate(ps.infer(params), params, {"ratio": 1}, {**params, "ratio": 1})  # an int is a number
    assert ps.infer({}) == {"type": "object"}  # nothing proposed: the patch becomes the parameters


def test_declared_schema_limits_and_messages() -> None:
    ps.check_declared(ORDER_SCHEMA)
    cases = (
        ({"pizza_count": 60}, "modifications.pizza_count", "must be at most 50, got 60"),
        ({"pizza_count": 0}, "modifications.pizza_count", "must be at least 1, got 0"),
        ({"size": "huge"}, "modifications.size", 'must be one of "small", "medium", "large", got "huge"'),
        ({"note": "NO!"}, "modifications.note", 'must match the pattern ^[a-z ]*$, got "NO!"'),
        ({"pizza_count": None}, "modifications.pizza_count", "is required"),
        (
            {"crust": "thin"},
            "modifications.crust",
            "not a parameter of this checkpoint (parameters: note, pizza_count, size)",
        ),
    )
    for mods, field, words in cases:
        merged = {k: v for k, v in {**PROPOSED, **mods}.items() if v is not None}
        with pytest.raises(InvalidInput) as raised:
            ps.validate(ORDER_SCHEMA, PROPOSED, mods, merged)
        assert (raised.value.field, str(raised.value)) == (field, f"{field}: {words}")


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"type": "objekt"}, "parameter_schema.type"),
        (
            {"type": "object", "properties": {"n": {"minimum": "one"}}},
            "parameter_schema.properties.n.minimum",
        ),
        ({"type": "array"}, "parameter_schema.type"),
        (["not", "a", "schema"], "parameter_schema"),
    ],
)
def test_invalid_schemas_are_refused_naming_the_field(schema: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        ps.check_declared(schema)
    assert raised.value.field == field


# ------------------------------------------------------------------ the engine, both databases


def _orch_paused(db: Database, **review: Any) -> tuple[WorkflowOrchestrator, str, str]:
    orch = WorkflowOrchestrator(database=db)
    config = WorkflowConfig(
        name="order",
        checkpoints=[
            CheckpointConfig(name="review order", parameter_schema=review.pop("config_schema", None))
        ],
        escrow_amount=100,
        poster_id="poster",
        executor_id="exec",
    )
    wid = orch.initialize_workflow(config).workflow_id
    orch.start_execution(wid)
    cp = config.checkpoints[0].checkpoint_id
    state = ExecutionState(checkpoint_id=cp, parameters=review.pop("parameters", PROPOSED))
    import asyncio

    _snap, request = asyncio.run(orch.pause(wid, state, "order pizzas?", **review))
    assert request is not None
    return orch, wid, request.request_id


def _modify(orch: WorkflowOrchestrator, request_id: str, mods: dict[str, Any]) -> Any:
    return orch.submit_approval(
        None,
        ApprovalResponse(
            request_id=request_id,
            decision=ApprovalDecision.MODIFIED,
            rationale="adjust",
            approved_by="sup",
            modifications=mods,
        ),
    )


def test_a_declared_schema_travels_in_the_request_and_is_enforced(db: Database) -> None:
    orch, wid, req = _orch_paused(db, parameter_schema=ORDER_SCHEMA)
    stored = orch.get_approval_request(req)
    assert stored.parameter_schema == ORDER_SCHEMA  # what a remote agent declared is what is enforced
    with pytest.raises(InvalidInput) as raised:
        _modify(orch, req, {"pizza_count": 60})
    assert raised.value.field == "modifications.pizza_count"
    assert orch.get_approval_request(req).status == "pending"  # refused: nothing decided
    assert orch.get_workflow(wid).status == "awaiting_approval"
    _modify(orch, req, {"pizza_count": 10, "size": "medium"})
    assert orch.latest_approved_state(wid).parameters == {**PROPOSED, "pizza_count": 10, "size": "medium"}


def test_the_checkpoint_configs_schema_applies_and_the_call_overrides_it(db: Database) -> None:
    orch, _wid, req = _orch_paused(db, config_schema=ORDER_SCHEMA)
    assert orch.get_approval_request(req).parameter_schema == ORDER_SCHEMA
    with pytest.raises(InvalidInput):
        _modify(orch, req, {"size": "huge"})
    looser = {"type": "object", "properties": {"pizza_count": {"type": "integer"}}}
    orch2, _w, req2 = _orch_paused(db, config_schema=ORDER_SCHEMA, parameter_schema=looser)
    assert orch2.get_approval_request(req2).parameter_schema == looser


def test_without_a_schema_the_inferred_one_refuses_ten_and_a_half_pizzas(db: Database) -> None:
    orch, _wid, req = _orch_paused(db)
    assert orch.get_approval_request(req).parameter_schema == ps.infer(PROPOSED)
    with pytest.raises(InvalidInput) as raised:
        _modify(orch, req, {"pizza_count": 10.5})
    assert "expected a whole number, got 10.5" in str(raised.value)


def test_a_proposal_that_breaks_its_own_schema_or_a_bad_schema_writes_nothing(db: Database) -> None:
    with pytest.raises(InvalidInput) as raised:
        _orch_paused(db, parameter_schema=ORDER_SCHEMA, parameters={"pizza_count": 99})
    assert raised.value.field == "parameters.pizza_count"
    with pytest.raises(InvalidInput) as raised:
        _orch_paused(db, parameter_schema={"type": "object", "properties": {"n": {"type": "integr"}}})
    assert raised.value.field.startswith("parameter_schema.properties.n")
    with pytest.raises(ValueError, match="parameter_schema"):
        CheckpointConfig(name="x", parameter_schema={"type": "nope"})
    orch = WorkflowOrchestrator(database=db)
    assert orch.pending_approvals() == []  # neither refused checkpoint opened a request


def test_a_library_rejection_without_a_rationale_is_recorded_as_such(db: Database) -> None:
    orch, _wid, req = _orch_paused(db)
    orch.submit_approval(
        None,
        ApprovalResponse(request_id=req, decision=ApprovalDecision.REJECTED, rationale="", approved_by="s"),
    )
    assert orch.get_approval_response(req).rationale == NO_RATIONALE


# ------------------------------------------------------------------ over HTTP


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)) as c:
        yield c


async def _paused_over_http(api: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    wf = (await api.post("/api/workflows", json=SEED_CREATE)).json()["workflow_id"]
    await api.post(f"/api/workflows/{wf}/start")
    return await api.post(
        f"/api/workflows/{wf}/checkpoints",
        json={"state": {"checkpoint_id": "s1", "parameters": PROPOSED}, "summary": "ok?", **body},
    )


async def test_rest_declares_the_schema_and_refuses_what_breaks_it(api: httpx.AsyncClient) -> None:
    cp = await _paused_over_http(api, {"parameter_schema": ORDER_SCHEMA})
    assert cp.status_code == 201, cp.text
    assert cp.json()["approval_request"]["parameter_schema"] == ORDER_SCHEMA
    req = cp.json()["approval_request_id"]
    bad = await api.post(
        "/api/approvals/submit",
        json={
            "request_id": req,
            "decision": "MODIFIED",
            "approved_by": "sup",
            "modifications": {"pizza_count": 60},
        },
    )
    assert bad.status_code == 422
    assert bad.json()["detail"]["field"] == "modifications.pizza_count"
    assert "must be at most 50, got 60" in bad.text
    no_reason = await api.post(
        "/api/approvals/submit", json={"request_id": req, "decision": "REJECTED", "approved_by": "sup"}
    )
    assert no_reason.status_code == 422 and no_reason.json()["detail"]["field"] == "rationale"
    pending = (await api.get(f"/api/approvals/{req}")).json()
    assert pending["status"] == "pending"  # both refusals decided nothing
    invalid = await _paused_over_http(api, {"parameter_schema": {"type": "object", "required": "n"}})
    assert invalid.status_code == 422 and invalid.json()["detail"]["field"].startswith("parameter_schema")
