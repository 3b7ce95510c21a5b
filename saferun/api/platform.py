"""The x402 platform API (``/x402``): the embedded platform served over HTTP, so one SafeRun can be the
platform of another (``X402_API_URL=http(s)://this-server/x402``, spoken by ``RemotePlatform``).

Each route is one call of ``saferun.platform.embedded.EmbeddedPlatform`` on this server's database, with
the same arguments and the same JSON answer; errors are the platform's ``saferun.errors`` (``422`` naming
the field, ``404``, ``409``, ``403`` naming the rule), so the remote client raises what the embedded one
would. Mutating routes read the ``Idempotency-Key`` header and pass it on as ``idempotency_key``: a repeat
with the same key and body answers the first call's result and moves nothing.

**Who may call it** (rule ``platform_role``, ``saferun.domain.policy.may_use_platform``): with a key, an
identity with the ``platform`` role (a service account for the SafeRun that uses this one as its platform)
or ``admin``; no poster, executor or supervisor key. Open mode (loopback development): anyone, like every
other route. Identities named in calls are always checked (registered, enabled, with the role they act in).

**What they may do** (``saferun.domain.platform_policy``, docs/security.md): a platform identity acts only
on its own platform's workflows (anything else is 404, like an unknown id); a workflow this server's
engine runs changes only through the engine; for a platform's own jobs, ``lock`` takes only the job's
escrow from the poster the job names, a release or split pays only what approved checkpoints earned to
the workflow's executor and supervisors (or the payer back after settle/fail/cancel), and approval
quality is only what the job's outcome gives. An admin reads and manages supervisor profiles, and moves
no money. The same rules hold for the original client's paths (``platform_original``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Coroutine
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import ConfigDict, Field

from saferun.api.deps import CallerDep, enforce, orchestrator
from saferun.api.one_hop import OneHopRoute
from saferun.api.openapi import MethodNotAllowed
from saferun.api.schemas import Strict, amount_schema, doc
from saferun.domain.policy import Role, may_use_platform
from saferun.errors import InvalidInput
from saferun.platform.embedded import ESCROW_ID_PREFIX, JOB_STATUSES, MAX_WORKFLOW_ID, EmbeddedPlatform
from saferun.storage.artifacts import URI_PREFIX
from saferun.storage.identities import IDENTITY_ID_PATTERN
from saferun.storage.platform_requests import MAX_KEY_LENGTH

router = APIRouter(prefix="/x402", tags=["x402 platform"], route_class=OneHopRoute)

T = TypeVar("T")

# What the embedded platform accepts, stated in the OpenAPI schema (documentation only: the platform's own
# checks stay authoritative and name the field in their words; tests/test_api_fuzz.py checks the two agree)
# required text: some character Python's str.strip() keeps (it also strips \x1c-\x1f and \x85, which JSON
# Schema's \s does not count as space), no NUL
NOT_BLANK = r"^[^\x00]*[^\x00\s\x1c-\x1f\x85][^\x00]*$"
# platform._workflow_id: no ":", no controls; \x85 (NEL) is a space that Hypothesis does not treat as \s
_WF = r"[^:\x00-\x1f]*[^:\s\x00-\x1f\x85][^:\x00-\x1f]*"
WORKFLOW_ID = {"type": "string", "minLength": 1, "maxLength": MAX_WORKFLOW_ID, "pattern": f"^{_WF}$"}
ESCROW_ID = {
    "type": "string",
    "maxLength": len(ESCROW_ID_PREFIX) + MAX_WORKFLOW_ID,
    "pattern": f"^{ESCROW_ID_PREFIX}{_WF}$",
    "description": "escrow_<workflow_id>",
}
IDENTITY_ID = {"type": "string", "pattern": f"^{IDENTITY_ID_PATTERN}$"}
# validated by the platform itself (``InvalidAmount`` naming the field, as on the embedded platform)
Amount = Annotated[Any, doc(amount_schema())]
PositiveAmount = Annotated[Any, doc(amount_schema(positive=True))]
Id = Annotated[str, Field(min_length=1, max_length=200), doc(IDENTITY_ID)]
WorkflowId = Annotated[str, Field(min_length=1, max_length=MAX_WORKFLOW_ID), doc(WORKFLOW_ID)]
EscrowId = Annotated[str, doc(ESCROW_ID)]
JobId = Annotated[str, doc({"type": "string", "maxLength": 64, "pattern": NOT_BLANK})]
KEY = r"^[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\s\x85][^\x00-\x1f\x7f]*$"  # platform_requests.validate_key
TEXT64 = {"type": "string", "maxLength": 64, "pattern": NOT_BLANK}
BASE64 = (
    r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"  # what b64decode(validate=True) takes
)
ARTIFACT_URI = {"type": "string", "pattern": f"^{URI_PREFIX}[0-9a-f]{{64}}$"}
ROLE = {"type": "string", "enum": [r.value for r in Role]}
RequiredText64 = Annotated[str, Field(min_length=1, max_length=64), doc(TEXT64)]
RoleName = Annotated[str, doc(ROLE)]
JobStatusName = Annotated[str, doc({"type": "string", "enum": list(JOB_STATUSES)})]
KEY_DOC = (
    "Makes the call idempotent: a repeat with the same key and body answers the first result and changes "
    "nothing; the same key with another body is 409 IdempotencyConflict."
)


def platform(request: Request, caller: CallerDep) -> EmbeddedPlatform:
    """The platform, scoped to ``caller`` (``saferun.domain.platform_policy``)."""
    enforce(may_use_platform(caller))
    return EmbeddedPlatform(orchestrator(request).db, caller=caller)


PlatformDep = Annotated[EmbeddedPlatform, Depends(platform)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description=KEY_DOC),
    doc({"type": "string", "maxLength": MAX_KEY_LENGTH, "pattern": KEY}),
]


def run(call: Coroutine[Any, Any, T]) -> T:
    """Run one platform call to completion. Routes are sync (FastAPI runs them in its thread pool) because
    the embedded platform's async methods do blocking database work; this keeps it off the event loop."""
    return asyncio.run(call)


