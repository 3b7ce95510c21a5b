"""The HTTP clients and ``RemoteOrchestrator`` against a real server (uvicorn on a loopback port).

The agent code is the same as in ``test_supervised.py``; only the orchestrator differs. Reviewers decide
through the sync client from another thread, as a person at the dashboard would from another process.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from saferun import ApprovalRejected, CompensationRegistry, ExecutionState, supervised
from saferun.api.server import create_app
from saferun.client import (
    AsyncSafeRunClient,
    RemoteOrchestrator,
    SafeRunClient,
    ServerError,
    ServerUnreachable,
)
from saferun.core.identity import IdentityService
from saferun.core.rollback.reconciliation import RetryPolicy
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.states import WorkflowState
from saferun.errors import (
    ApprovalRequestNotFound,
    CompensationError,
    DecisionConflict,
    Forbidden,
    InvalidInput,
    InvalidTransition,
    PayloadTooLarge,
    Unauthorized,
    WorkflowNotFound,
)
from saferun.storage.database import Database
from tests.helpers import decide, make_config
from tests.serving import serve_app

FAST = RetryPolicy(attempts=3, initial_delay=0.001, max_delay=0.005)


@contextmanager
def serving(db: Database, **app_options: Any) -> Iterator[str]:
    """A real SafeRun server on a free loopback port, in a thread; yields its base URL once healthy."""
    app = create_app(WorkflowOrchestrator(database=db), **app_options)
    with serve_app(app, health_path="/api/health") as url:
        yield url


@pytest.fixture
def server(db: Database) -> Iterator[str]:
    with serving(db, auth="open") as url:
        yield url


@pytest.fixture
def reviewer_client(server: str) -> Iterator[SafeRunClient]:
    with SafeRunClient(server) as client:
        yield client


def review(client: SafeRunClient, workflow_id: str, plan: list[tuple[str, dict | None]]) -> list[str]:
    """Decide the workflow's requests in order, as the assigned supervisor ``reviewer`` (sync, blocking)."""
    decided: list[str] = []
    for decision, mods in plan:
        while not (pending := client.pending(workflow_id)["pending_approvals"]):
            time.sleep(0.005)
        request_id = pending[0]["request_id"]
        client.submit_decision(
            request_id, decision, approved_by="reviewer", rationale=f"{decision} by test", modifications=mods
        )
        decided.append(request_id)
    return decided


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


# ---------------------------------------------------------------------------------------------- supervised()
async def test_the_pizza_order_is_corrected_by_a_remote_reviewer(
    server: str, reviewer_client: SafeRunClient
) -> None:
    config = make_config(n=1, escrow="12.00")
    ordered: list[int] = []

    async def agent(orch: RemoteOrchestrator) -> None:
        async with supervised(config, orch) as run:
            decision = await run.checkpoint(
                "Review 1", parameters={"pizza_count": 100}, summary="Order 100 pizzas for $1,200?"
            )
            assert decision.decision == "MODIFIED" and decision.modifications == {"pizza_count": 10}
            assert decision.approved_by == "reviewer" and decision.snapshot.checkpoint_id == "cp1"
            ordered.append(decision.parameters["pizza_count"])
            run.result["ordered"] = decision.parameters["pizza_count"]

    async with RemoteOrchestrator(server) as orch:
        await asyncio.gather(
            agent(orch),
            in_thread(review, reviewer_client, config.workflow_id, [("MODIFIED", {"pizza_count": 10})]),
        )
        wf = orch.get_workflow(config.workflow_id)
    assert ordered == [10]
    assert wf.current_state == WorkflowState.COMPLETED and wf.config == config
    assert reviewer_client.ledger(config.workflow_id)["escrow"] == {
        "locked": "12.00",
        "released": "12.00",
        "refunded": "0.00",
        "held": "0.00",
    }


