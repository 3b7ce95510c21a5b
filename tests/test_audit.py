"""The audit trail: every change is an event, the chain verifies, and tampering is found."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.audit import GENESIS, verify_chain
from saferun.errors import Tampered
from saferun.storage.database import Database
from saferun.storage.schema import audit_events
from tests.helpers import decide, pause, started


async def full_run(orch: WorkflowOrchestrator) -> str:
    wf = started(orch)
    orch.register_step(wf, "order", "cancel_order", {"id": 1})
    decide(orch, await pause(orch, wf, "cp1"), "APPROVED")
    decide(orch, await pause(orch, wf, "cp2"), "APPROVED")
    orch.settle_workflow(wf, {"done": True})
    orch.complete_workflow(wf)
    return wf


async def test_every_kind_of_change_is_in_the_chain(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = await full_run(orch)
    kinds = [e["kind"] for e in orch.audit_events(wf)]
    for kind in (
        "workflow_created",
        "escrow_locked",
        "transition",
        "checkpoint_captured",
        "decision",
        "milestone_released",
        "step_registered",
    ):
        assert kind in kinds, kind
    transitions = [e["payload"]["to"] for e in orch.audit_events(wf) if e["kind"] == "transition"]
    assert transitions == [
        "executing",
        "awaiting_approval",
        "executing",
        "awaiting_approval",
        "executing",
        "settling",
        "completed",
    ]
    assert orch.history(wf)[0]["to_state"] == "initialized"
    count, broken = orch.verify_audit(wf)
    assert broken is None and count == len(kinds)


async def test_tampering_is_reported_at_the_first_broken_link(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = await full_run(orch)
    with db.transaction() as conn:
        conn.execute(
            update(audit_events)
            .where(audit_events.c.workflow_id == wf, audit_events.c.seq == 5)
            .values(actor="mallory")
        )
    _, broken = orch.verify_audit(wf)
    assert broken is not None and broken.seq == 5 and "altered" in broken.reason


def test_removed_and_reordered_events_break_the_chain() -> None:
    from saferun.domain.audit import event_hash

    events, prev = [], GENESIS
    for seq in (1, 2, 3):
        ev = {
            "seq": seq,
            "kind": "k",
            "actor": "a",
            "at": "t",
            "payload": f'{{"n":{seq}}}',
            "prev_hash": prev,
        }
        ev["hash"] = prev = event_hash(
            workflow_id="wf", **{k: ev[k] for k in ("seq", "kind", "actor", "at", "payload", "prev_hash")}
        )
        events.append(ev)
    assert verify_chain("wf", events) is None
    gap = verify_chain("wf", [events[0], events[2]])
    assert gap is not None and gap.seq == 2
    swapped = verify_chain("wf", [events[1], events[0], events[2]])
    assert swapped is not None and swapped.seq == 1


async def test_a_number_a_database_might_normalise_still_verifies(db: Database) -> None:
    """Payloads are stored as the hashed text, so 1e16 or 1.0 in a modification cannot break the chain."""
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    req = await pause(orch, wf, parameters={"amount": 1.0, "big": 1e16, "tiny": 1e-7})
    decide(orch, req, "MODIFIED", modifications={"amount": 2.5, "big": 2e16})
    assert orch.verify_audit(wf)[1] is None


async def test_a_changed_decision_row_is_detected(db: Database) -> None:
    """Issue 10: a MODIFIED decision's stored modifications changed behind SafeRun's back."""
    from saferun.storage.schema import approval_responses

    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    req = await pause(orch, wf, "cp1", parameters={"n": 1})
    decide(orch, req, "MODIFIED", modifications={"n": 857})
    assert orch.verify_audit(wf)[1] is None
    with db.transaction() as conn:
        conn.execute(
            update(approval_responses)
            .where(approval_responses.c.request_id == req)
            .values(modifications={"n": 858})
        )
    _, broken = orch.verify_audit(wf)
    assert broken is not None and "does not match" in broken.reason
    # and the read path refuses it: neither the library nor the agent's wait serves {"n": 858}
    with pytest.raises(Tampered) as refused:
        orch.get_approval_response(req)
    assert refused.value.to_dict()["error"] == "tampered" and refused.value.table == "approval_responses"
    with pytest.raises(Tampered):
        await orch.wait_for_decision(req, timeout=1)


async def test_a_snapshot_pointed_at_another_snapshots_artifact_is_detected(db: Database) -> None:
    from saferun.storage.schema import snapshots

    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    decide(orch, await pause(orch, wf, "cp1", parameters={"n": 1}), "APPROVED")
    await pause(orch, wf, "cp2", parameters={"n": 2})
    first, second = orch.list_snapshots(wf)
    assert orch.latest_approved_state(wf).parameters == {"n": 1}
    with db.transaction() as conn:
        conn.execute(
            update(snapshots)
            .where(snapshots.c.snapshot_id == first.snapshot_id)
            .values(artifact_uri=second.artifact_uri)
        )
    _, broken = orch.verify_audit(wf)
    assert broken is not None and first.snapshot_id in broken.reason
    for read in (
        lambda: orch.latest_approved_state(wf),
        lambda: orch.get_snapshot_state(first.snapshot_id),
        lambda: orch.list_snapshots(wf),
    ):
        with pytest.raises(Tampered) as refused:
            read()
        assert refused.value.row_id == first.snapshot_id


async def test_what_a_reviewer_was_asked_is_bound(db: Database) -> None:
    from saferun.storage.schema import approval_requests

    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    req = await pause(orch, wf, "cp1", parameters={"amount": 10})
    assert orch.get_approval_request(req).parameters == {"amount": 10}
    with db.transaction() as conn:
        conn.execute(
            update(approval_requests)
            .where(approval_requests.c.request_id == req)
            .values(parameters={"amount": 10_000}, summary="harmless")
        )
    assert orch.verify_audit(wf)[1] is not None
    with pytest.raises(Tampered):
        orch.get_approval_request(req)
    with pytest.raises(Tampered):
        orch.approval_history(wf)


async def test_a_ledger_leg_changed_so_its_posting_no_longer_sums_to_zero_is_detected(db: Database) -> None:
    from saferun.storage.schema import ledger_legs, ledger_transactions

    orch = WorkflowOrchestrator(database=db)
    wf = await full_run(orch)
    assert orch.verify_audit(wf)[1] is None
    with db.transaction() as conn:
        leg = conn.execute(
            ledger_legs.select()
            .join(ledger_transactions, ledger_transactions.c.txn_id == ledger_legs.c.txn_id)
            .where(ledger_transactions.c.workflow_id == wf)
            .limit(1)
        ).first()
        assert leg is not None
        conn.execute(
            update(ledger_legs).where(ledger_legs.c.id == leg.id).values(amount_micro=leg.amount_micro ^ 1)
        )
    _, broken = orch.verify_audit(wf)
    assert broken is not None and "does not sum to zero" in broken.reason


async def test_a_ledger_leg_moved_so_the_posting_still_sums_to_zero_is_detected(db: Database) -> None:
    """Issue 10: a posting's legs are bound to the event that wrote it, so changing which account got
    the money (the sum stays zero) or its memo is caught too."""
    from saferun.storage.schema import ledger_legs, ledger_transactions

    orch = WorkflowOrchestrator(database=db)
    wf = await full_run(orch)
    for change in ("account", "memo"):
        with db.transaction() as conn:
            txn = conn.execute(
                ledger_transactions.select()
                .where(ledger_transactions.c.workflow_id == wf, ledger_transactions.c.kind == "release")
                .limit(1)
            ).first()
            assert txn is not None
            legs = conn.execute(ledger_legs.select().where(ledger_legs.c.txn_id == txn.txn_id)).all()
            assert len(legs) >= 2
            if change == "account":
                conn.execute(
                    update(ledger_legs)
                    .where(ledger_legs.c.id == legs[-1].id)
                    .values(account="wallet:mallory")
                )
            else:
                conn.execute(
                    update(ledger_transactions)
                    .where(ledger_transactions.c.txn_id == txn.txn_id)
                    .values(memo=txn.memo + "x")
                )
        _, broken = orch.verify_audit(wf)
        assert broken is not None and "does not match what this event recorded" in broken.reason, change
        with db.transaction() as conn:  # restore, so the second change is tested on its own
            if change == "account":
                conn.execute(
                    update(ledger_legs)
                    .where(ledger_legs.c.id == legs[-1].id)
                    .values(account=legs[-1].account)
                )
        assert change == "memo" or orch.verify_audit(wf)[1] is None


async def test_a_deleted_last_event_is_detected_by_the_anchor(db: Database) -> None:
    """Issue 10: deleting the chain's tail leaves a shorter chain whose links all verify; the anchor on
    the workflow row (length and latest hash) catches it, and the API export carries the anchor."""
    from sqlalchemy import delete, func, select

    orch = WorkflowOrchestrator(database=db)
    wf = await full_run(orch)
    count, broken = orch.verify_audit(wf)
    assert broken is None
    anchor = orch.audit_anchor(wf)
    assert anchor is not None and anchor[0] == count and anchor[1] is not None
    with db.transaction() as conn:
        last = conn.execute(
            select(func.max(audit_events.c.seq)).where(audit_events.c.workflow_id == wf)
        ).scalar()
        conn.execute(delete(audit_events).where(audit_events.c.workflow_id == wf, audit_events.c.seq == last))
    count_after, broken = orch.verify_audit(wf)
    assert count_after == count - 1
    assert broken is not None and f"anchor recorded {count}" in broken.reason


async def test_read_path_checks_cost_one_indexed_read_of_the_chain(db: Database) -> None:
    """A cold checked read adds one SELECT (the workflow's events, by primary-key prefix, with the row's
    anchor); once this process verified the chain (``storage.chain_cache``) a read given the workflow row
    reads no event at all, and one without it reads only the anchor (and the events after the prefix)."""
    from sqlalchemy import event

    from saferun.storage import chain_cache

    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    req = await pause(orch, wf, "cp1", parameters={"n": 1})
    decide(orch, req, "APPROVED")
    orch.latest_approved_state(wf)  # warms the verified-artifact cache
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    reads = {
        "get_workflow": lambda: orch.get_workflow(wf),
        "get_approval_request": lambda: orch.get_approval_request(req),
        "get_approval_response": lambda: orch.get_approval_response(req),
        "latest_approved_state": lambda: orch.latest_approved_state(wf),
    }
    event.listen(db.engine, "before_cursor_execute", record)
    try:
        cold, warm = {}, {}
        for name, read in reads.items():
            chain_cache.for_engine(db.engine).clear()  # as in a process that starts now
            seen.clear()
            read()
            cold[name] = len(seen)
            assert sum("audit_events" in s for s in seen) == 1, name
            seen.clear()
            read()
            warm[name] = len(seen)
            with_row = name in ("get_workflow", "latest_approved_state")
            assert sum("audit_events" in s for s in seen) == (0 if with_row else 1), name
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert cold == {
        "get_workflow": 2,
        "get_approval_request": 2,
        "get_approval_response": 3,
        "latest_approved_state": 3,
    }
    # warm on SQLite, the state a resumed agent continues from is read on the bare cursor
    # (storage.bare_select): no statement through the engine at all
    warm_state = 0 if db.is_sqlite else 2
    assert warm == {**cold, "get_workflow": 1, "latest_approved_state": warm_state}


async def test_ledger_reads_check_postings_with_one_read_of_the_chain(db: Database) -> None:
    """Issue 10: the ledger and the escrow position are served from postings checked on the way (each
    sums to zero and matches the event that wrote it) at three SELECTs: the workflow, its postings with
    their legs, its chain. A memo changed or a leg unbalanced is ``Tampered`` naming the posting."""
    from sqlalchemy import event

    from saferun.storage.schema import ledger_legs, ledger_transactions

    orch = WorkflowOrchestrator(database=db)
    wf = await full_run(orch)
    entries, position = orch.ledger(wf)
    assert position.invariant_holds() and position.locked > 0 and position.held == 0
    assert position == orch.escrow_position(wf) and entries == orch.ledger_entries(wf)
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        orch.ledger(wf)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert len(seen) == 3 and sum("audit_events" in s for s in seen) == 1, seen

    release = next(e for e in entries if e["kind"] == "release")
    with db.transaction() as conn:
        conn.execute(
            update(ledger_transactions)
            .where(ledger_transactions.c.txn_id == release["txn_id"])
            .values(memo=release["memo"] + "x")
        )
    for read in (orch.ledger_entries, orch.escrow_position):
        with pytest.raises(Tampered) as caught:
            read(wf)
        assert (caught.value.table, caught.value.row_id) == ("ledger_transactions", release["txn_id"])
    with db.transaction() as conn:
        conn.execute(
            update(ledger_transactions)
            .where(ledger_transactions.c.txn_id == release["txn_id"])
            .values(memo=release["memo"])
        )
        leg = conn.execute(ledger_legs.select().where(ledger_legs.c.txn_id == release["txn_id"])).first()
        assert leg is not None
        conn.execute(
            update(ledger_legs).where(ledger_legs.c.id == leg.id).values(amount_micro=leg.amount_micro + 1)
        )
    with pytest.raises(Tampered) as caught:
        orch.escrow_position(wf)
    assert caught.value.table == "ledger_legs" and "not zero" in str(caught.value)
