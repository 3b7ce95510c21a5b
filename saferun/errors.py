"""SafeRun's one error tree.

Every error SafeRun raises on purpose is a ``SafeRunError``; callers can catch the root, a branch, or a
leaf. Leaves carry the ids and fields they are about, so an API layer can map each one to a single HTTP
status in one place (``http_status``) without parsing messages::

    SafeRunError
    ├── NotFound                      404  unknown workflow / snapshot / request / artifact
    │   ├── WorkflowNotFound
    │   ├── SnapshotNotFound
    │   ├── ApprovalRequestNotFound
    │   └── ArtifactNotFound
    ├── Conflict                      409  the action is valid in general, not in the current state
    │   ├── InvalidTransition             (state machine refused an event)
    │   ├── DecisionConflict              (request already decided or expired)
    │   └── IdempotencyConflict           (same key, different content)
    ├── InvalidInput                  422  the caller sent something malformed; names the field
    │   ├── StateNotSerializable          (checkpoint state is not plain JSON)
    │   └── InvalidAmount                 (money that is negative, non-numeric or too precise)
    ├── IntegrityError                409  stored bytes or the audit chain do not verify ("tampered")
    │   ├── ArtifactCorrupted
    │   ├── AuditChainBroken
    │   └── Tampered                      (a stored row disagrees with the audit chain)
    ├── Unauthorized                  401  no valid API key or session where one is required
    ├── Forbidden                     403  authenticated (or named), but a policy rule refuses the action
    ├── PayloadTooLarge               413  a request body over the server's limit
    ├── StoreUnavailable              503  disk full / read-only / locked: nothing written, retry later
    ├── RedirectRefused               502  an outbound peer (facilitator, platform) answered a redirect
    ├── LedgerError                   409  a posting would break a ledger rule (negative balance, ...)
    ├── CompensationError             500  a saga compensation failed after its retries
    └── ApprovalRejected              --   raised *to the agent* when its checkpoint was rejected
        └── ApprovalExpired           --   ... because nobody decided in time (on_timeout)

Nothing here imports an I/O library: the tree is shared by the pure domain and the adapters.
"""

from __future__ import annotations

from typing import Any


class SafeRunError(Exception):
    """Root of every error SafeRun raises deliberately."""

    http_status: int = 500

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly shape for API answers and CLI output."""
        return {"error": type(self).__name__, "message": self.message, **self.fields}


class NotFound(SafeRunError):
    http_status = 404


class WorkflowNotFound(NotFound):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {workflow_id!r} does not exist", workflow_id=workflow_id)
        self.workflow_id = workflow_id


class SnapshotNotFound(NotFound):
    def __init__(self, snapshot_id: str) -> None:
        super().__init__(f"snapshot {snapshot_id!r} does not exist", snapshot_id=snapshot_id)
        self.snapshot_id = snapshot_id


class ApprovalRequestNotFound(NotFound):
    def __init__(self, request_id: str) -> None:
        super().__init__(f"approval request {request_id!r} does not exist", request_id=request_id)
        self.request_id = request_id


class ArtifactNotFound(NotFound):
    def __init__(self, uri: str) -> None:
        super().__init__(f"artifact {uri!r} does not exist", uri=uri)
        self.uri = uri


class Conflict(SafeRunError):
    http_status = 409


class InvalidTransition(Conflict):
    """The state machine has no edge for this event from the current state; nothing was changed."""

    def __init__(self, workflow_id: str | None, state: str, event: str, detail: str = "") -> None:
        msg = f"cannot {event} workflow {workflow_id!r} in state {state}"
        super().__init__(
            msg + (f": {detail}" if detail else ""), workflow_id=workflow_id, state=state, event=event
        )
        self.workflow_id = workflow_id
        self.state = state
        self.event = event


class DecisionConflict(Conflict):
    """A request is decided exactly once; later decisions (or decisions after expiry) change nothing."""

    def __init__(self, request_id: str, status: str, why: str | None = None) -> None:
        super().__init__(
            f"approval request {request_id!r} is " + (f"{status}: {why}" if why else f"already {status}"),
            request_id=request_id,
            status=status,
        )
        self.request_id = request_id
        self.status = status


class StaleReview(Conflict):
    """A decision made on a page that no longer shows the request as it is (an alert was added, the
    policy changed, another checkpoint was opened): refused, nothing decided. ``changed`` names the
    review fields that differ (``saferun.domain.review_digest.FIELDS``), empty when the digest matches no
    version of the request the server can rebuild; ``current_digest`` is what the reviewer must now see."""

    def __init__(self, request_id: str, seen: str, current: str, changed: list[str] | None) -> None:
        what = ", ".join(changed) if changed else "the reviewed content"
        super().__init__(
            f"approval request {request_id!r} changed since the reviewer's page was rendered ({what}): "
            "nothing was decided; review it again",
            request_id=request_id,
            review_digest=seen,
            current_digest=current,
            changed=list(changed or []),
        )
        self.request_id = request_id
        self.changed = list(changed or [])
        self.current_digest = current

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "error": "stale_review"}


class ParametersNotApproved(SafeRunError):
    """An agent was about to run a step with inputs the reviewer did not approve (``Decision.verify``):
    the step must not run. ``mismatched`` names each parameter that differs from, or is missing in, the
    approved ones."""

    http_status = 409

    def __init__(self, mismatched: list[str], review_digest: str | None) -> None:
        super().__init__(
            f"these inputs were not approved as given: {', '.join(mismatched)}; the step must not run",
            mismatched=mismatched,
            review_digest=review_digest,
        )
        self.mismatched = mismatched


class ClaimLost(Conflict):
    """A compensation's result came from a runner whose claim on the step was taken over (its claim
    generation is older than the step's): the result is refused, nothing is written, and the runner that
    holds the newer claim records the step's outcome."""

    def __init__(self, workflow_id: str, step_id: str, generation: int, current: int) -> None:
        super().__init__(
            f"step {step_id!r} of workflow {workflow_id!r} was taken over: claim generation {generation} "
            f"is no longer the step's ({current})",
            workflow_id=workflow_id,
            step_id=step_id,
            generation=generation,
            current_generation=current,
        )
        self.workflow_id = workflow_id
        self.step_id = step_id
        self.generation = generation
        self.current_generation = current


