"""``POST /api/workflows/{id}/fork``: a new workflow from one of the source's approved checkpoints.

Who may fork: whoever may post for the source's poster (the poster, or an admin), because a fork locks
a new escrow from that poster's account; the source must be visible to the caller first, so a foreign
workflow stays a 404 like an unknown one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import Field

from saferun.api import schemas as s
from saferun.api.deps import CallerDep, OrchestratorDep, enforce, visible
from saferun.api.one_hop import OneHopRoute
from saferun.api.workflows import detail
from saferun.domain.policy import may_create_workflow

router = APIRouter(prefix="/api/workflows", tags=["workflows"], route_class=OneHopRoute)


class ForkIn(s.Strict):
    checkpoint: str = Field(
        min_length=1, max_length=64, description="the source's checkpoint id (or approved snapshot id)"
    )
    escrow_amount: Annotated[Any, s.doc({"anyOf": [s.amount_schema(), {"type": "null"}]})] = Field(
        default=None, description="the fork's escrow (default: the source's amount)"
    )
    name: str | None = Field(default=None, min_length=1, max_length=500)
    modifications: dict[str, Any] | None = Field(
        default=None,
        description="parameter changes, checked against the checkpoint's parameter schema",
        json_schema_extra={"minProperties": 1},
    )
    workflow_id: str | None = Field(default=None, min_length=1, max_length=64)


@router.post("/{workflow_id}/fork", status_code=201, response_model=s.WorkflowDetail)
def fork(workflow_id: str, body: ForkIn, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """Start a new workflow from the source's approved state at ``checkpoint``: its own escrow and audit
    chain (whose first events link to the source), the source's remaining checkpoints, the source
    unchanged. 409 when that checkpoint was never approved; 422 when it is the last one."""
    source = visible(orch, caller, workflow_id)
    enforce(may_create_workflow(caller, source.config.poster_id))
    return detail(
        orch.fork_workflow(
            workflow_id,
            body.checkpoint,
            actor=caller.identity_id or source.config.poster_id,
            escrow_amount=body.escrow_amount,
            name=body.name,
            modifications=body.modifications,
            workflow_id=body.workflow_id,
        )
    )
