"""Approvals over HTTP: read, decide (one or a batch), the pending queue, monitors' alerts, the policy."""

from __future__ import annotations

from typing import Any

from saferun import errors
from saferun.client.calls import B, Call, J, Sends, compact, get, post, seg
from saferun.core.state_machine.models import ApprovalDecision

PENDING_PARAMS = frozenset(
    {"limit", "cursor", "mine", "assigned_to", "risk", "expiring_within", "older_than", "newer_than"}
)


class ApprovalEndpoints:
    """How each approval endpoint's request is built."""

    @staticmethod
    def get_approval(request_id: str, wait: float) -> Call:
        if wait < 0:
            raise errors.InvalidInput("wait", f"must not be negative, got {wait}")
        return get(f"/api/approvals/{seg(request_id)}", {"wait": wait or None}, wait=wait)

    @staticmethod
    def checkpoint_items(request_id: str) -> Call:
        return get(f"/api/approvals/{seg(request_id)}/items")

    @staticmethod
    def submit_decision(
        request_id: str,
        decision: ApprovalDecision | str,
        approved_by: str | None,
        rationale: str,
        modifications: dict[str, Any] | None,
        review_digest: str | None = None,
    ) -> Call:
        body = {
            "request_id": request_id,
            "decision": ApprovalDecision(decision).value,
            "rationale": rationale,
            "approved_by": approved_by,
            "modifications": modifications,
            "review_digest": review_digest,
        }
        return post("/api/approvals/submit", compact(body))

    @staticmethod
    def decide_batch(
        request_ids: list[str] | None,
        workflow_id: str | None,
        decision: ApprovalDecision | str,
        approved_by: str | None,
        rationale: str,
    ) -> Call:
        body = {
            "request_ids": request_ids,
            "workflow_id": workflow_id,
            "decision": ApprovalDecision(decision).value,
            "rationale": rationale,
            "approved_by": approved_by,
        }
        return post("/api/approvals/batch", compact(body))

    @staticmethod
    def pending(workflow_id: str | None, **page: Any) -> Call:
        """``page``: limit, cursor and the queue's filters (mine, assigned_to, risk, expiring_within,
        older_than, newer_than), as ``GET /api/approvals/pending`` names them."""
        unknown = set(page) - PENDING_PARAMS
        if unknown:
            raise TypeError(f"unknown pending() argument(s): {', '.join(sorted(unknown))}")
        mine = page.pop("mine", None)
        return get(
            "/api/approvals/pending", {"workflow_id": workflow_id, "mine": "true" if mine else None, **page}
        )

    @staticmethod
    def add_alerts(request_id: str, alerts: list[dict[str, Any]]) -> Call:
        return post(f"/api/approvals/{seg(request_id)}/alerts", {"alerts": list(alerts)})

    @staticmethod
    def policy() -> Call:
        return get("/api/policy")

    @staticmethod
    def evaluate_policy(cases: list[dict[str, Any]]) -> Call:
        return post("/api/policy/evaluate", {"cases": cases})


class ApprovalMethods(Sends[J, B]):
    """The approval calls of both clients (awaited on the async one); ``iter_pending`` is each client's."""

    def get_approval(self, request_id: str, wait: float = 0) -> J:
        """The request and its decision; with ``wait`` (<= 60 s) returns as soon as the decision exists."""
        return self._json(ApprovalEndpoints.get_approval(request_id, wait))

    def checkpoint_items(self, request_id: str) -> J:
        """Every item asked at this request's checkpoint pause, each with its status and decision."""
        return self._json(ApprovalEndpoints.checkpoint_items(request_id))

    def submit_decision(
        self,
        request_id: str,
        decision: ApprovalDecision | str,
        *,
        approved_by: str | None = None,
        rationale: str = "",
        modifications: dict[str, Any] | None = None,
        review_digest: str | None = None,
    ) -> J:
        """Decide a request. ``review_digest``: the request's ``review_digest`` as fetched and shown;
        if the request changed since: ``StaleReview`` (``exc.changed``) and nothing is decided. On a
        quorum request this is a vote: the answer's ``quorum`` holds the votes so far and who may still
        vote; a refused vote raises ``Forbidden``/``Conflict`` naming the rule (docs/quorum.md)."""
        call = ApprovalEndpoints.submit_decision(
            request_id, decision, approved_by, rationale, modifications, review_digest
        )
        return self._json(call)

    def decide_batch(
        self,
        request_ids: list[str] | None = None,
        decision: ApprovalDecision | str = ApprovalDecision.APPROVED,
        *,
        workflow_id: str | None = None,
        approved_by: str | None = None,
        rationale: str = "",
    ) -> J:
        """Approve or reject several requests in one call; one result per request (``results``)."""
        call = ApprovalEndpoints.decide_batch(request_ids, workflow_id, decision, approved_by, rationale)
        return self._json(call)

    def pending(self, workflow_id: str | None = None, **page: Any) -> J:
        """One page of the queue, soonest expiry first (``limit``, ``cursor``, ``mine``, ``assigned_to``,
        ``risk``, ``expiring_within``, ``older_than``, ``newer_than``); ``next_cursor`` reads on."""
        return self._json(ApprovalEndpoints.pending(workflow_id, **page))

    def add_alerts(self, request_id: str, alerts: list[dict[str, Any]]) -> J:
        """Add a monitor's alerts to a pending request (409 once it is decided)."""
        return self._json(ApprovalEndpoints.add_alerts(request_id, alerts))

    def policy(self) -> J:
        """The live approval policy (``{"active": False}`` when none is configured)."""
        return self._json(ApprovalEndpoints.policy())

    def evaluate_policy(self, cases: list[dict[str, Any]]) -> J:
        """What the live policy decides for each case (see ``saferun policy test``)."""
        return self._json(ApprovalEndpoints.evaluate_policy(cases))
