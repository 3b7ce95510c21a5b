"""What ``demo_scenario.py`` and ``demo_impressive.py`` share.

- ``World``: the demo's small simulated world, a JSON file of everything its agents really did (orders
  placed, trades filled, releases deployed, contracts sent). Compensations change that file back, so a
  rollback is visible in the world, and the ROI tables are computed from the world's final state and
  SafeRun's ledger, never typed in.
- ``NoOversight``: the same agent code run without SafeRun (its checkpoints return what the agent
  proposed, its steps are forgotten); the "without SafeRun" side of every comparison is a real run.
- ``DemoEnv``: the store (SQLite in a fresh directory unless ``--database-url``), a scripted supervisor
  or, with ``--interactive``, the reviewer dashboard and a human.
- ``roi_table``: the comparison, from measured outcomes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from saferun import ApprovalDecision, ApprovalRequest, WorkflowOrchestrator
from saferun.agents.supervisor.agent import SupervisorAgent
from saferun.domain.assessment import Assessment, assess
from saferun.domain.ledger import wallet_account

T = TypeVar("T")
_world_locks: dict[Path, threading.Lock] = {}
_world_locks_guard = threading.Lock()


# ---------------------------------------------------------------------------------------------- the world
class World:
    """A JSON file the demo owns. Every agent action and every compensation changes it under a lock.

    Compensations receive the file's path as an argument (``{"world": "/tmp/.../shop.json", ...}``), so
    any process that knows the compensation names can finish a rollback, as SafeRun requires.
    """

    def __init__(self, path: Path | str, initial: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        with _world_locks_guard:
            self._lock = _world_locks.setdefault(self.path.resolve(), threading.Lock())
        if initial is not None and not self.path.exists():
            self._write(initial)

    def read(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(self.path.read_text())  # type: ignore[no-any-return]

    @contextmanager
    def change(self) -> Iterator[dict[str, Any]]:
        """Read, let the caller change the dict, write it back atomically (all or nothing)."""
        with self._lock:
            data = json.loads(self.path.read_text())
            yield data
            self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(self.path)


@dataclass(frozen=True)
class Proposal:
    """What ``NoOversight.checkpoint`` returns: the agent's own parameters, nobody having looked."""

    parameters: dict[str, Any]
    decision: str = "UNSUPERVISED"
    approved_by: str = "nobody"


class NoOversight:
    """The agent's run without SafeRun: checkpoints pass whatever the agent proposed, steps vanish."""

    workflow_id = "-"

    def __init__(self) -> None:
        self.result: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.trace: list[str] = []

    async def checkpoint(
        self, name: str | None = None, *, parameters: dict[str, Any] | None = None, **_: Any
    ) -> Any:
        return Proposal(dict(parameters or {}))

    async def step(self, name: str, *, compensation: str, args: dict[str, Any] | None = None) -> str:
        return ""


# ---------------------------------------------------------------------------------------------- money
def usd(cents: int | Decimal) -> str:
    sign = "-" if cents < 0 else ""
    value = Decimal(abs(cents)) / 100
    return f"{sign}${value:,.2f}"


def usd_micro(micro: int) -> str:
    return usd(Decimal(micro) / 10_000)


@dataclass(frozen=True)
class Escrow:
    """Where one workflow's escrow went, read from SafeRun's ledger (micro-units)."""

    locked: int
    released: int
    refunded: int
    executor: int
    supervisor: int

    @classmethod
    def of(cls, orchestrator: WorkflowOrchestrator, workflow_id: str) -> Escrow:
        wf = orchestrator.get_workflow(workflow_id)
        pos = orchestrator.escrow_position(workflow_id)
        legs = [leg for entry in orchestrator.ledger_entries(workflow_id) for leg in entry["legs"]]

        def paid(party: str | None) -> int:
            if party is None:
                return 0
            return sum(leg["amount_micro"] for leg in legs if leg["account"] == wallet_account(party))

        return cls(
            pos.locked, pos.released, pos.refunded, paid(wf.config.executor_id), paid(wf.supervisor_id)
        )

    def as_dict(self) -> dict[str, str]:
        return {k: f"{Decimal(v) / 1_000_000:.2f}" for k, v in self.__dict__.items()}

    def line(self) -> str:
        return (
            f"escrow locked {usd_micro(self.locked)}, paid {usd_micro(self.executor)} to the agent and "
            f"{usd_micro(self.supervisor)} to the supervisor, refunded {usd_micro(self.refunded)}"
        )


