"""The original SafeRun-X402 API, called as its users called it (docs/original-api.md).

Plain calls and the return values and shapes the original gave: capture, checkpoint export/import,
the file artifact store, in-process compensations and the original's reconciliation report.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from saferun.core.artifacts.store import ArtifactStore, StoredArtifact
from saferun.core.checkpoints.capture import CheckpointManager, StateCapture
from saferun.core.rollback.reconciliation import (
    CompensatingTransaction,
    ReconciliationAgent,
    RollbackManager,
)
from saferun.core.state_machine.models import ExecutionState


def test_state_capture_builds_state_and_history() -> None:
    capture = StateCapture()
    state = capture.capture_state(
        "cp1", {"task": "t"}, [{"call_id": "1"}], {"out": 1}, ["d"], {"tokens": 100}
    )
    assert state.checkpoint_id == "cp1"
    assert state.resource_consumption == {"tokens": 100.0}
    assert isinstance(state.timestamp, datetime) and state.timestamp.tzinfo is None
    entry = capture.capture_history[0]
    assert entry["checkpoint_id"] == "cp1" and entry["timestamp"] == state.timestamp.isoformat()
    assert entry["state"]["agent_memory"] == {"task": "t"}
    assert isinstance(entry["state"]["timestamp"], datetime)


def test_serialize_round_trip_hash_and_key_order() -> None:
    capture = StateCapture()
    state = capture.capture_state("cp1", {"k": "v"}, [], {}, [], {})
    text = capture.serialize_state(state)
    assert list(json.loads(text)) == [
        "checkpoint_id",
        "timestamp",
        "agent_memory",
        "api_calls",
        "intermediate_outputs",
        "decision_trace",
        "resource_consumption",
    ]
    assert text.startswith('{\n  "checkpoint_id"')
    back = capture.deserialize_state(text)
    assert back == state and back.timestamp == state.timestamp
    assert capture.compute_state_hash(state) == hashlib.sha256(text.encode()).hexdigest()
    with pytest.raises(TypeError):
        capture.serialize_state(ExecutionState(checkpoint_id="x", agent_memory={"when": datetime.now()}))
    with pytest.raises(ValueError):
        capture.deserialize_state("not json")


def test_compare_states() -> None:
    capture = StateCapture()
    a = ExecutionState(checkpoint_id="a", agent_memory={"x": 1, "y": 2}, api_calls=[{}], decision_trace=["1"])
    b = ExecutionState(checkpoint_id="b", agent_memory={"x": 5, "z": 3}, api_calls=[{}, {}, {}])
    diff = capture.compare_states(a, b)
    changed = {"x": {"old": 1, "new": 5}}
    assert diff["memory_diff"] == {"added": {"z": 3}, "removed": {"y": 2}, "changed": changed}
    assert diff["outputs_diff"] == {"added": {}, "removed": {}, "changed": {}}
    assert diff["api_calls_added"] == 2 and diff["decisions_added"] == -1


def test_checkpoint_manager_create_get_export_import() -> None:
    manager = CheckpointManager()
    state = manager.create_checkpoint("cp1", {"task": "analyze"})
    assert state.checkpoint_id == "cp1" and state.api_calls == [] and state.resource_consumption == {}
    assert manager.get_checkpoint("cp1") is state and manager.restore_checkpoint("cp1") is state
    assert manager.get_checkpoint("nope") is None and manager.restore_checkpoint("nope") is None
    again = manager.create_checkpoint("cp1", {"task": "other"})
    assert manager.get_checkpoint("cp1") is again
    manager.create_checkpoint("cp2", {})
    assert manager.list_checkpoints() == ["cp1", "cp2"]
    exported = manager.export_checkpoint("cp1")
    assert exported is not None and manager.export_checkpoint("nope") is None
    other = CheckpointManager()
    assert other.import_checkpoint("imported", exported) is True
    assert other.get_checkpoint("imported") == again
    assert manager.delete_checkpoint("cp2") is True and manager.delete_checkpoint("cp2") is False


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[]",
        "{}",
        '{"checkpoint_id": "x", "timestamp": 5}',
        '{"checkpoint_id": "x", "timestamp": "yesterday"}',
        '{"checkpoint_id": "x", "api_calls": "nope"}',
        '{"checkpoint_id": "x", "unknown_field": 1}',
        "",
    ],
)
def test_import_checkpoint_malformed_is_false_and_stores_nothing(bad: str) -> None:
    manager = CheckpointManager()
    assert manager.import_checkpoint("cp", bad) is False
    assert manager.list_checkpoints() == []


class _FakeHttpClient:
    """Stands for an X402Client in the original's own shape (an object with an async get_artifact)."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    async def get_artifact(self, uri: str) -> dict[str, Any]:
        return self.store.get(uri)