def post_only(value: str, *suffixes: str, exact: tuple[str, ...] = ()) -> None:
    """A ``{x:path}`` GET route also matches ``x/release`` and ``lock`` (POST-only paths of their own):
    answer those with 405 and ``Allow: POST``, as for any other method a path does not support, not with
    a 422 about ``x``."""
    if value.endswith(suffixes) or value in exact:
        raise MethodNotAllowed(allow=("POST",))


# --- bodies ---------------------------------------------------------------------------------------------


class CreateJob(Strict):
    job_type: RequiredText64
    job_data: dict[str, Any] = Field(default_factory=dict)
    escrow_amount: Amount
    executor_id: Id


class CreateSubjob(Strict):
    checkpoint_id: str = Field(min_length=1, max_length=200, json_schema_extra={"pattern": NOT_BLANK})
    supervisor_id: Id
    approval_data: dict[str, Any] = Field(default_factory=dict)


class JobStatus(Strict):
    status: JobStatusName
    reason: str = Field(default="", max_length=2000)


class LockEscrow(Strict):
    workflow_id: WorkflowId
    amount: PositiveAmount
    poster_id: Id
    executor_id: Id


class ReleaseEscrow(Strict):
    amount: PositiveAmount
    recipient_id: Id
    reason: str = Field(default="", max_length=200)


class Split(Strict):
    recipient_id: Id
    amount: PositiveAmount
    reason: str = Field(default="", max_length=200)


class SplitPayment(Strict):
    splits: list[Split] = Field(min_length=1, max_length=1000)
    total: PositiveAmount | None = None


class CreateArtifact(Strict):
    artifact_type: str = Field(min_length=1, max_length=64)
    content: str
    content_encoding: Literal["utf-8", "base64"] = "utf-8"
    metadata: dict[str, Any] | None = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"content_encoding": {"const": "base64"}}, "required": ["content_encoding"]},
            "then": {"properties": {"content": {"pattern": BASE64}}},
        },
    )