# ---------------------------------------------------------------------------------------------- supervisor
@dataclass(frozen=True)
class Verdict:
    """One decision the scripted supervisor makes, at the checkpoint it names (checked, so a script
    that got out of step with its agent fails loudly instead of approving the wrong thing)."""

    checkpoint: str
    decision: ApprovalDecision
    rationale: str
    modifications: dict[str, Any] | None = None

    def describe(self) -> str:
        change = ", ".join(f"{k} -> {v!r}" for k, v in (self.modifications or {}).items())
        return f"{self.decision.value}" + (f" ({change})" if change else "") + f": {self.rationale}"


def advice_lines(a: Assessment) -> list[str]:
    """Whose advice, confidence and risk, one line each, as the dashboard labels them (issue 14: the
    panel once read ``Recommendation: review (confidence -)``)."""
    lines = []
    if a.saferun_advice:
        sure = f" ({a.saferun_confidence:.0%} sure)" if a.saferun_confidence is not None else ""
        lines.append(f"SafeRun recommends: {a.saferun_advice}{sure}")
    if a.agent_proposal:
        given = f"its confidence {a.agent_confidence:.0%}" if a.agent_confidence is not None else None
        lines.append(f"Agent proposes: {a.agent_proposal} ({given or 'no confidence given'})")
    if a.agent_lowest:
        lines.append(f"Agent's lowest confidence score: {a.agent_lowest[0]} {a.agent_lowest[1]:.0%}")
    if a.risk_level:
        lines.append(f"Risk: {a.risk_level} (the agent's assessment)")
    return lines


class Reviewer:
    """Decides each request of a workflow as scripted, through ``SupervisorAgent`` and the orchestrator,
    exactly as a person's decision arrives; or, ``human=True``, shows where a person decides and waits."""

    def __init__(self, env: DemoEnv, human: bool) -> None:
        self.env = env
        self.human = human

    async def review(self, workflow_id: str, verdicts: list[Verdict], agent: asyncio.Task[Any]) -> None:
        """Until the agent stops: take each request of the workflow as it opens and decide it (scripted:
        the next verdict; a person: show where to decide and wait for it)."""
        supervisor = SupervisorAgent(supervisor_id=self.env.supervisor_id)
        script = iter(verdicts)
        while (request := await self._next(workflow_id, agent)) is not None:
            verdict = next(script, None)
            self._show(supervisor.format_for_display(request), self._assess(request))
            if self.human:
                self._prompt(request, verdict)
                await self._decided(request.request_id, agent)
                response = self.env.orchestrator.get_approval_response(request.request_id)
                if response is not None:
                    change = f" {response.modifications}" if response.modifications else ""
                    self.env.say(
                        f"[bold]Decided in the dashboard[/] by {response.approved_by}: "
                        f"{response.decision.value}{change}: {response.rationale}"
                    )
                continue
            if verdict is None or request.checkpoint_name != verdict.checkpoint:
                expected = verdict.checkpoint if verdict else "no more checkpoints"
                raise RuntimeError(
                    f"script expects {expected!r}, the agent is at {request.checkpoint_name!r}"
                )
            response = supervisor.submit_decision(
                request.request_id, verdict.decision, verdict.rationale, modifications=verdict.modifications
            )
            self.env.orchestrator.submit_approval(workflow_id, response)
            self.env.say(f"[bold]Supervisor decides[/]: {verdict.describe()}")

    async def _next(self, workflow_id: str, agent: asyncio.Task[Any]) -> ApprovalRequest | None:
        """The workflow's next pending request, or None once the agent has stopped."""
        while not agent.done():
            pending = self.env.orchestrator.pending_approvals(workflow_id)
            if pending:
                return pending[0]
            await asyncio.sleep(0.02)
        return None

    async def _decided(self, request_id: str, agent: asyncio.Task[Any]) -> None:
        while not agent.done() and self.env.orchestrator.get_approval_response(request_id) is None:
            await asyncio.sleep(0.1)

    def _assess(self, request: ApprovalRequest) -> Assessment:
        state = self.env.orchestrator.get_snapshot_state(request.snapshot_id)
        return assess(
            recommendation=request.recommendation,
            confidence=request.confidence,
            risk=request.risk,
            alerts=request.alerts,
            state_risk=state.risk_assessment,
            confidence_scores=state.confidence_scores,
        )

    def _show(self, shown: dict[str, Any], assessment: Assessment) -> None:
        body = [f"[bold]{shown['summary']}[/]", f"Proposed parameters: {shown['parameters']}"]
        facts = ", ".join(f"{k}={v}" for k, v in list(shown["context"].items())[:6])
        if facts:
            body.append(f"Context: {facts}")
        body += advice_lines(assessment)
        self.env.console.print(
            Panel("\n".join(body), title=f"Checkpoint: {shown['checkpoint']}", expand=False)
        )

    def _prompt(self, request: ApprovalRequest, verdict: Verdict | None) -> None:
        url = f"{self.env.dashboard_url}/approvals/{request.request_id}"
        hint = f" The scripted supervisor would decide {verdict.describe()}" if verdict else ""
        self.env.say(
            f"[yellow]Waiting for your decision[/] at {url} "
            f"(decide as [bold]{self.env.supervisor_id}[/]).{hint}"
        )