class _Integration:
    def __init__(self, store: ArtifactStore) -> None:
        self.artifacts = store


async def test_load_checkpoint_from_artifact(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    manager = CheckpointManager()
    state = manager.create_checkpoint("cp1", {"k": 1}, decision_trace=["d"])
    record = store.create("checkpoint_state", manager.export_checkpoint("cp1") or "", {"checkpoint_id": "c"})
    loaded = await CheckpointManager().load_checkpoint_from_artifact(
        record["uri"], "cp1", _FakeHttpClient(store)
    )
    assert loaded == state
    via_integration = CheckpointManager()
    loaded = await via_integration.load_checkpoint_from_artifact(record["uri"], "x", _Integration(store))
    assert loaded == state
    assert via_integration.list_checkpoints() == ["x"]
    with pytest.raises(ValueError):
        await manager.load_checkpoint_from_artifact(record["uri"], "cp1", None)


def test_artifact_store_content_addressed(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "a" / "b"))
    assert store.base_dir == tmp_path / "a" / "b" and store.base_dir.is_dir()
    record = store.create("checkpoint_state", "héllo", {"m": 1})
    digest = hashlib.sha256("héllo".encode()).hexdigest()
    assert record["uri"] == f"saferun://artifacts/{digest}"
    assert record["artifact_id"] == "artifact_" + digest[:16]
    assert record["size_bytes"] == len("héllo".encode()) and record["created_at"].endswith("Z")
    assert "content" not in record and record["type"] == "checkpoint_state"
    assert (store.base_dir / f"{digest}.json").exists()
    full = store.get(record["uri"])
    assert full["content"] == "héllo" and full["metadata"] == {"m": 1}
    with pytest.raises(ValueError):
        store.get("x402://artifacts/sha256:" + digest)
    with pytest.raises(FileNotFoundError):
        store.get("saferun://artifacts/" + "0" * 64)
    with pytest.raises(ValueError):
        store.get("saferun://artifacts/../../etc/passwd")
    frozen = StoredArtifact("a", "u", "h", 1, "t", {})
    with pytest.raises(AttributeError):
        frozen.uri = "other"  # type: ignore[misc]


def test_artifact_store_refuses_a_corrupted_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    record = store.create("t", "content", {})
    path = tmp_path / f"{record['content_hash']}.json"
    data = json.loads(path.read_text())
    data["content"] = "tampered"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="hash"):
        store.get(record["uri"])


async def test_compensating_transaction_runs_once_and_never_raises() -> None:
    calls: list[dict[str, Any]] = []

    async def undo(data: dict[str, Any]) -> None:
        calls.append(data)

    async def broken(data: dict[str, Any]) -> None:
        raise RuntimeError("down")

    tx = CompensatingTransaction("t1", "payment", {"amount": 5}, undo)
    assert (tx.executed, tx.success) == (False, False)
    assert await tx.execute() is True and await tx.execute() is True
    assert calls == [{"amount": 5}]
    bad = CompensatingTransaction("t2", "payment", {}, broken)
    assert await bad.execute() is False and bad.executed is True and bad.success is False
    assert await CompensatingTransaction("t3", "noop", {}).execute() is True


async def test_rollback_manager_reverse_order_unknown_skipped_history() -> None:
    order: list[str] = []

    def undo(name: str) -> Any:
        async def run(data: dict[str, Any]) -> None:
            order.append(name)

        return run

    async def broken(data: dict[str, Any]) -> None:
        raise RuntimeError("x")

    manager = RollbackManager()
    manager.register_action("a", "email", {}, undo("a"))
    manager.register_action("b", "payment", {}, undo("b"))
    manager.register_action("c", "payment", {}, broken)
    state = ExecutionState(checkpoint_id="cp")
    assert await manager.execute_rollback(state, ["a", "b", "never"]) is True
    assert order == ["b", "a"]
    assert await manager.partial_rollback(state, ["payment"]) is False
    history = manager.get_rollback_history()
    assert history is manager.rollback_history and len(history) == 2
    assert history[0]["actions_count"] == 3 and history[0]["success"] is True
    assert history[1]["failures"] == ["c"] and history[1]["checkpoint_id"] == "cp"
    assert set(manager.compensating_transactions) == {"a", "b", "c"}
    manager.clear_transactions()
    assert manager.compensating_transactions == {}


