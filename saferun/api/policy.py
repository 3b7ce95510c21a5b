"""The approval policy over HTTP: which policy is live, and what it would decide for given cases.

Any signed-in caller may read the live policy and try it: the rules are what every party is bound by, so
hiding them protects nothing, and a poster deciding whether to post wants to know what needs a person.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from saferun.api import schemas as s
from saferun.api.deps import CallerDep, OrchestratorDep
from saferun.api.one_hop import OneHopRoute
from saferun.domain.approval_policy import case_from_dict

router = APIRouter(prefix="/api/policy", tags=["policy"], route_class=OneHopRoute)


class EvaluateIn(s.Strict):
    cases: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


@router.get("")
def live_policy(orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """The policy requests are judged by now (``SAFERUN_APPROVAL_POLICY``), or ``{"active": false}``."""
    policy = orch.policy_gate.policy()
    if policy is None:
        return {"active": False}
    return {"active": True, **policy.model_dump(mode="json", by_alias=True)}


@router.post("/evaluate")
def evaluate(body: EvaluateIn, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """What the live policy decides for each case (``checkpoint``, ``parameters``, ``confidence``, ``alerts``,
    ``risk``, ``spend``; ``expect`` is checked and reported). 409 when no policy is configured."""
    from saferun.errors import Conflict

    policy = orch.policy_gate.policy()
    if policy is None:
        raise Conflict("no approval policy is configured (SAFERUN_APPROVAL_POLICY)")
    results = []
    for i, item in enumerate(body.cases):
        case, expect = case_from_dict(item, f"cases[{i}]")
        verdict = policy.evaluate(case)
        results.append(
            {**verdict.as_dict(), "expected": expect, "as_expected": expect in (None, verdict.action)}
        )
    return {"policy": policy.name, "version": policy.version, "results": results}
