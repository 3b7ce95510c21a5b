"""What a notice says: the signed JSON body, the Slack-compatible body, and the e-mail.

Pure functions of a ``NoticeView`` (everything the dispatcher read about the notice), so the three
formats cannot drift apart and tests can read exactly what a receiver gets. The body of a webhook is
signed over ``<timestamp>.<raw body>`` (``sign``): the timestamp is in the signed material, so a captured
request cannot be replayed later with a fresh timestamp header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from saferun.storage.notifications import awaits_decision

SIGNATURE_HEADER = "X-SafeRun-Signature"
TIMESTAMP_HEADER = "X-SafeRun-Timestamp"
EVENT_HEADER = "X-SafeRun-Event"
DELIVERY_HEADER = "X-SafeRun-Delivery"
MAX_SLACK_TEXT = 2900  # Slack refuses section texts over 3000 characters


@dataclass(frozen=True)
class NoticeView:
    """One notice for one delivery, as read when it is sent."""

    delivery_id: int
    notice_id: int
    kind: str  # waiting | decided | expired | cancelled | closed
    occurred_at: datetime
    request: dict[str, Any]  # the approval_requests row
    workflow_name: str
    decision: dict[str, Any] | None  # the approval_responses row, once there is one
    decide_url: str | None  # the single-use link (waiting notices to the assigned supervisor's own channel)
    review_url: str  # the request's page on the dashboard (needs sign-in)

    @property
    def event(self) -> str:
        return f"approval.{self.kind}"

    @property
    def title(self) -> str:
        if self.kind == "waiting":
            return "Decision needed"
        if awaits_decision(self.kind):
            return "Still waiting: decision needed (escalated)"
        if self.kind == "expired":
            outcome = self.decision["decision"] if self.decision else "closed"
            return f"Expired without a decision (on_timeout={self.request['on_timeout']}: {outcome})"
        if self.kind == "cancelled":
            return "Cancelled: the workflow was stopped"
        if self.kind == "closed":
            return "Closed: another item of this checkpoint was rejected"
        if self.decision is None:
            return "Decided"
        return f"{self.decision['decision'].capitalize()} by {self.decision['approved_by']}"


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def payload(view: NoticeView) -> dict[str, Any]:
    """The ``json`` format's body (see docs/notifications.md for the field list)."""
    r = view.request
    decision = view.decision
    return {
        "event": view.event,
        "delivery_id": view.delivery_id,
        "notice_id": view.notice_id,
        "occurred_at": _iso(view.occurred_at),
        "title": view.title,
        "request": {
            "request_id": r["request_id"],
            "workflow_id": r["workflow_id"],
            "workflow_name": view.workflow_name,
            "checkpoint_id": r["checkpoint_id"],
            "checkpoint_name": r["checkpoint_name"],
            # an item of a checkpoint that asked several things at once (else null)
            "item_key": r.get("item_key"),
            "summary": r["summary"],
            "decision_needed": r["decision_needed"],
            "parameters": r["parameters"],
            "recommendation": r["recommendation"],
            "confidence": r["confidence"],
            "supervisor_id": r["supervisor_id"],
            "status": r["status"],
            "on_timeout": r["on_timeout"],
            "created_at": _iso(r["created_at"]),
            "expires_at": _iso(r["expires_at"]),
        },
        "decision": None
        if decision is None
        else {
            "decision": decision["decision"],
            "approved_by": decision["approved_by"],
            "rationale": decision["rationale"],
            "modifications": decision["modifications"],
            "automatic": bool(decision["automatic"]),
            "decided_at": _iso(decision["created_at"]),
        },
        "links": {"decide": view.decide_url, "review": view.review_url},
    }


def json_body(view: NoticeView) -> bytes:
    return json.dumps(payload(view), separators=(",", ":"), ensure_ascii=False).encode()


def _mrkdwn(text: Any) -> str:
    """Escape what Slack's mrkdwn treats as markup (``&``, ``<``, ``>``)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(view: NoticeView) -> dict[str, Any]:
    """A Slack incoming-webhook body: ``text`` (the notification's fallback) and Block Kit ``blocks``."""
    r = view.request
    headline = f"{view.title}: {r['checkpoint_name']} ({view.workflow_name})"
    details = [f"*{_mrkdwn(view.title)}*: {_mrkdwn(r['checkpoint_name'])} in _{_mrkdwn(view.workflow_name)}_"]
    details.append(_mrkdwn(r["summary"]))
    if awaits_decision(view.kind):
        details.append(_mrkdwn(r["decision_needed"]))
    elif view.decision is not None and view.decision["rationale"]:
        details.append(f">{_mrkdwn(view.decision['rationale'])}")
    context = f"Request `{r['request_id']}` · supervisor {_mrkdwn(r['supervisor_id'] or 'any')}"
    if awaits_decision(view.kind):
        context += f" · expires {_iso(r['expires_at'])}"
    button = (
        {"text": "Review and decide", "url": view.decide_url, "style": "primary"}
        if view.decide_url
        else {"text": "Open in SafeRun", "url": view.review_url}
    )
    element: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": button["text"]},
        "url": button["url"],
    }
    if "style" in button:
        element["style"] = button["style"]
    return {
        "text": f"{headline} {view.decide_url or view.review_url}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(details)[:MAX_SLACK_TEXT]}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
            {"type": "actions", "elements": [element]},
        ],
    }


def slack_body(view: NoticeView) -> bytes:
    return json.dumps(slack(view), separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-SafeRun-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``b"<timestamp>." + body``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, *, now: int, tolerance: int = 300
) -> bool:
    """The receiver's check (the recipe docs/notifications.md shows): a fresh timestamp and a matching
    signature, compared in constant time."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature or "")


def _one_line(text: Any, limit: int) -> str:
    """Header-safe text: no line breaks or control characters, at most ``limit`` characters."""
    flat = re.sub(r"[\x00-\x1f\x7f]+", " ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def email(view: NoticeView, sender: str, recipient: str, now: datetime) -> EmailMessage:
    """The plain-text e-mail for one notice to one address."""
    r = view.request
    msg = EmailMessage()
    msg["Subject"] = _one_line(f"[SafeRun] {view.title}: {r['checkpoint_name']} ({view.workflow_name})", 200)
    msg["From"] = sender
    msg["To"] = recipient
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid("saferun")
    msg["X-SafeRun-Event"] = view.event
    msg["X-SafeRun-Delivery"] = str(view.delivery_id)
    lines = [
        view.title,
        "",
        f"Workflow:   {view.workflow_name} ({r['workflow_id']})",
        f"Checkpoint: {r['checkpoint_name']}",
        f"Request:    {r['request_id']}",
        "",
        str(r["summary"]),
    ]
    if awaits_decision(view.kind):
        lines += ["", str(r["decision_needed"])]
        if r["parameters"]:
            lines += ["", "Parameters:", json.dumps(r["parameters"], indent=2, ensure_ascii=False)]
        lines += ["", f"Decide by {_iso(r['expires_at'])} (then on_timeout={r['on_timeout']} applies)."]
    elif view.decision is not None:
        lines += ["", f"Decision:   {view.decision['decision']} by {view.decision['approved_by']}"]
        if view.decision["rationale"]:
            lines += [f"Rationale:  {view.decision['rationale']}"]
    if view.decide_url:
        lines += [
            "",
            "Approve or reject without signing in (single use, valid until the request expires;",
            "anyone holding this link decides as you, so do not forward it):",
            view.decide_url,
        ]
    lines += ["", f"Review on the dashboard: {view.review_url}", ""]
    msg.set_content("\n".join(lines))
    return msg