async def test_rejection_compensates_in_the_agent_process_and_restores_the_approved_state(
    server: str, reviewer_client: SafeRunClient
) -> None:
    reg = CompensationRegistry()
    undone: list[tuple[str, str]] = []
    reg.register("cancel_order", lambda order_id: undone.append((threading.current_thread().name, order_id)))
    config = make_config(n=2)
    caught: list[ApprovalRejected] = []
    state_after: list[WorkflowState] = []

    async def agent(orch: RemoteOrchestrator) -> None:
        async with supervised(config, orch) as run:
            await run.checkpoint("Review 1", parameters={"plan": "A"})
            await run.step("order", compensation="cancel_order", args={"order_id": "o-7"})
            try:
                await run.checkpoint("Review 2", parameters={"plan": "B"})
            except ApprovalRejected as exc:
                caught.append(exc)
                state_after.append(orch.get_workflow(config.workflow_id).current_state)
                await run.checkpoint("Review 2", parameters={"plan": "B2"})

    plan = [("APPROVED", None), ("REJECTED", None), ("APPROVED", None)]
    async with RemoteOrchestrator(server, registry=reg, retry=FAST) as orch:
        await asyncio.gather(agent(orch), in_thread(review, reviewer_client, config.workflow_id, plan))
    assert undone == [(threading.current_thread().name, "o-7")]  # ran here, in the agent's thread
    exc = caught[0]
    assert exc.rejected_checkpoint_id == "cp2" and exc.last_approved_checkpoint == "cp1"
    assert isinstance(exc.restored_state, ExecutionState) and exc.restored_state.parameters == {"plan": "A"}
    assert exc.workflow_state == "executing" and state_after == [WorkflowState.EXECUTING]
    assert reviewer_client.get_workflow(config.workflow_id)["status"] == "completed"
    kinds = [e["kind"] for e in reviewer_client.audit(config.workflow_id)["events"]]
    assert "compensation_succeeded" in kinds
    steps = reviewer_client.steps(config.workflow_id)["steps"]
    assert [s["status"] for s in steps] == ["compensated"]


async def test_an_exception_in_the_block_fails_the_workflow_and_refunds(server: str) -> None:
    config = make_config(n=2)
    async with RemoteOrchestrator(server) as orch:
        with pytest.raises(RuntimeError):
            async with supervised(config, orch):
                raise RuntimeError("model provider down")
        wf = orch.get_workflow(config.workflow_id)
    assert wf.current_state == WorkflowState.FAILED and "model provider down" in (wf.error_message or "")
    with SafeRunClient(server) as c:
        assert c.ledger(config.workflow_id)["escrow"]["refunded"] == "100.00"


async def test_an_unknown_compensation_refuses_the_rollback_and_changes_nothing(
    server: str, reviewer_client: SafeRunClient
) -> None:
    config = make_config(n=2)
    wf = config.workflow_id
    async with RemoteOrchestrator(server, registry=CompensationRegistry()) as orch:
        orch.initialize_workflow(config)
        assert orch.start_execution(wf).current_state == WorkflowState.EXECUTING
        _, req = await orch.pause(wf, ExecutionState(checkpoint_id="cp1"), "first")
        assert req is not None
        reviewer_client.submit_decision(req.request_id, "APPROVED", approved_by="reviewer")
        await orch.wait_for_decision(req.request_id)
        step_id = orch.register_step(wf, "order", "nowhere_registered", {"order_id": "o-1"})
        _, req = await orch.pause(wf, ExecutionState(checkpoint_id="cp2"), "second")
        assert req is not None
        reviewer_client.submit_decision(req.request_id, "REJECTED", approved_by="reviewer", rationale="no")
        assert (await orch.wait_for_decision(req.request_id)).decision == "REJECTED"
        with pytest.raises(CompensationError) as info:
            await orch.arollback(wf)
        assert info.value.fields["missing"] == ["nowhere_registered"]
        assert orch.get_workflow(wf).current_state == WorkflowState.ROLLING_BACK
        assert [s["step_id"] for s in reviewer_client.steps_to_undo(wf)["steps"]] == [step_id]
        # a process that knows the compensation finishes it
        reg = CompensationRegistry()
        reg.register("nowhere_registered", lambda order_id: None)
        async with RemoteOrchestrator(server, registry=reg) as other:
            report = await other.arollback(wf)
        assert report.succeeded and report.compensated == ["order"] and report.final_state == "executing"
        assert report.restored_checkpoint_id == "cp1"


