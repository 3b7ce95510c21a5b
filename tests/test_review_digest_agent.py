"""The agent side of review digests (issue 16, item 1): the decision carries the digest the reviewer
decided on, ``Decision.verify`` refuses inputs that were not approved, and the SDK sends the digest it
fetched (a stale one is ``StaleReview`` with ``changed``)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from saferun import WorkflowOrchestrator, supervised
from saferun.api.server import create_app
from saferun.client.http import AsyncSafeRunClient
from saferun.core.state_machine.models import ApprovalResponse
from saferun.errors import ParametersNotApproved, StaleReview
from saferun.storage.database import Database
from tests.helpers import make_config
from tests.test_api import client_for, paused


async def test_the_agent_gets_the_digest_and_verify_refuses_unapproved_inputs(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    config = make_config(n=1)
    seen: list[str] = []

    async def reviewer() -> None:
        while not (pending := orch.pending_approvals(config.workflow_id)):
            await asyncio.sleep(0.005)
        request = orch.get_approval_request(pending[0].request_id)
        assert request.review_digest is not None
        seen.append(request.review_digest)
        response = ApprovalResponse(
            request_id=request.request_id,
            decision="MODIFIED",
            approved_by="reviewer",
            modifications={"amount": 10},
            review_digest=request.review_digest,
        )
        orch.submit_approval(config.workflow_id, response)

    async def agent() -> None:
        async with supervised(config, orch) as run:
            decision = await run.checkpoint(
                "Review 1", parameters={"amount": 100, "to": "acct_1"}, summary="Pay 100?"
            )
            assert decision.review_digest == seen[0]
            decision.verify({"amount": 10, "to": "acct_1"})  # what was approved (after the merge)
            decision.verify({"amount": 10})  # a step may check only the inputs it uses
            with pytest.raises(ParametersNotApproved) as info:
                decision.verify({"amount": 100, "to": "acct_1"})  # the model's original, not approved
            assert info.value.mismatched == ["amount"]
            with pytest.raises(ParametersNotApproved) as info:
                decision.verify({"amount": 10.0, "memo": "x"})  # 10.0 is not 10; memo was never shown
            assert info.value.mismatched == ["amount", "memo"]

    await asyncio.gather(agent(), reviewer())


async def test_the_sdk_sends_the_digest_it_fetched(db: Database) -> None:
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    transport = httpx.ASGITransport(app=app)
    async with (
        AsyncSafeRunClient("http://127.0.0.1", transport=transport) as client,
        client_for(app) as api,
    ):
        _wf, req = await paused(api)
        shown = (await client.get_approval(req))["request"]["review_digest"]
        await client.add_alerts(req, [{"rule": "new_payee"}])
        with pytest.raises(StaleReview) as info:
            await client.submit_decision(req, "APPROVED", approved_by="sup", review_digest=shown)
        assert info.value.changed == ["alerts"]
        assert (await client.get_approval(req))["status"] == "pending"
        fresh = (await client.get_approval(req))["request"]["review_digest"]
        await client.submit_decision(req, "APPROVED", approved_by="sup", review_digest=fresh)
        assert (await client.get_approval(req))["decision"]["review_digest"] == fresh
