"""Bounded input at every entry point (HTTP, library, CLI): nesting depth, non-JSON numbers, NUL characters
and amounts out of range each get a clear typed error naming the field or the limit, and nothing is written.

The 100,000-deep body once crashed the server (SIGSEGV) before authentication; here it must be a 422.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from saferun.api.server import create_app
from saferun.cli.main import app as cli_app
from saferun.core.state_machine.models import ExecutionState
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.canonical import MAX_DEPTH, canonical_bytes, check_json, json_depth
from saferun.domain.money import MAX_MICRO, to_micro
from saferun.errors import InvalidAmount, StateNotSerializable
from saferun.storage.database import Database
from tests.helpers import started
from tests.test_api import SEED_CREATE, client_for, paused
from tests.test_bad_input import row_counts


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def deep_text(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


@pytest.fixture
def orch(db: Database) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=db)


@pytest.fixture
async def api(orch: WorkflowOrchestrator):  # type: ignore[no-untyped-def]
    async with client_for(create_app(orch, auth="open", sweep=False)) as c:
        yield c


# ---- library ------------------------------------------------------------------------------------------


def test_json_depth_counts_without_recursion() -> None:
    assert json_depth(b'{"a": [1, "[[[\\"[", {"b": {}}]}') == 4
    assert json_depth(b"1") == 0
    assert json_depth(deep_text(100_000)) == 100_000


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 3_000, 30_000])
def test_the_library_refuses_values_deeper_than_the_limit(depth: int) -> None:
    with pytest.raises(StateNotSerializable, match=f"deeper than {MAX_DEPTH}"):
        canonical_bytes({"m": nested(depth)}, "agent_memory")
    check_json(nested(MAX_DEPTH - 1), "agent_memory")  # at the limit: fine


@pytest.mark.parametrize(
    "value, path", [({"a": "x\x00y"}, "m.a"), ({"k\x00": 1}, "m.'k\\x00'"), ([1.0, float("nan")], "m[1]")]
)
def test_nul_and_nan_are_refused_with_their_path(value: Any, path: str) -> None:
    with pytest.raises(StateNotSerializable) as info:
        check_json(value, "m")
    assert info.value.field == path


@pytest.mark.parametrize(
    "amount", [1e20, 1e22, 1e30, "1e30", 1e400, 9.3e13, -3.4e38, "1E+999999999", "9" * 80]
)
def test_amounts_out_of_range_are_a_typed_error(amount: Any) -> None:
    with pytest.raises(InvalidAmount) as info:
        to_micro(amount, "escrow_amount")
    assert info.value.field == "escrow_amount"


def test_the_largest_amount_fits_int64() -> None:
    assert to_micro("9223372036854.775807") == MAX_MICRO
    with pytest.raises(InvalidAmount, match="out of range"):
        to_micro("9223372036854.775808")


async def test_a_deep_checkpoint_is_refused_by_the_library_and_writes_nothing(
    orch: WorkflowOrchestrator, db: Database
) -> None:
    wf = started(orch)
    before = row_counts(db)
    with pytest.raises(StateNotSerializable) as info:
        state = ExecutionState(checkpoint_id="cp1", agent_memory={"m": nested(300)})
        await orch.create_checkpoint(wf, state)
    assert info.value.field.startswith("agent_memory.m")
    assert row_counts(db) == before


# ---- HTTP ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 10_000, 100_000])
@pytest.mark.parametrize("path", ["/api/workflows", "/api/approvals/submit"])
async def test_deep_bodies_are_422_naming_the_limit_before_parsing(api, path: str, depth: int) -> None:  # type: ignore[no-untyped-def]
    body = b'{"name": ' + deep_text(depth) + b"}"
    res = await api.post(path, content=body, headers={"content-type": "application/json"})
    assert res.status_code == 422, res.text
    detail = res.json()["detail"]
    assert detail["field"] == "body" and detail["limit"] > 0 and str(detail["limit"]) in detail["message"]


@pytest.mark.parametrize("depth", [300, 3_000, 30_000])
async def test_a_deep_agent_memory_is_refused_not_stored_unreadable(api, db: Database, depth: int) -> None:  # type: ignore[no-untyped-def]
    wf, _ = await paused(api)
    before = row_counts(db)
    # the body is written as text: the client's own json encoder recurses, and the test must not lean on a
    # recursion limit some optional import (py_ecc) happened to raise
    memory = b'{"m": ' + deep_text(depth) + b"}"
    body = b'{"state": {"checkpoint_id": "step2", "agent_memory": ' + memory + b'}, "summary": "deep"}'
    res = await api.post(
        f"/api/workflows/{wf}/checkpoints", content=body, headers={"content-type": "application/json"}
    )
    assert res.status_code == 422, res.text
    assert row_counts(db) == before


async def test_what_is_stored_at_the_limit_reads_back(api) -> None:  # type: ignore[no-untyped-def]
    wf = (await api.post("/api/workflows", json=SEED_CREATE)).json()["workflow_id"]
    assert (await api.post(f"/api/workflows/{wf}/start")).status_code == 200
    memory = {"m": nested(MAX_DEPTH - 2)}
    res = await api.post(
        f"/api/workflows/{wf}/checkpoints",
        json={"state": {"checkpoint_id": "step1", "agent_memory": memory}, "summary": "at the limit"},
    )
    assert res.status_code == 201, res.text
    request_id, snapshot_id = res.json()["approval_request_id"], res.json()["snapshot_id"]
    urls = [
        f"/api/workflows/{wf}/state",
        f"/api/approvals/{request_id}",
        f"/api/workflows/{wf}/snapshots",
        f"/api/snapshots/{snapshot_id}",
        f"/approvals/{request_id}",
        f"/workflows/{wf}",
    ]
    for url in urls:
        got = await api.get(url)
        assert got.status_code == 200, (url, got.text[:300])
    snap = (await api.get(f"/api/snapshots/{snapshot_id}")).json()
    assert json.dumps(memory) in json.dumps(snap)


@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"metadata": {"x": NaN}}', "metadata.x"),
        (b'{"metadata": {"x": [1, -Infinity]}}', "metadata.x[1]"),
        (b'{"name": "a\\u0000b"}', "name"),
        (b'{"workflow_id": "wf\\u0000"}', "workflow_id"),
        (b'{"checkpoint_names": ["ok", "bad\\u0000"]}', "checkpoint_names[1]"),
    ],
)
async def test_nan_infinity_and_nul_are_422_naming_the_field(  # type: ignore[no-untyped-def]
    api, db: Database, body: bytes, field: str
) -> None:
    merged = json.dumps(SEED_CREATE).encode()[:-1] + b", " + body[1:]
    before = row_counts(db)
    res = await api.post("/api/workflows", content=merged, headers={"content-type": "application/json"})
    assert res.status_code == 422, res.text
    assert res.json()["detail"]["field"] == field
    assert row_counts(db) == before


async def test_nul_in_strings_inside_a_checkpoint_decision_and_cancel(api, db: Database) -> None:  # type: ignore[no-untyped-def]
    wf, req = await paused(api)
    before = row_counts(db)
    cp = f"/api/workflows/{wf}/checkpoints"
    decision = {"request_id": req, "decision": "REJECTED", "approved_by": "h"}
    cases = [
        (f"{cp}", {"state": {"checkpoint_id": "c\x00"}, "summary": "s"}, "state.checkpoint_id"),
        (f"{cp}", {"state": {"checkpoint_id": "c2"}, "summary": "s\x00"}, "summary"),
        ("/api/approvals/submit", {**decision, "rationale": "no\x00"}, "rationale"),
        (f"/api/workflows/{wf}/cancel", {"reason": "r\x00"}, "reason"),
        (f"/api/workflows/{wf}/steps", {"name": "s\x00", "args": {}}, "name"),
    ]
    for url, body, field in cases:
        res = await api.post(url, json=body)
        assert res.status_code == 422, (url, res.text)
        assert res.json()["detail"]["field"] == field
    assert row_counts(db) == before


async def test_nul_in_the_path_or_query_is_422(api) -> None:  # type: ignore[no-untyped-def]
    assert (await api.get("/api/workflows/wf%00x")).status_code in (404, 422)
    res = await api.get("/api/workflows", params={"state": "a\x00"})
    assert res.status_code == 422 and res.json()["detail"]["field"] == "state"


@pytest.mark.parametrize("amount", [1e20, 1e30, "1e30", 9.3e13, -3.4e38, "1E+999999999"])
async def test_amounts_out_of_range_are_422_and_write_nothing(api, db: Database, amount: Any) -> None:  # type: ignore[no-untyped-def]
    before = row_counts(db)
    res = await api.post("/api/workflows", json={**SEED_CREATE, "escrow_amount": amount})
    assert res.status_code == 422, res.text
    assert res.json()["detail"]["field"] == "escrow_amount"
    raw = await api.post(
        "/api/workflows",
        content=json.dumps(SEED_CREATE).replace("100.0", "1e400").encode(),
        headers={"content-type": "application/json"},
    )
    assert raw.status_code == 422 and raw.json()["detail"]["field"] == "escrow_amount"
    supervisor = {"supervisor_id": "s1", "specialties": ["x"], "price_per_approval": amount}
    sup = await api.post("/x402/supervisors", json=supervisor)
    assert sup.status_code == 422, sup.text
    assert "price_per_approval" in sup.json()["detail"]["field"]
    assert row_counts(db) == before


# ---- CLI ----------------------------------------------------------------------------------------------


def test_the_cli_refuses_deep_json_and_huge_amounts_cleanly(database_env: Database) -> None:
    runner = CliRunner()
    mods = '{"a": ' + deep_text(100_000).decode() + "}"
    deep = runner.invoke(cli_app, ["approvals", "modify", "req_x", "--by", "h", "--json-mods", mods])
    said = " ".join(deep.stderr.replace("│", " ").split())  # Rich wraps the message in a box
    assert deep.exit_code == 2 and f"the limit is {MAX_DEPTH}" in said, deep.stderr[-300:]
    for amount in ("1e30", "9.3e13", "1E+999999999"):
        out = runner.invoke(cli_app, ["platform", "mint", "0x" + "ab" * 20, amount])
        assert out.exit_code == 1 and "out of range" in out.stderr, (amount, out.stderr)
