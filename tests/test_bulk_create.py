"""The bulk path (``saferun.core.bulk``) writes exactly the rows initialize -> start -> pause writes.

A workflow made by the engine's three calls and one made by the bulk path from the same arguments are
dumped table by table; after ids, timestamps and hashes are replaced by placeholders the rows must be
equal. Then the bulk workflow must pass what every engine-made one passes: its audit chain verifies, reads
check it against the chain, its request is decided and pays its milestone, the ledger balances. Bad input
is refused naming the item and field with nothing written. On both databases.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from sqlalchemy import event, func, select

from saferun.core.bulk import BulkError, PausedWorkflow, create_paused
from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalResponse,
    CheckpointConfig,
    ExecutionState,
    WorkflowConfig,
)
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import InvalidInput
from saferun.storage import ledger as book
from saferun.storage.database import Database
from saferun.storage.schema import metadata

# new_bytes: what the content-addressed store had not seen yet (the engine's own store_state computes it
# for both paths; it depends on what was stored before, not on the path)
VOLATILE = {
    "new_bytes",
    "created_at",
    "updated_at",
    "started_at",
    "at",
    "expires_at",
    "hash",
    "prev_hash",
    "audit_head",
    "id",
}
ID = re.compile(r"(wf|job|txn|snap|req)_[0-9a-f]{16,20}\b")
HEX64 = re.compile(r"\b[0-9a-f]{64}\b")
NEW_BYTES = re.compile(r'"new_bytes":\d+')
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")
PER_WORKFLOW = (
    "workflows",
    "jobs",
    "transitions",
    "ledger_transactions",
    "snapshots",
    "approval_requests",
    "notifications",
    "audit_events",
)


def spec(workflow_id: str, i: int = 1) -> PausedWorkflow:
    cfg = WorkflowConfig(
        workflow_id=workflow_id,
        name="Order pizzas",
        checkpoints=[
            CheckpointConfig(name="Plan", checkpoint_id="plan", timeout_seconds=900),
            CheckpointConfig(name="Pay", checkpoint_id="pay"),
        ],
        escrow_amount="12.50",
        poster_id="poster_1",
        executor_id="exec_1",
        supervisor_id="sup_1",
    )
    state = ExecutionState(
        checkpoint_id="plan", parameters={"pizza_count": 3}, agent_memory={"notes": [f"n{i}"]}
    )
    review = {"risk": {"level": "high", "why": "money"}, "recommendation": "approve", "confidence": 0.7}
    return PausedWorkflow(cfg, state, "Order 3 pizzas?", {"shop": "Luigi"}, review)


def normal(orch: WorkflowOrchestrator, item: PausedWorkflow) -> None:
    orch.initialize_workflow(item.config)
    orch.start_execution(item.config.workflow_id)
    asyncio.run(orch.pause(item.config.workflow_id, item.state, item.summary, item.context, **item.review))


def shape(value: Any) -> Any:
    """A value with its ids, hashes and times replaced by placeholders (so two workflows compare)."""
    if isinstance(value, dict):
        return {k: ("<t>" if k in VOLATILE else shape(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, str):
        value = NEW_BYTES.sub('"new_bytes":<n>', value)
        return ISO.sub("<t>", HEX64.sub("<h>", ID.sub(lambda m: f"<{m.group(1)}>", value)))
    return value


def rows_of(db: Database, workflow_id: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    with db.read() as conn:
        for name in PER_WORKFLOW:
            t = metadata.tables[name]
            q = select(t).where(t.c.workflow_id == workflow_id)
            out[name] = sorted((shape(dict(r)) for r in conn.execute(q).mappings()), key=repr)
        jobs_ = metadata.tables["jobs"]
        ev = metadata.tables["job_events"]
        q = select(ev).join(jobs_, jobs_.c.job_id == ev.c.job_id).where(jobs_.c.workflow_id == workflow_id)
        out["job_events"] = sorted((shape(dict(r)) for r in conn.execute(q).mappings()), key=repr)
        tx = metadata.tables["ledger_transactions"]
        legs = metadata.tables["ledger_legs"]
        q = select(legs).join(tx, tx.c.txn_id == legs.c.txn_id).where(tx.c.workflow_id == workflow_id)
        out["ledger_legs"] = sorted((shape(dict(r)) for r in conn.execute(q).mappings()), key=repr)
    return out


def test_bulk_rows_equal_the_engines_rows(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    normal(orch, spec("wf_aaaaaaaaaaaaaaaa"))
    made = create_paused(orch, [spec("wf_bbbbbbbbbbbbbbbb", 2)])  # another state of the same size
    assert [c.workflow_id for c in made] == ["wf_bbbbbbbbbbbbbbbb"]
    engine, bulk = rows_of(db, "wf_aaaaaaaaaaaaaaaa"), rows_of(db, "wf_bbbbbbbbbbbbbbbb")
    assert all(engine[t] for t in engine), engine  # every table has this workflow's rows
    for table in engine:
        assert bulk[table] == engine[table], table


def test_a_bulk_workflow_behaves_like_any_other(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    made = create_paused(orch, [spec(f"wf_{i:016x}", i) for i in range(1, 8)], per_transaction=3)
    assert len(made) == 7
    for c in made:
        assert orch.verify_audit(c.workflow_id)[1] is None
        wf = orch.get_workflow(c.workflow_id)  # read path checks the row against its chain
        assert (
            wf.current_state.value == "awaiting_approval" and wf.snapshots == 1 and wf.approval_requests == 1
        )
        assert orch.get_approval_request(c.request_id).status == "pending"
    first = made[0]
    after = orch.submit_approval(
        first.workflow_id,
        ApprovalResponse(
            request_id=first.request_id, decision=ApprovalDecision.APPROVED, approved_by="sup_1"
        ),
    )
    assert after.current_state.value == "executing"
    position = orch.escrow_position(first.workflow_id)
    assert position.released > 0 and position.held + position.released == position.locked
    with db.read() as conn:  # double entry: every posting's legs sum to zero, so all legs do
        legs = metadata.tables["ledger_legs"]
        assert conn.execute(select(func.sum(legs.c.amount_micro))).scalar() == 0
        assert book.balance(conn, f"escrow:{first.workflow_id}") == position.held
    assert orch.verify_audit(first.workflow_id)[1] is None


def test_bulk_commits_per_chunk_and_counts_statements(db: Database) -> None:
    """Each chunk is one transaction; statements per chunk do not grow with a statement per row written."""
    orch = WorkflowOrchestrator(database=db)
    seen: list[str] = []

    def record(_c: object, _cur: object, statement: str, *_: object) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        create_paused(orch, [spec(f"wf_{i:016x}", i) for i in range(1, 41)], per_transaction=20)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    inserts = [s for s in seen if s.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS")]
    assert len(inserts) <= 2 * 2  # one multi-row insert per chunk (drivers may split a big one)
    with db.read() as conn:
        assert (
            conn.execute(select(func.count()).select_from(metadata.tables["approval_requests"])).scalar()
            == 40
        )


def test_bad_input_writes_nothing(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    good = spec("wf_cccccccccccccccc")
    bad_cp = PausedWorkflow(
        good.config.model_copy(update={"workflow_id": "wf_dddddddddddddddd"}),
        ExecutionState(checkpoint_id="nope"),
        "x",
    )
    with pytest.raises(InvalidInput) as err:
        create_paused(orch, [good, bad_cp])
    assert err.value.field == "items[1].state.checkpoint_id"
    with pytest.raises(InvalidInput) as err:
        create_paused(orch, [good, spec("wf_cccccccccccccccc")])
    assert err.value.field == "items[1].config.workflow_id"
    with pytest.raises(InvalidInput) as err:
        create_paused(orch, [PausedWorkflow(good.config, good.state, "   ")])
    assert err.value.field == "items[0].summary"
    with pytest.raises(InvalidInput):
        create_paused(orch, [good], per_transaction=0)
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(metadata.tables["workflows"])).scalar() == 0
    # an id that exists: the chunk that holds it writes nothing, chunks before it stay
    create_paused(orch, [good])
    with pytest.raises(BulkError) as failed:
        create_paused(orch, [spec("wf_eeeeeeeeeeeeeeee"), spec("wf_cccccccccccccccc")], per_transaction=1)
    assert [c.workflow_id for c in failed.value.created] == ["wf_eeeeeeeeeeeeeeee"]
    assert failed.value.http_status == 409
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(metadata.tables["workflows"])).scalar() == 2


def test_the_cli_bulk_creates_from_json_lines(database_env: Database, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from saferun.cli.main import app

    lines = []
    for i in range(1, 4):
        it = spec(f"wf_{i:016x}", i)
        lines.append(
            json.dumps(
                {
                    "config": it.config.model_dump(mode="json"),
                    "state": it.state.model_dump(mode="json"),
                    "summary": it.summary,
                    "context": it.context,
                    "review": it.review,
                }
            )
        )
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    res = runner.invoke(app, ["workflows", "bulk-create", str(good), "--per-transaction", "2"])
    assert res.exit_code == 0, res.output
    assert "Created 3 paused workflows" in res.output
    orch = WorkflowOrchestrator(database=database_env)
    assert orch.pending_page().total == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0].replace("wf_0000000000000001", "wf_9999999999999999") + '\n{"config": 1}\n')
    res = runner.invoke(app, ["workflows", "bulk-create", str(bad)])
    assert res.exit_code == 1 and "line 2" in res.output
    assert orch.pending_page().total == 3  # nothing of the bad file was written


def test_an_approval_policy_judges_bulk_requests_as_the_engine_does(db: Database) -> None:
    """With a policy that may decide a request as it opens, the bulk path uses the engine's calls."""
    from saferun.domain.approval_policy import load

    policy = load(
        "name: small\nversion: 1\ndefault: require_approval\nrules:\n"
        "  - id: R1\n    when: {checkpoints: [plan]}\n    then: auto_approve\n"
    )
    orch = WorkflowOrchestrator(database=db, approval_policy=policy)
    made = create_paused(orch, [spec("wf_ffffffffffffffff")])
    assert orch.get_approval_request(made[0].request_id).status == "decided"
    assert orch.get_workflow(made[0].workflow_id).current_state.value == "executing"
    assert orch.verify_audit(made[0].workflow_id)[1] is None