class ApprovalQuality(Strict):
    workflow_id: WorkflowId
    quality_score: float = Field(ge=0, le=1)


class RegisterSupervisor(Strict):
    supervisor_id: Id
    specialties: list[RequiredText64] = Field(min_length=1, max_length=100)
    price_per_approval: Amount
    available: bool = True


class RequestSupervisor(Strict):
    workflow_id: WorkflowId


class AssignSupervisor(Strict):
    workflow_id: WorkflowId
    workflow_type: RequiredText64
    min_reputation: float = Field(default=0.0, ge=0, le=1)


class RateSupervisor(Strict):
    workflow_id: WorkflowId
    rating: int = Field(ge=1, le=5)
    review: str = Field(default="", max_length=2000)


# --- routes ---------------------------------------------------------------------------------------------


@router.get("/health")
def health() -> dict[str, str]:
    """Whether the platform API is up (no key needed), as ``curl "$X402_API_URL/health"`` expects."""
    return {"status": "healthy", "service": "SafeRun x402 platform"}


@router.post("/jobs", status_code=201)
def create_job(body: CreateJob, p: PlatformDep, key: IdempotencyKey = None) -> dict[str, Any]:
    """The seed's Job API: a job (``job_type``, ``job_data``, ``escrow_amount``) for an executor. Send an
    ``Idempotency-Key`` so a retried call creates it once."""
    return run(
        p.create_job(body.job_type, body.job_data, body.escrow_amount, body.executor_id, idempotency_key=key)
    )