async def test_reconciliation_agent_original_signature() -> None:
    agent = ReconciliationAgent()
    assert isinstance(agent.rollback_manager, RollbackManager)
    undone: list[dict[str, Any]] = []

    async def refund(data: dict[str, Any]) -> None:
        undone.append(data)

    agent.rollback_manager.register_action("1", "payment", {"amount": 10}, refund)
    state = ExecutionState(
        checkpoint_id="cp1",
        api_calls=[{"call_id": "0", "has_side_effects": False}, {"call_id": "1", "has_side_effects": True}],
    )
    report = await agent.reconcile_workflow("wf1", state, "Too expensive", 100.0)
    assert set(report) == {
        "workflow_id",
        "checkpoint_id",
        "rejection_reason",
        "timestamp",
        "partial_completion",
        "rollback_success",
        "cleanup_actions",
        "recommended_payment",
    }
    assert report["partial_completion"] == pytest.approx(0.2)
    assert report["recommended_payment"] == pytest.approx(20.0)
    assert report["rollback_success"] is True and undone == [{"amount": 10}]
    assert report["cleanup_actions"] == [{"action_id": "1", "status": "completed"}]
    keyword = await ReconciliationAgent("reconciler_1").reconcile_workflow(
        workflow_id="wf2",
        checkpoint_state=ExecutionState(checkpoint_id="c"),
        rejection_reason="r",
        escrow_amount=5,
    )
    assert keyword["partial_completion"] == 0.0 and keyword["recommended_payment"] == 0.0


def test_original_settings_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    from saferun.config import Settings

    monkeypatch.setenv("MAX_ROLLBACK_DEPTH", "4")
    s = Settings()
    assert s.app_name == "SafeRun X402" and s.max_rollback_depth == 4
    assert s.default_checkpoint_timeout == 300 and s.enable_auto_reconciliation is True
    assert s.openai_api_key is None
    from saferun.config import settings

    assert isinstance(settings, Settings)


def test_seed_setup_files_exist() -> None:
    root = Path(__file__).resolve().parent.parent
    assert "-e ." in (root / "requirements.txt").read_text()
    env = (root / ".env.example").read_text()
    for name in ("X402_API_URL", "X402_API_KEY", "ANTHROPIC_API_KEY", "DATABASE_URL"):
        assert name in env


async def test_x402_integration_original_helpers(database_env: Any) -> None:
    from saferun.api.x402.client import X402Integration

    x402 = X402Integration()
    setup = await x402.setup_supervised_workflow("wf1", {"supervisor_id": "sup"}, 100.0, "poster", "exec")
    assert set(setup) == {"workflow_id", "job_id", "escrow_id", "supervisor_id", "status"}
    assert setup["job_id"].startswith("job_") and setup["escrow_id"] is None
    assert setup["supervisor_id"] == "sup" and setup["status"] == "ready"
    other = await x402.setup_supervised_workflow("wf1", {}, 100.0, "poster", "exec")
    assert other["supervisor_id"] == "default_supervisor"
    manager = CheckpointManager()
    state = manager.create_checkpoint("cp1", {"k": "v"}, decision_trace=["went well"])
    exported = manager.export_checkpoint("cp1") or ""
    uri = await x402.store_checkpoint_artifact("cp1", exported, {"workflow_id": "wf1"})
    assert isinstance(uri, str) and uri
    loaded = await CheckpointManager().load_checkpoint_from_artifact(uri, "cp1", x402)
    assert loaded == state
    plan = await x402.settle_workflow("wf1", None, 100.0, 1.0, "exec", "sup")
    assert plan["total_payout"] == 100.0
    assert plan["splits"] == [
        {"recipient_type": "executor", "amount": 90.0, "reason": "partial_completion"},
        {"recipient_type": "supervisor", "amount": 10.0, "reason": "supervision_fee"},
    ]
    partial = await x402.client.calculate_settlement("wf1", 0.5, 33.3)
    assert partial["total_escrow"] == 33.3 and partial["completion_percentage"] == 0.5
    assert partial["splits"][0]["amount"] + partial["splits"][1]["amount"] == pytest.approx(16.65)
    await x402.close()


