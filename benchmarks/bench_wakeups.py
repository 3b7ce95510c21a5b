"""Decision -> wake-up latency across two processes on one SQLite file: an agent waits in this process
(``wait_for_decision``), a reviewer decides in another (as the dashboard's server or the CLI would).

With peer wake-ups (``core/notify_peers``) the decision's commit sends a datagram; with
``SAFERUN_PEER_WAKEUPS=0`` (the previous behaviour) the waiter finds it by polling, 5 ms backing off to
250 ms. The reviewer takes 0.2-0.6 s to decide (``--think``), so the waiter is well into its backoff.
Both are measured in the same run, alternating, from the reviewer's commit to the waiter's return, and
printed as a table.

    .venv/bin/python benchmarks/bench_wakeups.py [--rounds 20] [--think 0.2,0.6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from saferun.core import notify
from saferun.core.state_machine.models import CheckpointConfig, ExecutionState, WorkflowConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database

REVIEWER = """
import random, sys, time
from saferun.core.state_machine.models import ApprovalDecision, ApprovalResponse
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
orch = WorkflowOrchestrator(database=Database(sys.argv[1], migrate=False))
low, high = float(sys.argv[2]), float(sys.argv[3])
for line in sys.stdin:  # one request id per line; answer with the time its decision committed
    time.sleep(random.uniform(low, high))  # a reviewer takes a while: the waiter is polling by then
    orch.submit_approval(None, ApprovalResponse(
        request_id=line.strip(), decision=ApprovalDecision.APPROVED, rationale="ok", approved_by="reviewer"))
    print(time.time(), flush=True)
"""


async def measure(url: str, rounds: int, peers: bool, think: tuple[float, float]) -> list[float]:
    os.environ["SAFERUN_PEER_WAKEUPS"] = "1" if peers else "0"
    notify.close_all()
    db = Database(url, migrate=False)
    orch = WorkflowOrchestrator(database=db)
    reviewer = subprocess.Popen(
        [sys.executable, "-c", REVIEWER, url, str(think[0]), str(think[1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    out = []
    try:
        for i in range(rounds + 1):
            config = WorkflowConfig(
                name="wake",
                checkpoints=[CheckpointConfig(name="Review", checkpoint_id="cp")],
                escrow_amount="10",
                poster_id="poster",
                executor_id="agent",
                supervisor_id="reviewer",
            )
            orch.initialize_workflow(config)
            orch.start_execution(config.workflow_id)
            snap = await orch.create_checkpoint(config.workflow_id, ExecutionState(checkpoint_id="cp"))
            req = orch.request_approval(config.workflow_id, snap.snapshot_id, "review", {}).request_id
            await asyncio.sleep(random.uniform(0, 0.02))
            assert reviewer.stdin is not None and reviewer.stdout is not None
            reviewer.stdin.write(req + "\n")
            reviewer.stdin.flush()
            await orch.wait_for_decision(req, timeout=30)
            woke = time.time()
            committed = float(await asyncio.to_thread(reviewer.stdout.readline))
            if i:  # the first round warms both processes up
                out.append((woke - committed) * 1000)
    finally:
        reviewer.kill()
        notify.close_all()
        db.dispose()
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--think", default="0.2,0.6", help="the reviewer's delay before deciding, uniform in LOW,HIGH seconds"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_wakeups_"))
    url = f"sqlite:///{folder}/wake.db"
    Database(url).dispose()
    results: dict[bool, list[float]] = {True: [], False: []}
    for block in range(4):  # alternate, so a drift in the machine's speed hits both
        for peers in (True, False) if block % 2 == 0 else (False, True):
            low, high = (float(x) for x in args.think.split(","))
            results[peers] += await measure(url, args.rounds // 2, peers, (low, high))
    n = len(results[True])
    print(f"\ndecision commit (another process) -> wait_for_decision returns, ms ({n} each)\n")
    print("| wake-up | p50 | p90 | max |\n|---|---:|---:|---:|")
    for peers, label in ((True, "datagram (core/notify_peers)"), (False, "polling (SAFERUN_PEER_WAKEUPS=0)")):
        ms = sorted(results[peers])
        print(f"| {label} | {statistics.median(ms):.1f} | {ms[int(len(ms) * 0.9)]:.1f} | {ms[-1]:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
