"""Amounts that are each in range but add up past int64, and milestone weights out of range: a 422 (or
``InvalidAmount`` / a typed validation error) naming the field, before any arithmetic, nothing written.
At the library, over HTTP and in the CLI."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from saferun.api.server import create_app
from saferun.cli.main import app as cli_app
from saferun.core.state_machine.models import CheckpointConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.ledger import MAX_WEIGHT, allocate, check_weight
from saferun.domain.money import MAX_AMOUNT, MAX_MICRO
from saferun.errors import InvalidAmount
from saferun.storage.database import Database
from tests.helpers import make_config
from tests.test_api import SEED_CREATE, client_for
from tests.test_bad_input import row_counts

BAD_WEIGHTS: list[Any] = ["1e30", 10**7, "NaN", "Infinity", "-1", 0, "1e-999999", "0.0000001", True, "x"]


def test_the_largest_escrow_twice_from_one_poster_is_refused_before_it_overflows(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    orch.initialize_workflow(make_config(escrow=str(MAX_AMOUNT)))
    assert orch.escrow_position(orch.list_workflows()[0].workflow_id).held == MAX_MICRO
    before = row_counts(db)
    with pytest.raises(InvalidAmount) as refused:
        orch.initialize_workflow(make_config(escrow=str(MAX_AMOUNT)))
    assert refused.value.field == "escrow_amount" and "64-bit" in refused.value.message
    assert row_counts(db) == before  # nothing half-written: no workflow, no posting, no event
    # a small one from the same poster still fits (the funding source is at -MAX_MICRO, not beyond)
    with pytest.raises(InvalidAmount):
        orch.initialize_workflow(make_config(escrow="0.000001"))
    assert row_counts(db) == before


@pytest.mark.parametrize("weight", BAD_WEIGHTS)
def test_milestone_weights_out_of_range_name_the_field(weight: Any) -> None:
    with pytest.raises(ValidationError) as info:
        CheckpointConfig(name="a", milestone_weight=weight)
    assert info.value.errors()[0]["loc"] == ("milestone_weight",)
    with pytest.raises(InvalidAmount) as refused:
        check_weight(weight)
    assert refused.value.field == "milestone_weight"


def test_weights_in_range_split_exactly() -> None:
    weights = [check_weight(w) for w in (MAX_WEIGHT, "0.000001", 3)]
    parts = allocate(MAX_MICRO, weights)
    assert sum(parts) == MAX_MICRO and all(0 <= p <= MAX_MICRO for p in parts)


async def test_over_http_both_are_422_naming_the_field_and_write_nothing(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    async with client_for(create_app(orch, auth="open", sweep=False)) as api:
        first = await api.post("/api/workflows", json={**SEED_CREATE, "escrow_amount": str(MAX_AMOUNT)})
        assert first.status_code == 201, first.text
        before = row_counts(db)
        second = await api.post("/api/workflows", json={**SEED_CREATE, "escrow_amount": str(MAX_AMOUNT)})
        assert second.status_code == 422, second.text
        assert second.json()["detail"]["field"] == "escrow_amount"
        for weight in BAD_WEIGHTS:
            body = {
                **{k: v for k, v in SEED_CREATE.items() if k != "checkpoint_names"},
                "poster_id": "someone_else",
                "checkpoints": [{"name": "a", "milestone_weight": weight}],
            }
            res = await api.post("/api/workflows", json=body)
            assert res.status_code == 422, (weight, res.text)
            assert "milestone_weight" in res.json()["detail"]["field"], (weight, res.text)
        assert row_counts(db) == before


def test_the_cli_refuses_a_supply_past_int64(database_env: Database) -> None:
    runner = CliRunner()
    address = "0x" + "cd" * 20
    first = runner.invoke(cli_app, ["platform", "mint", address, str(MAX_AMOUNT)])
    assert first.exit_code == 0, first.stderr
    before = row_counts(database_env)
    again = runner.invoke(cli_app, ["platform", "mint", address, "0.000001"])
    assert again.exit_code == 1 and "64 bits" in again.stderr, again.stderr
    assert row_counts(database_env) == before