# ---------------------------------------------------------------------------------------------- environment
@dataclass
class DemoEnv:
    orchestrator: WorkflowOrchestrator
    database_url: str
    workdir: Path
    console: Console
    interactive: bool
    supervisor_id: str
    dashboard_url: str | None = None
    report: dict[str, Any] = field(default_factory=dict)
    _server: Any = None

    def say(self, text: str) -> None:
        self.console.print(text, soft_wrap=True)

    def world(self, name: str, initial: dict[str, Any]) -> World:
        path = self.workdir / f"{name}.json"
        path.unlink(missing_ok=True)  # every run starts its world afresh
        return World(path, initial)

    async def supervise(self, workflow_id: str, verdicts: list[Verdict], agent: Coroutine[Any, Any, T]) -> T:
        """Run the agent while the supervisor (scripted, or a person in the dashboard) decides."""
        task = asyncio.ensure_future(agent)
        await Reviewer(self, human=self.interactive).review(workflow_id, verdicts, task)
        return await task

    def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--interactive", action="store_true", help="wait for a person in the dashboard")
    parser.add_argument("--database-url", help="SafeRun store (default: SQLite in the demo's directory)")
    parser.add_argument("--workdir", type=Path, help="where the world files (and the default store) go")
    parser.add_argument("--port", type=int, default=8000, help="dashboard port with --interactive")
    parser.add_argument(
        "--no-server",
        action="store_true",
        help="with --interactive: use a dashboard already running (saferun --database-url ... serve)",
    )
    parser.add_argument("--report", type=Path, help="also write the outcomes and the ROI table as JSON here")
    return parser.parse_args()


def setup(args: argparse.Namespace, supervisor_id: str) -> DemoEnv:
    """Point SafeRun at the demo's store before anything opens it, then start the dashboard if asked."""
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="saferun-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    url = args.database_url or f"sqlite:///{workdir.resolve() / 'saferun.db'}"
    os.environ["DATABASE_URL"] = url  # every default-constructed SafeRun object uses the demo's store
    os.environ["SAFERUN_HOME"] = str(workdir)
    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough that money columns never truncate
        console = Console(width=120)
    env = DemoEnv(WorkflowOrchestrator(), url, workdir, console, args.interactive, supervisor_id)
    console.print(f"Store: {url}", soft_wrap=True)
    console.print(f"World files: {workdir}", soft_wrap=True)
    if args.interactive:
        base = f"http://127.0.0.1:{args.port}"
        if args.no_server:
            console.print(
                f"In another terminal run: saferun --database-url {url} serve --port {args.port}",
                soft_wrap=True,
            )
        else:
            env._server = start_dashboard(env.orchestrator, args.port)
        env.dashboard_url = base
        console.print(f"Dashboard: {base}/approvals", soft_wrap=True)
    return env


