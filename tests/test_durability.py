"""A fresh process sees exactly what the last one left: the pause survives a restart."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from saferun.storage.database import Database


def _env(db: Database) -> dict[str, str]:
    return {
        "DATABASE_URL": db.engine.url.render_as_string(hide_password=False),
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path.cwd()),
    }


def run(code: str, db: Database) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=_env(db), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_paused_agent_resumes_in_a_new_process_with_every_byte_of_its_state(db: Database) -> None:
    first = run(
        """
        import asyncio
        from saferun import supervised, WorkflowOrchestrator, ExecutionState
        from tests.helpers import make_config, started
        orch = WorkflowOrchestrator()
        wf = started(orch, make_config())
        state = ExecutionState(checkpoint_id="cp1", agent_memory={"notes": ["é", "∑", 1.5, None, True],
                               "big": "x" * 200_000}, parameters={"pizza_count": 100},
                               api_calls=[{"endpoint": "/order", "status": 200}])
        snap = asyncio.run(orch.create_checkpoint(wf, state))
        req = orch.request_approval(wf, snap.snapshot_id, "Order 100 pizzas?", {"cost": "1200.00"})
        print(wf, req.request_id)
    """,
        db,
    )
    wf, req = first.split()
    second = run(
        f"""
        from saferun import WorkflowOrchestrator, ApprovalResponse
        orch = WorkflowOrchestrator()
        assert orch.get_workflow({wf!r}).current_state.value == "awaiting_approval"
        orch.submit_approval({wf!r}, ApprovalResponse(request_id={req!r}, decision="MODIFIED",
                             approved_by="reviewer", modifications={{"pizza_count": 10}}))
        print("decided")
    """,
        db,
    )
    assert second == "decided"
    third = run(
        f"""
        import asyncio, json
        from saferun import WorkflowOrchestrator
        orch = WorkflowOrchestrator()
        response = asyncio.run(orch.wait_for_decision({req!r}, timeout=5))
        state = orch.latest_approved_state({wf!r})
        print(json.dumps([response.decision.value, state.parameters, state.agent_memory["notes"],
                          len(state.agent_memory["big"]), orch.verify_audit({wf!r})[1] is None]))
    """,
        db,
    )
    assert json.loads(third) == ["MODIFIED", {"pizza_count": 10}, ["é", "∑", 1.5, None, True], 200000, True]


def test_an_agent_killed_while_waiting_runs_its_code_again_and_waits_on_the_same_request(
    db: Database,
) -> None:
    """The agent process dies mid-pause; a new process runs the same agent code from the top: the
    checkpoint call finds its request still waiting (no second request) and returns the decision."""
    agent = """
        import asyncio, logging, sys
        from saferun import attach, WorkflowOrchestrator
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        orch = WorkflowOrchestrator()
        wf = sys.argv[1] if len(sys.argv) > 1 else None
        async def main(wf):
            run = attach(wf, orch)
            decision = await run.checkpoint("cp1", parameters={"pizza_count": 100}, wait_timeout=WAIT)
            print(decision.decision.value, decision.parameters["pizza_count"], decision.request_id)
        asyncio.run(main(WF))
    """
    wf = run(
        """
        from saferun import WorkflowOrchestrator
        from tests.helpers import make_config, started
        print(started(WorkflowOrchestrator(), make_config()))
    """,
        db,
    )
    first = subprocess.run(  # the first agent process gives up waiting (as if it had been killed)
        [sys.executable, "-c", textwrap.dedent(agent).replace("WAIT", "0.2").replace("WF", repr(wf))],
        env=_env(db),
        capture_output=True,
        text=True,
    )
    assert first.returncode != 0 and "TimeoutError" in first.stderr
    second = subprocess.Popen(  # the agent's code runs again from the top, in a new process
        [sys.executable, "-c", textwrap.dedent(agent).replace("WAIT", "60").replace("WF", repr(wf))],
        env=_env(db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert second.stderr is not None
        for line in second.stderr:  # the new process found the waiting request and waits on it
            if "already waits as" in line:
                break
        pending = run(  # a reviewer decides while the new process waits
            f"""
            from saferun import WorkflowOrchestrator, ApprovalResponse
            orch = WorkflowOrchestrator()
            [req] = orch.pending_approvals({wf!r})
            orch.submit_approval({wf!r}, ApprovalResponse(request_id=req.request_id, decision="MODIFIED",
                                 approved_by="reviewer", modifications={{"pizza_count": 10}}))
            print(req.request_id)
        """,
            db,
        )
        out, err = second.communicate(timeout=120)
    finally:
        second.kill()
    assert second.returncode == 0, err
    assert out.strip() == f"MODIFIED 10 {pending}"  # the request the first process opened, not a new one
    count = run(
        f"""
        from saferun import WorkflowOrchestrator
        print(len(WorkflowOrchestrator().approval_history({wf!r})))
    """,
        db,
    )
    assert count == "1"