async def test_monitor_agent_original_api() -> None:
    from saferun.agents.monitor.agent import MonitorAgent
    from saferun.core.state_machine.models import CheckpointConfig

    monitor = MonitorAgent(monitor_id="monitor_1")
    assert monitor.monitor_id == "monitor_1" and MonitorAgent("m2").monitor_id == "m2"
    assert monitor.telemetry == [] and monitor.checkpoint_triggers == {} and monitor.alert_callback is None
    assert monitor.get_telemetry_summary() == {"message": "No telemetry captured"}
    cfg = CheckpointConfig(name="Review", description="d")
    quiet = ExecutionState(checkpoint_id="x", api_calls=[{}] * 3, intermediate_outputs={"a": 1})
    report = await monitor.monitor_execution(quiet, cfg)
    assert set(report) == {
        "monitor_id",
        "checkpoint_id",
        "timestamp",
        "should_checkpoint",
        "trigger_reason",
        "telemetry",
        "anomalies",
        "recommendations",
    }
    assert report["checkpoint_id"] == cfg.checkpoint_id and report["should_checkpoint"] is False
    assert report["trigger_reason"] is None and report["anomalies"] == [] and report["recommendations"] == []
    assert report["telemetry"]["api_calls"] == 3 and report["telemetry"]["outputs"] == 1

    alerts: list[dict[str, Any]] = []

    async def on_alert(alert: dict[str, Any]) -> None:
        alerts.append(alert)

    monitor.set_alert_callback(on_alert)
    monitor.register_checkpoint_trigger(cfg.checkpoint_id, lambda s: len(s.api_calls) > 2)
    noisy = ExecutionState(
        checkpoint_id="x",
        api_calls=[{}] * 60,
        decision_trace=["Step 2 FAILED"],
        resource_consumption={"tokens_used": 20000},
    )
    report = await monitor.monitor_execution(noisy, cfg)
    assert report["should_checkpoint"] is True and report["trigger_reason"] == "anomaly_detected"
    kinds = [a["type"] for a in report["anomalies"]]
    assert kinds == ["high_api_volume", "high_token_usage", "error_detected"]
    assert report["recommendations"] == [
        "Human review recommended due to detected anomalies",
        "Consider breaking task into smaller steps",
        "No outputs generated yet, verify progress",
    ]
    expected = {"type": "anomaly", "checkpoint_id": cfg.checkpoint_id, "anomalies": report["anomalies"]}
    assert alerts == [expected]
    report = await monitor.monitor_execution(quiet, cfg)
    assert report["trigger_reason"] == "custom_condition"
    old = ExecutionState(checkpoint_id="x", timestamp=datetime(2020, 1, 1), intermediate_outputs={"a": 1})
    assert (await monitor.monitor_execution(old, cfg))["trigger_reason"] == "timeout"
    summary = monitor.get_telemetry_summary()
    assert summary["entries_count"] == 4 and summary["total_api_calls"] == 3 + 60 + 3 + 0
    assert summary["monitor_id"] == "monitor_1" and summary["latest"] == monitor.telemetry[-1]
    progress = monitor.compare_progress(quiet, {"api_calls": 3, "outputs": 1})
    assert progress["on_track"] is True and progress["metrics"]["api_calls"]["variance"] == 0
    assert monitor.compare_progress(quiet, {"api_calls": 10})["on_track"] is False


def test_executor_agent_original_attributes() -> None:
    from saferun.agents.executor.agent import ExecutorAgent

    agent = ExecutorAgent("exec_1", {"temperature": 0})
    assert agent.config == {"temperature": 0} and agent.checkpoint_callback is None
    assert ExecutorAgent("e2", agent_config=None).config == {}
    agent.execution_context = {"task": "analyze", "status": "executing"}
    agent.api_call_history = [{"call_id": "call_1", "has_side_effects": True}]
    agent.decision_trace = ["[t] decided"]
    agent.intermediate_outputs = {"plan": {"steps": []}}
    state = agent.capture_current_state("cp1")
    assert state.checkpoint_id == "cp1" and state.agent_memory == {"task": "analyze", "status": "executing"}
    assert state.api_calls == [{"call_id": "call_1", "has_side_effects": True}]
    assert state.decision_trace == ["[t] decided"] and state.intermediate_outputs == {"plan": {"steps": []}}
    agent.decision_trace.append("later")
    assert state.decision_trace == ["[t] decided"]  # a copy
    agent.apply_modifications({"task": "summarize", "plan": {"steps": [1]}, "unknown": 1})
    assert agent.execution_context["task"] == "summarize" and "unknown" not in agent.execution_context
    assert agent.intermediate_outputs["plan"] == {"steps": [1]}
    status = agent.get_status()
    assert set(status) == {
        "agent_id",
        "context",
        "api_calls_made",
        "decisions_made",
        "outputs_generated",
        "resources_consumed",
    }
    assert (status["api_calls_made"], status["decisions_made"], status["outputs_generated"]) == (1, 2, 1)
    agent.restore_state(state)
    assert agent.execution_context == {"task": "analyze", "status": "executing"}
    assert agent.decision_trace == ["[t] decided"]

    async def callback(**kwargs: Any) -> dict[str, Any]:
        return {"approved": True}

    agent.set_checkpoint_callback(callback)
    assert agent.checkpoint_callback is callback


