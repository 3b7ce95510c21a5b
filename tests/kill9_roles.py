"""The processes of the kill -9 harness (tests/test_kill9.py): agent, reviewer and server.

Each role is a function run in its own process (forked by a multiprocessing forkserver that imported
SafeRun once, so a process costs milliseconds instead of an interpreter start) and killed with SIGKILL
by the harness at random moments, or by itself at a chosen crash point. Everything a role needs comes
in its arguments; nothing is shared with the harness but the database and two small files:

- the *effects* SQLite file stands for the outside system compensations undo things in. It keeps one row
  per idempotency key (the undo happens once per key, as a refund API with idempotency keys would) and
  counts how often each key was attempted, so the harness can see takeovers that ran an undo again;
- the reviewer's *decisions log*: one line per decision the server acknowledged, written after the answer,
  so every logged decision must be in the store ("no decision lost").
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from saferun import ApprovalRejected, attach
from saferun.core.rollback.reconciliation import CompensationRegistry, RetryPolicy
from saferun.core.state_machine.models import ApprovalDecision, WorkflowState
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database

STALE_CLAIM_SECONDS = 0.5  # a killed runner's compensation claim is taken over after this
ROLLBACK_GRACE_SECONDS = 0.3  # the server's sweep finishes rollbacks and settlements left this long
FAST = RetryPolicy(attempts=2, initial_delay=0.001, max_delay=0.005)
TERMINAL = {WorkflowState.COMPLETED, WorkflowState.FAILED}
DONE = {"completed", "failed"}
STEPS_PER_CHECKPOINT = 2


def _die(marker: str | None = None) -> None:
    """SIGKILL this process; ``marker`` (a file) tells the harness the planned crash point was reached."""
    if marker:
        Path(marker).touch()
    os.kill(os.getpid(), signal.SIGKILL)


def open_effects(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, step INTEGER, runs INTEGER)")
    return conn


def registry(effects: str, *, crash_after_effect: str | None = None) -> CompensationRegistry:
    """The ``undo`` compensation: applies its effect once per idempotency key and counts the attempts.

    With ``crash_after_effect`` (a marker file) the process kills itself right after the effect lands and
    before SafeRun records the result: the case only the idempotency key can make run once."""
    reg = CompensationRegistry()

    def undo(step: int, *, idempotency_key: str) -> None:
        conn = open_effects(effects)
        try:
            conn.execute(
                "INSERT INTO effects (key, step, runs) VALUES (?, ?, 1) "
                "ON CONFLICT(key) DO UPDATE SET runs = runs + 1",
                (idempotency_key, step),
            )
        finally:
            conn.close()
        if crash_after_effect:
            _die(crash_after_effect)

    reg.register("undo", undo)
    return reg


def _orchestrator(url: str, reg: CompensationRegistry) -> WorkflowOrchestrator:
    orch = WorkflowOrchestrator(database=Database(url), registry=reg, retry=FAST)
    orch.stale_claim_seconds = STALE_CLAIM_SECONDS
    # SQLite has no cross-process wake-up: poll for decisions every 50 ms at most (default 250 ms)
    orch.wait_for_decision = functools.partial(orch.wait_for_decision, poll_interval=0.05)  # type: ignore[method-assign]
    return orch


def _approved(orch: WorkflowOrchestrator, wf: str) -> int:
    ok = (ApprovalDecision.APPROVED, ApprovalDecision.MODIFIED)
    return sum(1 for _, resp in orch.approval_history(wf) if resp is not None and resp.decision in ok)


def agent(url: str, wf: str, effects: str, crash: str, marker: str) -> None:
    """The agent's code, written to be run again from the top after a crash (as a restarted agent is):
    it attaches, asks each checkpoint it has not had approved, redoes a rejected one's work, and leaves
    the block to settle. ``crash`` names where this incarnation kills itself: ``settle`` (between settle
    and complete), ``compensation`` (after an undo's effect landed, before its result is recorded),
    ``step`` (right after registering a step), or ``none``; reaching it touches ``marker``."""
    reg = registry(effects, crash_after_effect=marker if crash == "compensation" else None)
    orch = _orchestrator(url, reg)
    if crash == "settle":
        real_complete = orch.complete_workflow

        def complete_after_dying(workflow_id: str) -> Any:
            _die(marker)
            return real_complete(workflow_id)

        orch.complete_workflow = complete_after_dying  # type: ignore[method-assign]

    async def main() -> None:
        total = len(orch.get_workflow(wf).config.checkpoints)
        async with attach(wf, orch) as run:
            while (done := _approved(orch, wf)) < total:
                state = orch.get_workflow(wf).current_state
                if state in TERMINAL:
                    return
                if state == WorkflowState.EXECUTING:
                    pending = [s for s in orch.saga_steps(wf) if s["status"] == "pending"]
                    for j in range(len(pending), STEPS_PER_CHECKPOINT):
                        await run.step(f"cp{done + 1} work {j}", compensation="undo", args={"step": j})
                        if crash == "step":
                            _die(marker)
                try:
                    await run.checkpoint(f"cp{done + 1}", parameters={"n": done + 1})
                except ApprovalRejected as rejected:
                    assert rejected.workflow_state in ("executing", "failed"), rejected.workflow_state
                    if rejected.workflow_state == "failed":
                        return

    asyncio.run(main())


def reviewer(base_url: str, wf: str, log: str, seed: int, reject_first: bool) -> None:
    """Decides the workflow's open requests over HTTP (approve, modify or reject at random; after two
    rejections it approves; ``reject_first``: the first decision is a rejection, so a trial that plans a
    crash inside a compensation has one), logging each decision the server acknowledged. Rides out
    server restarts."""
    import httpx

    from saferun.client.http import SafeRunClient
    from saferun.errors import Conflict, SafeRunError

    rng = random.Random(seed)
    client = SafeRunClient(base_url, retry=RetryPolicy(attempts=1))
    idle = 0
    while True:
        try:
            pending = client.pending(wf)["pending_approvals"]
            idle = 0 if pending else idle + 1
            if idle % 8 == 7 and client.get_workflow(wf)["status"] in DONE:
                return
            for req in pending:
                past = Path(log).read_text().split() if Path(log).exists() else []
                roll = rng.random()
                decision = (
                    "REJECTED"
                    if (roll < 0.35 or (reject_first and not past)) and past.count("REJECTED") < 2
                    else ("MODIFIED" if roll < 0.5 else "APPROVED")
                )
                mods = {"n": 100} if decision == "MODIFIED" else None
                try:
                    client.submit_decision(
                        req["request_id"],
                        decision,
                        approved_by="reviewer",
                        rationale="kill -9 trial",
                        modifications=mods,
                    )
                except Conflict:
                    continue  # decided meanwhile (e.g. this process's earlier incarnation): not ours
                with open(log, "a") as f:
                    f.write(f"{req['request_id']} {decision}\n")
        except (httpx.HTTPError, SafeRunError):  # the server is down or restarting: try again
            pass
        time.sleep(0.02)


def server(url: str, port: int, effects: str) -> None:
    """``saferun serve``'s app with its sweeper, able to run the ``undo`` compensation (as a server
    started with SAFERUN_COMPENSATIONS would), and short staleness and grace so takeovers happen in the
    trial's time. Sweeps every 0.2 s instead of 1 s, for the same reason."""
    import uvicorn

    from saferun.api import server as srv

    os.environ["SAFERUN_ROLLBACK_GRACE_SECONDS"] = str(ROLLBACK_GRACE_SECONDS)
    os.environ["SAFERUN_STALE_CLAIM_SECONDS"] = str(STALE_CLAIM_SECONDS)
    srv.SWEEP_INTERVAL_SECONDS = 0.2
    orch = _orchestrator(url, registry(effects))
    app = srv.create_app(orch, auth="open")
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical")).run()
