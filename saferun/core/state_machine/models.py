"""The seed's Pydantic models: configs, execution state, snapshots, approval requests and responses.

Names and defaults follow the seed's "Configuration Reference". Where the seed is loose, the models are
strict, because a bad config found at ``initialize_workflow`` costs nothing and one found at the third
checkpoint costs a rollback:

- ``escrow_amount`` accepts the seed's floats but is held as an exact ``Decimal`` (6 decimals at most,
  never negative); the ledger works in integer micro-units.
- a workflow needs at least one checkpoint, and checkpoint ids must be unique.
- every id is generated when not given (``wf_…``, ``cp_…``), so ``config.workflow_id`` is known before
  the workflow exists, as the seed's "Creating a Supervised Workflow" example relies on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictFloat,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from saferun.domain.ids import new_id
from saferun.domain.money import to_decimal
from saferun.domain.quorum import QuorumRule
from saferun.domain.states import WorkflowState
from saferun.errors import InvalidAmount, InvalidInput

__all__ = [
    "ApprovalDecision",
    "ApprovalRequest",
    "ApprovalResponse",
    "CheckpointConfig",
    "CheckpointSnapshot",
    "ExecutionState",
    "TimeoutPolicy",
    "WorkflowConfig",
    "WorkflowExecution",
    "WorkflowState",
]


class ApprovalDecision(StrEnum):
    """A reviewer's answer. Values are the seed README's upper-case words (``"APPROVED"``), which is also what
    is stored; the original project's lower-case values (``"approved"``) are accepted on input everywhere,
    so ``ApprovalDecision("approved") is ApprovalDecision.APPROVED`` and models validate either spelling."""

    APPROVED = "APPROVED"
    MODIFIED = "MODIFIED"
    REJECTED = "REJECTED"

    @classmethod
    def _missing_(cls, value: object) -> ApprovalDecision | None:
        if isinstance(value, str):
            return cls.__members__.get(value.strip().upper())
        return None


TimeoutPolicy = Literal["reject", "approve", "fail"]


class EscalationStep(BaseModel):
    """One rung of a checkpoint's escalation ladder (issue 16): ``after_seconds`` from the request's
    opening, ``notify`` reminds the current assignee again, ``reassign`` hands the request to ``to`` (an
    identity id, or ``"any"``: every eligible supervisor, the on-call pool). The ladder ends in the
    checkpoint's ``on_timeout`` at ``timeout_seconds``."""

    model_config = ConfigDict(extra="forbid")

    after_seconds: int = Field(gt=0, le=60 * 60 * 24 * 365)
    action: Literal["notify", "reassign"]
    to: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _target(self) -> EscalationStep:
        if self.action == "reassign" and self.to is None:
            raise ValueError("reassign needs 'to': an identity id, or 'any' (every eligible supervisor)")
        if self.action == "notify" and self.to is not None:
            raise ValueError("a notify step reminds the current assignee; use reassign to change who decides")
        return self