def test_executor_agent_with_anthropic_key_makes_no_call_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from saferun.agents.executor.agent import ExecutorAgent

    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key-placeholder")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # nothing listens: a call would fail
    agent = ExecutorAgent("exec_1", "anthropic")
    assert agent.provider.name == "anthropic" and agent.started is False
    assert ExecutorAgent("exec_2").provider.name == "offline"


async def test_supervisor_agent_original_api(database_env: Any) -> None:
    from saferun.agents.monitor.agent import MonitorAgent
    from saferun.agents.supervisor.agent import SupervisorAgent
    from saferun.core.state_machine.models import ApprovalDecision, CheckpointConfig, WorkflowConfig
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    orch = WorkflowOrchestrator()
    config = WorkflowConfig(
        name="Research",
        description="d",
        checkpoints=[CheckpointConfig(name="Review", description="Review the data")],
        escrow_amount=100.0,
        poster_id="poster",
        executor_id="exec",
    )
    wid = orch.initialize_workflow(config).workflow_id
    orch.start_execution(wid)
    state = ExecutionState(
        checkpoint_id=config.checkpoints[0].checkpoint_id,
        api_calls=[{"description": "query db", "has_side_effects": False}],
        intermediate_outputs={"rows": 12},
        decision_trace=["picked table"],
        resource_consumption={"api_calls": 1, "tokens_used": 300},
    )
    snap = await orch.create_checkpoint(wid, state)
    report = await MonitorAgent("monitor_1").monitor_execution(state, config.checkpoints[0])
    supervisor = SupervisorAgent("supervisor_1")
    assert supervisor.pending_approvals == {} and supervisor.approval_history == []
    assert supervisor.get_approval_stats() == {
        "supervisor_id": "supervisor_1",
        "total_approvals": 0,
        "message": "No approvals processed yet",
    }
    request = supervisor.create_approval_request(
        wid, snap.checkpoint_id, snap.snapshot_id, state, monitoring_report=report
    )
    assert request.request_id in supervisor.pending_approvals
    assert supervisor.get_pending_approvals() == [request]
    assert request.summary.startswith("Agent completed 1 actions with 1 decisions | Generated outputs: rows")
    assert request.context["execution_summary"]["api_calls_count"] == 1
    assert request.context["recent_api_calls"][0]["description"] == "query db"
    assert "monitoring" in request.context
    # the orchestrator's view and the supervisor's are one request (adopted, not opened twice)
    assert [r.request_id for r in orch.pending_approvals(wid)] == [request.request_id]
    again = supervisor.create_approval_request(wid, snap.checkpoint_id, snap.snapshot_id, state)
    assert again.request_id == request.request_id
    display = supervisor.format_for_display(request)
    assert display["request_id"] == request.request_id and display["checkpoint_id"] == request.checkpoint_id
    titles = [s["title"] for s in display["sections"]]
    assert titles[0] == "Summary" and titles[-1] == "Decision Required"
    assert "Recent Actions" in titles and "Outputs Generated" in titles
    decision = display["sections"][-1]["content"]["options"]
    assert [o["value"] for o in decision] == ["APPROVED", "MODIFIED", "REJECTED"]
    response = supervisor.submit_decision(request.request_id, ApprovalDecision.APPROVED, "fine", "alice")
    assert response.decision == ApprovalDecision.APPROVED and supervisor.pending_approvals == {}
    assert supervisor.get_approval_history() == [response] and len(supervisor.response_times_sec) == 1
    with pytest.raises(ValueError, match="not found"):
        supervisor.submit_decision(request.request_id, ApprovalDecision.REJECTED, "changed mind", "alice")
    stats = supervisor.get_approval_stats()
    assert stats["total_approvals"] == 1 and stats["pending"] == 0 and stats["approval_rate"] == 1.0
    assert stats["decision_breakdown"] == {"approved": 1, "rejected": 0, "modified": 0}
    assert isinstance(stats["average_response_time"], float)


