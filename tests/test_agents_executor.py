"""The ExecutorAgent: providers (offline default, Anthropic through the real SDK), automatic recording of
everything an ExecutionState holds, errors at start rather than mid-task, and a supervised run.

The Anthropic tests point the official ``anthropic`` SDK at a local server that speaks the Messages API
shape (``GET /v1/models/{id}``, ``POST /v1/messages``, Anthropic's error bodies, 401 for a wrong key),
since the real service is out of reach here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from saferun import WorkflowOrchestrator, supervised
from saferun.agents.executor import (
    AnthropicProvider,
    ExecutorAgent,
    ModelPrice,
    OfflineProvider,
    ProviderError,
    make_provider,
)
from saferun.agents.executor.agent import split_confidence
from saferun.agents.executor.pricing import estimate_cost, price_for
from saferun.agents.executor.recorder import summarize
from saferun.core.state_machine.models import ExecutionState
from saferun.domain.canonical import canonical_bytes
from saferun.errors import InvalidInput
from saferun.storage.database import Database
from tests.helpers import decide, make_config
from tests.serving import serve_app

GOOD_KEY = "sk-ant-test-0123456789abcdefghijklmn"
MODELS = {"claude-sonnet-5-5": "Claude Sonnet 5.5", "claude-haiku-5-5": "Claude Haiku 5.5"}
USAGE = {"input_tokens": 1234, "output_tokens": 567}
ENV = (
    "SAFERUN_EXECUTOR_PROVIDER",
    "SAFERUN_EXECUTOR_MODEL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_AUTH_TOKEN",
)


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"type": "error", "error": {"type": kind, "message": message}},
        status_code=status,
        headers={"request-id": "req_err"},
    )


def messages_api(seen: list[dict[str, Any]]) -> FastAPI:
    """A small server with the Messages API's shape; every request is appended to ``seen``."""
    app = FastAPI()

    def refused(request: Request) -> JSONResponse | None:
        """The key travels as ``x-api-key`` or, as this SDK sends it, ``Authorization: Bearer``."""
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if GOOD_KEY not in (request.headers.get("x-api-key"), bearer):
            return _error(401, "authentication_error", "invalid x-api-key")
        return None

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request) -> JSONResponse:
        seen.append({"method": "GET", "path": request.url.path})
        if denied := refused(request):
            return denied
        if model_id not in MODELS:
            return _error(404, "not_found_error", f"model: {model_id}")
        return JSONResponse(
            {
                "type": "model",
                "id": model_id,
                "display_name": MODELS[model_id],
                "created_at": "2026-09-01T00:00:00Z",
                "lifecycle": "active",
            }
        )

    @app.post("/v1/messages")
    async def messages(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append(
            {
                "method": "POST",
                "path": request.url.path,
                "body": body,
                "anthropic_version": request.headers.get("anthropic-version"),
            }
        )
        if denied := refused(request):
            return denied
        prompt = body["messages"][0]["content"]
        if "OVERLOADED" in prompt:
            return _error(500, "api_error", "internal server error")
        return JSONResponse(
            {
                "id": "msg_01test",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": f"Done: {prompt.splitlines()[0]}\nConfidence: 0.65"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": USAGE,
            },
            headers={"request-id": "req_test_1"},
        )

    return app


class MessagesServer:
    def __init__(self, url: str, seen: list[dict[str, Any]]) -> None:
        self.url = url
        self.seen = seen

    def paths(self) -> list[str]:
        return [f"{r['method']} {r['path']}" for r in self.seen]


@pytest.fixture(scope="module")
def _server() -> Iterator[MessagesServer]:
    seen: list[dict[str, Any]] = []
    with serve_app(messages_api(seen)) as url:
        yield MessagesServer(url, seen)


@pytest.fixture
def api(_server: MessagesServer) -> MessagesServer:
    _server.seen.clear()
    return _server


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No provider settings from the developer's shell or a ``.env`` file leak into these tests."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def anthropic_env(api: MessagesServer, monkeypatch: pytest.MonkeyPatch) -> MessagesServer:
    monkeypatch.setenv("ANTHROPIC_API_KEY", GOOD_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
    return api


# ------------------------------------------------------------------------------------------ offline
async def test_offline_is_the_default_and_deterministic() -> None:
    first, second = ExecutorAgent("researcher_1"), ExecutorAgent(agent_id="researcher_2")
    assert first.provider.name == "offline" and isinstance(first.provider, OfflineProvider)
    a = await first.execute_task("Gather competitor data", {"market": "EU"})
    b = await second.execute_task("Gather competitor data", {"market": "EU"})
    c = await second.execute_task("Gather competitor data", {"market": "US"})
    assert a["result"] == b["result"] != c["result"]
    assert a["task"] == "Gather competitor data" and a["agent_id"] == "researcher_1"
    assert (a["provider"], a["model"], a["cost_usd"]) == ("offline", "offline", "0")
    assert a["input_tokens"] > 0 and a["output_tokens"] > 0
    assert 0.7 <= a["confidence"] <= 0.99


async def test_the_seed_chain_passes_results_as_context() -> None:
    """The seed's multi-agent pattern: one agent's result is the next one's context."""
    research = await ExecutorAgent("researcher_1").execute_task("Gather competitor data", {})
    analyst = ExecutorAgent("analyst_2")
    analysis = await analyst.execute_task("Analyze research data", {"input": research})
    state = analyst.snapshot("analysis_review")
    assert state.inputs["Analyze research data"] == {"input": research}
    assert state.intermediate_outputs == {"Analyze research data": analysis["result"]}


async def test_the_recorded_state_holds_every_field_and_serializes() -> None:
    agent = ExecutorAgent("agent_456")

    async def query(table: str, limit: int, api_key: str) -> dict[str, Any]:
        return {"rows": [f"record{i}" for i in range(limit)], "table": table}

    result = await agent.execute_task("Collect customer records", {"source": "customers_2024"})
    rows = await agent.call_api(
        "/api/data/query", {"table": "customers", "limit": 3, "api_key": GOOD_KEY}, query
    )
    agent.remember("data_source", "customers_2024")
    agent.output("records_collected", len(rows["rows"]))
    agent.note("Applied quality filters")
    state = agent.snapshot("data_review", parameters={"limit": 3}, planned_next_steps=["analyze"])

    assert state.checkpoint_id == "data_review"
    assert state.agent_memory["conversation"] == [
        "task: Collect customer records",
        f"result: {result['result']}",
    ]
    assert state.agent_memory["facts"] == {"data_source": "customers_2024"}
    model_call, tool_call = state.api_calls
    assert model_call["kind"] == "model" and model_call["endpoint"] == "offline://offline"
    assert model_call["status"] == 200 and model_call["input_tokens"] == result["input_tokens"]
    assert "Collect customer records" in model_call["payload_summary"]
    assert model_call["response_summary"] == result["result"]
    assert tool_call["endpoint"] == "/api/data/query" and tool_call["status"] == "ok"
    assert '"limit": 3' in tool_call["payload_summary"] and "record2" in tool_call["response_summary"]
    assert tool_call["duration_ms"] >= 0 and tool_call["timestamp"].endswith("+00:00")
    assert state.intermediate_outputs == {
        "Collect customer records": result["result"],
        "records_collected": 3,
    }
    assert state.inputs == {"Collect customer records": {"source": "customers_2024"}}
    assert state.decision_trace[0].startswith("Asked the offline provider")
    assert state.decision_trace[-2:] == ["Called /api/data/query: ok", "Applied quality filters"]
    assert state.confidence_scores == {"Collect customer records": result["confidence"]}
    usage = state.resource_consumption
    assert usage["api_calls"] == 2 and usage["model_calls"] == 1 and usage["tool_calls"] == 1
    assert usage["tokens_used"] == result["input_tokens"] + result["output_tokens"]
    assert usage["execution_time_seconds"] > 0 and usage["estimated_cost_usd"] == 0.0
    assert (state.parameters, state.planned_next_steps) == ({"limit": 3}, ["analyze"])

    canonical_bytes(state.model_dump(mode="json"), "state")  # what a checkpoint stores
    assert ExecutionState.model_validate_json(state.model_dump_json()) == state
    assert GOOD_KEY not in state.model_dump_json()  # the secret went in as a payload, never out

    await agent.execute_task("Another step", {})
    assert len(state.api_calls) == 2 and "Another step" not in state.intermediate_outputs  # a copy


async def test_a_tool_call_records_payload_response_and_errors(api: MessagesServer) -> None:
    agent = ExecutorAgent("agent_456")

    @agent.tool(name="models.get")
    async def get_model(client: httpx.AsyncClient, model: str, x_api_key: str) -> httpx.Response:
        response = await client.get(f"/v1/models/{model}", headers={"x-api-key": x_api_key})
        return response.raise_for_status()

    async with httpx.AsyncClient(base_url=api.url) as client:
        ok = await get_model(client, model="claude-sonnet-5-5", x_api_key=GOOD_KEY)
        with pytest.raises(httpx.HTTPStatusError):
            await get_model(client, model="claude-nope", x_api_key=GOOD_KEY)
    with pytest.raises(ZeroDivisionError):
        await agent.call_api("divide", {"a": 1, "b": 0}, lambda a, b: a / b)

    found, missing, divided = agent.api_calls
    assert ok.json()["id"] == "claude-sonnet-5-5"
    assert (found["endpoint"], found["status"], "error" in found) == ("models.get", 200, False)
    assert '"model": "claude-sonnet-5-5"' in found["payload_summary"]
    assert '"x_api_key": "[redacted]"' in found["payload_summary"]
    assert (missing["status"], missing["error"].split(":")[0]) == (404, "HTTPStatusError")
    assert "response_summary" not in missing
    assert divided == divided | {"status": "error", "error": "ZeroDivisionError: division by zero"}
    assert agent.decision_trace == [
        "Called models.get: 200",
        "Called models.get: failed (404, HTTPStatusError)",
        "Called divide: failed (error, ZeroDivisionError)",
    ]
    usage = agent.resource_consumption
    assert (usage["api_calls"], usage["failed_api_calls"], usage["tool_calls"]) == (3, 2, 3)
    assert GOOD_KEY not in json.dumps(agent.snapshot("cp").model_dump(mode="json"))


def test_summaries_are_short_and_secret_free() -> None:
    long = summarize({"text": "x" * 1000})
    assert len(long) < 240 and long.endswith("chars)")
    text = summarize({"headers": {"Authorization": "Bearer abc.def.ghi"}, "note": f"key {GOOD_KEY}"})
    assert "abc.def" not in text and GOOD_KEY not in text and text.count("[redacted]") == 2
    assert summarize({"max_tokens": 5, "input_tokens": 7}) == '{"input_tokens": 7, "max_tokens": 5}'


# ------------------------------------------------------------------------------------------ anthropic
async def test_anthropic_records_usage_cost_and_confidence(anthropic_env: MessagesServer) -> None:
    async with ExecutorAgent("agent_456", provider="anthropic") as agent:
        result = await agent.execute_task("Summarize the order", {"pizzas": 100, "unit_price": Decimal("12")})

    assert anthropic_env.paths() == ["GET /v1/models/claude-sonnet-5-5", "POST /v1/messages"]
    sent = anthropic_env.seen[1]
    assert sent["anthropic_version"] and sent["body"]["model"] == "claude-sonnet-5-5"
    assert sent["body"]["max_tokens"] == 1024 and "Confidence" in sent["body"]["system"]
    assert json.loads(sent["body"]["messages"][0]["content"].split("Context (JSON):\n")[1]) == {
        "pizzas": 100,
        "unit_price": "12",
    }
    # claude-sonnet-5-5: $2 in / $10 out per million: (1234 * 2 + 567 * 10) / 1e6
    assert result["cost_usd"] == "0.008138" and agent.cost_usd == Decimal("0.008138")
    assert (result["input_tokens"], result["output_tokens"]) == (1234, 567)
    assert result["result"] == "Done: Summarize the order" and result["confidence"] == 0.65

    state = agent.snapshot("cp1")
    check, call = state.api_calls
    assert check["kind"] == "provider_check" and check["method"] == "GET" and check["status"] == 200
    assert check["endpoint"] == f"{anthropic_env.url}/v1/models/claude-sonnet-5-5"
    assert "Claude Sonnet 5.5" in check["response_summary"]
    assert call["endpoint"] == f"{anthropic_env.url}/v1/messages" and call["method"] == "POST"
    assert call["request_id"] == "req_test_1" and call["cost_usd"] == "0.008138"
    assert call["model"] == "claude-sonnet-5-5" and call["stop_reason"] == "end_turn"
    usage = state.resource_consumption
    assert (usage["tokens_used"], usage["estimated_cost_usd"], usage["api_calls"]) == (1801, 0.008138, 2)
    assert state.confidence_scores == {"Summarize the order": 0.65}
    assert state.decision_trace[0].startswith("Checked the anthropic provider: key accepted")
    assert GOOD_KEY not in state.model_dump_json()


async def test_a_missing_key_fails_when_the_agent_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput) as exc:
        ExecutorAgent("agent_456", provider="anthropic")
    assert exc.value.field == "ANTHROPIC_API_KEY" and "is not set" in exc.value.message
    monkeypatch.setenv("SAFERUN_EXECUTOR_PROVIDER", "anthropic")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "   ")
    with pytest.raises(InvalidInput) as exc:
        ExecutorAgent("agent_456")
    assert exc.value.field == "ANTHROPIC_API_KEY"


