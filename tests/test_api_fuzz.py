"""Schemathesis against the OpenAPI schema: whatever a client sends, the server never answers 5xx, and
every answer (status code, content type, body) matches what the schema documents.

The app runs in-process on its own database seeded with one paused workflow, so generated ids sometimes
hit real objects. CI runs a small budget; the full run is a documented command (README, "Fuzzing")::

    FUZZ_EXAMPLES=200 FUZZ_AUTH=keys FUZZ_DB=postgres \\
        .venv/bin/pytest -p no:cacheprovider tests/test_api_fuzz.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
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
# Known, not yet fixed (issue 10, item 5): the schema is looser than some routes' own checks (id formats,
# an empty Idempotency-Key, enum-like strings), and ``{escrow_id:path}`` routes answer a wrong method with
# 422 instead of 405. FUZZ_STRICT=1 runs those two checks as well.
EXCLUDED = [] if os.environ.get("FUZZ_STRICT") else [positive_data_acceptance, unsupported_method]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.slow
@open_schema.parametrize()
@FUZZ
def test_open_mode_answers_match_the_schema_and_none_is_a_server_error(case) -> None:  # type: ignore[no-untyped-def]
    if "open" not in AUTHS:
        pytest.skip("FUZZ_AUTH excludes open mode")
    case.call_and_validate(headers=HEADERS["open"], excluded_checks=EXCLUDED)


@pytest.mark.slow
@keys_schema.parametrize()
@FUZZ
def test_keys_mode_answers_match_the_schema_and_none_is_a_server_error(case) -> None:  # type: ignore[no-untyped-def]
    if "keys" not in AUTHS:
        pytest.skip("FUZZ_AUTH excludes keys mode")
    case.call_and_validate(headers=HEADERS["keys"], excluded_checks=EXCLUDED)