async def test_seed_orchestrator_calls_on_each_database(database_env: Any) -> None:
    """The original's orchestrator calls and answers, on SQLite and PostgreSQL."""
    from saferun.api.x402.client import X402Integration
    from saferun.core.state_machine.models import (
        ApprovalDecision,
        ApprovalResponse,
        CheckpointConfig,
        WorkflowConfig,
        WorkflowState,
    )
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    orch = WorkflowOrchestrator(x402_integration=X402Integration())
    strict = WorkflowOrchestrator()  # SafeRun's own API stays strict beside it
    config = WorkflowConfig(
        name="wf",
        description="d",
        checkpoints=[CheckpointConfig(name=n, description=n) for n in ("a", "b")],
        escrow_amount=100,
        poster_id="poster",
        executor_id="exec",
    )
    wid = orch.initialize_workflow(config).workflow_id
    assert orch.initialize_workflow(config).workflow_id == wid  # the stored one answers, no exception
    assert orch.start_execution(wid) is True and orch.start_execution(wid) is False
    assert orch.settle_workflow("missing", {}) is False and orch.fail_workflow("missing", "x") is False
    assert orch.complete_rollback("missing", True) is False
    responses = []
    for i, cp in enumerate(config.checkpoints):
        snap = await orch.create_checkpoint(wid, ExecutionState(checkpoint_id="any", agent_memory={"i": i}))
        assert snap is not None and snap.checkpoint_id == cp.checkpoint_id
        assert orch.request_approval(wid, snap.snapshot_id, "s", {}) is not None
        response = ApprovalResponse(
            request_id=f"not-the-request-{i}",
            decision=ApprovalDecision.APPROVED,
            rationale="",
            approved_by="sup",
        )
        assert orch.submit_approval(wid, response) is True
        assert orch.submit_approval(wid, response) is False  # exactly once
        responses.append(response)
    wf = orch.get_workflow(wid)
    assert wf.current_state == WorkflowState.SETTLING and wf.current_checkpoint_index == 2
    assert [len(wf.snapshots), len(wf.approval_requests), len(wf.approval_responses)] == [2, 2, 2]
    assert wf.snapshots[1].execution_state.agent_memory == {"i": 1}
    assert orch.settle_workflow(wid, {"r": 1}) is True and orch.complete_workflow(wid) is True
    assert orch.complete_workflow(wid) is False  # refused from COMPLETED, with a falsy answer
    assert strict.get_workflow(wid).snapshots == 2  # the strict view keeps its counts
    assert wid in orch.active_workflows and orch.active_workflows[wid].workflow_id == wid
    with pytest.raises(Exception, match="already exists"):
        strict.initialize_workflow(config)


async def test_x402_client_original_construction_and_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from saferun.api.x402.client import X402Client, retry_on_failure

    monkeypatch.delenv("X402_API_KEY", raising=False)
    monkeypatch.setenv("X402_API_URL", "https://api.x402.io")
    with pytest.raises(ValueError):
        X402Client()
    with pytest.raises(ValueError):
        X402Client(api_key="k")  # the placeholder URL
    monkeypatch.setenv("X402_API_URL", "http://127.0.0.1:9/x402")
    client = X402Client(api_key="k")
    assert client.api_key == "k" and client.base_url == "http://127.0.0.1:9/x402"
    plan = await client.calculate_settlement("wf", 0.5, 100.0)
    assert plan["total_payout"] == 50.0
    with pytest.raises(httpx.ConnectError):  # errors are raised, never turned into False
        await retry_on_failure(1, 0.001)(client.get_job.__wrapped__)(client, "job_1")  # type: ignore[attr-defined]
    await client.close()
    attempts: list[int] = []

    @retry_on_failure(max_retries=2, delay=0.001)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise httpx.ConnectError("down")
        return "ok"

    assert await flaky() == "ok" and len(attempts) == 3

    @retry_on_failure(max_retries=3, delay=0.001)
    async def broken() -> None:
        attempts.append(1)
        raise KeyError("not an HTTP error")

    attempts.clear()
    with pytest.raises(KeyError):
        await broken()
    assert len(attempts) == 1