async def test_the_key_can_come_from_a_dotenv_file(api: MessagesServer) -> None:
    Path(".env").write_text(
        f"SAFERUN_EXECUTOR_PROVIDER=anthropic\nANTHROPIC_API_KEY={GOOD_KEY}\nANTHROPIC_BASE_URL={api.url}\n"
    )
    async with ExecutorAgent("agent_456") as agent:
        result = await agent.execute_task("Check the room", {})
    assert agent.provider.name == "anthropic" and result["cost_usd"] == "0.008138"


async def test_an_invalid_key_fails_at_start_before_any_task_step(
    anthropic_env: MessagesServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong-key-000000000000")
    agent = ExecutorAgent("agent_456", provider="anthropic")  # built: the key is only checked at start
    with pytest.raises(InvalidInput) as exc:
        await agent.execute_task("Order pizzas", {"people": 10})
    assert exc.value.field == "ANTHROPIC_API_KEY"
    assert "401" in exc.value.message and "invalid x-api-key" in exc.value.message
    assert anthropic_env.paths() == ["GET /v1/models/claude-sonnet-5-5"]  # no task was sent
    assert agent.outputs == {} and agent.memory["conversation"] == []
    assert not agent.started and agent.decision_trace == ["The anthropic provider check failed: InvalidInput"]
    assert "wrong-key" not in json.dumps(agent.api_calls)
    await agent.aclose()

    with pytest.raises(InvalidInput):  # the same through ``async with`` (the client is closed)
        async with ExecutorAgent("agent_456", provider="anthropic"):
            pytest.fail("the block must not run with a refused key")


async def test_an_unknown_model_fails_at_start(anthropic_env: MessagesServer) -> None:
    agent = ExecutorAgent("agent_456", provider="anthropic", model="claude-nope-1")
    with pytest.raises(InvalidInput) as exc:
        await agent.start()
    assert exc.value.field == "model" and "claude-nope-1" in exc.value.message
    await agent.aclose()


async def test_a_provider_failure_mid_task_is_recorded_then_raised(api: MessagesServer) -> None:
    provider = AnthropicProvider(api_key=GOOD_KEY, base_url=api.url, max_retries=0)
    async with ExecutorAgent("agent_456", provider=provider) as agent:
        with pytest.raises(ProviderError) as exc:
            await agent.execute_task("OVERLOADED on purpose", {})
    assert exc.value.status_code == 500 and "internal server error" in exc.value.message
    failed = agent.api_calls[-1]
    assert failed["kind"] == "model" and failed["status"] == 500 and "ProviderError" in failed["error"]
    assert agent.resource_consumption["failed_api_calls"] == 1
    assert agent.decision_trace[-1] == "The anthropic provider failed: ProviderError"


async def test_an_unpriced_model_is_counted_not_called_free(anthropic_env: MessagesServer) -> None:
    async with ExecutorAgent("a", provider="anthropic", model="claude-haiku-5-5") as priced:
        await priced.execute_task("Price me", {})
    assert priced.cost_usd == Decimal("0.0004069")  # (1234 * 0.10 + 567 * 0.50) / 1e6

    MODELS["claude-unlisted-9"] = "Unlisted"
    try:
        async with ExecutorAgent("a", provider="anthropic", model="claude-unlisted-9") as unpriced:
            result = await unpriced.execute_task("Price me", {})
        async with ExecutorAgent(
            "a", provider="anthropic", model="claude-unlisted-9", price=ModelPrice(Decimal(1), Decimal(2))
        ) as overridden:
            await overridden.execute_task("Price me", {})
    finally:
        del MODELS["claude-unlisted-9"]
    assert result["cost_usd"] is None
    assert unpriced.resource_consumption["unpriced_model_calls"] == 1
    assert overridden.cost_usd == Decimal("0.002368")


async def test_a_restored_state_keeps_exact_totals(anthropic_env: MessagesServer) -> None:
    async with ExecutorAgent("agent_456", provider="anthropic") as agent:
        for i in range(3):
            await agent.execute_task(f"Step {i}", {})
        state = agent.snapshot("cp1")
    resumed = ExecutorAgent("agent_456")
    resumed.restore(ExecutionState.model_validate_json(state.model_dump_json()))
    assert resumed.cost_usd == Decimal("0.024414") == 3 * Decimal("0.008138")
    await resumed.execute_task("Step 3", {})
    assert resumed.resource_consumption["model_calls"] == 4
    assert resumed.snapshot("cp2").decision_trace[: len(state.decision_trace)] == state.decision_trace


# ------------------------------------------------------------------------------------------ bad input
async def test_unknown_providers_and_bad_arguments_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput) as exc:
        ExecutorAgent("a", provider="gpt-9")
    assert exc.value.field == "provider" and "anthropic, offline" in exc.value.message
    monkeypatch.setenv("SAFERUN_EXECUTOR_PROVIDER", "bogus")
    with pytest.raises(InvalidInput) as exc:
        make_provider()
    assert exc.value.field == "SAFERUN_EXECUTOR_PROVIDER" and "'bogus'" in exc.value.message
    cases: list[tuple[str, Any]] = [
        ("provider", lambda: ExecutorAgent("a", provider=42)),  # type: ignore[arg-type]
        ("agent_id", lambda: ExecutorAgent("")),
        ("max_tokens", lambda: ExecutorAgent("a", provider="offline", max_tokens=0)),
    ]
    for field, build in cases:
        with pytest.raises(InvalidInput) as exc:
            build()
        assert exc.value.field == field
    agent = ExecutorAgent("a", provider="offline")
    for field, call in [
        ("task", agent.execute_task("  ", {})),
        ("context", agent.execute_task("t", ["not", "a", "dict"])),  # type: ignore[arg-type]
        ("payload", agent.call_api("x", [1], print)),  # type: ignore[arg-type]
        ("fn", agent.call_api("x", {}, None)),  # type: ignore[arg-type]
    ]:
        with pytest.raises(InvalidInput) as exc:
            await call
        assert exc.value.field == field
    with pytest.raises(InvalidInput):
        agent.set_confidence("plan", 1.5)


