"""Saga rollback: compensations in reverse, each once, retried, durable across processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from saferun.core.rollback.reconciliation import CompensationRegistry, RetryPolicy, compensation_key
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import ClaimLost, CompensationError, NotFound
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


async def test_a_taken_over_claim_cannot_record_its_result(db: Database) -> None:
    """Issue 10, finding 6: the claim generation is a fencing token. A runner presumed dead (its claim
    stale) that wakes up after a takeover has its result refused; the new holder's result stands."""
    orch = orchestrator(db, [])
    wf = started(orch)
    orch.register_step(wf, "place order", "cancel_order", {"order_id": "o-1"})
    decide(orch, await pause(orch, wf), "REJECTED")
    step = orch.saga_steps(wf)[0]["step_id"]
    slow = orch.claim_compensation(wf, step, "slow-runner")
    assert slow == 1
    assert orch.claim_compensation(wf, step, "impatient", stale_claim_seconds=300) is None  # still live
    taker = orch.claim_compensation(wf, step, "taker", stale_claim_seconds=-1)  # i.e. already stale
    assert taker == 2

    with pytest.raises(ClaimLost) as lost:
        orch.finish_compensation(wf, step, False, "the slow runner's late failure", generation=slow)
    assert lost.value.generation == 1 and lost.value.current_generation == 2
    row = orch.saga_steps(wf)[0]
    assert row["status"] == "compensating" and row["claimed_by"] == "taker" and row["last_error"] is None
    assert orch.get_workflow(wf).current_state.value == "rolling_back"  # the late failure failed nothing

    assert orch.finish_compensation(wf, step, True, generation=taker) == "rolling_back"
    with pytest.raises(ClaimLost):  # and once recorded, no stale result overwrites it either
        orch.finish_compensation(wf, step, False, "too late", generation=slow)
    events = [e for e in orch.audit_events(wf) if e["kind"].startswith("compensation_")]
    assert [(e["kind"], e["payload"]["generation"]) for e in events] == [("compensation_succeeded", 2)]
    assert events[0]["payload"]["idempotency_key"] == compensation_key(wf, step)
    assert orch.complete_rollback(wf).final_state == "executing"


async def test_every_run_of_a_compensation_gets_the_same_idempotency_key(db: Database) -> None:
    """A compensation declaring ``idempotency_key`` gets one stable across takeovers, so the outside
    system can drop the repeat of an undo whose first run landed before its process was killed; a
    compensation without that parameter is called as before."""
    keyed: list[tuple[str, str]] = []
    plain: list[str] = []
    reg = CompensationRegistry()

    def refund(payment_id: str, *, idempotency_key: str) -> None:
        keyed.append((payment_id, idempotency_key))

    reg.register("refund", refund)
    reg.register("cancel_order", lambda order_id: plain.append(order_id))
    orch = WorkflowOrchestrator(database=db, registry=reg, retry=FAST)
    wf = started(orch)
    orch.register_step(wf, "order", "cancel_order", {"order_id": "o-1"})
    orch.register_step(wf, "charge", "refund", {"payment_id": "p-1"})
    decide(orch, await pause(orch, wf), "REJECTED")
    charge = next(s["step_id"] for s in orch.saga_steps(wf) if s["name"] == "charge")
    key = compensation_key(wf, charge)

    # a first runner claims the refund, performs it with the step's key... and is killed before recording
    dead = orch.claim_compensation(wf, charge, "killed-runner")
    todo = orch.steps_to_undo(wf)
    assert todo[0]["idempotency_key"] == key
    refund("p-1", idempotency_key=todo[0]["idempotency_key"])
    # the takeover runs it again with the SAME key (the refund API dedupes it), then the older step
    report = await orch.arollback(wf, stale_claim_seconds=-1)
    assert report.succeeded and report.final_state == "executing"
    assert keyed == [("p-1", key), ("p-1", key)] and len({k for _, k in keyed}) == 1
    assert plain == ["o-1"]
    with pytest.raises(ClaimLost):
        orch.finish_compensation(wf, charge, True, generation=dead)
    assert [s["attempts"] for s in orch.saga_steps(wf)] == [1, 2]


async def test_a_runner_stops_where_another_holds_a_step_and_never_undoes_older_steps_first(
    db: Database,
) -> None:
    """Reverse order holds across runners: a second runner that finds the newest step held by a live
    runner does not skip ahead to older steps; the holder carries on down the list."""
    calls: list[tuple[str, dict]] = []
    orch = orchestrator(db, calls)
    wf = started(orch)
    orch.register_step(wf, "write records", "delete_records", {"ids": [1]})
    orch.register_step(wf, "place order", "cancel_order", {"order_id": "o-1"})
    decide(orch, await pause(orch, wf), "REJECTED")
    newest = orch.steps_to_undo(wf)[0]["step_id"]
    gen = orch.claim_compensation(wf, newest, "other-live-runner")
    report = await orch.arollback(wf)
    assert calls == [] and report.final_state == "rolling_back"
    assert orch.finish_compensation(wf, newest, True, generation=gen) == "rolling_back"
    report = await orch.arollback(wf)
    assert calls == [("delete_records", {"ids": [1]})] and report.final_state == "executing"