async def test_executor_checkpoint_callback_reviews_the_plan() -> None:
    from saferun.agents.executor.agent import ExecutorAgent

    seen: list[dict[str, Any]] = []

    async def approve(**kwargs: Any) -> dict[str, Any]:
        seen.append(kwargs)
        return {"approved": True}

    async def refuse(**kwargs: Any) -> dict[str, Any]:
        return {"approved": False}

    agent = ExecutorAgent("exec_1")
    agent.set_checkpoint_callback(approve)
    result = await agent.execute_task("Summarize the data", {"rows": 3})
    assert result["agent_id"] == "exec_1"
    assert seen[0]["checkpoint_id"] == "plan_review"
    assert seen[0]["summary"].startswith("Review execution plan")
    assert isinstance(seen[0]["state"], ExecutionState)
    refused = ExecutorAgent("exec_2")
    refused.set_checkpoint_callback(refuse)
    with pytest.raises(Exception, match="Plan not approved"):
        await refused.execute_task("Summarize", {})
    assert refused.api_call_history == []  # nothing ran


def test_approval_decision_accepts_the_originals_lower_case_values() -> None:
    from saferun.core.state_machine.models import ApprovalDecision, ApprovalResponse

    assert ApprovalDecision("approved") is ApprovalDecision.APPROVED
    assert ApprovalDecision("rejected") is ApprovalDecision.REJECTED
    assert ApprovalDecision("modified") is ApprovalDecision.MODIFIED
    response = ApprovalResponse(
        request_id="r", decision="modified", rationale="x", approved_by="s", modifications={"n": 2}
    )
    assert response.decision is ApprovalDecision.MODIFIED
    with pytest.raises(ValueError):
        ApprovalDecision("maybe")


async def test_executor_calls_the_callback_after_each_critical_step() -> None:
    from saferun.agents.executor.agent import ExecutorAgent
    from saferun.errors import InvalidInput

    seen: list[str] = []

    async def review(**kwargs: Any) -> dict[str, Any]:
        seen.append(kwargs["checkpoint_id"])
        assert isinstance(kwargs["state"], ExecutionState)
        if kwargs["checkpoint_id"] == "step_2":
            return {"approved": False, "modifications": {"description": "send fewer"}}
        return {"approved": True}

    agent = ExecutorAgent("exec_steps")
    agent.set_checkpoint_callback(review)
    steps = [
        {"id": 1, "description": "read the orders", "critical": False},
        {"id": 2, "description": "send the invoices", "critical": True},
        {"id": 3, "description": "archive", "critical": True},
    ]
    result = await agent.execute_task("Bill the customers", {"steps": steps, "month": "May"})
    assert seen == ["plan_review", "step_2", "step_3"]
    assert result["status"] == "completed" and result["steps_completed"] == 3
    assert result["summary"] == "Task completed successfully"
    assert [r["step_id"] for r in result["results"]] == [1, 2, 3]
    assert len(agent.api_call_history) == 3  # one model call per step
    plan = agent.intermediate_outputs["plan"]  # the reviewer's change applied after the fact
    assert plan["steps"][1]["description"] == "send fewer"
    assert steps[1]["description"] == "send the invoices"  # the caller's list is not mutated
    assert any("step 2 was not approved" in line for line in agent.decision_trace)
    assert agent.intermediate_outputs["results"][2]["step_id"] == 3

    for bad, field in (
        ([], "context.steps"),
        ([{"id": 1}], "context.steps[0].description"),
        ([{"id": 1, "description": "a"}, {"id": 1, "description": "b"}], "context.steps[1].id"),
        ([{"id": 1, "description": "a", "critical": "yes"}], "context.steps[0].critical"),
    ):
        fresh = ExecutorAgent("exec_bad")
        with pytest.raises(InvalidInput) as raised:
            await fresh.execute_task("t", {"steps": bad})
        assert raised.value.field == field
        assert fresh.api_call_history == []


