"""The original SafeRun-X402 client's wire paths (``/x402/original``), so code using the original
``X402Client`` can point ``X402_API_URL`` at a SafeRun server (docs/original-api.md §5.2).

They live under their own prefix because two of them (``POST /jobs``, ``POST /artifacts``) share a path
with SafeRun's own ``/x402`` API but not its body. Each route is the same platform call as its ``/x402``
twin, behind the same ``platform`` dependency, so who may call it (and every refusal) is the same.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from saferun.api.one_hop import OneHopRoute
from saferun.api.platform import (
    TEXT64,
    Amount,
    EscrowId,
    Id,
    IdempotencyKey,
    JobId,
    JobStatusName,
    LockEscrow,
    PlatformDep,
    PositiveAmount,
    RequiredText64,
    RoleName,
    Split,
    WorkflowId,
    doc,
    run,
)
from saferun.api.schemas import Strict
from saferun.errors import InvalidInput
from saferun.storage.artifacts import URI_PREFIX

router = APIRouter(prefix="/x402/original", tags=["x402 platform (original client)"], route_class=OneHopRoute)


class Escrow(Strict):
    amount: Amount
    executor_id: Id


class CreateJob(Strict):
    type: RequiredText64
    data: dict[str, Any] = Field(default_factory=dict)
    escrow: Escrow


class PatchJob(Strict):
    status: JobStatusName
    metadata: dict[str, Any] = Field(default_factory=dict)


class CreateSubjob(Strict):
    parent_job_id: JobId
    checkpoint_id: str = Field(min_length=1, max_length=200)
    supervisor_id: Id
    type: str = Field(default="approval_request", max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)


class ReleaseEscrow(Strict):
    escrow_id: EscrowId
    amount: PositiveAmount
    recipient_id: Id
    reason: str = Field(default="", max_length=200)


class SplitPayment(Strict):
    escrow_id: EscrowId
    splits: list[Split] = Field(min_length=1, max_length=1000)


class CreateArtifact(Strict):
    type: str = Field(min_length=1, max_length=64)
    content: str
    content_hash: str = Field(pattern="^[0-9a-f]{64}$")
    metadata: dict[str, Any] | None = None


class VerifyIdentity(Strict):
    user_id: Id
    role: RoleName


class RequestSupervisor(Strict):
    supervisor_id: Id
    workflow_id: WorkflowId


@router.post("/jobs")
def create_job(body: CreateJob, p: PlatformDep, key: IdempotencyKey = None) -> dict[str, Any]:
    """The original's ``create_job``: ``{"type", "data", "escrow": {"amount", "executor_id"}}``."""
    escrow = body.escrow
    return run(p.create_job(body.type, body.data, escrow.amount, escrow.executor_id, idempotency_key=key))


@router.get("/jobs/{job_id}")
def get_job(job_id: JobId, p: PlatformDep) -> dict[str, Any]:
    """The original's ``get_job``."""
    return run(p.get_job(job_id))


@router.patch("/jobs/{job_id}")
def update_job_status(job_id: JobId, body: PatchJob, p: PlatformDep, key: IdempotencyKey = None) -> Any:
    """The original's ``update_job_status``; ``metadata["reason"]`` becomes the recorded reason."""
    reason = str(body.metadata.get("reason", ""))[:2000]
    return run(p.update_job_status(job_id, body.status, reason, idempotency_key=key))


@router.post("/jobs/subjobs")
def create_approval_subjob(body: CreateSubjob, p: PlatformDep, key: IdempotencyKey = None) -> Any:
    """The original's ``create_approval_subjob``."""
    return run(
        p.create_approval_subjob(
            body.parent_job_id, body.checkpoint_id, body.supervisor_id, body.data, idempotency_key=key
        )
    )


@router.post("/escrow/lock")
def lock_escrow(body: LockEscrow, p: PlatformDep, key: IdempotencyKey = None) -> dict[str, Any]:
    """The original's ``lock_escrow`` (the same body as SafeRun's)."""
    return run(
        p.lock_escrow(body.workflow_id, body.amount, body.poster_id, body.executor_id, idempotency_key=key)
    )


@router.post("/escrow/release")
def release_escrow(body: ReleaseEscrow, p: PlatformDep, key: IdempotencyKey = None) -> Any:
    """The original's ``release_escrow``: the escrow id in the body."""
    return run(
        p.release_escrow(body.escrow_id, body.amount, body.recipient_id, body.reason, idempotency_key=key)
    )


@router.post("/escrow/split")
def split_payment(body: SplitPayment, p: PlatformDep, key: IdempotencyKey = None) -> Any:
    """The original's ``split_payment``: the escrow id in the body."""
    splits = [s.model_dump() for s in body.splits]
    return run(p.split_payment(body.escrow_id, splits, idempotency_key=key))


@router.post("/artifacts")
def create_artifact(body: CreateArtifact, p: PlatformDep, key: IdempotencyKey = None) -> dict[str, Any]:
    """The original's ``create_artifact``: ``content_hash`` must be the SHA-256 of the UTF-8 content."""
    if hashlib.sha256(body.content.encode("utf-8")).hexdigest() != body.content_hash:
        raise InvalidInput("content_hash", "is not the SHA-256 of the UTF-8 content")
    return run(p.create_artifact(body.type, body.content, body.metadata, idempotency_key=key))


@router.get("/artifacts/{artifact_id}")
def get_artifact(
    artifact_id: Annotated[str, doc({"type": "string", "pattern": "^(sha256:)?[0-9a-f]{64}$"})],
    p: PlatformDep,
) -> dict[str, Any]:
    """The original's ``get_artifact``: the text after the URI's last ``/`` (``sha256:<hex>`` or hex)."""
    digest = artifact_id.removeprefix("sha256:")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidInput("artifact_id", "must be sha256:<64 hex> or the 64 hex digits")
    return run(p.get_artifact(URI_PREFIX + digest))


@router.post("/identity/verify")
def verify_identity(body: VerifyIdentity, p: PlatformDep) -> dict[str, Any]:
    """The original's ``verify_identity``: ``{"verified": bool}``."""
    verified = run(p.verify_identity(body.user_id, body.role))
    return {"user_id": body.user_id, "role": body.role, "verified": verified}


@router.get("/identity/users/{user_id}")
def get_user_profile(user_id: Id, p: PlatformDep) -> dict[str, Any]:
    """The original's ``get_user_profile``."""
    return run(p.get_user_profile(user_id))


@router.get("/marketplace/supervisors")
def find_supervisors(
    p: PlatformDep,
    workflow_type: Annotated[str, Query(min_length=1, max_length=64), doc(TEXT64)],
    min_reputation: float = Query(0.8, ge=0, le=1),
) -> dict[str, Any]:
    """The original's ``find_supervisors``: ``{"supervisors": [...]}``."""
    found = run(p.find_supervisors(workflow_type, min_reputation))
    return {"supervisors": found, "total": len(found)}


@router.post("/marketplace/supervisors/request")
def request_supervisor(body: RequestSupervisor, p: PlatformDep, key: IdempotencyKey = None) -> Any:
    """The original's ``request_supervisor``."""
    return run(p.request_supervisor(body.supervisor_id, body.workflow_id, idempotency_key=key))
