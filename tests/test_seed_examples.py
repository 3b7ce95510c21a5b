"""The seed README's Python examples, run as the seed writes them (imports included).

Only the surroundings are added: a database for each test (``database_env`` points ``DATABASE_URL`` at
it, so the seed's bare ``X402Integration()`` finds it) and a reviewer acting from another task where the
seed says a human decides in the approval UI.
"""

from __future__ import annotations

import asyncio

import pytest

from saferun.storage.database import Database

pytestmark = pytest.mark.usefixtures("database_env")


async def test_minimal_integration_pauses_for_a_human(database_env: Database) -> None:
    from saferun.api.x402.client import X402Integration
    from saferun.core.state_machine.models import CheckpointConfig, ExecutionState, WorkflowConfig
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    # 1. Initialize SafeRun
    x402 = X402Integration()
    orchestrator = WorkflowOrchestrator(x402_integration=x402)

    # 2. Define your workflow with checkpoints
    config = WorkflowConfig(
        name="My Agent Workflow",
        description="Describe what your agent does",
        checkpoints=[
            CheckpointConfig(
                name="Review Before Execution",
                description="Human reviews plan before agent executes",
                requires_approval=True,
            )
        ],
        escrow_amount=100.0,
        poster_id="your_user_id",
        executor_id="your_agent_id",
    )

    # 3. Start workflow
    execution = orchestrator.initialize_workflow(config)
    orchestrator.start_execution(execution.workflow_id)

    # 5. Hit checkpoint - agent pauses
    checkpoint_state = ExecutionState(
        checkpoint_id=config.checkpoints[0].checkpoint_id,
        agent_memory={"what": "your agent learned"},
        intermediate_outputs={"results": "so far"},
    )

    snapshot = await orchestrator.create_checkpoint(execution.workflow_id, checkpoint_state)

    # 6. Request human approval
    approval_request = orchestrator.request_approval(
        workflow_id=execution.workflow_id,
        snapshot_id=snapshot.snapshot_id,
        summary="Agent wants to do X. Approve?",
        context={"details": "for human review"},
    )

    # The workflow is paused, durably: a brand-new orchestrator sees the same pending request.
    fresh = WorkflowOrchestrator(x402_integration=X402Integration())
    assert fresh.get_workflow(execution.workflow_id).current_state.value == "awaiting_approval"
    assert [r.request_id for r in fresh.pending_approvals()] == [approval_request.request_id]
    assert snapshot.artifact_uri.startswith("x402://artifacts/sha256:")
    assert fresh.get_snapshot_state(snapshot.snapshot_id) == checkpoint_state


def create_my_workflow_config(task_description: str, escrow_amount: float = 100.0):  # type: ignore[no-untyped-def]
    from saferun.core.state_machine.models import CheckpointConfig, WorkflowConfig

    return WorkflowConfig(
        name=f"Agent Task: {task_description[:50]}",
        description=task_description,
        checkpoints=[
            CheckpointConfig(
                name="Research Review",
                description="Review research data before analysis",
                requires_approval=True,
                can_rollback=True,  # Can restart if rejected
                timeout_seconds=300,  # 5 min for human to respond
            ),
            CheckpointConfig(
                name="Analysis Review",
                description="Review analysis before execution",
                requires_approval=True,
                can_rollback=True,
            ),
            CheckpointConfig(
                name="Final Review",
                description="Final check before delivery",
                requires_approval=True,
                can_rollback=False,  # Point of no return
            ),
        ],
        escrow_amount=escrow_amount,
        poster_id="user_123",  # Who's paying
        executor_id="agent_456",  # Your agent
        supervisor_id="human_789",  # Who approves
    )


class MyExistingAgent:
    """The seed leaves "your agent" to the reader; this one does deterministic work."""

    async def research(self, task: str) -> dict[str, object]:
        return {"sources": 3, "task": task}

    async def analyze(self, research: dict[str, object]) -> dict[str, object]:
        return {"recommendation": "raise prices 5%", "based_on": research["sources"]}

    async def execute_plan(self, analysis: dict[str, object]) -> dict[str, object]:
        return {"report": f"Suggested: {analysis['recommendation']}"}


