"""The workflow state machine: the seed's seven states and the edges of its Diagram 1, as one table.

The table is the only place that knows which event moves a workflow where. Everything else asks
``next_state``; storage writes ``state.value``. There are exactly twelve edges, one per arrow in the
seed's diagram (the two AWAITING_APPROVAL -> EXECUTING arrows are told apart by their event).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from saferun.errors import InvalidTransition


class WorkflowState(StrEnum):
    """The seven states. Values are the lower-case words the REST API shows (``"executing"``)."""

    INITIALIZED = "initialized"
    EXECUTING = "executing"
    AWAITING_APPROVAL = "awaiting_approval"
    ROLLING_BACK = "rolling_back"
    SETTLING = "settling"
    COMPLETED = "completed"
    FAILED = "failed"


class Event(StrEnum):
    START = "start"
    CHECKPOINT_REACHED = "checkpoint_reached"
    APPROVED = "approved"
    MODIFIED = "modified"
    REJECTED_ROLLBACK = "rejected_rollback"
    REJECTED_NO_ROLLBACK = "rejected_no_rollback"
    ROLLBACK_SUCCEEDED = "rollback_succeeded"
    ROLLBACK_FAILED = "rollback_failed"
    SETTLE = "settle"
    EXECUTION_ERROR = "execution_error"
    SETTLEMENT_SUCCEEDED = "settlement_succeeded"
    SETTLEMENT_FAILED = "settlement_failed"


S, E = WorkflowState, Event

TRANSITIONS: dict[tuple[WorkflowState, Event], WorkflowState] = {
    (S.INITIALIZED, E.START): S.EXECUTING,
    (S.EXECUTING, E.CHECKPOINT_REACHED): S.AWAITING_APPROVAL,
    (S.AWAITING_APPROVAL, E.APPROVED): S.EXECUTING,
    (S.AWAITING_APPROVAL, E.MODIFIED): S.EXECUTING,
    (S.AWAITING_APPROVAL, E.REJECTED_ROLLBACK): S.ROLLING_BACK,
    (S.AWAITING_APPROVAL, E.REJECTED_NO_ROLLBACK): S.FAILED,
    (S.ROLLING_BACK, E.ROLLBACK_SUCCEEDED): S.EXECUTING,
    (S.ROLLING_BACK, E.ROLLBACK_FAILED): S.FAILED,
    (S.EXECUTING, E.SETTLE): S.SETTLING,
    (S.EXECUTING, E.EXECUTION_ERROR): S.FAILED,
    (S.SETTLING, E.SETTLEMENT_SUCCEEDED): S.COMPLETED,
    (S.SETTLING, E.SETTLEMENT_FAILED): S.FAILED,
}

TERMINAL: frozenset[WorkflowState] = frozenset({S.COMPLETED, S.FAILED})

# The event that means "this failed" in each state that has a way to FAILED; ``fail_workflow`` uses it.
FAILURE_EVENT: dict[WorkflowState, Event] = {
    S.EXECUTING: E.EXECUTION_ERROR,
    S.ROLLING_BACK: E.ROLLBACK_FAILED,
    S.SETTLING: E.SETTLEMENT_FAILED,
}


def next_state(state: WorkflowState, event: Event, workflow_id: str | None = None) -> WorkflowState:
    """The state after ``event``, or ``InvalidTransition`` when Diagram 1 has no such arrow."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        allowed = sorted(e.value for (s, e) in TRANSITIONS if s == state)
        detail = f"allowed events: {', '.join(allowed)}" if allowed else "the workflow has ended"
        raise InvalidTransition(workflow_id, state.value, event.value, detail) from None


def allowed_events(state: WorkflowState) -> list[Event]:
    return [e for (s, e) in TRANSITIONS if s == state]


def original_checkpoint_index(events: Iterable[str]) -> int:
    """The original orchestrator's ``current_checkpoint_index``, folded from a workflow's transition events.

    The original kept a counter the seed's callers read and its ``create_checkpoint`` used to pick the
    next checkpoint's config: ``APPROVED`` advances it by one, a successful rollback moves it back one
    (floor 0), ``MODIFIED`` and rejections leave it alone. SafeRun's own ``current_checkpoint`` counts
    distinct checkpoints passed, which a step-back cannot express, so the original's number is derived
    from the recorded transitions instead of being stored a second time: it cannot drift from the history.
    Re-approving a checkpoint after a step-back pays nothing twice (milestone releases are keyed per
    checkpoint), so following the original costs no money.
    """
    index = 0
    for event in events:
        if event == Event.APPROVED:
            index += 1
        elif event == Event.ROLLBACK_SUCCEEDED:
            index = max(0, index - 1)
    return index
