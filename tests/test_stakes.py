"""The stakes panel (issue 14, item 2): what approve pays and reject refunds, by the engine's money rules,
next to the decision buttons; the side effects a rejection undoes beside Reject."""

from __future__ import annotations

from decimal import Decimal

import httpx

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.stakes import stakes
from saferun.storage.database import Database
from tests import ui_support as ui
from tests.test_api import client_for


def test_stakes_follow_the_ledger_rules() -> None:
    s = stakes(
        escrow_total=120_000_000,
        weights=[Decimal(1), Decimal(2)],
        index=1,
        held=120_000_000,
        already_paid=False,
        executor_share=Decimal("0.9"),
        has_supervisor=True,
        can_rollback=True,
    )
    assert (s.milestone, s.executor_payout, s.supervisor_payout) == (80_000_000, 72_000_000, 8_000_000)
    assert s.reject_refund == 0 and not s.reject_fails and s.held_after_approve == 40_000_000
    final = stakes(
        escrow_total=100,
        weights=[Decimal(1)] * 3,
        index=0,
        held=100,
        already_paid=False,
        executor_share=Decimal("0.9"),
        has_supervisor=False,
        can_rollback=False,
    )
    assert final.executor_payout + final.supervisor_payout == final.milestone  # no micro-unit lost
    assert final.supervisor_payout == 0 and final.reject_fails and final.reject_refund == 100


async def test_the_review_page_states_the_stakes_and_what_reject_undoes(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf, req = ui.pizza_workflow(orch)  # 120.00 in escrow, 3 checkpoints; the first one is approved
    held = orch.escrow_position(wf).held
    async with client_for(create_app(orch, auth="open", sweep=False)) as api:
        page = (await api.get(f"/approvals/{req}")).text
    assert 'id="stakes"' in page and "Layer 1" not in page
    assert f"${held / 1_000_000:,.2f}" in page or f"${held / 1_000_000:.2f}" in page
    assert "$40.00" in page  # this milestone: a third of 120.00
    assert "executor $36.00 · supervisor $4.00" in page
    assert "pays nothing; the escrow stays held" in page
    undoes = page.split('id="reject-undoes"', 1)[1].split("</div>", 1)[0]
    assert "add_items" in undoes and "empty_cart" in undoes and "delete_cart" in undoes
    assert undoes.index("add_items") < undoes.index("create_cart")  # newest first


async def test_a_decided_request_shows_no_stakes(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    _wf, req = ui.data_workflow(orch)
    ui.approve(orch, req)
    async with client_for(create_app(orch, auth="open", sweep=False)) as api:
        page: httpx.Response = await api.get(f"/approvals/{req}")
    assert page.status_code == 200 and 'id="stakes"' not in page.text