class CheckpointConfig(BaseModel):
    """A point where the agent stops and (by default) waits for a human."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=500)
    description: str = ""
    requires_approval: bool = True
    can_rollback: bool = Field(default=True, strict=True)  # true/false, not 0/1 or "yes"
    timeout_seconds: int = Field(default=300, gt=0, le=60 * 60 * 24 * 365)
    checkpoint_id: str = Field(default_factory=lambda: new_id("cp"), min_length=1, max_length=200)
    # What happens when nobody decides in time. Rejecting is the safe default: silence is not consent.
    on_timeout: TimeoutPolicy = "reject"
    # This checkpoint's share of the escrow relative to the others (equal by default).
    # Bounded (0 < w <= MAX_WEIGHT, at most 6 decimals) so the exact split stays small integer arithmetic.
    milestone_weight: Decimal = Field(default=Decimal(1), gt=0, le=1_000_000)
    # A JSON Schema for the parameters a reviewer may change here (saferun/domain/parameter_schema.py);
    # None: inferred from the values the agent proposes. A checkpoint call may declare its own.
    parameter_schema: dict[str, Any] | None = None
    # What happens while nobody decides: reminders and reassignments before on_timeout (issue 16).
    escalation: list[EscalationStep] = Field(default_factory=list, max_length=20)
    # M-of-N quorum (issue 16, saferun/domain/quorum.py): N approvals of a group's members decide instead
    # of one person; None: one supervisor decides. An approval policy rule may require one too.
    quorum: QuorumRule | None = None

    @model_validator(mode="after")
    def _ladder_in_order(self) -> CheckpointConfig:
        previous = 0
        for i, step in enumerate(self.escalation):
            if step.after_seconds <= previous:
                raise ValueError(
                    f"escalation[{i}]: after_seconds {step.after_seconds} overlaps the step before it "
                    f"({previous}); steps must come strictly later one after another"
                )
            if step.after_seconds >= self.timeout_seconds:
                raise ValueError(
                    f"escalation[{i}]: after_seconds {step.after_seconds} is not before timeout_seconds "
                    f"{self.timeout_seconds}, when on_timeout applies"
                )
            previous = step.after_seconds
        return self

    @field_validator("milestone_weight", mode="before")
    @classmethod
    def _bounded_weight(cls, value: Any) -> Decimal:
        from saferun.domain.ledger import check_weight

        try:
            return check_weight(value, "milestone_weight")
        except InvalidAmount as exc:
            raise ValueError(exc.message) from None

    @field_validator("parameter_schema")
    @classmethod
    def _valid_parameter_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        from saferun.domain.parameter_schema import check_declared

        try:
            return check_declared(value)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None


class WorkflowConfig(BaseModel):
    """A supervised workflow: who pays, who works, who supervises, and where the agent stops."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=500)
    description: str = ""
    checkpoints: list[CheckpointConfig]
    escrow_amount: Decimal
    poster_id: str = Field(min_length=1, max_length=200)
    executor_id: str = Field(min_length=1, max_length=200)
    supervisor_id: str | None = Field(default=None, max_length=200)
    workflow_id: str = Field(default_factory=lambda: new_id("wf"), min_length=1, max_length=64)
    # Share of each released milestone paid to the executor; the supervisor gets the rest (seed: 90/10).
    executor_share: Decimal = Field(default=Decimal("0.9"), ge=0, le=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    # "ledger": the escrow is drawn from the poster's funding account when the workflow is created (the
    # seed's behaviour). "x402": the poster pays it with an x402 payment (POST .../escrow/fund); the
    # workflow stays INITIALIZED, and cannot start, until that payment has settled.
    funding: Literal["ledger", "x402"] = "ledger"
    # What the supervisor marketplace matches against a supervisor's specialties when the workflow names
    # no supervisor (None: any available supervisor qualifies).
    workflow_type: str | None = Field(default=None, min_length=1, max_length=64)
    min_supervisor_reputation: float = Field(default=0.0, ge=0, le=1)
    # The platform identity this workflow is on (the service that posted it through this server, or one
    # the poster named): that identity may read it (domain.policy.may_see_workflow). None: no platform.
    platform_id: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("escrow_amount", mode="before")
    @classmethod
    def _exact_amount(cls, value: Any) -> Decimal:
        try:
            dec = to_decimal(value, "escrow_amount")
        except InvalidAmount as exc:
            raise ValueError(exc.message) from None
        if dec < 0:
            raise ValueError(f"escrow_amount must not be negative, got {dec}")
        return dec

    @field_validator("checkpoints")
    @classmethod
    def _checkpoints_valid(cls, value: list[CheckpointConfig]) -> list[CheckpointConfig]:
        if not value:
            raise ValueError("a workflow needs at least one checkpoint")
        seen: set[str] = set()
        for cp in value:
            if cp.checkpoint_id in seen:
                raise ValueError(f"duplicate checkpoint_id {cp.checkpoint_id!r}")
            seen.add(cp.checkpoint_id)
        return value

    @field_validator("supervisor_id")
    @classmethod
    def _parties_distinct(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Four eyes. A field validator (the parties are declared before it), so a refusal names
        ``supervisor_id`` rather than the whole body."""
        if value is not None and value in (info.data.get("poster_id"), info.data.get("executor_id")):
            raise ValueError("must differ from poster_id and executor_id (four eyes)")
        return value

    @field_serializer("escrow_amount", "executor_share")
    def _money_as_text(self, value: Decimal) -> str:
        return str(value)

    def checkpoint(self, checkpoint_id: str) -> CheckpointConfig | None:
        return next((cp for cp in self.checkpoints if cp.checkpoint_id == checkpoint_id), None)


def _utcnow_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class ExecutionState(BaseModel):
    """Everything an agent knows at a checkpoint (the seed's Diagram 3, layers 2 and 3).

    The six seed fields come first. ``parameters`` holds what the agent proposes to do next in a form a
    reviewer can change (``{"pizza_count": 100}``): a MODIFIED decision is merged into it.
    """

    model_config = ConfigDict(extra="forbid")

    checkpoint_id: str = Field(min_length=1, max_length=200)
    agent_memory: dict[str, Any] = Field(default_factory=dict)
    api_calls: list[dict[str, Any]] = Field(default_factory=list)
    intermediate_outputs: dict[str, Any] = Field(default_factory=dict)
    decision_trace: list[str] = Field(default_factory=list)  # a number (int or float); true or "3" is refused
    resource_consumption: dict[str, StrictFloat] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    planned_next_steps: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    confidence_scores: dict[str, StrictFloat] = Field(default_factory=dict)
    risk_assessment: dict[str, Any] = Field(default_factory=dict)
    # The original's ``timestamp`` (naive UTC, set at construction). Private, so it is no stored part
    # and no field of the strict schema: two states with the same content are equal whenever taken.
    _timestamp: datetime = PrivateAttr(default_factory=_utcnow_naive)

    def __init__(self, **data: Any) -> None:
        stamp = data.pop("timestamp", None)
        super().__init__(**data)
        if stamp is not None:
            self.timestamp = stamp

    @property
    def timestamp(self) -> datetime:
        """When the state was captured (the original's field; its callers read and pass it)."""
        return self._timestamp

    @timestamp.setter
    def timestamp(self, value: datetime | str) -> None:
        self._timestamp = datetime.fromisoformat(value) if isinstance(value, str) else value

    def __eq__(self, other: object) -> bool:
        # content equality, as the original's tests compare a stored copy with the state they passed
        if not isinstance(other, ExecutionState):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def part_names(cls) -> list[str]:
        return [name for name in cls.model_fields if name != "checkpoint_id"]


class CheckpointSnapshot(BaseModel):
    """A captured state, stored as a content-addressed artifact (``x402://artifacts/sha256:…``)."""

    snapshot_id: str
    workflow_id: str
    checkpoint_id: str
    label: str
    sequence: int
    status: str
    timestamp: datetime
    execution_state: ExecutionState | None = None
    artifact_uri: str
    raw_size_bytes: int
    compressed_size_bytes: int
    new_bytes: int
    parent_snapshot_id: str | None = None


class ApprovalRequest(BaseModel):
    """What a reviewer sees (Diagram 3, layer 1) and when it stops waiting."""

    request_id: str
    workflow_id: str
    snapshot_id: str
    checkpoint_id: str
    checkpoint_name: str
    summary: str
    decision_needed: str
    context: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    # what the reviewer may change, as a JSON Schema (declared by the agent, or inferred from parameters)
    parameter_schema: dict[str, Any] | None = None
    recommendation: str | None = None
    confidence: float | None = Field(default=None, ge=0, le=1)
    risk: dict[str, Any] = Field(default_factory=dict)
    alerts: list[dict[str, Any]] = Field(default_factory=list)
    supervisor_id: str | None = None
    on_timeout: TimeoutPolicy = "reject"
    # closed: an item of a multi-request checkpoint whose sibling was rejected (never decidable again)
    status: Literal["pending", "decided", "expired", "cancelled", "closed"] = "pending"
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    # while pending, on a single read (get_approval_request): the digest of what a reviewer is shown
    review_digest: str | None = None
    # the escalation ladder (CheckpointConfig.escalation): rungs applied, and when the next one is due
    escalation_step: int = 0
    next_escalation_at: datetime | None = None
    # M-of-N quorum (saferun/domain/quorum.py): the rule, and on a single read the votes cast so far
    # ({vote_id, voter, vote, rationale, team, created_at}), the tally and who may still vote
    quorum: dict[str, Any] | None = None
    votes: list[dict[str, Any]] = Field(default_factory=list)
    tally: dict[str, Any] | None = None
    may_still_vote: list[str] | None = None
    # an item of a checkpoint that asked several things at once (parallel tool calls, a LangGraph step's
    # interrupts): the group its siblings share and its own stable key; None on a single-request checkpoint
    group_id: str | None = None
    item_key: str | None = None


_NOT_BLANK = r"^[^\x00]*[^\x00\s\x1c-\x1f\x85][^\x00]*$"


class CheckpointItem(BaseModel):
    """One of several things asked at one checkpoint (a tool call among parallel ones, one of a LangGraph
    step's interrupts). ``key`` is its stable identity (a tool-call or interrupt id: nothing a redeploy
    changes); each item is decided on its own, with its own parameters and Modify form."""

    model_config = ConfigDict(extra="forbid")

    # a character str.strip() keeps and no NUL (api/platform.py NOT_BLANK: the schema states the rule)
    key: str = Field(min_length=1, max_length=200, pattern=_NOT_BLANK)
    summary: str | None = Field(default=None, max_length=20_000, pattern=_NOT_BLANK)
    decision_needed: str | None = Field(default=None, max_length=20_000)
    parameters: dict[str, Any] = Field(default_factory=dict)
    parameter_schema: dict[str, Any] | None = None
    context: dict[str, Any] | None = None


class ApprovalResponse(BaseModel):
    """A human's (or the timeout policy's) decision on one request."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1)
    decision: ApprovalDecision
    rationale: str = ""
    approved_by: str = Field(min_length=1, max_length=200)
    modifications: dict[str, Any] | None = None
    response_id: str = Field(default_factory=lambda: new_id("resp"))
    automatic: bool = False
    created_at: datetime | None = None
    # the review digest of what the decider was shown (saferun/domain/review_digest.py): sent by a
    # reviewer, the decision is refused as stale_review when the request changed since; recorded always
    review_digest: str | None = Field(default=None, min_length=1, max_length=80)

    @model_validator(mode="after")
    def _modifications_match_decision(self) -> ApprovalResponse:
        if self.decision == ApprovalDecision.MODIFIED and not self.modifications:
            raise ValueError("modifications: a MODIFIED decision needs at least one modification")
        if self.decision != ApprovalDecision.MODIFIED and self.modifications:
            raise ValueError(
                f"modifications: only a MODIFIED decision carries modifications, not {self.decision.value}"
            )
        return self


class WorkflowExecution(BaseModel):
    """A workflow as stored: config, state and progress. ``current_state`` is the seed's name."""

    workflow_id: str
    config: WorkflowConfig
    current_state: WorkflowState
    current_checkpoint: int
    total_checkpoints: int
    # who supervises now: the config's supervisor, or the one the marketplace assigned later
    supervisor_id: str | None = None
    job_id: str | None = None
    escrow_id: str | None = None
    last_approved_snapshot_id: str | None = None
    result_uri: str | None = None
    error_message: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    snapshots: int = 0
    approval_requests: int = 0
    approval_responses: int = 0

    @property
    def status(self) -> str:
        return self.current_state.value