async def test_remote_models_match_the_local_ones(server: str, db: Database) -> None:
    config = make_config(n=2)
    wf = config.workflow_id
    local = WorkflowOrchestrator(database=db)
    async with RemoteOrchestrator(server) as orch:
        orch.initialize_workflow(config)
        orch.start_execution(wf)
        state = ExecutionState(checkpoint_id="cp1", agent_memory={"k": [1, 2]}, parameters={"n": 1})
        snap, req = await orch.pause(wf, state, "look", {"c": 1}, recommendation="approve", confidence=0.9)
        assert req is not None and req.recommendation == "approve" and req.confidence == 0.9
        # the request as opened carries no review digest (a single read computes it): compare without it,
        # then the single reads, digest included
        assert req == local.get_approval_request(req.request_id).model_copy(update={"review_digest": None})
        assert orch.get_approval_request(req.request_id) == local.get_approval_request(req.request_id)
        assert snap.model_dump(exclude={"execution_state"}) == local.list_snapshots(wf)[0].model_dump(
            exclude={"execution_state"}
        )
        assert orch.get_snapshot_state(snap.snapshot_id) == state
        fresh = RemoteOrchestrator(server)  # knows nothing: config and times come from the server
        try:
            remote_wf, local_wf = fresh.get_workflow(wf), local.get_workflow(wf)
            ignore = {"updated_at", "created_at"}
            assert remote_wf.model_dump(exclude=ignore) == local_wf.model_dump(exclude=ignore)
            assert abs((remote_wf.created_at - local_wf.created_at).total_seconds()) < 1
            assert fresh.get_snapshot_state(snap.snapshot_id) == state
        finally:
            fresh.close()
        assert orch.latest_approved_state(wf) is None
        with pytest.raises(TimeoutError):
            await orch.wait_for_decision(req.request_id, timeout=0.05)


# ---------------------------------------------------------------------------------------------- errors
async def test_error_answers_become_the_saferun_errors(server: str) -> None:
    with SafeRunClient(server) as c:
        with pytest.raises(WorkflowNotFound) as missing:
            c.get_workflow("wf_missing")
        assert missing.value.workflow_id == "wf_missing" and missing.value.http_status == 404
        assert isinstance(missing.value.__cause__, httpx.HTTPStatusError)
        with pytest.raises(InvalidInput) as bad:
            c.create_workflow(
                name="x", checkpoint_names=["a"], escrow_amount="ten", poster_id="p", executor_id="e"
            )
        assert bad.value.field == "escrow_amount"
        created = c.create_workflow(make_config(n=1, workflow_id="wf_err"))
        assert created["workflow_id"] == "wf_err" and created["status"] == "initialized"
        c.start("wf_err")
        out = c.checkpoint("wf_err", ExecutionState(checkpoint_id="cp1"), summary="ok?")
        request_id = out["approval_request_id"]
        with pytest.raises(InvalidTransition) as wrong:
            c.settle("wf_err")
        assert wrong.value.state == "awaiting_approval"
        c.submit_decision(request_id, "APPROVED", approved_by="reviewer")
        with pytest.raises(DecisionConflict) as twice:
            c.submit_decision(request_id, "REJECTED", approved_by="reviewer", rationale="too late")
        assert twice.value.request_id == request_id and twice.value.status == "decided"
        c.create_workflow(make_config(n=1, workflow_id="wf_2"))
        c.start("wf_2")
        rid = c.checkpoint("wf_2", {"checkpoint_id": "cp1", "parameters": {"n": 1}}, summary="s")[
            "approval_request_id"
        ]
        with pytest.raises(Forbidden) as four_eyes:
            c.submit_decision(rid, "APPROVED", approved_by="poster")
        assert four_eyes.value.rule == "four_eyes"

    async with AsyncSafeRunClient(server) as ac:
        with pytest.raises(ApprovalRequestNotFound) as no_req:
            await ac.get_approval("req_missing")
        assert no_req.value.request_id == "req_missing"
        with pytest.raises(InvalidInput) as bad_mod:
            await ac.submit_decision(rid, "MODIFIED", approved_by="reviewer", modifications={"nope": 1})
        assert bad_mod.value.field.startswith("modifications")
        assert (await ac.health())["status"] == "healthy"
        assert (await ac.stats())["total_workflows"] == 2
        listing = await ac.list_workflows(status="awaiting_approval")
        assert [w["workflow_id"] for w in listing["workflows"]] == ["wf_2"]


