"""Advanced Pattern 3: several agents sharing one supervised workflow.

The seed's research pipeline: a researcher, an analyst and a synthesizer (three ``ExecutorAgent``s)
work one after the other in a single workflow ("multi_agent_system", $150 escrow) with a checkpoint after
each. Each agent writes its deliverable into a workspace directory; the file is a saga step undone by
``delete_deliverable`` if its review is rejected. The reviewer approves the research, rejects the first
analysis (it ignores pricing), so the file is deleted and the analyst redoes it with the reviewer's note,
approves the second analysis and the final report.

python examples/pattern_multi_agent.py [--workspace DIR]               # waits for you
python examples/pattern_multi_agent.py [--workspace DIR] --auto-review # a scripted reviewer decides
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from saferun import (
    ApprovalDecision,
    ApprovalRejected,
    CheckpointConfig,
    SupervisedRun,
    WorkflowConfig,
    WorkflowOrchestrator,
    compensation,
    supervised,
)
from saferun.agents.executor.agent import ExecutorAgent
from saferun.agents.supervisor.agent import SupervisorAgent
from saferun.domain.ledger import wallet_account
from saferun.domain.money import format_micro

REVIEWER = "human_789"
EXECUTOR = "multi_agent_system"


@compensation("delete_deliverable")
def delete_deliverable(path: str) -> None:
    Path(path).unlink(missing_ok=True)


async def deliver(
    run: SupervisedRun, workspace: Path, name: str, agent_id: str, output: dict[str, Any]
) -> Path:
    """Write an agent's deliverable (the real effect) and record how to undo it."""
    path = workspace / name
    path.write_text(
        f"# {name} by {agent_id}\n\nTask: {output.get('task')}\n\n{output.get('result', output)}\n"
    )
    await run.step(f"write {name}", compensation="delete_deliverable", args={"path": str(path)})
    run.outputs[name] = {"agent": agent_id, "path": str(path), "task": output.get("task")}
    return path


async def create_and_approve_checkpoint(
    run: SupervisedRun, checkpoint: str, agent_id: str, path: Path
) -> None:
    """The seed's helper: capture the shared state after one agent's turn and wait for the reviewer."""
    run.trace.append(f"{agent_id} delivered {path.name}")
    await run.checkpoint(
        checkpoint,
        summary=f"{agent_id} finished: {path.name} ({path.stat().st_size} bytes). Continue?",
        context={"agent": agent_id, "deliverable": path.name, "preview": path.read_text()[:300]},
    )


async def multi_agent_workflow(
    orchestrator: WorkflowOrchestrator, config: WorkflowConfig, workspace: Path
) -> None:
    async with supervised(config, orchestrator) as run:
        research_agent = ExecutorAgent(agent_id="researcher_1")
        research_data = await research_agent.execute_task("Gather competitor data", {})
        path = await deliver(run, workspace, "research.md", "researcher_1", research_data)
        await create_and_approve_checkpoint(run, "Research Complete", "researcher_1", path)

        analyst_agent = ExecutorAgent(agent_id="analyst_2")
        note = ""
        for attempt in (1, 2):
            task = "Analyze research data" + (f" ({note})" if note else "")
            analysis = await analyst_agent.execute_task(task, {"input": research_data})
            path = await deliver(run, workspace, "analysis.md", "analyst_2", analysis)
            try:
                await create_and_approve_checkpoint(run, "Analysis Complete", "analyst_2", path)
                break
            except ApprovalRejected as rejected:
                print(f"analysis attempt {attempt} rejected: {rejected.rationale}; analysis.md removed")
                note = rejected.rationale
        else:
            raise RuntimeError("the analysis was rejected twice")

        synthesis_agent = ExecutorAgent(agent_id="synthesizer_3")
        final_report = await synthesis_agent.execute_task(
            "Create final report", {"research": research_data, "analysis": analysis}
        )
        path = await deliver(run, workspace, "report.md", "synthesizer_3", final_report)
        await create_and_approve_checkpoint(run, "Synthesis Complete", "synthesizer_3", path)
        run.result["report"] = str(path)


async def scripted_reviewer(orchestrator: WorkflowOrchestrator, agent: asyncio.Task[None]) -> None:
    supervisor = SupervisorAgent(supervisor_id=REVIEWER)
    rejected_once = False
    while not agent.done():
        for request in orchestrator.pending_approvals():
            if request.checkpoint_name == "Analysis Complete" and not rejected_once:
                rejected_once = True
                response = supervisor.submit_decision(
                    request.request_id, ApprovalDecision.REJECTED, "the analysis ignores competitor pricing"
                )
            else:
                response = supervisor.submit_decision(request.request_id, ApprovalDecision.APPROVED, "good")
            verdict = response.decision.value
            print(f"Reviewer: {request.checkpoint_name} by {request.context['agent']} -> {verdict}")
            orchestrator.submit_approval(request.workflow_id, response)
        await asyncio.sleep(0.02)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auto-review", action="store_true", help="a scripted reviewer decides")
    parser.add_argument("--workspace", type=Path, help="where the agents write (default: a new temp dir)")
    args = parser.parse_args()
    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="saferun-research-"))
    workspace.mkdir(parents=True, exist_ok=True)
    orchestrator = WorkflowOrchestrator()
    config = WorkflowConfig(
        name="Multi-Agent Research Pipeline",
        checkpoints=[
            CheckpointConfig(name="Research Complete", timeout_seconds=600),
            CheckpointConfig(name="Analysis Complete", timeout_seconds=600),
            CheckpointConfig(name="Synthesis Complete", timeout_seconds=600),
        ],
        escrow_amount=150.0,
        poster_id="user",
        executor_id=EXECUTOR,
        supervisor_id=REVIEWER,
    )
    print(f"Workspace: {workspace}")
    if args.auto_review:
        task = asyncio.create_task(multi_agent_workflow(orchestrator, config, workspace))
        await asyncio.gather(task, scripted_reviewer(orchestrator, task))
    else:
        print("Waiting for decisions: saferun approvals list (or the dashboard, saferun serve)")
        await multi_agent_workflow(orchestrator, config, workspace)
    files = sorted(p.name for p in workspace.iterdir())
    print(f"Deliverables: {', '.join(files)}")
    wf = orchestrator.get_workflow(config.workflow_id)
    legs = [leg for e in orchestrator.ledger_entries(config.workflow_id) for leg in e["legs"]]
    paid = {
        who: sum(g["amount_micro"] for g in legs if g["account"] == wallet_account(who))
        for who in (EXECUTOR, REVIEWER)
    }
    print(
        f"Workflow {wf.workflow_id} {wf.current_state.value}: executor {format_micro(paid[EXECUTOR])}, "
        f"supervisor {format_micro(paid[REVIEWER])}"
    )


if __name__ == "__main__":
    asyncio.run(main())
