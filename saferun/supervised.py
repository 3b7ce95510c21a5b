"""The agent author's API: a supervised run as a context manager.

    async with supervised(config) as run:
        order = shop.place_order(pizzas=100)
        await run.step("place order", compensation="cancel_order", args={"order_id": order.id})
        decision = await run.checkpoint("Review food order", parameters={"pizza_count": 100},
                                        summary="Order 100 pizzas for $1,200?")
        shop.update(order.id, pizzas=decision.parameters["pizza_count"])   # 10 if the reviewer modified it

``checkpoint`` captures the state, opens the approval request and waits for the decision. It returns the
decision (modifications merged into ``parameters``) or, on rejection, runs the compensations and raises
``ApprovalRejected`` carrying the last approved state. Leaving the block normally settles and completes
the workflow; leaving it with an exception fails it (approved milestones stay paid, the rest is refunded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from saferun.core.decisions import TIMEOUT_ACTOR
from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    CheckpointSnapshot,
    ExecutionState,
    WorkflowConfig,
    WorkflowExecution,
)
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.states import WorkflowState
from saferun.errors import ApprovalExpired, ApprovalRejected, InvalidInput, InvalidTransition
from saferun.run_types import AGENT_PROGRESS, Decision, Orchestrator
from saferun.supervised_items import CheckpointItems

__all__ = ["Decision", "Orchestrator", "SupervisedRun", "attach", "current_run", "supervised"]

log = logging.getLogger(__name__)


class SupervisedRun(CheckpointItems):
    """One workflow seen from the agent's side. Create it with ``supervised(...)``."""

    def __init__(
        self,
        config: WorkflowConfig,
        orchestrator: Orchestrator | None = None,
        *,
        result: dict[str, Any] | None = None,
        create: bool = True,
    ) -> None:
        self.config = config
        self.create = create
        self.orchestrator: Orchestrator = orchestrator or WorkflowOrchestrator()
        self.workflow_id = config.workflow_id
        self.result: dict[str, Any] = dict(result or {})
        self.memory: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        self.trace: list[str] = []
        # the loop the run lives on, so code in worker threads (sync tools) can wait on it
        self.loop: asyncio.AbstractEventLoop | None = None
        self._token: Token[SupervisedRun | None] | None = None
        # an attached run (an agent restarted, or one that did not create the workflow) may find its
        # first checkpoint already asked and answered while no agent was running
        self._may_replay = not create

    async def __aenter__(self) -> SupervisedRun:
        if self.create:
            self.orchestrator.initialize_workflow(self.config)
        if self.orchestrator.get_workflow(self.workflow_id).current_state == WorkflowState.INITIALIZED:
            self.orchestrator.start_execution(self.workflow_id)
        self.loop = asyncio.get_running_loop()
        self._token = _current_run.set(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            try:
                _current_run.reset(self._token)
            except ValueError:  # left in another context than it was entered in: just forget it there
                _current_run.set(None)
            self._token = None
        state = self.orchestrator.get_workflow(self.workflow_id).current_state
        if exc is None:
            if state == WorkflowState.EXECUTING:
                self.orchestrator.settle_workflow(self.workflow_id, self.result)
                state = WorkflowState.SETTLING
            if state == WorkflowState.SETTLING:
                # also resumes a predecessor killed between settle and complete (an attached run)
                try:
                    self.orchestrator.complete_workflow(self.workflow_id)
                except InvalidTransition:
                    # the sweep (or `saferun workflows finish`) completed it meanwhile: the same outcome
                    now = self.orchestrator.get_workflow(self.workflow_id).current_state
                    if now != WorkflowState.COMPLETED:
                        raise
            return
        if state in (WorkflowState.EXECUTING, WorkflowState.ROLLING_BACK, WorkflowState.SETTLING):
            self.orchestrator.fail_workflow(self.workflow_id, f"{type(exc).__name__}: {exc}")

    async def step(self, name: str, *, compensation: str, args: dict[str, Any] | None = None) -> str:
        """Record a side effect just performed and the registered compensation that undoes it."""
        self.trace.append(f"step: {name}")
        return self.orchestrator.register_step(self.workflow_id, name, compensation, args)

    async def checkpoint(
        self,
        name: str | None = None,
        *,
        state: ExecutionState | None = None,
        summary: str | None = None,
        parameters: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        recommendation: str | None = None,
        confidence: float | None = None,
        alerts: list[dict[str, Any]] | None = None,
        risk: dict[str, Any] | None = None,
        parameter_schema: dict[str, Any] | None = None,
        wait_timeout: float | None = None,
    ) -> Decision:
        """Capture, ask, wait; return the decision or raise ``ApprovalRejected`` after compensating.

        ``parameter_schema`` (a JSON Schema) declares what the reviewer may change in ``parameters``
        (types, enum, minimum/maximum, pattern, required); without it the checkpoint config's, else one
        inferred from the values. A modification outside it is refused everywhere with the field named."""
        cp = self._checkpoint_config(name)
        if state is None:
            state = ExecutionState(
                checkpoint_id=cp.checkpoint_id,
                agent_memory=self.memory,
                intermediate_outputs=self.outputs,
                decision_trace=self.trace,
                parameters=parameters or {},
            )
        elif parameters is not None:
            state = state.model_copy(update={"parameters": parameters})
        if state.checkpoint_id != cp.checkpoint_id and self.config.checkpoint(state.checkpoint_id) is None:
            state = state.model_copy(update={"checkpoint_id": cp.checkpoint_id})
        orch = self.orchestrator
        replayed = self._decided_while_away(cp.checkpoint_id) if self._may_replay else None
        self._may_replay = False
        if replayed is not None:
            return await self._decision(replayed[0], replayed[1], state)
        try:
            snapshot, request = await orch.pause(
                self.workflow_id,
                state,
                summary or f"{cp.name}: {cp.description}".rstrip(": "),
                context if context is not None else dict(state.intermediate_outputs),
                recommendation=recommendation,
                confidence=confidence,
                alerts=alerts,
                risk=risk,
                parameter_schema=parameter_schema,
            )
        except InvalidTransition as exc:
            await self._answer_rollback_in_progress(exc)
            snapshot, request = self._adopt_pending(cp.checkpoint_id, exc)
        if request is None:  # requires_approval=False: nothing to wait for
            return Decision(
                ApprovalDecision.APPROVED,
                "no approval required",
                "saferun",
                None,
                dict(state.parameters),
                None,
                snapshot,
            )
        response = await orch.wait_for_decision(request.request_id, timeout=wait_timeout)
        return await self._decision(request, response, state, snapshot)

    async def _decision(
        self,
        request: ApprovalRequest,
        response: ApprovalResponse,
        state: ExecutionState,
        snapshot: CheckpointSnapshot | None = None,
    ) -> Decision:
        """What ``checkpoint`` answers for a decided request (a rejection raises, after compensating)."""
        orch = self.orchestrator
        if response.decision == ApprovalDecision.REJECTED:
            await self._after_rejection(request.checkpoint_id, response)
        if snapshot is None:
            snapshot = next(
                s for s in orch.list_snapshots(self.workflow_id) if s.snapshot_id == request.snapshot_id
            )
        # the state the agent continues from, reloaded from the store (with a modification merged in)
        approved = orch.latest_approved_state(self.workflow_id) or state
        return Decision(
            response.decision,
            response.rationale,
            response.approved_by,
            response.modifications,
            dict(approved.parameters),
            request.request_id,
            snapshot,
            response.review_digest,
        )

    def _decided_while_away(self, checkpoint_id: str) -> tuple[ApprovalRequest, ApprovalResponse] | None:
        """The workflow's last decision, when it answered this checkpoint and the agent has done nothing
        since (no step registered, no checkpoint captured): an agent that died while its reviewer was
        reading, restarted after the decision, and runs its code again gets that decision instead of
        asking the same question twice. Only a run's first checkpoint call looks (see ``attach``)."""
        orch = self.orchestrator
        events = orch.audit_events(self.workflow_id)
        last = next((i for i in range(len(events) - 1, -1, -1) if events[i]["kind"] == "decision"), None)
        if last is None or any(e["kind"] in AGENT_PROGRESS for e in events[last + 1 :]):
            return None
        request = orch.get_approval_request(events[last]["payload"]["request_id"])
        response = orch.get_approval_response(request.request_id)
        if request.checkpoint_id != checkpoint_id or response is None:
            return None
        self.trace.append(f"decided while away: {checkpoint_id} (request {request.request_id})")
        log.info(
            "workflow %s: checkpoint %s was decided (%s) while no agent ran; using that decision",
            self.workflow_id,
            checkpoint_id,
            response.decision.value,
        )
        return request, response

    async def _answer_rollback_in_progress(self, refused: InvalidTransition) -> None:
        """Raise ``ApprovalRejected`` for the rejection a workflow is still rolling back from, when its
        agent (restarted mid-rollback, or asking a checkpoint the replay did not match) asks again; return
        when the refusal was anything else. ``checkpoint`` and ``checkpoint_many`` both call it.

        The agent must get what the rejection means (the rollback finished by it or by whoever else runs
        it, then ``ApprovalRejected`` with the restored state), never a refused pause that would end its
        ``async with`` block and fail a workflow whose rollback succeeds (the kill -9 harness found one
        in ~1,400 trials)."""
        if refused.state != WorkflowState.ROLLING_BACK.value:
            return
        orch = self.orchestrator
        for event in reversed(orch.audit_events(self.workflow_id)):
            if event["kind"] != "decision":
                continue
            if event["payload"].get("decision") != ApprovalDecision.REJECTED.value:
                return  # the last decision was not a rejection: nothing this agent can answer
            request = orch.get_approval_request(event["payload"]["request_id"])
            response = orch.get_approval_response(request.request_id)
            if response is not None:  # finish (or await) that rollback, then raise
                await self._after_rejection(request.checkpoint_id, response, request.item_key)
            return

    def _adopt_pending(
        self, checkpoint_id: str, refused: InvalidTransition
    ) -> tuple[CheckpointSnapshot, ApprovalRequest]:
        """An agent that restarted while this checkpoint waited for its reviewer waits on that request
        instead of failing: the pause survived the process, so the agent's code can simply run again."""
        if refused.state != WorkflowState.AWAITING_APPROVAL.value:
            raise refused
        orch = self.orchestrator
        waiting = [r for r in orch.pending_approvals(self.workflow_id) if r.checkpoint_id == checkpoint_id]
        if not waiting:
            raise refused
        request = waiting[0]
        snapshots = orch.list_snapshots(self.workflow_id)
        snapshot = next(s for s in snapshots if s.snapshot_id == request.snapshot_id)
        self.trace.append(f"resumed waiting for {checkpoint_id} (request {request.request_id})")
        log.info(
            "workflow %s: checkpoint %s already waits as %s; waiting on it",
            self.workflow_id,
            checkpoint_id,
            request.request_id,
        )
        return snapshot, request

    async def _rollback_outcome(self) -> WorkflowExecution:
        """Run the rejected workflow's rollback, or wait for whoever runs it, until it has an outcome.

        The agent, the sweep of any process and another replica may all be rolling the same workflow
        back: each claims steps, and the one holding the last step resumes the workflow. This agent
        therefore runs the saga itself, treats "not rolling back any more" as another process having
        finished it, and, while another live process still holds a step, polls (backing off to 0.5 s)
        and runs the saga again, which takes a step over once its holder's claim is stale. So the answer
        is the same whoever finishes: EXECUTING from the restored state, or FAILED naming the step.
        """
        orch = self.orchestrator
        delay = 0.01
        while True:
            wf = orch.get_workflow(self.workflow_id)
            if wf.current_state != WorkflowState.ROLLING_BACK:
                return wf
            # InvalidTransition: finished (or failed) by another process since the read above
            with contextlib.suppress(InvalidTransition):
                await orch.arollback(self.workflow_id)
            wf = orch.get_workflow(self.workflow_id)
            if wf.current_state != WorkflowState.ROLLING_BACK:
                return wf
            await asyncio.sleep(delay)
            delay = min(0.5, delay * 2)

    async def _after_rejection(
        self, checkpoint_id: str, response: ApprovalResponse, item_key: str | None = None
    ) -> None:
        orch = self.orchestrator
        wf = await self._rollback_outcome()
        restored = orch.latest_approved_state(self.workflow_id)
        last_cp = None
        if wf.last_approved_snapshot_id:
            last_cp = next(
                s.checkpoint_id
                for s in orch.list_snapshots(self.workflow_id)
                if s.snapshot_id == wf.last_approved_snapshot_id
            )
        expired = response.automatic and response.approved_by == TIMEOUT_ACTOR
        raise (ApprovalExpired if expired else ApprovalRejected)(
            self.workflow_id,
            checkpoint_id,
            last_cp,
            response.rationale,
            restored_state=restored,
            workflow_state=wf.current_state.value,
            item_key=item_key,
        )

    def _checkpoint_config(self, name: str | None) -> Any:
        cps = self.config.checkpoints
        if name is None:
            done = self.orchestrator.get_workflow(self.workflow_id).current_checkpoint
            return cps[min(done, len(cps) - 1)]
        for cp in cps:
            if name in (cp.name, cp.checkpoint_id):
                return cp
        raise InvalidInput(
            "name", f"no checkpoint named {name!r} (configured: {', '.join(c.name for c in cps)})"
        )


# The run whose ``async with`` block is executing; tasks and worker threads started inside it inherit it.
_current_run: ContextVar[SupervisedRun | None] = ContextVar("saferun_current_run", default=None)


def current_run() -> SupervisedRun | None:
    """The supervised run this code executes in, or None outside any ``async with supervised(...)`` block.

    Lets helpers that wrap an agent's functions (``saferun.integrations.requires_approval``, the LangGraph
    adapter) find the run without it being threaded through every call of the agent's code.
    """
    return _current_run.get()


def supervised(
    config: WorkflowConfig,
    orchestrator: Orchestrator | None = None,
    *,
    result: dict[str, Any] | None = None,
) -> SupervisedRun:
    """Start a supervised workflow for the length of an ``async with`` block, in this process (default)
    or on a SafeRun server (``saferun.client.RemoteOrchestrator``)."""
    return SupervisedRun(config, orchestrator, result=result)


def attach(
    workflow_id: str, orchestrator: Orchestrator | None = None, *, result: dict[str, Any] | None = None
) -> SupervisedRun:
    """Run as the agent of a workflow someone else created (a poster, through the API or the dashboard).

    The workflow is started if it is still INITIALIZED; an agent that restarts mid-workflow attaches the
    same way and continues from ``orchestrator.latest_approved_state(workflow_id)``.
    """
    orch: Orchestrator = orchestrator or WorkflowOrchestrator()
    config = orch.get_workflow(workflow_id).config
    return SupervisedRun(config, orch, result=result, create=False)