@router.post("/jobs/{parent_job_id:path}/approval-subjobs", status_code=201)
def create_approval_subjob(
    parent_job_id: JobId, body: CreateSubjob, p: PlatformDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """An approval sub-job under a workflow's main job, for one checkpoint and its supervisor."""
    return run(
        p.create_approval_subjob(
            parent_job_id, body.checkpoint_id, body.supervisor_id, body.approval_data, idempotency_key=key
        )
    )


@router.post("/jobs/{job_id:path}/status")
def update_job_status(
    job_id: JobId, body: JobStatus, p: PlatformDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """Move a job to ``completed`` or ``failed`` with a reason (the engine reports each decision this way)."""
    return run(p.update_job_status(job_id, body.status, body.reason, idempotency_key=key))


@router.get("/jobs/{job_id:path}")
def get_job(job_id: JobId, p: PlatformDep) -> dict[str, Any]:
    """A job with its status, data, escrow and history."""
    post_only(job_id, "/status", "/approval-subjobs")
    return run(p.get_job(job_id))


@router.post("/escrow/lock")
def lock_escrow(body: LockEscrow, p: PlatformDep, key: IdempotencyKey = None) -> dict[str, Any]:
    """Lock a workflow's escrow from its poster's account (once per workflow; idempotent by key)."""
    return run(
        p.lock_escrow(body.workflow_id, body.amount, body.poster_id, body.executor_id, idempotency_key=key)
    )


@router.post("/escrow/{escrow_id:path}/release")
def release_escrow(
    escrow_id: EscrowId, body: ReleaseEscrow, p: PlatformDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """Release part of an escrow to a recipient (an approved milestone's payout)."""
    return run(p.release_escrow(escrow_id, body.amount, body.recipient_id, body.reason, idempotency_key=key))


@router.post("/escrow/{escrow_id:path}/split")
def split_payment(
    escrow_id: EscrowId, body: SplitPayment, p: PlatformDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """Release one amount split between several recipients (executor and supervisor), exactly."""
    splits = [s.model_dump() for s in body.splits]
    return run(p.split_payment(escrow_id, splits, total=body.total, idempotency_key=key))


@router.get("/escrow/{escrow_id:path}")
def get_escrow(escrow_id: EscrowId, p: PlatformDep) -> dict[str, Any]:
    """An escrow's amounts (locked, released, refunded, held) and its status."""
    post_only(escrow_id, "/release", "/split", exact=("lock",))
    return run(p.get_escrow(escrow_id))


@router.post("/artifacts", status_code=201)
def create_artifact(body: CreateArtifact, p: PlatformDep, key: IdempotencyKey = None) -> dict[str, Any]:
    """Store content (text, or base64 with ``content_encoding``) content-addressed; returns its
    ``x402://artifacts/sha256:...`` URI."""
    content: str | bytes = body.content
    if body.content_encoding == "base64":
        try:
            content = base64.b64decode(body.content, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("content", "is not valid base64 (content_encoding is base64)") from None
    return run(p.create_artifact(body.artifact_type, content, body.metadata, idempotency_key=key))


@router.get("/artifacts")
def get_artifact(
    p: PlatformDep,
    uri: Annotated[
        str,
        Query(min_length=1, max_length=200),
        doc({"type": "string", "pattern": f"^{URI_PREFIX}[0-9a-f]{{64}}$"}),
    ],
) -> dict[str, Any]:
    """An artifact's content by URI, verified against its hash before it is returned."""
    return run(p.get_artifact(uri))


@router.get("/identities/{user_id:path}/verify")
def verify_identity(
    user_id: Id, p: PlatformDep, role: Annotated[str, Query(min_length=1, max_length=64), doc(ROLE)]
) -> dict[str, Any]:
    """``verified`` is false for an unknown, disabled or role-less identity; an unknown role is 422."""
    return {"user_id": user_id, "role": role, "verified": run(p.verify_identity(user_id, role))}


@router.get("/identities/{user_id:path}")
def get_user_profile(user_id: Id, p: PlatformDep) -> dict[str, Any]:
    """An identity's profile: roles, reputation, and for supervisors their marketplace entry."""
    return run(p.get_user_profile(user_id))


@router.post("/supervisors", status_code=201)
def register_supervisor(
    body: RegisterSupervisor, p: PlatformDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """Put a supervisor on the marketplace with specialties and a price per approval (the identity
    must exist)."""
    return run(
        p.register_supervisor(
            body.supervisor_id, body.specialties, body.price_per_approval, body.available, idempotency_key=key
        )
    )


@router.get("/supervisors")
def find_supervisors(
    p: PlatformDep,
    workflow_type: Annotated[str, Query(min_length=1, max_length=64), doc(TEXT64)],
    min_reputation: float = Query(0.0, ge=0, le=1),
) -> dict[str, Any]:
    """Available supervisors for a workflow type at or above a reputation, best first."""
    found = run(p.find_supervisors(workflow_type, min_reputation))
    return {"supervisors": found, "total": len(found)}


@router.post("/supervisors/assignments")
def assign_supervisor(body: AssignSupervisor, p: PlatformDep, key: IdempotencyKey = None) -> dict[str, Any]:
    """Let the marketplace pick and assign a supervisor to a workflow."""
    return run(
        p.assign_supervisor(body.workflow_id, body.workflow_type, body.min_reputation, idempotency_key=key)
    )


@router.post("/supervisors/{supervisor_id:path}/requests")
def request_supervisor(
    supervisor_id: Id, body: RequestSupervisor, p: PlatformDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """Ask one supervisor for a workflow (they are assigned if available)."""
    return run(p.request_supervisor(supervisor_id, body.workflow_id, idempotency_key=key))


@router.post("/supervisors/{supervisor_id:path}/ratings")
def rate_supervisor(
    supervisor_id: Id, body: RateSupervisor, p: PlatformDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """The poster's 1-5 rating of a supervisor for an ended workflow; it moves their reputation."""
    return run(
        p.rate_supervisor(supervisor_id, body.workflow_id, body.rating, body.review, idempotency_key=key)
    )


@router.post("/supervisors/{supervisor_id:path}/approval-quality")
def record_approval_quality(
    supervisor_id: Id, body: ApprovalQuality, p: PlatformDep, key: IdempotencyKey = None
) -> dict[str, Any]:
    """Record how good a supervisor's approval turned out (0-1), which feeds their reputation."""
    return run(
        p.record_approval_quality(supervisor_id, body.workflow_id, body.quality_score, idempotency_key=key)
    )
