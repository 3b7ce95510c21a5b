"""The decision-link page binds to what it showed (issue 16, item 1), on SQLite and PostgreSQL: its form
carries the request's review digest; an alert added since makes the post a 409 page that shows the
request as it is now and says what changed, the link stays unspent, and a post with the new digest
decides (recorded with that digest)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.notifications import links
from saferun.storage import approvals
from saferun.storage.database import Database
from tests.helpers import make_config, pause, started
from tests.test_api import client_for

DIGEST = re.compile(r'name="review_digest" value="(sha256:[0-9a-f]{64})"')


async def test_a_link_page_decision_after_an_alert_is_stale_and_the_link_stays_usable(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch, make_config(n=1))
    req = await pause(orch, wf, "cp1", {"amount": 100})
    with orch.db.transaction() as conn:
        token = links.mint(conn, approvals.get(conn, req), None, datetime.now(UTC))
    assert token is not None
    async with client_for(create_app(orch, auth="open", sweep=False)) as web:
        page = await web.get(f"/decide/{token}")
        assert page.status_code == 200
        (shown,) = DIGEST.findall(page.text)
        assert shown == orch.get_approval_request(req).review_digest

        orch.add_alerts(req, [{"level": "high", "message": "payee changed its bank account"}], actor="mon")
        form = {"token": token, "decision": "APPROVED", "review_digest": shown}
        stale = await web.post(f"/decide/{token}", data=form)
        assert stale.status_code == 409
        assert "changed while you were reviewing it" in stale.text and "Nothing was decided" in stale.text
        assert "alerts" in stale.text and "payee changed its bank account" in stale.text
        assert orch.get_approval_request(req).status == "pending" and orch.get_approval_response(req) is None
        (fresh,) = DIGEST.findall(stale.text)  # the re-rendered form carries the new digest
        assert fresh != shown

        bad = await web.post(f"/decide/{token}", data={**form, "review_digest": "sha256:nope"})
        assert bad.status_code == 422 and "review digest" in bad.text

        done = await web.post(f"/decide/{token}", data={**form, "review_digest": fresh})
        assert done.status_code == 200, done.text
    decided = orch.get_approval_response(req)
    assert decided is not None and decided.review_digest == fresh
    (event,) = [e["payload"] for e in orch.audit_events(wf) if e["kind"] == "decision"]
    assert event["review_digest"] == fresh
    assert orch.verify_audit(wf)[1] is None
