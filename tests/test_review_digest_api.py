"""Approvals bound to what the reviewer saw (issue 16, item 1), over HTTP on SQLite and PostgreSQL.

A decision that carries the ``review_digest`` it was shown is refused as ``409 stale_review`` (naming what
changed, deciding nothing) once an alert was added or the agent checkpointed again; a fresh one passes and
is recorded with its digest on the audit chain; a decision without one works as before. A stale decision
racing an alert has exactly one outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.test_api import client_for, paused


@pytest.fixture
def orch(db: Database) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=db)


@pytest.fixture
async def api(orch: WorkflowOrchestrator) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(orch, auth="open", sweep=False)) as c:
        yield c


async def digest_of(api: httpx.AsyncClient, req: str) -> str:
    got = await api.get(f"/api/approvals/{req}")
    assert got.status_code == 200, got.text
    digest = got.json()["request"]["review_digest"]
    assert isinstance(digest, str) and digest.startswith("sha256:")
    return digest


def decide(req: str, digest: str | None, decision: str = "APPROVED", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"request_id": req, "decision": decision, "approved_by": "sup", **extra}
    if digest is not None:
        body["review_digest"] = digest
    return body


def decision_events(orch: WorkflowOrchestrator, wf: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in orch.audit_events(wf) if e["kind"] == "decision"]


async def test_a_fresh_digest_decides_and_is_recorded_for_the_agent_and_the_audit(
    api: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    wf, req = await paused(api)
    digest = await digest_of(api, req)
    assert await digest_of(api, req) == digest  # reading does not change it
    out = await api.post("/api/approvals/submit", json=decide(req, digest))
    assert out.status_code == 200, out.text
    detail = (await api.get(f"/api/approvals/{req}")).json()
    assert detail["status"] == "decided" and detail["decision"]["review_digest"] == digest
    assert detail["request"]["review_digest"] is None  # only a pending request has one to review
    (event,) = decision_events(orch, wf)
    assert event["review_digest"] == digest
    assert orch.verify_audit(wf)[1] is None


async def test_an_alert_added_since_makes_the_decision_stale_and_nothing_is_decided(
    api: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    wf, req = await paused(api)
    seen = await digest_of(api, req)
    added = await api.post(f"/api/approvals/{req}/alerts", json={"alerts": [{"rule": "new_payee"}]})
    assert added.status_code == 200, added.text
    out = await api.post("/api/approvals/submit", json=decide(req, seen))
    assert out.status_code == 409, out.text
    err = out.json()["detail"]
    assert err["error"] == "stale_review" and err["changed"] == ["alerts"]
    assert err["review_digest"] == seen and err["current_digest"] == await digest_of(api, req)
    assert (await api.get(f"/api/approvals/{req}")).json()["status"] == "pending"
    assert decision_events(orch, wf) == []
    # the reviewer re-reads and decides on what is there now
    again = await api.post("/api/approvals/submit", json=decide(req, err["current_digest"]))
    assert again.status_code == 200, again.text


async def test_a_new_checkpoint_makes_an_old_digest_stale_naming_what_differs(api: httpx.AsyncClient) -> None:
    wf, first = await paused(api, {"threshold": 100})
    seen = await digest_of(api, first)
    assert (await api.post("/api/approvals/submit", json=decide(first, None))).status_code == 200
    cp = await api.post(
        f"/api/workflows/{wf}/checkpoints",
        json={
            "state": {"checkpoint_id": "step2", "parameters": {"threshold": 500}},
            "summary": "Second step: raise the threshold?",
        },
    )
    assert cp.status_code == 201, cp.text
    second = cp.json()["approval_request_id"]
    # the old page's request is closed: a plain conflict, nothing decided twice
    old = await api.post("/api/approvals/submit", json=decide(first, seen))
    assert old.status_code == 409 and old.json()["detail"]["error"] == "DecisionConflict"
    # the old page's digest on the new request: stale, and what differs is named
    out = await api.post("/api/approvals/submit", json=decide(second, seen))
    assert out.status_code == 409, out.text
    err = out.json()["detail"]
    assert err["error"] == "stale_review"
    assert {"artifact_uri", "parameters"} <= set(err["changed"]) and "alerts" not in err["changed"]
    assert (await api.get(f"/api/approvals/{second}")).json()["status"] == "pending"


async def test_a_decision_without_a_digest_works_as_before(
    api: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    wf, req = await paused(api)
    await api.post(f"/api/approvals/{req}/alerts", json={"alerts": [{"rule": "seen or not"}]})
    out = await api.post("/api/approvals/submit", json=decide(req, None, "REJECTED", rationale="no"))
    assert out.status_code == 200, out.text
    (event,) = decision_events(orch, wf)
    assert "review_digest" not in event  # nothing was checked, so nothing is claimed
    assert (await api.get(f"/api/approvals/{req}")).json()["decision"]["review_digest"] is None


@pytest.mark.parametrize("bad", ["", "sha256:xyz", "abc" * 30, 7])
async def test_a_malformed_digest_is_422_naming_the_field(api: httpx.AsyncClient, bad: Any) -> None:
    _wf, req = await paused(api)
    out = await api.post("/api/approvals/submit", json=decide(req, bad))
    assert out.status_code == 422 and "review_digest" in out.text
    assert (await api.get(f"/api/approvals/{req}")).json()["status"] == "pending"


async def test_an_unknown_well_formed_digest_is_stale_without_naming_fields(api: httpx.AsyncClient) -> None:
    _wf, req = await paused(api)
    out = await api.post("/api/approvals/submit", json=decide(req, "sha256:" + "0" * 64))
    assert out.status_code == 409
    assert out.json()["detail"]["error"] == "stale_review" and out.json()["detail"]["changed"] == []


async def test_a_modification_with_a_fresh_digest_passes_and_a_stale_one_does_not(
    api: httpx.AsyncClient,
) -> None:
    _wf, req = await paused(api, {"threshold": 100})
    seen = await digest_of(api, req)
    await api.post(f"/api/approvals/{req}/alerts", json={"alerts": [{"rule": "r"}]})
    body = decide(req, seen, "MODIFIED", modifications={"threshold": 50}, rationale="lower")
    assert (await api.post("/api/approvals/submit", json=body)).status_code == 409
    body["review_digest"] = await digest_of(api, req)
    assert (await api.post("/api/approvals/submit", json=body)).status_code == 200


async def test_a_stale_decision_racing_an_alert_has_exactly_one_outcome(
    api: httpx.AsyncClient, orch: WorkflowOrchestrator
) -> None:
    outcomes = set()
    for i in range(6):
        wf, req = await paused(api)
        seen = await digest_of(api, req)
        alert = {"rule": "race", "n": i}
        decided, added = await asyncio.gather(
            api.post("/api/approvals/submit", json=decide(req, seen)),
            api.post(f"/api/approvals/{req}/alerts", json={"alerts": [alert]}),
        )
        detail = (await api.get(f"/api/approvals/{req}")).json()
        if decided.status_code == 200:
            # the decision won: the alert came after it and changed nothing
            assert added.status_code == 409, added.text
            assert detail["status"] == "decided" and detail["request"]["alerts"] == []
            assert decision_events(orch, wf)[0]["review_digest"] == seen
            outcomes.add("decided")
        else:
            # the alert won: the reviewer had not seen it, so nothing was decided
            assert decided.status_code == 409 and decided.json()["detail"]["changed"] == ["alerts"]
            assert added.status_code == 200 and detail["status"] == "pending"
            assert detail["request"]["alerts"] == [alert] and decision_events(orch, wf) == []
            outcomes.add("stale")
        assert orch.verify_audit(wf)[1] is None
    assert outcomes  # at least one race ran to an outcome; both are allowed, never both at once
