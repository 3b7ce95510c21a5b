"""JSON columns are written by orjson and read by it, with the standard library where orjson would differ
(``storage.json_columns``): every value reads back exactly as it was given, so the
rows still match the digests the audit chain recorded for them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from saferun.storage.json_columns import json_dumps, json_loads
from saferun.storage.schema import workflows
from tests.helpers import make_config

AWKWARD = {
    "big": 2**70,  # past 64 bits: orjson refuses to write it and would read it back as a float
    "negative_big": -(2**65),
    "float": 0.1,
    "exp": 1e16,
    "unicode": "žluťoučký kůň \u2603",
    "nested": [{"a": [1, 2, {"b": None}]}, True, False],
}


def test_dumps_and_loads_round_trip_what_the_standard_library_did() -> None:
    for value in (AWKWARD, {1: "int key"}, [], {}, "text", 12345678901234567890123):
        assert json_loads(json_dumps(value)) == json.loads(json.dumps(value))
        assert json_loads(json_dumps(value).encode()) == json.loads(json.dumps(value))
    assert json_loads("NaN") != json_loads("NaN")  # an older row's NaN still reads (as NaN)


def test_what_json_dumps_refused_is_still_refused() -> None:
    with pytest.raises(TypeError):
        json_dumps({"when": datetime.now(UTC)})


def test_a_workflow_with_awkward_metadata_reads_back_exactly_and_untampered(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = orch.initialize_workflow(make_config(metadata=AWKWARD)).workflow_id
    orch.start_execution(wf)
    got = orch.get_workflow(wf)  # a chain-checked read: a changed value would be Tampered
    assert got.config.metadata == AWKWARD
    assert type(got.config.metadata["big"]) is int
    with db.read() as conn:
        stored = conn.execute(select(workflows.c.config).where(workflows.c.workflow_id == wf)).scalar_one()
    assert stored["metadata"] == AWKWARD


def test_subclasses_are_written_as_the_standard_library_wrote_them() -> None:
    from enum import StrEnum

    class Colour(StrEnum):
        RED = "red"

    assert json_loads(json_dumps({"c": Colour.RED, "n": True})) == {"c": "red", "n": True}
    assert json.loads(json_dumps({"c": Colour.RED})) == json.loads(json.dumps({"c": Colour.RED}))