class IdempotencyConflict(Conflict):
    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used for a different operation", key=key)
        self.key = key


class InvalidInput(SafeRunError):
    http_status = 422

    def __init__(self, field: str, message: str, **extra: Any) -> None:
        super().__init__(f"{field}: {message}", field=field, **extra)
        self.field = field


class StateNotSerializable(InvalidInput):
    pass


class InvalidAmount(InvalidInput):
    pass


class IntegrityError(SafeRunError):
    """Stored data that does not verify. Answered 409 with ``error: "tampered"``: the request was fine,
    the store is not, and what failed to verify is never served (nor hidden behind a bare 500)."""

    http_status = 409

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "error": "tampered", "kind": type(self).__name__}


class ArtifactCorrupted(IntegrityError):
    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"stored bytes for {key} do not verify: {detail}", key=key)
        self.key = key


class Tampered(IntegrityError):
    """A row read back (a decision, a snapshot, a request, a saga step, a payment) or the chain it is
    checked against does not match what the audit chain recorded when it was written."""

    def __init__(self, workflow_id: str, table: str, row_id: str, detail: str) -> None:
        super().__init__(
            f"{table} row {row_id} of workflow {workflow_id!r} does not verify against the audit chain: "
            f"{detail}",
            workflow_id=workflow_id,
            table=table,
            row=row_id,
        )
        self.workflow_id, self.table, self.row_id = workflow_id, table, row_id


class AuditChainBroken(IntegrityError):
    def __init__(self, workflow_id: str, seq: int, detail: str) -> None:
        super().__init__(
            f"audit chain of {workflow_id!r} breaks at event {seq}: {detail}",
            workflow_id=workflow_id,
            seq=seq,
        )
        self.workflow_id = workflow_id
        self.seq = seq


class Unauthorized(SafeRunError):
    http_status = 401


class Forbidden(SafeRunError):
    """A policy rule refused the action; ``rule`` names it (``four_eyes``, ``assigned_supervisor``, ...)."""

    http_status = 403

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message, rule=rule)
        self.rule = rule


class PayloadTooLarge(SafeRunError):
    http_status = 413


class SchemaMismatch(SafeRunError):
    """The database's schema is not the one this code runs on (behind with migrations off, or newer)."""

    http_status = 503


class StoreUnavailable(SafeRunError):
    """The database refused the work for a reason that passes (disk full, read-only file, a lock held too
    long): nothing was written, and the same call can succeed once the fault clears."""

    http_status = 503

    def __init__(self, reason: str, detail: str, retry_after: int = 5) -> None:
        message = f"the store is unavailable ({reason}): {detail}"
        super().__init__(message, reason=reason, retry_after=retry_after)
        self.reason = reason
        self.retry_after = retry_after


class RedirectRefused(SafeRunError):
    """An outbound peer (x402 facilitator, remote platform, webhook receiver) answered with a redirect.

    SafeRun follows none: a request carrying credentials or money must reach the configured URL and no
    other, so a redirect is a refusal to act on. The message and fields name the peer and where it
    pointed with any ``user:password@`` masked (``saferun.outbound.mask_url``)."""

    http_status = 502


class LedgerError(SafeRunError):
    http_status = 409


class CompensationError(SafeRunError):
    http_status = 500


class ApprovalRejected(SafeRunError):
    """Raised to the agent when a reviewer rejected its checkpoint, after compensations ran.

    ``restored_state`` is the state of the last approved checkpoint (or ``None`` when nothing was approved
    yet), so the agent can resume from there.
    """

    http_status = 409

    def __init__(
        self,
        workflow_id: str,
        rejected_checkpoint_id: str,
        last_approved_checkpoint: str | None,
        rationale: str,
        restored_state: Any = None,
        workflow_state: str = "",
        item_key: str | None = None,
    ) -> None:
        # item_key: at a checkpoint that asked several things at once, the item the reviewer rejected
        item = f" (item {item_key!r})" if item_key is not None else ""
        super().__init__(
            f"checkpoint {rejected_checkpoint_id!r}{item} of workflow {workflow_id!r} was rejected: "
            f"{rationale}",
            workflow_id=workflow_id,
            rejected_checkpoint_id=rejected_checkpoint_id,
            last_approved_checkpoint=last_approved_checkpoint,
            workflow_state=workflow_state,
            **({"item_key": item_key} if item_key is not None else {}),
        )
        self.item_key = item_key
        self.workflow_id = workflow_id
        self.rejected_checkpoint_id = rejected_checkpoint_id
        self.last_approved_checkpoint = last_approved_checkpoint
        self.rationale = rationale
        self.restored_state = restored_state
        self.workflow_state = workflow_state


class ApprovalExpired(ApprovalRejected):
    """Nobody decided in time and the checkpoint's ``on_timeout`` rejected it: an ``ApprovalRejected``
    (compensations ran the same way), but a distinct type, because silence is not a person's "no"."""
