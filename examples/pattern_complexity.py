"""Advanced Pattern 2: as many checkpoints as the task is complex.

``create_adaptive_config`` is the seed's: a simple task gets one final review for a $50 escrow, a medium
one a mid-point and a final review, a complex one four reviews for $100. The complexity is estimated
from the task itself (how many systems it touches). The same agent then runs each task phase by phase,
stopping at every checkpoint its workflow has; each approval releases that milestone's share of the
escrow (90 % executor, 10 % supervisor). The reviewer approves everything except the complex task's
quality review, where it cuts the rollout from 100 % of customers to 25 %.

python examples/pattern_complexity.py               # waits for you: decide with `saferun approvals ...`
python examples/pattern_complexity.py --auto-review # a scripted reviewer decides as described above
"""

from __future__ import annotations

import asyncio
import sys

from saferun import (
    ApprovalDecision,
    CheckpointConfig,
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
EXECUTOR = "agent"
CHANGES: list[dict[str, object]] = []  # what the agent changed: stands in for the systems it touches
TASKS = {
    "Fix the typo on the pricing page": ["website"],
    "Move the newsletter list to the new mail provider": ["mail provider", "crm"],
    "Roll out the new price plan": ["website", "billing", "crm", "sales playbook"],
}


def estimate_complexity(systems: list[str]) -> str:
    return "simple" if len(systems) == 1 else "medium" if len(systems) <= 3 else "complex"


def create_adaptive_config(task_complexity: str, task: str) -> WorkflowConfig:
    """Adjust checkpoints based on task complexity (the seed's function, plus the task's name)."""
    if task_complexity == "simple":
        checkpoints = [CheckpointConfig(name="Final Review", description="Quick check")]
    elif task_complexity == "medium":
        checkpoints = [
            CheckpointConfig(name="Mid-Point Review", description="Halfway check"),
            CheckpointConfig(name="Final Review", description="Final check"),
        ]
    else:  # complex
        checkpoints = [
            CheckpointConfig(name="Planning Review", description="Review plan"),
            CheckpointConfig(name="Execution Review", description="Review execution"),
            CheckpointConfig(name="Quality Review", description="Quality check"),
            CheckpointConfig(name="Final Review", description="Final approval"),
        ]
    for cp in checkpoints:  # a human gets ten minutes per review (the default is five)
        cp.timeout_seconds = 600
    return WorkflowConfig(
        name=f"{task_complexity.title()} Task: {task}",
        checkpoints=checkpoints,
        escrow_amount=50.0 if task_complexity == "simple" else 100.0,
        poster_id="user",
        executor_id=EXECUTOR,
        supervisor_id=REVIEWER,
    )


@compensation("revert_change")
def revert_change(index: int) -> None:
    CHANGES[index]["reverted"] = True


async def run_task(orchestrator: WorkflowOrchestrator, task: str, config: WorkflowConfig) -> None:
    """One phase of work per checkpoint; each phase's change is undone if its review is rejected."""
    systems = TASKS[task]
    worker = ExecutorAgent(agent_id=EXECUTOR)
    async with supervised(config, orchestrator) as run:
        for i, cp in enumerate(config.checkpoints):
            share = systems[i * len(systems) // len(config.checkpoints) :][:1] or systems[-1:]
            result = await worker.execute_task(f"{task}: {cp.name} on {share[0]}", {"systems": systems})
            CHANGES.append({"task": task, "system": share[0], "phase": cp.name, "rollout_percent": 100})
            run.outputs[cp.name] = result
            await run.step(
                f"{cp.name} change", compensation="revert_change", args={"index": len(CHANGES) - 1}
            )
            decision = await run.checkpoint(
                cp.name,
                parameters={"rollout_percent": 100},
                summary=f"{task}: {cp.description} ({share[0]})",
            )
            CHANGES[-1]["rollout_percent"] = decision.parameters["rollout_percent"]


async def scripted_reviewer(orchestrator: WorkflowOrchestrator, agent: asyncio.Task[None]) -> None:
    supervisor = SupervisorAgent(supervisor_id=REVIEWER)
    while not agent.done():
        for request in orchestrator.pending_approvals():
            if request.checkpoint_name == "Quality Review":
                response = supervisor.submit_decision(
                    request.request_id,
                    ApprovalDecision.MODIFIED,
                    "start with a quarter of the customers",
                    modifications={"rollout_percent": 25},
                )
            else:
                response = supervisor.submit_decision(
                    request.request_id, ApprovalDecision.APPROVED, "looks right"
                )
            print(f"Reviewer: {request.checkpoint_name} of '{request.summary}' -> {response.decision.value}")
            orchestrator.submit_approval(request.workflow_id, response)
        await asyncio.sleep(0.02)


async def main() -> None:
    orchestrator = WorkflowOrchestrator()
    configs = {
        task: create_adaptive_config(estimate_complexity(systems), task) for task, systems in TASKS.items()
    }

    async def agent() -> None:
        for task, config in configs.items():
            await run_task(orchestrator, task, config)

    if "--auto-review" in sys.argv:
        task = asyncio.create_task(agent())
        await asyncio.gather(task, scripted_reviewer(orchestrator, task))
    else:
        print("Waiting for decisions: saferun approvals list (or the dashboard, saferun serve)")
        await agent()
    for config in configs.values():
        wf = orchestrator.get_workflow(config.workflow_id)
        pos = orchestrator.escrow_position(config.workflow_id)
        legs = [leg for e in orchestrator.ledger_entries(config.workflow_id) for leg in e["legs"]]
        paid = {
            who: sum(leg["amount_micro"] for leg in legs if leg["account"] == wallet_account(who))
            for who in (EXECUTOR, REVIEWER)
        }
        releases = sum(e["kind"] == "release" for e in orchestrator.ledger_entries(config.workflow_id))
        print(
            f"{config.name}: {len(config.checkpoints)} checkpoint(s), {releases} milestone release(s), "
            f"{wf.current_state.value}; locked {format_micro(pos.locked)}, executor "
            f"{format_micro(paid[EXECUTOR])}, supervisor {format_micro(paid[REVIEWER])}"
        )
    rollout = [c["rollout_percent"] for c in CHANGES if c["phase"] == "Quality Review"]
    print(f"Changes made: {len(CHANGES)}; quality-reviewed rollout: {rollout[0]}%")


if __name__ == "__main__":
    asyncio.run(main())