def test_prices_and_confidence_lines() -> None:
    assert price_for("claude-sonnet-4-5-20250929") == price_for("claude-sonnet-4-5")
    assert price_for("claude-opus-4-8") is None  # never billed as claude-opus-4 by prefix
    assert estimate_cost("claude-haiku-5-5", 200_000, 1_000) == Decimal("0.1025")  # long-prompt band
    assert split_confidence("Answer\nConfidence: 85%") == ("Answer", 0.85)
    assert split_confidence("Answer\nconfidence = 0.4\n") == ("Answer", 0.4)
    assert split_confidence("Answer\nConfidence: 7") == ("Answer\nConfidence: 7", None)


# ------------------------------------------------------------------------------------------ supervised
async def test_the_executor_drives_a_supervised_workflow_with_its_recorded_state(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    config = make_config(n=1, escrow="12.00")
    agent = ExecutorAgent("agent")
    await agent.start()  # a bad provider would fail here, before any escrow is locked
    ordered: list[int] = []

    async def work() -> None:
        async with supervised(config, orch) as run:
            plan = await agent.execute_task("Plan food for the meeting", {"people": 10})
            quote = await agent.call_api("/shop/quote", {"pizzas": 100}, lambda pizzas: {"usd": pizzas * 12})
            decision = await run.checkpoint(
                "Review 1",
                state=agent.snapshot("cp1", parameters={"pizza_count": 100}),
                summary=f"Order 100 pizzas for ${quote['usd']}?",
                confidence=plan["confidence"],
            )
            ordered.append(decision.parameters["pizza_count"])
            run.result["ordered"] = decision.parameters["pizza_count"]

    async def reviewer() -> None:
        while not (pending := orch.pending_approvals(config.workflow_id)):
            await asyncio.sleep(0.005)
        assert pending[0].context["Plan food for the meeting"].startswith("Plan ")
        decide(orch, pending[0].request_id, "MODIFIED", modifications={"pizza_count": 10})

    await asyncio.gather(work(), reviewer())
    assert ordered == [10]
    snap = orch.list_snapshots(config.workflow_id)[0]
    stored = orch.get_snapshot_state(snap.snapshot_id)
    recorded = agent.snapshot("cp1")
    assert stored.api_calls == recorded.api_calls and len(stored.api_calls) == 2
    assert stored.decision_trace == recorded.decision_trace
    assert stored.resource_consumption == recorded.resource_consumption
    assert stored.agent_memory == recorded.agent_memory and stored.inputs == recorded.inputs
    assert orch.get_workflow(config.workflow_id).current_state.value == "completed"
    assert orch.escrow_position(config.workflow_id).released == 12_000_000
