"""Saga rollback: compensations in reverse, each once, retried, durable across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from saferun.core.rollback.reconciliation import CompensationRegistry, RetryPolicy
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import CompensationError, NotFound
from saferun.storage.database import Database
from tests.helpers import decide, pause, started

FAST = RetryPolicy(attempts=3, initial_delay=0.001, max_delay=0.002)


def orchestrator(
    db: Database, calls: list[tuple[str, dict]], flaky: dict[str, int] | None = None
) -> WorkflowOrchestrator:
    reg = CompensationRegistry()
    flaky = flaky if flaky is not None else {}

    def make(name: str):  # type: ignore[no-untyped-def]
        def undo(**args: object) -> None:
            if flaky.get(name, 0) > 0:
                flaky[name] -= 1
                raise ConnectionError(f"{name} endpoint unavailable")
            calls.append((name, args))

        return undo

    for name in ("cancel_order", "delete_records", "unbook_room"):
        reg.register(name, make(name))
    return WorkflowOrchestrator(database=db, registry=reg, retry=FAST)


async def test_rejection_compensates_newer_steps_in_reverse_and_resumes(db: Database) -> None:
    calls: list[tuple[str, dict]] = []
    orch = orchestrator(db, calls)
    wf = started(orch)
    orch.register_step(wf, "book room", "unbook_room", {"room": "A1"})
    decide(orch, await pause(orch, wf, "cp1", parameters={"n": 1}), "APPROVED")
    orch.register_step(wf, "write records", "delete_records", {"ids": [1, 2]})
    orch.register_step(wf, "place order", "cancel_order", {"order_id": "o-9"})
    decide(orch, await pause(orch, wf, "cp2"), "REJECTED")
    assert orch.get_workflow(wf).current_state.value == "rolling_back"

    report = await orch.arollback(wf)
    assert report.succeeded and report.final_state == "executing"
    # only the steps after the last approval, newest first; the approved booking stays
    assert calls == [("cancel_order", {"order_id": "o-9"}), ("delete_records", {"ids": [1, 2]})]
    assert report.restored_checkpoint_id == "cp1"
    restored = orch.latest_approved_state(wf)
    assert restored is not None and restored.parameters == {"n": 1}
    statuses = {s["name"]: s["status"] for s in orch.saga_steps(wf)}
    assert statuses == {
        "book room": "committed",
        "write records": "compensated",
        "place order": "compensated",
    }
    kinds = [e["kind"] for e in orch.audit_events(wf)]
    assert kinds.count("compensation_succeeded") == 2

    # a second rollback call finds nothing to do: each compensation ran once
    await pause(orch, wf, "cp2")
    assert calls == [("cancel_order", {"order_id": "o-9"}), ("delete_records", {"ids": [1, 2]})]


async def test_a_flaky_compensation_is_retried_with_backoff(db: Database) -> None:
    calls: list[tuple[str, dict]] = []
    orch = orchestrator(db, calls, flaky={"cancel_order": 2})
    wf = started(orch)
    orch.register_step(wf, "place order", "cancel_order", {"order_id": "o-1"})
    decide(orch, await pause(orch, wf), "REJECTED")
    report = await orch.arollback(wf)
    assert report.succeeded and calls == [("cancel_order", {"order_id": "o-1"})]
    assert orch.saga_steps(wf)[0]["attempts"] == 1  # one claim, three tries inside it


async def test_a_compensation_that_keeps_failing_fails_the_workflow_naming_it(db: Database) -> None:
    calls: list[tuple[str, dict]] = []
    orch = orchestrator(db, calls, flaky={"delete_records": 99})
    wf = started(orch)
    orch.register_step(wf, "write records", "delete_records", {"ids": [7]})
    orch.register_step(wf, "place order", "cancel_order", {"order_id": "o-2"})
    decide(orch, await pause(orch, wf), "REJECTED")
    report = await orch.arollback(wf)
    assert report.failed == "write records" and report.final_state == "failed"
    wf_row = orch.get_workflow(wf)
    assert wf_row.current_state.value == "failed" and "delete_records" in (wf_row.error_message or "")
    assert "endpoint unavailable" in (wf_row.error_message or "")
    assert orch.escrow_position(wf).held == 0  # everything refunded


async def test_unknown_compensation_names_change_nothing(db: Database) -> None:
    orch = orchestrator(db, [])
    wf = started(orch)
    orch.register_step(wf, "launch rocket", "unlaunch_rocket", {})
    decide(orch, await pause(orch, wf), "REJECTED")
    with pytest.raises(CompensationError) as info:
        await orch.arollback(wf)
    assert "unlaunch_rocket" in info.value.message
    assert orch.get_workflow(wf).current_state.value == "rolling_back"


def test_a_rollback_started_by_a_dead_agent_is_finished_by_another_process(tmp_path: Path) -> None:
    """The agent registers steps and dies; a new process that imports the compensations rolls back."""
    db_url = f"sqlite:///{tmp_path / 'saferun.db'}"
    log = tmp_path / "undo.log"
    (tmp_path / "shop_compensations.py").write_text(
        textwrap.dedent(f"""
        from saferun import compensation

        @compensation("cancel_order")
        def cancel_order(order_id):
            with open({str(log)!r}, "a") as f:
                f.write(order_id + "\\n")
    """)
    )
    agent = textwrap.dedent("""
        import asyncio, os, sys
        from saferun import WorkflowOrchestrator, ExecutionState
        from tests.helpers import make_config, started
        orch = WorkflowOrchestrator()
        wf = started(orch, make_config())
        orch.register_step(wf, "order 1", "cancel_order", {"order_id": "o-1"})
        orch.register_step(wf, "order 2", "cancel_order", {"order_id": "o-2"})
        snap = asyncio.run(orch.create_checkpoint(wf, ExecutionState(checkpoint_id="cp1")))
        req = orch.request_approval(wf, snap.snapshot_id, "two orders placed", {})
        print(wf, req.request_id, flush=True)
        os._exit(0)  # the agent dies while waiting for its decision
    """)
    env = {
        "DATABASE_URL": db_url,
        "PYTHONPATH": f"{tmp_path}:{Path.cwd()}",
        "PATH": "/usr/bin:/bin",
        "SAFERUN_COMPENSATIONS": "shop_compensations",
        "SAFERUN_ROLLBACK_GRACE_SECONDS": "0",
    }
    out = subprocess.run([sys.executable, "-c", agent], env=env, capture_output=True, text=True, check=True)
    wf, req = out.stdout.split()
    reviewer = textwrap.dedent(f"""
        from saferun import WorkflowOrchestrator, ApprovalResponse
        orch = WorkflowOrchestrator()
        orch.submit_approval({wf!r}, ApprovalResponse(request_id={req!r}, decision="REJECTED",
                             rationale="wrong shop", approved_by="reviewer"))
        report = orch.sweep()
        print(orch.get_workflow({wf!r}).current_state.value, report.rolled_back)
    """)
    out = subprocess.run(
        [sys.executable, "-c", reviewer], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[0] == "executing"
    assert log.read_text().split() == ["o-2", "o-1"]


async def test_a_step_cannot_be_claimed_through_another_workflow(db: Database) -> None:
    """Issue 9, finding 4: B's step taken through A's URL would make B's agent skip its compensation."""
    calls: list[tuple[str, dict]] = []
    orch = orchestrator(db, calls)
    a, b = started(orch), started(orch)
    for wf in (a, b):
        orch.register_step(wf, "place order", "cancel_order", {"order_id": wf})
        decide(orch, await pause(orch, wf, "cp1"), "REJECTED")
    b_step = orch.saga_steps(b)[0]["step_id"]
    with pytest.raises(NotFound):  # exactly like a step that does not exist
        orch.claim_compensation(a, b_step, "intruder")
    with pytest.raises(NotFound):
        orch.finish_compensation(a, b_step, True, actor="intruder")
    assert orch.saga_steps(b)[0]["status"] == "pending"
    report = await orch.arollback(b)
    assert report.succeeded and calls == [("cancel_order", {"order_id": b})]
