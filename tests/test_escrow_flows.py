"""Money through the engine: random decision sequences never break the escrow's books."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saferun.core.rollback.reconciliation import CompensationRegistry, RetryPolicy
from saferun.core.state_machine.models import CheckpointConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.states import WorkflowState
from saferun.storage import ledger as book
from saferun.storage.database import Database
from tests.helpers import decide, make_config, pause, started

amounts = st.one_of(
    st.sampled_from(["100.01", "0.000001", "1", "999999.999999", "33.33"]),
    st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("100000"), places=6),
)
actions = st.lists(
    st.sampled_from(["APPROVED", "MODIFIED", "REJECTED", "EXPIRE", "SETTLE", "FAIL"]), min_size=1, max_size=10
)


def check_books(orch: WorkflowOrchestrator, db: Database, wf: str, locked: int) -> None:
    pos = orch.escrow_position(wf)
    assert pos.locked == locked
    assert pos.locked == pos.released + pos.refunded + pos.held
    assert pos.held >= 0
    with db.read() as conn:
        for entry in orch.ledger_entries(wf):
            assert sum(leg["amount_micro"] for leg in entry["legs"]) == 0
            for leg in entry["legs"]:
                if not leg["account"].startswith("funding:"):
                    assert book.balance(conn, leg["account"]) >= 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    amount=amounts,
    n=st.integers(1, 4),
    plan=actions,
    weights=st.lists(st.integers(1, 5), min_size=4, max_size=4),
)
def test_random_decision_sequences_keep_locked_equal_released_refunded_held(
    tmp_path: Path, amount: Decimal, n: int, plan: list[str], weights: list[int]
) -> None:
    db = Database(f"sqlite:///{tmp_path / uuid.uuid4().hex}.db")
    reg = CompensationRegistry()
    reg.register("noop", lambda: None)
    orch = WorkflowOrchestrator(database=db, registry=reg, retry=RetryPolicy(initial_delay=0.0001))
    cps = [
        CheckpointConfig(name=f"c{i}", checkpoint_id=f"cp{i + 1}", milestone_weight=weights[i])
        for i in range(n)
    ]
    config = make_config(checkpoints=cps, escrow=amount)
    wf = started(orch, config)
    locked = orch.escrow_position(wf).locked
    assert locked == int(Decimal(amount) * 1_000_000)
    paid_once: set[str] = set()
    for action in plan:
        state = orch.get_workflow(wf).current_state
        if state in (WorkflowState.COMPLETED, WorkflowState.FAILED):
            break
        if state == WorkflowState.ROLLING_BACK:
            asyncio.run(orch.arollback(wf))
        elif action == "SETTLE":
            orch.settle_workflow(wf, {})
            orch.complete_workflow(wf)
        elif action == "FAIL":
            orch.fail_workflow(wf, "random failure")
        else:
            cp = f"cp{min(orch.get_workflow(wf).current_checkpoint, n - 1) + 1}"
            orch.register_step(wf, "side effect", "noop", {})
            req = asyncio.run(pause(orch, wf, cp, parameters={"x": 1}))
            if action == "EXPIRE":
                from datetime import timedelta

                from saferun.storage.schema import utcnow

                orch.sweep_expired(utcnow() + timedelta(seconds=301))
            else:
                decide(orch, req, action, modifications={"x": 2} if action == "MODIFIED" else None)
                if action != "REJECTED":
                    paid_once.add(cp)
        check_books(orch, db, wf, locked)
    releases = [e for e in orch.ledger_entries(wf) if e["kind"] == "release"]
    assert len(releases) == len({e["idempotency_key"] for e in releases})  # each milestone paid at most once
    assert len(releases) <= n
    db.dispose()


def test_odd_amounts_split_three_ways_exactly(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch, make_config(n=3, escrow=100.01))
    for cp in ("cp1", "cp2", "cp3"):
        decide(orch, asyncio.run(pause(orch, wf, cp)), "APPROVED")
    orch.settle_workflow(wf)
    orch.complete_workflow(wf)
    with db.read() as conn:
        assert book.balance(conn, "wallet:agent") + book.balance(conn, "wallet:reviewer") == 100_010_000
        # 33.336667 + 33.336667 + 33.336666, each split 90/10 with the supervisor's part rounded down
        assert book.balance(conn, "wallet:reviewer") == 3_333_666 + 3_333_666 + 3_333_666
    pos = orch.escrow_position(wf)
    assert (pos.released, pos.refunded, pos.held) == (100_010_000, 0, 0)
