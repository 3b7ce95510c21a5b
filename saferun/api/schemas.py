"""Request and response bodies of the REST API (what the OpenAPI schema documents).

Field names and status words are the seed's "API Reference"; additions are optional fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from saferun.core.state_machine.models import (
    ApprovalDecision,
    CheckpointConfig,
    CheckpointItem,
    ExecutionState,
)
from saferun.domain.money import DECIMALS, MAX_AMOUNT


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def doc(schema: dict[str, Any]) -> WithJsonSchema:
    """State in the OpenAPI schema what a field accepts when the check itself lives elsewhere (the engine,
    the platform), so the schema describes the server; tests/test_api_fuzz.py checks the two agree."""
    return WithJsonSchema(schema)


def whole_number(cls: type, value: Any) -> Any:
    """JSON Schema's ``integer`` includes ``2.0`` (the OpenAPI schema says integer): read it as 2; the
    field's strict mode still refuses ``true``, ``"2"`` and ``2.5``."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


_DECIMAL_TEXT = r"^\s*[0-9]{1,12}(\.[0-9]{1,6})?\s*$"  # below MAX_AMOUNT, at most 6 decimals
# MAX_AMOUNT as the nearest double below it (…775390625): no double lies between the two, so a JSON number
# is schema-valid exactly when the server takes it (domain/money.py reads a float through its repr)
_MAX_NUMBER = float(MAX_AMOUNT)


def amount_schema(*, positive: bool = False) -> dict[str, Any]:
    """An exact amount: a number or decimal string, at most 6 decimals, 0 (or more than 0) to 10^12 - 1."""
    low: dict[str, Any] = {"exclusiveMinimum": 0} if positive else {"minimum": 0}
    number = {"type": "number", **low, "maximum": _MAX_NUMBER, "multipleOf": 10**-DECIMALS}
    text: dict[str, Any] = {"type": "string", "pattern": _DECIMAL_TEXT}
    if positive:
        text["not"] = {"pattern": r"^\s*0*(\.0*)?\s*$"}
    words = "more than 0" if positive else "at least 0"
    return {"anyOf": [number, text], "description": f"exact amount, {words}, at most 6 decimals"}


# the executor's share of each payment: a fraction from 0 to 1 (WorkflowConfig; the ledger's exact split
# rounds each payment to micro-units, so the share itself needs no decimal limit)
SHARE = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": 1},
        {"type": "string", "pattern": r"^\s*(0(\.[0-9]{1,30})?|1(\.0{1,30})?)\s*$"},
        {"type": "null"},
    ],
    "description": "the executor's fraction of each payment, 0 to 1 (default 0.9)",
}


class CreateWorkflow(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Customer data analysis",
                    "description": "Segment last quarter's customers",
                    "checkpoint_names": ["Review plan", "Review results"],
                    "escrow_amount": "50.00",
                    "poster_id": "user_123",
                    "executor_id": "agent_456",
                    "supervisor_id": "human_789",
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=500)
    description: str = Field(default="", max_length=20_000)
    checkpoint_names: list[Annotated[str, Field(min_length=1, max_length=500)]] | None = Field(
        default=None, description="the seed's shorthand; give this or checkpoints (one of them, not empty)"
    )
    checkpoints: list[CheckpointConfig] | None = Field(
        default=None, description="full checkpoint configs; give this or checkpoint_names (one, not empty)"
    )
    escrow_amount: Annotated[Any, doc(amount_schema())]
    poster_id: str = Field(min_length=1, max_length=200)
    executor_id: str = Field(min_length=1, max_length=200)
    supervisor_id: str | None = Field(
        default=None,
        max_length=200,
        description="four eyes: must differ from poster_id and executor_id (422 naming supervisor_id)",
    )
    workflow_id: str | None = Field(default=None, min_length=1, max_length=64)
    executor_share: Annotated[Any, doc(SHARE)] = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    funding: Literal["ledger", "x402"] = Field(
        default="ledger",
        description="x402: the poster pays the escrow (POST .../escrow/fund) before it starts",
    )
    workflow_type: str | None = Field(default=None, min_length=1, max_length=64)
    min_supervisor_reputation: float = Field(default=0.0, ge=0, le=1, strict=True)
    platform_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="the platform identity this workflow is on (it may read it)",
    )


