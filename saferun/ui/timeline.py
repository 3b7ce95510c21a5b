"""A workflow's story in one list: state changes, approval requests and decisions, and payments.

Three stores keep the three parts (transitions, approvals, ledger); the page reads them once and this
module merges them by time, oldest first. Amounts are shown exactly (``format_micro``), never as floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from saferun.core.state_machine.models import ApprovalRequest, ApprovalResponse
from saferun.domain.money import format_micro

_PAYMENT_TITLES = {
    "lock": "Escrow locked",
    "release": "Milestone paid",
    "refund": "Escrow refunded",
}


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str  # state | request | decision | payment
    title: str
    actor: str | None = None
    detail: str | None = None
    tone: str = "neutral"  # neutral | good | warn | bad | info
    link: str | None = None
    lines: list[str] = field(default_factory=list)


_STATE_TONES = {
    "completed": "good",
    "failed": "bad",
    "rolling_back": "warn",
    "awaiting_approval": "info",
}
_SHOWN_ELSEWHERE = {"checkpoint_reached", "approved", "modified", "rejected", "rejected_rollback"}
_DECISION_TONES = {"APPROVED": "good", "MODIFIED": "info", "REJECTED": "bad"}


def _sort_key(at: Any) -> float:
    return at.timestamp() if isinstance(at, datetime) else 0.0


def build(
    history: list[dict[str, Any]],
    approvals: list[tuple[ApprovalRequest, ApprovalResponse | None]],
    ledger: list[dict[str, Any]],
    escalations: list[dict[str, Any]] | None = None,
) -> list[Entry]:
    """``escalations``: the workflow's ``escalated`` audit events (an escalation ladder's rungs)."""
    entries: list[Entry] = []
    for row in history:
        before = row.get("from_state")
        after = row["to_state"]
        title = f"{before} → {after}" if before else f"Created ({after})"
        # the reason of a pause is the request's summary, of a decision its rationale: shown there
        reason = None if row.get("event") in _SHOWN_ELSEWHERE else row.get("reason")
        entries.append(
            Entry(
                at=row["at"],
                kind="state",
                title=title.replace("_", " "),
                actor=row.get("actor"),
                detail=reason,
                tone=_STATE_TONES.get(after, "neutral"),
                lines=[f"event: {row.get('event')}"] if row.get("event") else [],
            )
        )
    for req, resp in approvals:
        entries.append(
            Entry(
                at=req.created_at,
                kind="request",
                title=f"Approval requested: {req.checkpoint_name}",
                detail=req.summary,
                tone="info",
                link=f"/approvals/{req.request_id}",
                lines=[f"status: {req.status}"],
            )
        )
        if resp is not None:
            lines = []
            if resp.modifications:
                lines += [f"{k} → {v!r}" for k, v in resp.modifications.items()]
            if resp.automatic:
                lines.append(_automatic_reason(resp.approved_by))
            expired = resp.automatic and req.status == "expired"
            word = f"Expired ({resp.decision.value.lower()})" if expired else resp.decision.value.title()
            entries.append(
                Entry(
                    at=resp.created_at or req.decided_at or req.created_at,
                    kind="decision",
                    title=f"{word}: {req.checkpoint_name}",
                    actor=resp.approved_by,
                    detail=resp.rationale or None,
                    tone=_DECISION_TONES.get(resp.decision.value, "neutral"),
                    link=f"/approvals/{req.request_id}",
                    lines=lines,
                )
            )
    for ev in escalations or []:
        p = ev.get("payload") or {}
        at = _parse_at(ev.get("at"))
        if at is None:
            continue
        what = (
            "Reminder sent"
            if p.get("action") == "notify"
            else f"Reassigned to {p.get('to') or 'any supervisor'}"
        )
        entries.append(
            Entry(
                at=at,
                kind="request",
                title=f"Escalated: {what}",
                actor=ev.get("actor"),
                detail=f"rung {int(p.get('step', 0)) + 1}, {p.get('after_seconds')} s after the request",
                tone="warn",
                link=f"/approvals/{p.get('request_id')}" if p.get("request_id") else None,
            )
        )
    for txn in ledger:
        legs = txn.get("legs") or []
        credited = [leg for leg in legs if leg["amount_micro"] > 0]
        total = sum(leg["amount_micro"] for leg in credited)
        entries.append(
            Entry(
                at=txn["created_at"],
                kind="payment",
                title=f"{_PAYMENT_TITLES.get(txn['kind'], txn['kind'].title())}: {format_micro(total)}",
                detail=txn.get("memo"),
                tone="good" if txn["kind"] == "release" else "neutral",
                lines=[f"{leg['account']} +{format_micro(leg['amount_micro'])}" for leg in credited],
            )
        )
    entries.sort(key=lambda e: _sort_key(e.at))
    return entries


def _automatic_reason(approved_by: str) -> str:
    """Why nobody decided by hand: an approval policy, the timeout, or a cancellation."""
    if approved_by.startswith("policy:"):
        return "automatic: decided by an approval policy"
    if approved_by == "saferun:cancel":
        return "automatic: the workflow was cancelled"
    return "automatic: no human decision in time (expired)"


def _parse_at(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None
