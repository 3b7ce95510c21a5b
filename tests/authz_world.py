"""The world of the authorization matrix (tests/test_authz_matrix.py): two workflows, every role of each.

Workflow A and workflow B each have a poster, an executor, an assigned supervisor and a platform; besides
them an unassigned supervisor, an admin, and no/bad keys. Both workflows are paused at a checkpoint with a
pending approval request, a snapshot and a registered saga step, so every path parameter has a real id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from saferun.core.identity import IdentityService
from saferun.core.state_machine.models import CheckpointConfig, WorkflowConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.helpers import pause

# caller name -> (identity id, roles); None: no key at all, "bad": a malformed key
CALLERS: dict[str, tuple[str, list[str]] | None] = {
    "none": None,
    "bad": None,
    "poster_a": ("poster_a", ["poster"]),
    "exec_a": ("exec_a", ["executor"]),
    "sup_a": ("sup_a", ["supervisor"]),
    "poster_b": ("poster_b", ["poster"]),
    "exec_b": ("exec_b", ["executor"]),
    "sup_b": ("sup_b", ["supervisor"]),
    "sup_free": ("sup_free", ["supervisor"]),  # a supervisor assigned to neither workflow
    "admin": ("admin", ["admin"]),
    "plat_a": ("plat_a", ["platform"]),  # the platform workflow A is on
    "plat_b": ("plat_b", ["platform"]),  # the platform workflow B is on
}


@dataclass
class Side:
    """The ids of one workflow and everything under it."""

    workflow_id: str
    request_id: str
    snapshot_id: str
    sha256: str
    step_id: str
    job_id: str
    escrow_id: str

    def ids(self) -> list[str]:
        return [self.workflow_id, self.request_id, self.snapshot_id, self.sha256]


@dataclass
class World:
    orch: WorkflowOrchestrator
    a: Side
    b: Side
    headers: dict[str, dict[str, str]] = field(default_factory=dict)


def _workflow(orch: WorkflowOrchestrator, side: str) -> Side:
    wid = f"wf_{side}"
    orch.initialize_workflow(
        WorkflowConfig(
            workflow_id=wid,
            name=f"Workflow {side.upper()}",
            checkpoints=[CheckpointConfig(name="Review 1", checkpoint_id="cp1"),
                         CheckpointConfig(name="Review 2", checkpoint_id="cp2")],
            escrow_amount="100.00",
            poster_id=f"poster_{side}",
            executor_id=f"exec_{side}",
            supervisor_id=f"sup_{side}",
            platform_id=f"plat_{side}",
        )
    )
    orch.start_execution(wid)
    step_id = orch.register_step(wid, "send_email", "unsend_email", {"to": side})
    return Side(wid, "", "", "", step_id, "", "")


async def build(db: Database) -> World:
    ids = IdentityService(db)
    headers: dict[str, dict[str, str]] = {"none": {}, "bad": {"Authorization": "Bearer sr_key_bad"}}
    for name, spec in CALLERS.items():
        if spec is None:
            continue
        _, key = ids.create_identity_with_key(spec[0], roles=spec[1])
        headers[name] = {"Authorization": f"Bearer {key.api_key}"}
    orch = WorkflowOrchestrator(database=db)
    sides = {}
    for side in ("a", "b"):
        s = _workflow(orch, side)
        # states differ, so A's artifact hash is A's alone (a shared hash is legitimately both workflows')
        threshold = 100 if side == "a" else 200
        s.request_id = await pause(orch, s.workflow_id, "cp1", parameters={"threshold": threshold})
        req = orch.get_approval_request(s.request_id)
        s.snapshot_id = req.snapshot_id
        snap = next(x for x in orch.list_snapshots(s.workflow_id) if x.snapshot_id == s.snapshot_id)
        s.sha256 = snap.artifact_uri.rsplit("sha256:", 1)[-1]
        wf = orch.get_workflow(s.workflow_id)
        s.job_id, s.escrow_id = wf.job_id or "", wf.escrow_id or ""
        sides[side] = s
    return World(orch, sides["a"], sides["b"], headers)


def params(world: World) -> dict[str, Any]:
    """Path parameters: always workflow A's (the matrix asks who may touch A)."""
    a = world.a
    return {
        "workflow_id": a.workflow_id,
        "request_id": a.request_id,
        "snapshot_id": a.snapshot_id,
        "sha256": a.sha256,
        "artifact_id": f"sha256:{a.sha256}",
        "step_id": a.step_id,
        "job_id": a.job_id,
        "parent_job_id": a.job_id,
        "escrow_id": a.escrow_id,
        "user_id": "exec_a",
        "supervisor_id": "sup_a",
        "platform_id": "plat_a",
        "token": "not-a-real-decision-token",
        "name": "app.css",
        "asset": "swagger-ui.css",
    }