def _step4_module():  # type: ignore[no-untyped-def]
    """The seed's Step 2 wrapper and Step 4 ``run_supervised_workflow``, verbatim but for ``print``s."""
    from saferun.agents.executor.agent import ExecutorAgent
    from saferun.core.state_machine.models import ExecutionState

    class MyWrappedAgent:
        def __init__(self, agent_id: str):
            self.executor = ExecutorAgent(agent_id=agent_id)
            self.my_existing_agent = MyExistingAgent()  # Your agent

        async def execute_with_supervision(self, task: str, checkpoint_callback):  # type: ignore[no-untyped-def]
            research_data = await self.my_existing_agent.research(task)
            state_1 = ExecutionState(
                checkpoint_id="research_review",
                agent_memory={"task": task},
                intermediate_outputs={"research": research_data},
                decision_trace=["Completed research phase"],
            )
            await checkpoint_callback(state_1)
            analysis = await self.my_existing_agent.analyze(research_data)
            state_2 = ExecutionState(
                checkpoint_id="analysis_review",
                agent_memory={"task": task, "research": research_data},
                intermediate_outputs={"analysis": analysis},
                decision_trace=["Completed research", "Analyzed data", "Generated plan"],
            )
            await checkpoint_callback(state_2)
            result = await self.my_existing_agent.execute_plan(analysis)
            return result

    import asyncio

    from saferun.api.x402.client import X402Integration
    from saferun.core.state_machine.models import WorkflowState
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    async def run_supervised_workflow(task_description: str, started: asyncio.Queue):  # type: ignore[no-untyped-def]
        x402 = X402Integration()
        orchestrator = WorkflowOrchestrator(x402_integration=x402)
        config = create_my_workflow_config(task_description)
        execution = orchestrator.initialize_workflow(config)
        workflow_id = execution.workflow_id
        orchestrator.start_execution(workflow_id)
        await started.put(workflow_id)
        checkpoint_index = 0

        async def checkpoint_callback(state: ExecutionState):  # type: ignore[no-untyped-def]
            nonlocal checkpoint_index
            snapshot = await orchestrator.create_checkpoint(workflow_id, state)
            orchestrator.request_approval(
                workflow_id=workflow_id,
                snapshot_id=snapshot.snapshot_id,
                summary=f"Checkpoint {checkpoint_index + 1}: {config.checkpoints[checkpoint_index].name}",
                context=state.intermediate_outputs,
            )
            while True:
                workflow = orchestrator.get_workflow(workflow_id)
                if workflow.current_state != WorkflowState.AWAITING_APPROVAL:
                    break
                await asyncio.sleep(0.01)  # the seed polls every second; tests are impatient
            workflow = orchestrator.get_workflow(workflow_id)
            if workflow.current_state == WorkflowState.EXECUTING:
                checkpoint_index += 1
            elif workflow.current_state == WorkflowState.ROLLING_BACK:
                raise Exception("Approval rejected - rollback initiated")

        agent = MyWrappedAgent(agent_id="agent_456")
        try:
            result = await agent.execute_with_supervision(
                task=task_description, checkpoint_callback=checkpoint_callback
            )
            orchestrator.settle_workflow(workflow_id, {"result": result})
            orchestrator.complete_workflow(workflow_id)
            return result
        except Exception as e:
            orchestrator.fail_workflow(workflow_id, str(e))
            raise
        finally:
            await x402.close()

    return run_supervised_workflow


async def _reviewer(started: asyncio.Queue, decisions: list[str]) -> str:
    """A human in another window: decides each pending request of the workflow in turn."""
    from saferun.agents.supervisor.agent import SupervisorAgent
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    workflow_id = await started.get()
    orchestrator = WorkflowOrchestrator()
    supervisor = SupervisorAgent("human_789", orchestrator)
    for decision in decisions:
        while not (pending := orchestrator.pending_approvals(workflow_id)):
            await asyncio.sleep(0.01)
        response = supervisor.submit_decision(
            pending[0].request_id, decision, rationale=f"{decision} by test"
        )
        orchestrator.submit_approval(workflow_id, response)
    return workflow_id


