"""What a decision did, in words, from the decision and the workflow's state now (pure).

The queue's flash, the review page's status and the decision link's "Recorded" page used to say "the
workflow is now executing" after a Reject (issue 14): true, since the agent had already rolled back and
retried, but it read as if the rejected step were running. These sentences say what happened because of
the decision, and stay right as the workflow moves on (the pages refresh them live).
"""

from __future__ import annotations

from dataclasses import dataclass

TONES = {"APPROVED": "good", "MODIFIED": "info", "REJECTED": "bad"}
WORDS = {"APPROVED": "Approved", "MODIFIED": "Modified", "REJECTED": "Rejected"}


@dataclass(frozen=True, slots=True)
class Outcome:
    word: str  # "Approved", "Rejected", "Timed out (rejected)"
    tone: str  # good | info | bad: the colour of the flash and the chip
    consequence: str  # one sentence: what happened because of it


def outcome(
    decision: str,
    state: str,
    *,
    automatic: bool = False,
    on_timeout: str | None = None,
    siblings_pending: int = 0,
) -> Outcome:
    """The decision's word, tone and consequence given the workflow's current ``state``;
    ``siblings_pending``: other items of the same checkpoint still waiting (several asked at once)."""
    word = WORDS.get(decision, decision.title())
    if automatic:
        word = f"Timed out ({word.lower()} by on_timeout={on_timeout or decision.lower()})"
    tone = TONES.get(decision, "neutral")
    if decision != "REJECTED" and siblings_pending:
        others = f"{siblings_pending} other item{'s' if siblings_pending != 1 else ''}"
        return Outcome(
            word,
            tone,
            f"Recorded; {others} of this checkpoint still wait{'s' if siblings_pending == 1 else ''} for a "
            "decision. Nothing is paid and the agent waits until every item is decided.",
        )
    if decision == "REJECTED":
        return Outcome(word, tone, _after_reject(state))
    return Outcome(word, tone, _after_approve(state, modified=decision == "MODIFIED"))


def _after_reject(state: str) -> str:
    if state == "rolling_back":
        return "The agent's steps since the last approved checkpoint are being undone."
    if state == "executing":
        return (
            "Rolled back: the agent's steps since the last approved checkpoint were undone "
            "and it retries from there."
        )
    if state == "awaiting_approval":
        return "Rolled back; the agent retried from the last approved checkpoint and waits for review again."
    if state == "failed":
        return (
            "The workflow failed (this checkpoint cannot roll back, or its rollback did not finish); "
            "escrow not yet paid out is refunded to the poster."
        )
    return f"Since then the workflow is {state.replace('_', ' ')}."


def _after_approve(state: str, *, modified: bool) -> str:
    paid = "The milestone is paid and the agent continues" + (" with your changes" if modified else "")
    if state == "executing":
        return paid + "."
    if state == "awaiting_approval":
        return paid + "; it has reached its next checkpoint and waits for review."
    if state in ("settling", "completed"):
        return "The milestone is paid and the workflow " + (
            "is complete." if state == "completed" else "is settling its payments."
        )
    return f"The milestone is paid; since then the workflow is {state.replace('_', ' ')}."
