"""The saga's step protocol over HTTP: register steps, and run a rollback's compensations in the agent's
process (list what to undo, claim a step with a fencing generation, report it, complete the rollback)."""

from __future__ import annotations

from typing import Any

from saferun.client.calls import B, Call, J, Sends, get, post, seg


class SagaEndpoints:
    """How each step endpoint's request is built."""

    @staticmethod
    def register_step(workflow_id: str, name: str, compensation: str, args: dict[str, Any] | None) -> Call:
        body = {"name": name, "compensation": compensation, "args": dict(args or {})}
        return post(f"/api/workflows/{seg(workflow_id)}/steps", body)

    @staticmethod
    def steps(workflow_id: str) -> Call:
        return get(f"/api/workflows/{seg(workflow_id)}/steps")

    @staticmethod
    def steps_to_undo(workflow_id: str) -> Call:
        return get(f"/api/workflows/{seg(workflow_id)}/rollback/steps")

    @staticmethod
    def claim_step(workflow_id: str, step_id: str, owner: str) -> Call:
        body = {"owner": owner}  # the staleness window is the server's SAFERUN_STALE_CLAIM_SECONDS
        return post(f"/api/workflows/{seg(workflow_id)}/rollback/steps/{seg(step_id)}/claim", body)

    @staticmethod
    def finish_step(
        workflow_id: str, step_id: str, ok: bool, error: str, generation: int | None = None
    ) -> Call:
        body: dict[str, Any] = {"ok": ok, "error": error}
        if generation is not None:  # the claim's fencing token: a taken-over claim's result is refused
            body["generation"] = generation
        return post(f"/api/workflows/{seg(workflow_id)}/rollback/steps/{seg(step_id)}/finish", body)

    @staticmethod
    def complete_rollback(workflow_id: str, compensated: list[str] | None) -> Call:
        body = {"compensated": list(compensated or [])}
        return post(f"/api/workflows/{seg(workflow_id)}/rollback/complete", body)


class SagaMethods(Sends[J, B]):
    """The step calls of both clients (awaited on the async one)."""

    def register_step(
        self, workflow_id: str, name: str, compensation: str, args: dict[str, Any] | None = None
    ) -> J:
        return self._json(SagaEndpoints.register_step(workflow_id, name, compensation, args))

    def steps(self, workflow_id: str) -> J:
        return self._json(SagaEndpoints.steps(workflow_id))

    def steps_to_undo(self, workflow_id: str) -> J:
        return self._json(SagaEndpoints.steps_to_undo(workflow_id))

    def claim_step(self, workflow_id: str, step_id: str, owner: str) -> J:
        return self._json(SagaEndpoints.claim_step(workflow_id, step_id, owner))

    def finish_step(
        self, workflow_id: str, step_id: str, ok: bool, error: str = "", generation: int | None = None
    ) -> J:
        return self._json(SagaEndpoints.finish_step(workflow_id, step_id, ok, error, generation))

    def complete_rollback(self, workflow_id: str, compensated: list[str] | None = None) -> J:
        return self._json(SagaEndpoints.complete_rollback(workflow_id, compensated))