async def test_oversized_bodies_are_payload_too_large(db: Database) -> None:
    with serving(db, auth="open", max_body_bytes=2000) as url, SafeRunClient(url) as c:
        too_large = make_config(n=1, description="x" * 5000)
        with pytest.raises(PayloadTooLarge):
            c.create_workflow(too_large)


async def test_keys_mode_authenticates_and_names_the_refusing_rule(db: Database) -> None:
    ids = IdentityService(db)
    _, poster = ids.create_identity_with_key("poster", roles=["poster"])
    _, agent = ids.create_identity_with_key("agent", roles=["executor"])
    _, reviewer = ids.create_identity_with_key("reviewer", roles=["supervisor"])
    config = make_config(n=1)
    wf = config.workflow_id
    with serving(db, auth="keys") as url:
        with SafeRunClient(url, api_key="sr_key_wrong") as wrong, pytest.raises(Unauthorized):
            wrong.list_workflows()
        with SafeRunClient(url) as nobody, pytest.raises(Unauthorized):
            nobody.get_workflow(wf)
        with (
            SafeRunClient(url, api_key=poster.api_key) as p,
            SafeRunClient(url, api_key=reviewer.api_key) as r,
        ):
            p.create_workflow(config)
            async with AsyncSafeRunClient(url, api_key=agent.api_key) as a:
                with pytest.raises(Forbidden) as not_executor:
                    p.start(wf)
                assert not_executor.value.rule == "executor_is_caller"
                assert (await a.start(wf))["status"] == "executing"
                out = await a.checkpoint(wf, ExecutionState(checkpoint_id="cp1"), summary="s")
                request_id = out["approval_request_id"]
                with pytest.raises(Forbidden) as refused:
                    p.submit_decision(request_id, "APPROVED")
                assert refused.value.rule == "four_eyes" and "four_eyes" in refused.value.message
                r.submit_decision(request_id, "APPROVED")  # approved_by is the caller
                answer = await a.get_approval(request_id)
                assert answer["decision"]["approved_by"] == "reviewer"


async def test_supervised_runs_with_an_api_key(db: Database) -> None:
    ids = IdentityService(db)
    _, agent = ids.create_identity_with_key("agent", roles=["poster", "executor"])
    _, reviewer = ids.create_identity_with_key("reviewer", roles=["supervisor"])
    config = make_config(n=1).model_copy(update={"poster_id": "agent"})
    with serving(db, auth="keys") as url, SafeRunClient(url, api_key=reviewer.api_key) as r:

        def decide() -> None:
            while not (pending := r.pending(config.workflow_id)["pending_approvals"]):
                time.sleep(0.005)
            r.submit_decision(pending[0]["request_id"], "APPROVED")

        async def run_agent() -> str:
            async with RemoteOrchestrator(url, api_key=agent.api_key) as orch:
                async with supervised(config, orch) as run:
                    decision = await run.checkpoint(parameters={"go": True})
                return orch.get_workflow(config.workflow_id).status if decision.approved else ""

        status, _ = await asyncio.gather(run_agent(), in_thread(decide))
    assert status == "completed"


# ---------------------------------------------------------------------------------------------- long poll
async def test_a_long_poll_returns_with_the_decision_made_in_another_thread(
    server: str, reviewer_client: SafeRunClient
) -> None:
    config = make_config(n=1)
    async with RemoteOrchestrator(server) as orch:
        orch.initialize_workflow(config)
        orch.start_execution(config.workflow_id)
        _, req = await orch.pause(config.workflow_id, ExecutionState(checkpoint_id="cp1"), "decide me")
    assert req is not None
    async with AsyncSafeRunClient(server) as ac:
        short = await ac.get_approval(req.request_id, wait=0.05)
        assert short["status"] == "pending" and short["decision"] is None
        poll = asyncio.create_task(ac.get_approval(req.request_id, wait=30))
        await asyncio.sleep(0.2)
        assert not poll.done()  # it is waiting for the decision
        await in_thread(
            lambda: reviewer_client.submit_decision(req.request_id, "APPROVED", approved_by="reviewer")
        )
        answer = await poll
    assert answer["status"] == "decided" and answer["decision"]["decision"] == "APPROVED"