class X402Setup(BaseModel):
    job_id: str | None
    escrow_id: str | None


class WorkflowCreated(BaseModel):
    workflow_id: str
    status: str
    x402_setup: X402Setup
    checkpoints: int
    message: str


class WorkflowSummary(BaseModel):
    workflow_id: str
    name: str
    status: str
    current_checkpoint: int
    total_checkpoints: int
    started_at: datetime | None


class WorkflowDetail(WorkflowSummary):
    description: str
    snapshots: int
    approval_requests: int
    approval_responses: int
    completed_at: datetime | None
    error_message: str | None
    poster_id: str
    executor_id: str
    supervisor_id: str | None
    escrow_amount: str
    last_approved_snapshot_id: str | None
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    job_id: str | None
    escrow_id: str | None
    result_uri: str | None


class PageInfo(BaseModel):
    """Keyset paging: ``total`` counts every row the filters match (not this page); when ``has_more``,
    pass ``next_cursor`` back as ``cursor`` with the same filters for the next page."""

    total: int
    limit: int
    has_more: bool
    next_cursor: str | None


class WorkflowList(PageInfo):
    workflows: list[WorkflowSummary]


class PendingApproval(BaseModel):
    request_id: str
    workflow_id: str
    snapshot_id: str
    checkpoint_id: str
    checkpoint_name: str
    status: str
    on_timeout: str
    summary: str
    context: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    decision_needed: str
    parameters: dict[str, Any]
    recommendation: str | None
    confidence: float | None
    risk: dict[str, Any]
    alerts: list[dict[str, Any]]
    supervisor_id: str | None
    workflow_name: str | None = None
    # an item of a checkpoint that asked several things at once: its group and its own key (else None)
    group_id: str | None = None
    item_key: str | None = None
    # M-of-N quorum (docs/quorum.md): {approvals, of, rejections, distinct_teams}; None: one person decides
    quorum: dict[str, Any] | None = None
    tally: dict[str, Any] | None = Field(default=None, description="a quorum request's votes so far")


class PendingList(PageInfo):
    pending_approvals: list[PendingApproval]


class SubmitDecision(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "request_id": "req_5f2c0a9e1b7d4c3a",
                    "decision": "MODIFIED",
                    "modifications": {"sample_size": 500},
                    "approved_by": "human_789",
                    "rationale": "500 is enough for a first look",
                }
            ],
            # a rejection needs a rationale (api/approvals.py _require_rationale): a non-space character
            "if": {"properties": {"decision": {"enum": ["REJECTED", "rejected"]}}, "required": ["decision"]},
            "then": {
                "required": ["rationale"],
                "properties": {"rationale": {"pattern": "[^\\s\\x1c-\\x1f\\x85]"}},
            },
        },
    )

    request_id: str = Field(min_length=1, max_length=64)
    decision: ApprovalDecision
    rationale: str = Field(default="", max_length=20_000)
    approved_by: str | None = Field(default=None, min_length=1, max_length=200)
    modifications: dict[str, Any] | None = None
    review_digest: str | None = Field(
        default=None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="the request's review_digest as it was shown (GET /api/approvals/{id}); a request that "
        "changed since is refused with 409 stale_review and nothing is decided",
    )


