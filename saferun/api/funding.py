"""Escrow funding through x402 (protocol v2): ``POST /api/workflows/{id}/escrow/fund``.

Unpaid, the route answers ``402`` with ``PAYMENT-REQUIRED``; with a ``PAYMENT-SIGNATURE`` the facilitator
verifies and settles the payment before the escrow is credited once, and the answer is ``200`` with
``PAYMENT-RESPONSE``. The rules live in ``saferun.payments.funding``; docs/x402-funding.md explains them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from saferun.api.deps import CallerDep, OrchestratorDep, orchestrator, visible
from saferun.api.one_hop import OneHopRoute
from saferun.payments import records

if TYPE_CHECKING:  # the x402 EVM stack (eth_account, web3, py_ecc) costs ~0.5 s: load it on first payment
    from saferun.payments.funding import FundingService

router = APIRouter(prefix="/api/workflows", tags=["escrow funding"], route_class=OneHopRoute)

_FUND_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Funded (or this same payment funded it before); PAYMENT-RESPONSE holds the receipt"
    },
    402: {"description": "Payment required (PAYMENT-REQUIRED) or refused (detail.reason names why)"},
    409: {"description": "Not fundable now (not x402, not INITIALIZED, already funded, funding in progress)"},
    422: {"description": "Malformed PAYMENT-SIGNATURE header"},
}


def funding_service(request: Request) -> FundingService:
    state = request.app.state
    service = getattr(state, "x402_funding", None)
    if service is None:
        from saferun.payments.funding import FundingService  # first use: see the TYPE_CHECKING import

        service = state.x402_funding = FundingService(orchestrator(request).db)
    return service  # type: ignore[no-any-return]


@router.post("/{workflow_id}/escrow/fund", responses=_FUND_RESPONSES)
async def fund_escrow(workflow_id: str, request: Request, caller: CallerDep) -> JSONResponse:
    """Pay a workflow's escrow with x402: 402 with the requirements, then 200 once the payment settled."""
    await run_in_threadpool(visible, orchestrator(request), caller, workflow_id)  # foreign: 404
    answer = await funding_service(request).fund(
        workflow_id, caller=caller, url=str(request.url), headers=request.headers
    )
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


@router.get("/{workflow_id}/escrow/payments")
def escrow_payments(workflow_id: str, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """Every x402 payment recorded for the workflow: credited, unapplied (to refund) or unconfirmed."""
    visible(orch, caller, workflow_id)  # 404 for an unknown or foreign workflow
    return {"workflow_id": workflow_id, "payments": [records.public(r) for r in orch.payments(workflow_id)]}