async def test_step4_orchestration_runs_to_completion_when_approved(database_env: Database) -> None:
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    run = _step4_module()
    started: asyncio.Queue = asyncio.Queue()
    result, workflow_id = await asyncio.gather(
        run("Research competitor pricing and suggest our pricing strategy", started),
        _reviewer(started, ["APPROVED", "APPROVED"]),
    )
    assert result == {"report": "Suggested: raise prices 5%"}
    wf = WorkflowOrchestrator().get_workflow(workflow_id)
    assert wf.current_state.value == "completed"
    assert wf.current_checkpoint == 2  # the third ("Final Review") was never reached
    position = WorkflowOrchestrator().escrow_position(workflow_id)
    # two of three milestones paid (66.666667), the rest refunded at settlement
    assert (position.locked, position.released, position.refunded, position.held) == (
        100_000_000,
        66_666_667,
        33_333_333,
        0,
    )


async def test_step4_orchestration_fails_cleanly_when_rejected(database_env: Database) -> None:
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    run = _step4_module()
    started: asyncio.Queue = asyncio.Queue()
    outcome = await asyncio.gather(
        run("Pricing study", started), _reviewer(started, ["APPROVED", "REJECTED"]), return_exceptions=True
    )
    assert isinstance(outcome[0], Exception) and "rollback initiated" in str(outcome[0])
    wf = WorkflowOrchestrator().get_workflow(outcome[1])
    assert wf.current_state.value == "failed"
    position = WorkflowOrchestrator().escrow_position(outcome[1])
    assert (position.released, position.refunded, position.held) == (33_333_334, 66_666_666, 0)


async def test_usage_examples_create_checkpoint_request_and_submit(database_env: Database) -> None:
    from saferun.api.x402.client import X402Integration
    from saferun.core.state_machine.models import CheckpointConfig, WorkflowConfig
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    x402 = X402Integration()
    orchestrator = WorkflowOrchestrator(x402_integration=x402)

    # Define workflow with checkpoints
    config = WorkflowConfig(
        name="Data Processing Pipeline",
        description="Process customer data with approval gates",
        checkpoints=[
            CheckpointConfig(
                name="Review Data Selection",
                description="Ensure correct data is selected",
                requires_approval=True,
            ),
            CheckpointConfig(
                name="Review Transformations",
                description="Validate data transformations",
                requires_approval=True,
            ),
        ],
        escrow_amount=100.0,
        poster_id="user_123",
        executor_id="agent_456",
    )

    # Initialize and start
    execution = orchestrator.initialize_workflow(config)
    orchestrator.start_execution(config.workflow_id)
    workflow_id = execution.workflow_id

    from saferun.core.state_machine.models import ExecutionState

    # Capture state at checkpoint
    checkpoint_state = ExecutionState(
        checkpoint_id="review_data",
        agent_memory={"task": "data processing", "phase": "collection"},
        api_calls=[{"endpoint": "/api/data", "status": 200}],
        intermediate_outputs={"records_found": 100},
        decision_trace=["Fetched data", "Validated format"],
        resource_consumption={"api_calls": 1, "tokens_used": 0},
    )

    snapshot = await orchestrator.create_checkpoint(workflow_id, checkpoint_state)
    checkpoint_id = snapshot.checkpoint_id

    from saferun.agents.supervisor.agent import SupervisorAgent

    supervisor = SupervisorAgent(supervisor_id="supervisor_789")

    # Create approval request
    approval_request = supervisor.create_approval_request(
        workflow_id=workflow_id,
        checkpoint_id=checkpoint_id,
        snapshot_id=snapshot.snapshot_id,
        execution_state=checkpoint_state,
    )

    # Format for human review
    display = supervisor.format_for_display(approval_request)
    assert display["summary"] and display["options"] == ["APPROVED", "MODIFIED", "REJECTED"]

    from saferun.core.state_machine.models import ApprovalDecision

    # Human makes decision
    response = supervisor.submit_decision(
        request_id=approval_request.request_id,
        decision=ApprovalDecision.APPROVED,
        rationale="Data selection looks correct",
        approved_by="user_123",
    )

    # Route to orchestrator
    orchestrator.submit_approval(workflow_id, response)

    wf = orchestrator.get_workflow(workflow_id)
    assert wf.current_state.value == "executing"
    assert wf.current_checkpoint == 1
    assert snapshot.checkpoint_id == config.checkpoints[0].checkpoint_id  # "review_data" bound to the first
