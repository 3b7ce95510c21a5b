"""Checkpoints that ask several things at once (parallel tool calls, a LangGraph step's interrupts).

``SupervisedRun.checkpoint_many`` opens one approval request per item at one checkpoint (one snapshot,
one transaction) and waits until every item is answered; see ``saferun/core/decisions.py`` for what each
item's decision does to the workflow. A mixin of ``SupervisedRun``, split from ``saferun/supervised.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    CheckpointConfig,
    CheckpointItem,
    CheckpointSnapshot,
    ExecutionState,
    WorkflowConfig,
)
from saferun.domain.states import WorkflowState
from saferun.errors import InvalidTransition
from saferun.run_types import AGENT_PROGRESS, Decision, Orchestrator

log = logging.getLogger("saferun.supervised")


class CheckpointItems:
    """``checkpoint_many`` and what it needs; the rest of the run is ``SupervisedRun``'s."""

    config: WorkflowConfig
    orchestrator: Orchestrator
    workflow_id: str
    memory: dict[str, Any]
    outputs: dict[str, Any]
    trace: list[str]
    _may_replay: bool

    if TYPE_CHECKING:  # provided by SupervisedRun

        def _checkpoint_config(self, name: str | None) -> CheckpointConfig: ...
        async def _after_rejection(
            self, checkpoint_id: str, response: ApprovalResponse, item_key: str | None = None
        ) -> None: ...
        async def _answer_rollback_in_progress(self, refused: InvalidTransition) -> None: ...

    async def checkpoint_many(
        self,
        name: str | None = None,
        *,
        items: Sequence[CheckpointItem | Mapping[str, Any]],
        state: ExecutionState | None = None,
        summary: str | None = None,
        context: dict[str, Any] | None = None,
        recommendation: str | None = None,
        confidence: float | None = None,
        alerts: list[dict[str, Any]] | None = None,
        risk: dict[str, Any] | None = None,
        parameter_schema: dict[str, Any] | None = None,
        wait_timeout: float | None = None,
    ) -> dict[str, Decision]:
        """Ask several things at one checkpoint (parallel tool calls) and wait until all are answered.

        Each item is ``{"key", "summary", "parameters", "parameter_schema", "decision_needed", "context"}``
        (only ``key`` required; a tool-call id is a good key: it must not change if the agent restarts).
        One snapshot is captured and one request opened per item; the reviewer decides each on its own.
        Returns ``{key: Decision}`` once every item is approved or modified (each ``Decision.parameters``
        is that item's own, modifications merged). If any item is rejected (or expires with on_timeout
        reject) the checkpoint is rejected: the compensations run and ``ApprovalRejected`` is raised,
        its ``item_key`` naming the rejected item. ``parameter_schema`` here is the default for items that
        declare none."""
        cp = self._checkpoint_config(name)
        if state is None:
            state = ExecutionState(
                checkpoint_id=cp.checkpoint_id,
                agent_memory=self.memory,
                intermediate_outputs=self.outputs,
                decision_trace=self.trace,
            )
        elif state.checkpoint_id != cp.checkpoint_id and self.config.checkpoint(state.checkpoint_id) is None:
            state = state.model_copy(update={"checkpoint_id": cp.checkpoint_id})
        orch = self.orchestrator
        replayed = self._group_decided_while_away(cp.checkpoint_id) if self._may_replay else None
        self._may_replay = False
        if replayed is not None:
            return await self._item_decisions(cp.checkpoint_id, replayed, wait_timeout)
        try:
            snapshot, requests = await orch.pause_items(
                self.workflow_id,
                state,
                summary or f"{cp.name}: {cp.description}".rstrip(": "),
                list(items),
                context if context is not None else dict(state.intermediate_outputs),
                recommendation=recommendation,
                confidence=confidence,
                alerts=alerts,
                risk=risk,
                parameter_schema=parameter_schema,
            )
        except InvalidTransition as exc:
            await self._answer_rollback_in_progress(exc)
            snapshot, requests = self._adopt_pending_group(cp.checkpoint_id, exc)
        if not requests:  # requires_approval=False: every item passes as asked
            asked = [i if isinstance(i, CheckpointItem) else CheckpointItem.model_validate(i) for i in items]
            return {
                i.key: Decision(
                    ApprovalDecision.APPROVED,
                    "no approval required",
                    "saferun",
                    None,
                    dict(i.parameters),
                    None,
                    snapshot,
                )
                for i in asked
            }
        return await self._item_decisions(cp.checkpoint_id, requests, wait_timeout, snapshot)

    async def _item_decisions(
        self,
        checkpoint_id: str,
        requests: list[ApprovalRequest],
        wait_timeout: float | None,
        snapshot: CheckpointSnapshot | None = None,
    ) -> dict[str, Decision]:
        """Wait for every item of a group: ``{key: Decision}``, or raise after compensating on a rejection."""
        orch = self.orchestrator
        if snapshot is None:
            snapshot = next(
                s for s in orch.list_snapshots(self.workflow_id) if s.snapshot_id == requests[0].snapshot_id
            )
        keys = {r.request_id: r.item_key for r in requests}
        responses: dict[str, ApprovalResponse] = {}
        for request in requests:  # in turn: the last answer completes the checkpoint before it is read
            response = await orch.wait_for_decision(request.request_id, timeout=wait_timeout)
            if response.decision == ApprovalDecision.REJECTED:
                # a closed item answers with the sibling rejection that closed it: name that item
                await self._after_rejection(checkpoint_id, response, keys.get(response.request_id))
            responses[str(request.item_key)] = response
        approved = orch.latest_approved_state(self.workflow_id)
        decided = dict(approved.parameters) if approved is not None else {}
        by_key = {str(r.item_key): r for r in requests}
        return {
            key: Decision(
                resp.decision,
                resp.rationale,
                resp.approved_by,
                resp.modifications,
                dict(decided.get(key) or by_key[key].parameters),
                resp.request_id,
                snapshot,
                resp.review_digest,
            )
            for key, resp in responses.items()
        }

    def _group_decided_while_away(self, checkpoint_id: str) -> list[ApprovalRequest] | None:
        """``_decided_while_away`` for a checkpoint with items: the items of the workflow's last decided
        group, when it belongs to this checkpoint and the agent has done nothing since."""
        orch = self.orchestrator
        events = orch.audit_events(self.workflow_id)
        last = next((i for i in range(len(events) - 1, -1, -1) if events[i]["kind"] == "decision"), None)
        if last is None or any(e["kind"] in AGENT_PROGRESS for e in events[last + 1 :]):
            return None
        payload = events[last]["payload"]
        if payload.get("group_id") is None:
            return None
        items = [request for request, _ in orch.checkpoint_items(payload["request_id"])]
        if items[0].checkpoint_id != checkpoint_id or any(r.status == "pending" for r in items):
            return None  # pending items are waited on through _adopt_pending_group
        self.trace.append(f"decided while away: {checkpoint_id} ({len(items)} items)")
        return items

    def _adopt_pending_group(
        self, checkpoint_id: str, refused: InvalidTransition
    ) -> tuple[CheckpointSnapshot, list[ApprovalRequest]]:
        """``_adopt_pending`` for a checkpoint with items: an agent restarted while they waited waits on
        the same items (those already decided answer at once) instead of asking again."""
        if refused.state != WorkflowState.AWAITING_APPROVAL.value:
            raise refused
        orch = self.orchestrator
        waiting = [
            r
            for r in orch.pending_approvals(self.workflow_id)
            if r.checkpoint_id == checkpoint_id and r.group_id is not None
        ]
        if not waiting:
            raise refused
        group = [request for request, _ in orch.checkpoint_items(waiting[0].request_id)]
        snapshot = next(
            s for s in orch.list_snapshots(self.workflow_id) if s.snapshot_id == group[0].snapshot_id
        )
        self.trace.append(f"resumed waiting for {checkpoint_id} ({len(group)} items)")
        log.info(
            "workflow %s: checkpoint %s already waits on %d items",
            self.workflow_id,
            checkpoint_id,
            len(group),
        )
        return snapshot, group
