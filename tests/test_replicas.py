"""Several SafeRun processes on one PostgreSQL database behave as one system (issue 3, item 7).

Every test starts real processes (``sys.executable -c``) with ``DATABASE_URL`` pointing at the test's
schema; the test process itself is one more replica. Timeouts are generous and only stop a broken run
from hanging: what is checked is who did what, never how fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from saferun.core.state_machine.models import CheckpointConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from saferun.storage.schema import utcnow
from tests.conftest import require_postgres
from tests.helpers import decide, make_config, pause, started

GENEROUS = 120.0

PRELUDE = """
import asyncio, json, logging, sys
from saferun.core.notify import notifier_for
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import DecisionConflict
from saferun.storage.database import get_database

db = get_database()
orch = WorkflowOrchestrator(database=db)

def say(*words):
    print(*words, flush=True)

def wait_for_go():
    say("READY")
    assert sys.stdin.readline().strip() == "GO"
"""


class Replica:
    """A SafeRun process on the test's database, read line by line without ever blocking the test."""

    def __init__(self, db: Database, code: str, *args: str) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")},
            "DATABASE_URL": db.engine.url.render_as_string(hide_password=False),
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        }
        source = PRELUDE + textwrap.dedent(code)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", source, *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def expect(self, prefix: str) -> str:
        """The rest of the next output line starting with ``prefix``."""
        while True:
            try:
                line = self.lines.get(timeout=GENEROUS)
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} from the replica") from None
            if line is None:
                self.proc.wait(timeout=GENEROUS)
                raise AssertionError(
                    f"replica exited ({self.proc.returncode}) before {prefix!r}:\n{''.join(self.stderr)}"
                )
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        assert self.proc.wait(timeout=GENEROUS) == 0, "".join(self.stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def pg(pg_db: Database) -> Database:
    return pg_db


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started_here: list[Replica] = []
    yield started_here
    for r in started_here:
        r.kill()


AGENT = """
class WakeReport(logging.Handler):
    woken_by = None

    def emit(self, record):
        if getattr(record, "request_id", None) != sys.argv[1]:
            return
        if record.getMessage().startswith("waiting for a decision"):
            say("WAITING", json.dumps({"listening": record.listening}))
        if hasattr(record, "woken_by"):
            WakeReport.woken_by = record.woken_by

log = logging.getLogger("saferun.core.state_machine.orchestrator")
log.setLevel(logging.DEBUG)
log.addHandler(WakeReport())

async def main():
    assert await notifier_for(db).astart(timeout=60), "the listener never connected"
    # a poll interval of ten minutes: only the notice can bring the answer back in time
    response = await orch.wait_for_decision(sys.argv[1], timeout=600, poll_interval=600)
    say("RESULT", json.dumps({"decision": response.decision.value, "by": response.approved_by,
                              "woken_by": WakeReport.woken_by}))

asyncio.run(main())
"""


async def test_a_decision_on_one_replica_wakes_the_agent_long_polling_on_another(
    pg: Database, replicas: list[Replica]
) -> None:
    require_postgres()
    orch = WorkflowOrchestrator(database=pg)
    wf = started(orch)
    req = await pause(orch, wf)
    agent = Replica(pg, AGENT, req)
    replicas.append(agent)
    assert json.loads(agent.expect("WAITING")) == {"listening": True}
    decide(orch, req, "APPROVED", by="reviewer")  # this process is the replica the reviewer used
    result = json.loads(agent.expect("RESULT"))
    agent.finish()
    assert result == {"decision": "APPROVED", "by": "reviewer", "woken_by": "notice"}


SWEEPER = """
wait_for_go()
say("RESOLVED", json.dumps(orch.sweep_expired()))
"""


async def test_each_expired_request_is_resolved_by_exactly_one_of_three_sweeping_processes(
    pg: Database, replicas: list[Replica]
) -> None:
    require_postgres()
    orch = WorkflowOrchestrator(database=pg)
    config = dict(checkpoints=[CheckpointConfig(name="A", checkpoint_id="cp1", timeout_seconds=1)])
    requests = set()
    for _ in range(30):
        requests.add(await pause(orch, started(orch, make_config(**config))))
    sweepers = [Replica(pg, SWEEPER) for _ in range(3)]
    replicas.extend(sweepers)
    for s in sweepers:
        s.expect("READY")
    # let the checkpoints' one-second timeout pass (this process must not sweep: pending_approvals would)
    due = max(orch.get_approval_request(r).expires_at for r in requests)
    while utcnow() <= due:
        await asyncio.sleep(0.05)
    for s in sweepers:
        s.send("GO")
    resolved = [json.loads(s.expect("RESOLVED")) for s in sweepers]
    for s in sweepers:
        s.finish()
    everything = [r for part in resolved for r in part]
    assert sorted(everything) == sorted(requests), resolved  # all of them, none twice
    for r in requests:
        assert orch.get_approval_request(r).status == "expired"
        response = orch.get_approval_response(r)
        assert response is not None and response.automatic


DECIDER = """
wait_for_go()
try:
    from saferun import ApprovalResponse
    orch.submit_approval(None, ApprovalResponse(request_id=sys.argv[1], decision=sys.argv[2],
                                                approved_by="reviewer", rationale=sys.argv[3]))
    say("OUTCOME", "success")
except DecisionConflict as exc:
    say("OUTCOME", "conflict", exc.status)
"""


async def test_concurrent_decisions_from_several_processes_yield_exactly_one_success(
    pg: Database, replicas: list[Replica]
) -> None:
    require_postgres()
    orch = WorkflowOrchestrator(database=pg)
    req = await pause(orch, started(orch))
    kinds = ["APPROVED", "REJECTED", "APPROVED", "REJECTED", "APPROVED", "REJECTED"]
    deciders = [Replica(pg, DECIDER, req, kind, f"decider {i}") for i, kind in enumerate(kinds)]
    replicas.extend(deciders)
    for d in deciders:
        d.expect("READY")
    for d in deciders:
        d.send("GO")
    outcomes = [d.expect("OUTCOME").split()[0] for d in deciders]
    for d in deciders:
        d.finish()
    assert sorted(outcomes) == ["conflict"] * 5 + ["success"]
    winner = outcomes.index("success")
    response = orch.get_approval_response(req)
    assert response is not None
    assert (response.decision.value, response.rationale) == (kinds[winner], f"decider {winner}")
    assert len(orch.approval_history(orch.get_approval_request(req).workflow_id)) == 1
