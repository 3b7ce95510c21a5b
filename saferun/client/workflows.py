"""Workflows over HTTP: create, start, checkpoint, settle, finish, fork (``/api/workflows``)."""

from __future__ import annotations

from typing import Any

from saferun.client.calls import B, Call, J, Sends, compact, get, post, seg
from saferun.core.state_machine.models import ExecutionState, WorkflowConfig


def workflow_body(config: WorkflowConfig) -> dict[str, Any]:
    """``POST /api/workflows`` for a full ``WorkflowConfig`` (checkpoint ids, weights and policies kept)."""
    body: dict[str, Any] = {
        "name": config.name,
        "description": config.description,
        "checkpoints": [cp.model_dump(mode="json") for cp in config.checkpoints],
        "escrow_amount": str(config.escrow_amount),
        "poster_id": config.poster_id,
        "executor_id": config.executor_id,
        "supervisor_id": config.supervisor_id,
        "workflow_id": config.workflow_id,
        "executor_share": str(config.executor_share),
    }
    if config.metadata:  # not part of the API's body today: refused (422) rather than silently dropped
        body["metadata"] = config.metadata
    return body


class WorkflowEndpoints:
    """How each workflow endpoint's request is built."""

    @staticmethod
    def create_workflow(config: WorkflowConfig | None, fields: dict[str, Any]) -> Call:
        if config is not None and fields:
            raise TypeError("give a WorkflowConfig or keyword fields, not both")
        body = workflow_body(config) if config is not None else fields
        return post("/api/workflows", body)

    @staticmethod
    def get_workflow(workflow_id: str) -> Call:
        return get(f"/api/workflows/{seg(workflow_id)}")

    @staticmethod
    def list_workflows(status: str | None, limit: int, offset: int, cursor: str | None = None) -> Call:
        return get(
            "/api/workflows", {"status": status, "limit": limit, "offset": offset or None, "cursor": cursor}
        )

    @staticmethod
    def start(workflow_id: str) -> Call:
        return post(f"/api/workflows/{seg(workflow_id)}/start", has_body=False)

    @staticmethod
    def checkpoint(
        workflow_id: str,
        state: ExecutionState | dict[str, Any],
        request_approval: bool,
        review: dict[str, Any],
    ) -> Call:
        body: dict[str, Any] = {
            "state": state.model_dump(mode="json") if isinstance(state, ExecutionState) else state,
            "request_approval": request_approval,
        }
        body.update(compact(review))
        return post(f"/api/workflows/{seg(workflow_id)}/checkpoints", body)

    @staticmethod
    def settle(workflow_id: str, result: dict[str, Any] | None) -> Call:
        return post(f"/api/workflows/{seg(workflow_id)}/settle", {"result": dict(result or {})})

    @staticmethod
    def complete(workflow_id: str) -> Call:
        return post(f"/api/workflows/{seg(workflow_id)}/complete", has_body=False)

    @staticmethod
    def fail(workflow_id: str, error: str) -> Call:
        return post(f"/api/workflows/{seg(workflow_id)}/fail", {"error": error})

    @staticmethod
    def cancel(workflow_id: str, reason: str) -> Call:
        return post(f"/api/workflows/{seg(workflow_id)}/cancel", {"reason": reason})

    @staticmethod
    def fork(workflow_id: str, checkpoint: str, **options: Any) -> Call:
        body = {"checkpoint": checkpoint, **compact(options)}
        if body.get("escrow_amount") is not None:
            body["escrow_amount"] = str(body["escrow_amount"])
        return post(f"/api/workflows/{seg(workflow_id)}/fork", body)


class WorkflowMethods(Sends[J, B]):
    """The workflow calls of both clients (awaited on the async one)."""

    def create_workflow(self, config: WorkflowConfig | None = None, **fields: Any) -> J:
        """From a ``WorkflowConfig``, or from the API's fields (``name=``, ``checkpoint_names=``, ...)."""
        return self._json(WorkflowEndpoints.create_workflow(config, fields))

    def get_workflow(self, workflow_id: str) -> J:
        return self._json(WorkflowEndpoints.get_workflow(workflow_id))

    def list_workflows(
        self, status: str | None = None, limit: int = 100, offset: int = 0, *, cursor: str | None = None
    ) -> J:
        """One page, newest first: ``total`` counts them all; pass ``next_cursor`` back as ``cursor``."""
        return self._json(WorkflowEndpoints.list_workflows(status, limit, offset, cursor))

    def start(self, workflow_id: str) -> J:
        return self._json(WorkflowEndpoints.start(workflow_id))

    def checkpoint(
        self,
        workflow_id: str,
        state: ExecutionState | dict[str, Any],
        *,
        request_approval: bool = True,
        summary: str | None = None,
        decision_needed: str | None = None,
        context: dict[str, Any] | None = None,
        recommendation: str | None = None,
        confidence: float | None = None,
        risk: dict[str, Any] | None = None,
        alerts: list[dict[str, Any]] | None = None,
        parameter_schema: dict[str, Any] | None = None,
        items: list[dict[str, Any]] | None = None,
    ) -> J:
        """Store ``state`` durably; with ``request_approval`` the workflow pauses for a reviewer, who sees
        the review fields given here (``items``: several requests at this one pause, each decided once)."""
        review = {
            "summary": summary,
            "decision_needed": decision_needed,
            "context": context,
            "recommendation": recommendation,
            "confidence": confidence,
            "risk": risk,
            "alerts": alerts,
            "parameter_schema": parameter_schema,
            "items": items,
        }
        return self._json(WorkflowEndpoints.checkpoint(workflow_id, state, request_approval, review))

    def settle(self, workflow_id: str, result: dict[str, Any] | None = None) -> J:
        return self._json(WorkflowEndpoints.settle(workflow_id, result))

    def complete(self, workflow_id: str) -> J:
        return self._json(WorkflowEndpoints.complete(workflow_id))

    def fail(self, workflow_id: str, error: str) -> J:
        return self._json(WorkflowEndpoints.fail(workflow_id, error))

    def cancel(self, workflow_id: str, reason: str = "") -> J:
        return self._json(WorkflowEndpoints.cancel(workflow_id, reason))

    def fork_workflow(self, workflow_id: str, checkpoint: str, **options: Any) -> J:
        """A new workflow from an approved checkpoint of ``workflow_id`` (options: ``escrow_amount``,
        ``name``, ``modifications``, ``workflow_id``); the source is never changed."""
        return self._json(WorkflowEndpoints.fork(workflow_id, checkpoint, **options))