class BatchDecision(Strict):
    """Several requests, one verdict: ``request_ids`` or every pending request of ``workflow_id``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"decision": {"const": "REJECTED"}}, "required": ["decision"]},
            "then": {
                "required": ["rationale"],
                "properties": {"rationale": {"pattern": "[^\\s\\x1c-\\x1f\\x85]"}},
            },
        },
    )

    request_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        json_schema_extra={"uniqueItems": True},
        description="the requests to decide; give this or workflow_id, not both",
    )
    workflow_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="decide every pending request of this workflow; give this or request_ids",
    )
    decision: Literal[ApprovalDecision.APPROVED, ApprovalDecision.REJECTED]
    rationale: str = Field(default="", max_length=20_000)
    approved_by: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_selection(self) -> BatchDecision:
        if (self.request_ids is None) == (self.workflow_id is None):
            raise ValueError("give either request_ids or workflow_id")
        if self.request_ids is not None and len(set(self.request_ids)) != len(self.request_ids):
            raise ValueError("request_ids: each request at most once")
        return self


class BatchItem(BaseModel):
    request_id: str
    # closed: an item whose sibling (an item of the same checkpoint) was rejected, e.g. earlier in this batch
    # voted: a vote on an M-of-N request was recorded and the quorum is not reached yet (still pending)
    outcome: Literal["decided", "voted", "already_decided", "closed", "not_found", "refused", "invalid"]
    workflow_id: str | None = None
    workflow_status: str | None = None
    # which question this was: the checkpoint, and the item at a checkpoint that asked several at once
    checkpoint_id: str | None = None
    checkpoint_name: str | None = None
    item_key: str | None = None
    error: dict[str, Any] | None = None


class BatchResult(BaseModel):
    decision: ApprovalDecision
    decided: int
    results: list[BatchItem]


class QuorumProgress(BaseModel):
    """A quorum request's votes after this one (docs/quorum.md)."""

    rule: dict[str, Any]
    approvals: int
    needed: int
    rejections: int
    rejections_to_reject: int
    outcome: str | None = Field(description="APPROVED or REJECTED once a threshold is reached, else null")
    votes: list[dict[str, Any]]
    may_still_vote: list[str]


class DecisionResult(BaseModel):
    success: bool
    decision: ApprovalDecision
    workflow_status: str
    message: str
    # on a quorum request: the vote was recorded; these are the votes so far and what is still needed
    quorum: QuorumProgress | None = None


class Health(BaseModel):
    status: str
    service: str
    version: str


class Stats(BaseModel):
    total_workflows: int
    workflow_states: dict[str, int]
    total_approvals_processed: int
    pending_approvals: int
    active_executors: int
    active_supervisors: int