def test_the_sync_long_poll_wakes_on_a_decision_from_another_thread(
    server: str, reviewer_client: SafeRunClient
) -> None:
    c = reviewer_client
    c.create_workflow(make_config(n=1, workflow_id="wf_lp"))
    c.start("wf_lp")
    request_id = c.checkpoint("wf_lp", {"checkpoint_id": "cp1"}, summary="s")["approval_request_id"]
    results: list[dict[str, Any]] = []
    with SafeRunClient(server) as agent:
        waiter = threading.Thread(target=lambda: results.append(agent.get_approval(request_id, wait=30)))
        waiter.start()
        time.sleep(0.2)
        assert waiter.is_alive()
        c.submit_decision(request_id, "MODIFIED", approved_by="reviewer", modifications={"x": 1})
        waiter.join(timeout=60)
    assert results[0]["decision"]["decision"] == "MODIFIED"
    assert results[0]["decision"]["modifications"] == {"x": 1}


# ---------------------------------------------------------------------------------------------- transport
def test_artifact_bytes_verify_and_parse(server: str, reviewer_client: SafeRunClient) -> None:
    c = reviewer_client
    c.create_workflow(make_config(n=1, workflow_id="wf_art"))
    c.start("wf_art")
    out = c.checkpoint("wf_art", {"checkpoint_id": "cp1", "agent_memory": {"m": "x" * 100}}, summary="s")
    body = c.artifact(out["artifact_uri"])
    assert json.loads(body)["agent_memory"] == {"m": "x" * 100}
    assert c.artifact(out["artifact_uri"].rsplit(":", 1)[1]) == body


def test_gets_are_retried_on_5xx_and_posts_are_not() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) < 3 or request.method == "POST":
            return httpx.Response(503, text="upstream restarting")
        return httpx.Response(200, json={"status": "healthy", "service": "SafeRun X402", "version": "x"})

    with SafeRunClient("http://saferun.test", retry=FAST, transport=httpx.MockTransport(handler)) as c:
        assert c.health()["status"] == "healthy" and seen == ["GET"] * 3
        seen.clear()
        with pytest.raises(ServerError) as info:
            c.start("wf_1")
        assert seen == ["POST"] and info.value.fields["status_code"] == 503


def test_an_unreachable_server_is_a_clear_error_after_the_retries() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    attempts: list[int] = []

    def count(request: httpx.Request) -> None:
        attempts.append(1)

    with SafeRunClient(f"http://127.0.0.1:{port}", retry=FAST, timeout=2) as c:
        c._http.event_hooks = {"request": [count], "response": []}
        with pytest.raises(ServerUnreachable) as info:
            c.get_workflow("wf_1")
        assert "could not reach the SafeRun server" in info.value.message
        assert isinstance(info.value.__cause__, httpx.ConnectError) and len(attempts) == FAST.attempts
        attempts.clear()
        with pytest.raises(ServerUnreachable):
            c.fail("wf_1", "boom")
        assert len(attempts) == 1


