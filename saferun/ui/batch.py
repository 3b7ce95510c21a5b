"""Batch decisions from the queue (issue 14, item 3): the form's checks and the per-item report (pure).

The queue's checkboxes post ``request_id`` once per selected request, with ``decision`` (Approve or
Reject selected) and a ``rationale`` (required to reject, as everywhere). The deciding itself is the API's
``decide_each``: each request in its own transaction, by the same policy, one result per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from saferun.core.state_machine.models import ApprovalDecision

MAX_BATCH = 500  # the API's limit for request_ids
OUTCOME_WORDS = {
    "decided": "decided",
    "voted": "vote recorded (its quorum is not reached yet)",
    "already_decided": "already decided (nothing changed)",
    "closed": "closed (a sibling item of its checkpoint was rejected)",
    "not_found": "not found",
    "refused": "refused",
    "invalid": "not decided",
}
OUTCOME_TONES = {
    "decided": "good",
    "voted": "info",
    "already_decided": "neutral",
    "closed": "neutral",
    "not_found": "bad",
    "refused": "bad",
    "invalid": "bad",
}


@dataclass
class BatchForm:
    request_ids: list[str] = field(default_factory=list)
    decision: ApprovalDecision | None = None
    rationale: str = ""
    errors: dict[str, str] = field(default_factory=dict)


def parse(pairs: Sequence[tuple[str, str]]) -> BatchForm:
    """The posted selection and verdict; each problem is an error naming its field."""
    form = BatchForm()
    fields = dict(pairs)
    form.request_ids = list(dict.fromkeys(v.strip() for k, v in pairs if k == "request_id" and v.strip()))
    try:
        form.decision = ApprovalDecision(fields.get("decision", ""))
    except ValueError:
        form.errors["decision"] = "Choose Approve selected or Reject selected."
    if form.decision not in (None, ApprovalDecision.APPROVED, ApprovalDecision.REJECTED):
        form.errors["decision"] = "A batch approves or rejects; modify one request at a time."
    if not form.request_ids:
        form.errors["request_id"] = "Select at least one request."
    elif len(form.request_ids) > MAX_BATCH:
        form.errors["request_id"] = f"At most {MAX_BATCH} requests at once."
    elif any(len(r) > 64 for r in form.request_ids):
        form.errors["request_id"] = "A request id is at most 64 characters."
    form.rationale = fields.get("rationale", "").replace("\r\n", "\n").strip()
    if form.decision == ApprovalDecision.REJECTED and not form.rationale:
        form.errors["rationale"] = "Say why you reject: the agents and the posters see this rationale."
    if len(form.rationale) > 20_000:
        form.errors["rationale"] = "At most 20,000 characters."
    return form


def report(decision: ApprovalDecision, results: list[dict[str, Any]]) -> dict[str, Any]:
    """What the queue shows after a batch: a one-line summary and one row per request."""
    decided = sum(1 for r in results if r["outcome"] == "decided")
    counts: dict[str, int] = {}
    for r in results:
        if r["outcome"] != "decided":
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    verb = "Approved" if decision == ApprovalDecision.APPROVED else "Rejected"
    rest = "; ".join(f"{n} {OUTCOME_WORDS[o]}" for o, n in counts.items())
    rows = [
        {
            "request_id": r["request_id"],
            # which question: the checkpoint, and the item at a checkpoint that asked several at once
            "label": " · ".join(
                x
                for x in (r.get("checkpoint_name"), f"item {r['item_key']}" if r.get("item_key") else None)
                if x
            ),
            "outcome": r["outcome"],
            "word": OUTCOME_WORDS[r["outcome"]],
            "tone": OUTCOME_TONES[r["outcome"]],
            "detail": (r.get("error") or {}).get("message")
            or (
                f"workflow now {str(r.get('workflow_status', '')).replace('_', ' ')}"
                if r.get("workflow_status")
                else ""
            ),
        }
        for r in results
    ]
    return {
        "summary": f"{verb} {decided} of {len(results)}" + (f"; {rest}." if rest else "."),
        "tone": "good" if decided == len(results) else ("bad" if not decided else "warn"),
        "rows": rows,
        "decision": decision.value,
    }
