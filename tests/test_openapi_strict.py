"""What strict fuzzing found, pinned as plain tests: a POST-only sub-path reached by a ``{x:path}`` GET is a
405 with ``Allow: POST``; a malformed identity id is 422, not "not verified"; whole floats are integers;
the schema states formats and carries the stateful links (tests/test_api_fuzz.py runs the fuzzer)."""

from __future__ import annotations

import re

import pytest

from saferun.api.platform import ESCROW_ID, IDENTITY_ID, KEY
from saferun.api.schemas import RatingIn
from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.test_api import client_for


@pytest.fixture
def app(db: Database):  # type: ignore[no-untyped-def]
    return create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)


@pytest.mark.parametrize(
    "path", ["/x402/escrow/escrow_wf/release", "/x402/escrow/escrow_wf/split", "/x402/escrow/lock"]
)
async def test_a_post_only_path_reached_by_get_is_405_with_allow_post(app, path: str) -> None:  # type: ignore[no-untyped-def]
    async with client_for(app) as api:
        res = await api.get(path)
    assert res.status_code == 405, res.text
    assert res.headers["Allow"] == "POST"
    assert res.json()["detail"]["error"] == "MethodNotAllowed"


async def test_routing_405_still_lists_every_method_of_the_path(app) -> None:  # type: ignore[no-untyped-def]
    async with client_for(app) as api:
        res = await api.request("OPTIONS", "/api/workflows")
    assert res.status_code == 405
    assert {m.strip() for m in res.headers["Allow"].split(",")} >= {"GET", "POST"}


async def test_a_malformed_identity_id_is_422_not_unverified(app) -> None:  # type: ignore[no-untyped-def]
    async with client_for(app) as api:
        bad = await api.post("/x402/original/identity/verify", json={"user_id": "im_x*", "role": "poster"})
        unknown = await api.get("/x402/identities/nobody/verify", params={"role": "poster"})
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "user_id"
    assert unknown.status_code == 200 and unknown.json()["verified"] is False


def test_a_whole_float_is_an_integer_but_true_and_halves_are_not() -> None:
    assert RatingIn(rating=4.0).rating == 4
    for bad in (True, 2.5, "2"):
        with pytest.raises(ValueError):
            RatingIn(rating=bad)


def test_the_schema_patterns_agree_with_the_servers_checks() -> None:
    escrow = re.compile(ESCROW_ID["pattern"])
    assert escrow.match("escrow_wf-1") and not escrow.match("escrow_a:b") and not escrow.match("escrow_\x05")
    assert not escrow.match("escrow_ ") and not escrow.match("lock")
    identity = re.compile(IDENTITY_ID["pattern"])
    assert identity.match("alice@x.io") and not identity.match("im_x*") and not identity.match("")
    key = re.compile(KEY)
    assert key.match("k-1") and not key.match(" ") and not key.match("a\x7f")


async def test_created_workflows_link_to_every_operation_on_them(app) -> None:  # type: ignore[no-untyped-def]
    async with client_for(app) as api:
        doc = (await api.get("/openapi.json")).json()
    links = doc["paths"]["/api/workflows"]["post"]["responses"]["201"]["links"]
    ops = {
        op["operationId"]
        for path, item in doc["paths"].items()
        if path.startswith("/api/workflows/{workflow_id}")
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    assert set(links) == ops and len(ops) > 10
    assert {link["parameters"]["path.workflow_id"] for link in links.values()} == {
        "$response.body#/workflow_id"
    }