async def test_a_monitor_beside_a_remote_agent_adds_alerts_over_http(db: Database) -> None:
    """MonitorAgent works with RemoteOrchestrator: it finds the pending request and adds its alerts; only
    the workflow's agent (or an admin) may, and a decided request takes none."""
    from saferun.agents.monitor.agent import MonitorAgent
    from saferun.domain.monitor_rules import ConfidenceRule, MonitorConfig

    service = IdentityService(db)
    _, agent_key = service.create_identity_with_key("agent", "Agent", ["executor"])
    _, poster_key = service.create_identity_with_key("poster", "Pat", ["poster"])
    config = make_config(n=1)
    wf = config.workflow_id
    local = WorkflowOrchestrator(database=db)
    local.initialize_workflow(config)
    local.start_execution(wf)
    _, req = await local.pause(wf, ExecutionState(checkpoint_id="cp1"), "look")
    assert req is not None
    with serving(db, auth="keys") as url:
        async with RemoteOrchestrator(url, api_key=agent_key.api_key) as remote:
            assert [p.request_id for p in remote.pending_approvals(wf)] == [req.request_id]
            monitor = MonitorAgent(
                MonitorConfig(confidence=ConfidenceRule(min_confidence=0.8)), orchestrator=remote
            )
            low = ExecutionState(checkpoint_id="cp1", confidence_scores={"plan": 0.4})
            seen = await monitor.observe(wf, low)
            assert seen.action == "alerts_added" and seen.request is not None
            assert [a["rule"] for a in seen.request.alerts] == ["low_confidence"]
            again = await monitor.observe(wf, low)  # the same finding is not added twice
            assert again.request is not None and len(again.request.alerts) == 1
        with SafeRunClient(url, api_key=poster_key.api_key) as poster:
            with pytest.raises(Forbidden):
                poster.add_alerts(req.request_id, [{"rule": "mine", "message": "let me in"}])
            with pytest.raises(InvalidInput):
                poster.add_alerts(req.request_id, [])
        decide(local, req.request_id, "APPROVED")
        with SafeRunClient(url, api_key=agent_key.api_key) as agent, pytest.raises(DecisionConflict):
            agent.add_alerts(req.request_id, [{"rule": "late", "message": "too late"}])
    assert [a["rule"] for a in local.get_approval_request(req.request_id).alerts] == ["low_confidence"]


async def test_a_remote_agent_that_restarts_waits_on_its_open_request(server: str, db: Database) -> None:
    """The agent process that opened the request is gone; the new one attaches over HTTP and its
    checkpoint call waits on that request instead of opening another."""
    from saferun import attach

    config = make_config(n=1)
    wf = config.workflow_id
    local = WorkflowOrchestrator(database=db)
    local.initialize_workflow(config)
    local.start_execution(wf)
    _, req = await local.pause(wf, ExecutionState(checkpoint_id="cp1", parameters={"n": 5}), "look")
    assert req is not None
    async with RemoteOrchestrator(server) as remote:
        run = attach(wf, remote)
        async with run:
            waiting = asyncio.ensure_future(run.checkpoint("cp1", parameters={"n": 5}))
            while not any("resumed waiting" in t for t in run.trace):
                assert not waiting.done(), waiting.exception()
                await asyncio.sleep(0.01)
            decide(local, req.request_id, "MODIFIED", modifications={"n": 2})
            decision = await waiting
    assert decision.request_id == req.request_id and decision.parameters == {"n": 2}
    assert [r.request_id for r, _ in local.approval_history(wf)] == [req.request_id]


async def test_the_clients_decide_several_requests_in_one_call(server: str) -> None:
    with SafeRunClient(server) as c:
        ids = []
        for i in range(2):
            c.create_workflow(make_config(n=1, workflow_id=f"wf_batch_{i}", supervisor_id="reviewer"))
            c.start(f"wf_batch_{i}")
            out = c.checkpoint(f"wf_batch_{i}", ExecutionState(checkpoint_id="cp1"), summary="ok?")
            ids.append(out["approval_request_id"])
        answer = c.decide_batch(ids, "APPROVED", approved_by="reviewer")
        assert answer["decided"] == 2 and [r["outcome"] for r in answer["results"]] == ["decided"] * 2
    async with AsyncSafeRunClient(server) as ac:
        again = await ac.decide_batch(ids, "REJECTED", approved_by="reviewer", rationale="late")
        assert again["decided"] == 0
        assert {r["outcome"] for r in again["results"]} == {"already_decided"}


def test_endpoint_groups_without_a_transport_cannot_be_instantiated() -> None:
    """``Sends`` is abstract: a client class that forgot its transport fails when built, not later with a
    NotImplementedError on its first call."""
    from saferun.client.workflows import WorkflowMethods

    with pytest.raises(TypeError, match="abstract"):
        WorkflowMethods()  # type: ignore[abstract]