class CheckpointIn(Strict):
    """A remote agent's checkpoint: its state plus what the reviewer should see."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "state": {
                        "checkpoint_id": "cp_review_plan",
                        "parameters": {"sample_size": 1000},
                        "planned_next_steps": ["query the warehouse", "cluster"],
                        "confidence_scores": {"plan": 0.7},
                    },
                    "summary": "Analyse 1000 customers?",
                    "confidence": 0.7,
                }
            ]
        },
    )

    state: ExecutionState
    request_approval: bool = Field(default=True, strict=True)  # 0 or "no" is 422, not False
    summary: str | None = Field(default=None, max_length=20_000)
    decision_needed: str | None = Field(default=None, max_length=20_000)
    context: dict[str, Any] | None = None
    recommendation: str | None = Field(default=None, max_length=32)
    confidence: float | None = Field(default=None, ge=0, le=1, strict=True)  # true or "0.7" is 422
    risk: dict[str, Any] | None = None
    alerts: list[dict[str, Any]] | None = None
    parameter_schema: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema of the parameters the reviewer may change (type, enum, minimum, "
        "maximum, pattern, required); default: the checkpoint's, else inferred from the proposed values",
    )
    items: list[CheckpointItem] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="several things asked at this one checkpoint (parallel tool calls, a LangGraph step's "
        "interrupts): one approval request per item, each decided on its own; keys unique (a tool-call or "
        "interrupt id); each item's parameters go into state.parameters under its key, so state.parameters "
        "must be empty. The checkpoint completes when every item is approved or modified; a rejection of "
        "any rejects it and closes the rest",
    )


class CheckpointOut(BaseModel):
    snapshot_id: str
    workflow_id: str
    checkpoint_id: str
    label: str
    sequence: int
    timestamp: datetime
    parent_snapshot_id: str | None
    status: str
    artifact_uri: str
    raw_size_bytes: int
    compressed_size_bytes: int
    new_bytes: int
    approval_request_id: str | None
    approval_request: dict[str, Any] | None = Field(default=None, description="the request opened, if any")
    approval_requests: list[dict[str, Any]] | None = Field(
        default=None, description="with items: the request opened for each item, in the order given"
    )


class ApprovalDetail(BaseModel):
    request: dict[str, Any]
    status: str
    decision: dict[str, Any] | None


class CheckpointItemsOut(BaseModel):
    """Every item asked at one checkpoint pause, in the order asked, each with its status and decision."""

    group_id: str | None
    checkpoint_id: str
    checkpoint_name: str
    items: list[ApprovalDetail]


class AlertsIn(Strict):
    alerts: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=100,
        description="what a monitor found, e.g. {rule, severity, message, observed, threshold}",
    )


class StepIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "place order", "compensation": "cancel_pizza_order", "args": {"order_id": "o-1"}}
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200)
    compensation: str = Field(min_length=1, max_length=200)
    args: dict[str, Any] = Field(default_factory=dict)


class StepOut(BaseModel):
    step_id: str


class SettleIn(Strict):
    result: dict[str, Any] = Field(default_factory=dict)


class FailIn(Strict):
    error: str = Field(min_length=1, max_length=20_000)


class CancelIn(Strict):
    reason: str = Field(default="", max_length=20_000)


class RatingIn(Strict):
    rating: int = Field(ge=1, le=5, strict=True, description="1 (poor) to 5 (excellent)")
    review: str = Field(default="", max_length=2000)

    _whole = field_validator("rating", mode="before")(whole_number)


class ClaimIn(Strict):
    """A claim on a compensation step. The staleness window is the server's ``SAFERUN_STALE_CLAIM_SECONDS``:
    a caller choosing it could keep re-taking a step another agent is running (issue 9), so a body naming
    ``stale_claim_seconds`` is refused (422, extra field) rather than silently ignored."""

    owner: str = Field(min_length=1, max_length=200)


class FinishIn(Strict):
    """A compensation's outcome. ``generation`` is the one the claim answered: with it, a result from a
    runner whose claim was taken over since is refused (409 ``ClaimLost``) and changes nothing."""

    ok: bool
    error: str = Field(default="", max_length=20_000)
    generation: int | None = Field(default=None, ge=1, le=2**31 - 1, strict=True)

    _whole = field_validator("generation", mode="before")(whole_number)


class RollbackDone(Strict):
    compensated: list[str] = Field(default_factory=list)


class RollbackOut(BaseModel):
    workflow_id: str
    final_state: str
    restored_snapshot_id: str | None
    restored_checkpoint_id: str | None
    compensated: list[str]


class AuditOut(BaseModel):
    workflow_id: str
    events: list[dict[str, Any]]
    verified: bool
    broken_at: int | None
    reason: str | None
    # the anchor on the workflow row: a copy kept with an export detects a tail deleted later
    anchor_seq: int = 0
    anchor_hash: str | None = None


class ErrorBody(BaseModel):
    detail: dict[str, Any]


DecisionWord = Literal["APPROVED", "MODIFIED", "REJECTED"]


class StuckStep(BaseModel):
    step_id: str
    name: str
    compensation: str
    args: dict[str, Any]
    status: str
    claimed_by: str | None
    claimed_at: datetime | None


class StuckItem(BaseModel):
    workflow_id: str
    name: str
    state: str
    since: str
    age_seconds: float
    poster_id: str
    executor_id: str
    reason: str = Field(description="why nobody finished it, in one sentence")
    steps: list[StuckStep] = Field(description="side effects still to undo, newest first")
    missing_compensations: list[str] = Field(description="compensation names this server cannot run")


class StuckList(BaseModel):
    stuck: list[StuckItem]
    total: int


class ResolveIn(Strict):
    """An operator's way out of stuck work; ``reason`` is required for ``mark_compensated`` and ``fail``
    and is recorded on the audit chain."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"action": "mark_compensated", "reason": "called the shop; order o-1 cancelled"}],
            "if": {"properties": {"action": {"enum": ["mark_compensated", "fail"]}}, "required": ["action"]},
            "then": {"required": ["reason"], "properties": {"reason": {"pattern": "[^\\s\\x1c-\\x1f\\x85]"}}},
        },
    )

    action: Literal["retry", "mark_compensated", "fail"] = Field(
        description="retry: run the rollback (or finish the settling) in this server; mark_compensated: "
        "you undid the side effects by hand, the workflow resumes from its last approved checkpoint; "
        "fail: the workflow fails and its error names each side effect as NOT undone"
    )
    reason: str = Field(default="", max_length=2000)


class ResolveOut(BaseModel):
    workflow_id: str
    action: str
    status: str
    outcome: str = Field(description="what the action did, in one sentence")
    compensated: list[str]
    not_undone: list[StuckStep]