def start_dashboard(orchestrator: WorkflowOrchestrator, port: int) -> Any:
    """The SafeRun server (API + reviewer dashboard) on loopback, in a thread of this process.

    Same store, same process: a decision made in the browser wakes the waiting agent at once.
    """
    import uvicorn

    from saferun.api.server import create_app

    app = create_app(orchestrator, auth="open")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="saferun-dashboard", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit(f"the dashboard could not start on port {port} (in use? try --port)")
        time.sleep(0.05)
    return server


# ---------------------------------------------------------------------------------------------- ROI
@dataclass(frozen=True)
class Comparison:
    """One scenario's measured cost (cents) without and with SafeRun, and what oversight cost."""

    scenario: str
    measure: str
    without_cents: int
    with_cents: int
    escrow: Escrow

    @property
    def saved_cents(self) -> int:
        return self.without_cents - self.with_cents

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "measure": self.measure,
            "without_usd": f"{Decimal(self.without_cents) / 100:.2f}",
            "with_usd": f"{Decimal(self.with_cents) / 100:.2f}",
            "saved_usd": f"{Decimal(self.saved_cents) / 100:.2f}",
            "escrow": self.escrow.as_dict(),
        }


def roi_table(env: DemoEnv, rows: list[Comparison], title: str) -> dict[str, Any]:
    """Print the comparison and return it for the report. Oversight cost is what the ledger paid the
    supervisor; the agent's pay is shown too, since a company pays it with or without SafeRun."""
    table = Table(title=title)
    for name in ("Scenario", "Measured", "Without SafeRun", "With SafeRun", "Saved", "Supervisor paid"):
        if name in ("Scenario", "Measured"):
            table.add_column(name)
        else:
            table.add_column(name, justify="right", no_wrap=True, min_width=11)
    for row in rows:
        table.add_row(
            row.scenario,
            row.measure,
            usd(row.without_cents),
            usd(row.with_cents),
            usd(row.saved_cents),
            usd_micro(row.escrow.supervisor),
        )
    without = sum(r.without_cents for r in rows)
    with_ = sum(r.with_cents for r in rows)
    oversight_micro = sum(r.escrow.supervisor for r in rows)
    saved = without - with_
    table.add_row("Total", "", usd(without), usd(with_), usd(saved), usd_micro(oversight_micro), style="bold")
    env.console.print(table)
    oversight_cents = Decimal(oversight_micro) / 10_000
    ratio = (Decimal(saved) / oversight_cents) if oversight_cents else None
    if ratio is not None:
        env.say(
            f"Return on oversight: {usd(saved)} saved for {usd_micro(oversight_micro)} paid to the "
            f"supervisor = {ratio:,.0f}x"
        )
    return {
        "rows": [r.as_dict() for r in rows],
        "without_usd": f"{Decimal(without) / 100:.2f}",
        "with_usd": f"{Decimal(with_) / 100:.2f}",
        "saved_usd": f"{Decimal(saved) / 100:.2f}",
        "supervisor_paid_usd": f"{Decimal(oversight_micro) / 1_000_000:.2f}",
        "return_on_oversight": f"{ratio:.2f}" if ratio is not None else None,
    }


def decisions(orchestrator: WorkflowOrchestrator, workflow_id: str) -> str:
    """The decisions a workflow actually got, in order ("rejected, approved"), for labelling results."""
    seen = [r.decision.value.lower() for _, r in orchestrator.approval_history(workflow_id) if r is not None]
    return ", ".join(dict.fromkeys(seen)) or "no decision"


def write_report(env: DemoEnv, path: Path | None) -> None:
    if path is not None:
        path.write_text(json.dumps({"database": env.database_url, **env.report}, indent=2, sort_keys=True))
        env.say(f"Report: {path}")


def heading(env: DemoEnv, text: str) -> None:
    env.console.rule(f"[bold]{text}")
