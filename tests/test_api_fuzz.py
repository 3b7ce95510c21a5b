"""Schemathesis against the OpenAPI schema: whatever a client sends, the server never answers 5xx.

Bounded (25 examples per operation) so it stays a test, not a soak. The app runs in-process on its own
SQLite database seeded with one paused workflow, so generated ids sometimes hit real objects.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.helpers import make_config, pause, started

_DIR = Path(tempfile.mkdtemp(prefix="saferun-fuzz-"))
_ORCH = WorkflowOrchestrator(database=Database(f"sqlite:///{_DIR / 'saferun.db'}"))
asyncio.run(pause(_ORCH, started(_ORCH, make_config(workflow_id="wf_fuzz")), parameters={"pizza_count": 100}))
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_ORCH, auth="open", sweep=False))


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_server_fail(case) -> None:  # type: ignore[no-untyped-def]
    response = case.call()
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
    )
