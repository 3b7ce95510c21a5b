"""A fresh process sees exactly what the last one left: the pause survives a restart."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from saferun.storage.database import Database


def run(code: str, db: Database) -> str:
    env = {
        "DATABASE_URL": db.engine.url.render_as_string(hide_password=False),
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path.cwd()),
    }
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True
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
