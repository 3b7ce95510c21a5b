"""Schemathesis against the OpenAPI schema: whatever a client sends, the server never answers 5xx, and
every answer (status code, content type, body) matches what the schema documents.

The app runs in-process on its own database seeded with one paused workflow, so generated ids sometimes
hit real objects. Every check is on: no 5xx, answers as documented, schema-valid input accepted (except
the rules listed in ``NOT_STATABLE``), 405 with ``Allow`` for a method a path does not support; the
stateful test follows the schema's links from a created workflow. CI runs a small budget; the full run is a
documented command (README, "Fuzzing")::

    FUZZ_EXAMPLES=200 FUZZ_AUTH=keys FUZZ_DB=postgres \\
        .venv/bin/pytest -p no:cacheprovider tests/test_api_fuzz.py
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis.specs.openapi.checks import positive_data_acceptance, unsupported_method

from saferun.api.server import create_app
from saferun.core.identity import IdentityService
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.conftest import make_pg_database, require_postgres
from tests.helpers import make_config, pause, started

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
# FUZZ_AUTH picks one mode for a long run; by default both run (CI: SQLite, open and keys)
AUTHS = os.environ.get("FUZZ_AUTH", "open,keys").split(",")
DB = os.environ.get("FUZZ_DB", "sqlite")  # sqlite | postgres

if DB == "postgres":
    require_postgres()
    _DATABASE, _ = make_pg_database()
else:
    _DIR = Path(tempfile.mkdtemp(prefix="saferun-fuzz-"))
    _DATABASE = Database(f"sqlite:///{_DIR / 'saferun.db'}")
_ORCH = WorkflowOrchestrator(database=_DATABASE)
asyncio.run(pause(_ORCH, started(_ORCH, make_config(workflow_id="wf_fuzz")), parameters={"pizza_count": 100}))
_, _KEY = IdentityService(_DATABASE).create_identity_with_key(
    "fuzz_admin", roles=["admin", "supervisor", "poster", "executor"]
)
HEADERS = {"open": {}, "keys": {"Authorization": "Bearer " + _KEY.api_key}}
open_schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_ORCH, auth="open", sweep=False))
# keys mode: the schema itself needs a key (SAFERUN_PUBLIC_DOCS=false)
keys_schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(_ORCH, auth="keys", sweep=False), headers=HEADERS["keys"]
)
# Every check runs, including "schema-valid input is accepted" (positive_data_acceptance) and "a method a
# path does not support is 405" (unsupported_method): the schema states the id patterns, enums, amount and
# header formats the server enforces. Only rules JSON Schema cannot state are allowed a 422 on schema-valid
# input, each by (operation, field) with the reason; anything else is a failure.
NOT_STATABLE = {
    # an opaque token that only a previous page issues (signed over the list and its filters)
    ("GET /api/workflows", "cursor"): "issued by the server",
    ("GET /api/approvals/pending", "cursor"): "issued by the server",
    # two query parameters that contradict each other (parameters cannot be combined in JSON Schema)
    ("GET /api/approvals/pending", "assigned_to"): "contradicts mine=true",
    # a digest of another field; a sum over an array equal to another field
    ("POST /x402/original/artifacts", "content_hash"): "must be the SHA-256 of content",
    ("POST /x402/escrow/{escrow_id}/split", "splits"): "must add up to total",
    # one of two optional fields, exactly: JSON Schema can say it (oneOf), but Schemathesis' coverage phase
    # then builds bodies from one branch alone (dropping other required fields), so the schema says it in
    # the fields' descriptions
    ("POST /api/approvals/batch", "body"): "request_ids or workflow_id",
    ("POST /api/workflows", "checkpoints"): "checkpoints or checkpoint_names, not empty",
    # one field unequal to two others (four eyes): JSON Schema compares no two values of an instance
    ("POST /api/workflows", "supervisor_id"): "must differ from poster_id and executor_id",
    # a quorum's group must have members (a reference to stored identities, like an unknown id)
    ("POST /api/workflows", r"checkpoints\.\d+\.quorum\.of"): "a group with members",
    # a reference to what exists in the source workflow (like an unknown id in a body: data, not format)
    ("POST /api/workflows/{workflow_id}/fork", "checkpoint"): "one of the source's checkpoints",
    # NOT YET in the schema although statable (if/then per action): notify takes no 'to', reassign needs one
    ("POST /api/workflows", r"checkpoints\.\d+\.escalation\.\d+"): "escalation step rules",
    # at most 6 decimals (the ledger's micro-units): a number's decimal places are not a JSON Schema keyword
    ("POST /api/workflows", r"checkpoints\.\d+\.milestone_weight"): "at most 6 decimals",
    # several items at one checkpoint: keys unique across the list (an order-free property of objects in
    # an array), a declared parameter schema that is valid JSON Schema and fits the item's parameters, and
    # items carry the parameters (state.parameters empty, request_approval true)
    (
        "POST /api/workflows/{workflow_id}/checkpoints",
        r"items\.\d+\.(key|parameter_schema|parameters)(\..*)?",
    ): ("unique item keys; a valid schema the parameters fit"),
    (
        "POST /api/workflows/{workflow_id}/checkpoints",
        r"state\.parameters|request_approval",
    ): "items carry them",
    # each escalation step strictly later than the one before it (an order across array items)
    ("POST /api/workflows", r"checkpoints\.\d+"): "escalation steps in increasing after_seconds",
}
STRICT = os.environ.get("FUZZ_STRICT", "1") != "0"  # FUZZ_STRICT=0: the two checks above are skipped
# CI runs the same examples every time (a red run names a real regression, not a new draw); FUZZ_RANDOM=1
# (and the full-budget command) explore fresh inputs
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("FUZZ_RANDOM") != "1",
)


def _call_and_validate(case, headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    response = case.call(headers=headers)
    case.validate_response(response, headers=headers, excluded_checks=_excluded(case, response))


def _excluded(case, response) -> list:  # type: ignore[no-untyped-def]
    excluded = [] if STRICT else [positive_data_acceptance, unsupported_method]
    field = _field(response) or ""
    if response.status_code == 422 and any(
        operation == case.operation.label and re.fullmatch(pattern, field)
        for (operation, pattern) in NOT_STATABLE
    ):
        excluded.append(positive_data_acceptance)
    return excluded


def _field(response) -> str | None:  # type: ignore[no-untyped-def]
    try:
        return response.json()["detail"]["field"]
    except (ValueError, KeyError, TypeError):
        return None


@pytest.mark.slow
@open_schema.parametrize()
@FUZZ
def test_open_mode_answers_match_the_schema_and_none_is_a_server_error(case) -> None:  # type: ignore[no-untyped-def]
    if "open" not in AUTHS:
        pytest.skip("FUZZ_AUTH excludes open mode")
    _call_and_validate(case, HEADERS["open"])


@pytest.mark.slow
@keys_schema.parametrize()
@FUZZ
def test_keys_mode_answers_match_the_schema_and_none_is_a_server_error(case) -> None:  # type: ignore[no-untyped-def]
    if "keys" not in AUTHS:
        pytest.skip("FUZZ_AUTH excludes keys mode")
    _call_and_validate(case, HEADERS["keys"])


STATEFUL_EXAMPLES = int(os.environ.get("FUZZ_STATEFUL_EXAMPLES", str(max(5, EXAMPLES // 3))))


def _state_machine(schema, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    """Schemathesis' stateful phase over the schema's links (create a workflow, then read, start,
    checkpoint, cancel or fork *that* workflow), with the same checks as the per-operation tests."""

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case):  # type: ignore[no-untyped-def]
            return {"headers": headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs):  # type: ignore[no-untyped-def]
            case.validate_response(
                response,
                headers=headers,
                excluded_checks=_excluded(case, response),
                recorder=self.recorder,
            )

    return Machine


@pytest.mark.slow
@pytest.mark.parametrize("auth", ["open", "keys"])
def test_stateful_links_from_a_created_workflow_are_followed_and_every_answer_matches(auth: str) -> None:
    if auth not in AUTHS:
        pytest.skip(f"FUZZ_AUTH excludes {auth} mode")
    schema = open_schema if auth == "open" else keys_schema
    links = schema.raw_schema["paths"]["/api/workflows"]["post"]["responses"]["201"]["links"]
    assert "get_workflow_api_workflows__workflow_id__get" in links  # the stateful phase has links to follow
    run_state_machine_as_test(
        _state_machine(schema, HEADERS[auth]),
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