async def test_server_module_globals_read_the_servers_store(database_env: Any) -> None:
    """``saferun.api.server.orchestrator`` / ``.x402`` / ``active_*`` / ``approval_waiters``: the original's
    module globals, reading the same store the server serves (a script's workflows appear in the server)."""
    from saferun.api import seed_globals, server
    from saferun.core.checkpoints.capture import CheckpointManager
    from saferun.core.state_machine.models import CheckpointConfig, WorkflowConfig

    seed_globals.reset()
    orch = server.orchestrator
    assert server.orchestrator is orch and orch.x402_integration is server.x402
    assert isinstance(server.checkpoint_manager, CheckpointManager)
    assert dict(server.active_executors) == {} and len(server.approval_waiters) == 0
    config = WorkflowConfig(
        name="wf",
        description="d",
        checkpoints=[CheckpointConfig(name="a", description="a")],
        escrow_amount=10,
        poster_id="poster",
        executor_id="exec",
        supervisor_id="sup",
    )
    wid = orch.initialize_workflow(config).workflow_id
    assert orch.start_execution(wid) is True
    snap = await orch.create_checkpoint(wid, ExecutionState(checkpoint_id="a"))
    request = orch.request_approval(wid, snap.snapshot_id, "ok?", {})
    assert server.active_executors[wid] == "exec" and server.active_supervisors[wid] == "sup"
    assert server.active_monitors[wid] == f"monitor_{wid}"
    assert list(server.approval_waiters) == [request.request_id]
    assert orch.fail_workflow(wid, "stopped") is True
    assert wid not in server.active_executors and len(server.approval_waiters) == 0
    with pytest.raises(AttributeError):
        server.no_such_global  # noqa: B018
    seed_globals.reset()


async def test_seed_rollback_steps_the_index_back_and_pays_each_milestone_once(database_env: Any) -> None:
    """The original's table: approve checkpoint 0, reject 1, complete the rollback -> index 0; the caller
    then re-creates and re-approves checkpoint 0 (its milestone is not paid again) and goes on to the end."""
    from saferun.api.x402.client import X402Integration
    from saferun.core.state_machine.models import (
        ApprovalDecision,
        ApprovalResponse,
        CheckpointConfig,
        WorkflowConfig,
        WorkflowState,
    )
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    orch = WorkflowOrchestrator(x402_integration=X402Integration())
    config = WorkflowConfig(
        name="wf",
        description="d",
        checkpoints=[CheckpointConfig(name=n, description=n) for n in ("a", "b")],
        escrow_amount=100,
        poster_id="poster",
        executor_id="exec",
    )
    wid = orch.initialize_workflow(config).workflow_id
    assert orch.start_execution(wid) is True

    async def decide(decision: ApprovalDecision) -> str:
        snap = await orch.create_checkpoint(wid, ExecutionState(checkpoint_id="x", parameters={"n": 1}))
        assert snap is not None
        assert orch.request_approval(wid, snap.snapshot_id, "s", {}) is not None
        mods = {"n": 2} if decision == ApprovalDecision.MODIFIED else None
        response = ApprovalResponse(
            request_id="r", decision=decision, rationale="why", approved_by="sup", modifications=mods
        )
        assert orch.submit_approval(wid, response) is True
        return snap.checkpoint_id

    ids = [cp.checkpoint_id for cp in config.checkpoints]
    assert await decide(ApprovalDecision.APPROVED) == ids[0]
    assert orch.get_workflow(wid).current_checkpoint_index == 1
    assert await decide(ApprovalDecision.REJECTED) == ids[1]
    assert orch.get_workflow(wid).current_checkpoint_index == 1  # a rejection leaves it alone
    assert orch.complete_rollback(wid, success=True) is True
    wf = orch.get_workflow(wid)
    assert (wf.current_state, wf.current_checkpoint_index) == (WorkflowState.EXECUTING, 0)
    paid_once = orch.escrow_position(wid).released
    assert paid_once == 50_000_000  # checkpoint 0's milestone: half of 100

    assert await decide(ApprovalDecision.MODIFIED) == ids[0]  # MODIFIED leaves the index alone
    assert orch.get_workflow(wid).current_checkpoint_index == 0
    assert await decide(ApprovalDecision.APPROVED) == ids[0]  # checkpoint 0 again, as the original did
    assert orch.escrow_position(wid).released == paid_once  # ...and its milestone is not paid twice
    assert orch.get_workflow(wid).current_checkpoint_index == 1
    assert await decide(ApprovalDecision.APPROVED) == ids[1]
    wf = orch.get_workflow(wid)
    assert (wf.current_state, wf.current_checkpoint_index) == (WorkflowState.SETTLING, 2)
    assert orch.complete_workflow(wid) is True
    pos = orch.escrow_position(wid)
    assert (pos.released, pos.refunded, pos.held) == (100_000_000, 0, 0) and pos.invariant_holds()
