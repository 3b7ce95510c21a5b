"""The per-process verified-prefix cache of audit chains (issue 12, ``storage.chain_cache``).

A process that verified a chain hashes only the events appended since; the rows a read serves are always
re-hashed; an old event changed after the cache filled is found by ``audit verify`` (which then drops the
prefix, so the reads refuse), and by any process that starts afresh. Statements are counted, never timed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select, update

from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.chain_facts import ChainFacts, extend, of_events
from saferun.errors import Tampered
from saferun.storage import audit, chain_cache
from saferun.storage.database import Database
from saferun.storage.schema import approval_responses, audit_events, workflows
from tests.helpers import decide, pause, started


@contextmanager
def event_reads(db: Database) -> Iterator[list[dict[str, Any]]]:
    """The parameters of every statement that reads ``audit_events`` while the block runs."""
    seen: list[dict[str, Any]] = []

    def record(_conn: object, _cur: object, statement: str, _params: Any, context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "audit_events" in statement:
            seen.append(dict(context.compiled_parameters[0]))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


async def test_folding_a_chain_in_pieces_gives_the_facts_of_folding_it_whole(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    decide(orch, await pause(orch, wf, "cp1"), "MODIFIED", modifications={"n": 2})
    decide(orch, await pause(orch, wf, "cp2"), "REJECTED", rationale="no")
    with db.read() as conn:
        evs = audit.raw_events(conn, wf)
    whole = of_events(wf, evs)
    assert isinstance(whole, ChainFacts) and whole.length == len(evs) > 6
    for cut in range(len(evs) + 1):
        first = of_events(wf, evs[:cut])
        assert isinstance(first, ChainFacts)
        assert extend(first, evs[cut:]) == whole, cut
    # a piece that does not continue the prefix is a broken link, not facts
    gap = extend(of_events(wf, evs[:2]), evs[3:])  # type: ignore[arg-type]
    assert not isinstance(gap, ChainFacts) and gap.seq == 3


async def test_a_warm_read_hashes_only_what_another_process_appended(db: Database) -> None:
    """Another process (a replica: its own engine and cache) extends the chain; this process reads the
    events after its verified prefix, and no event when nothing was appended."""
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    orch.get_workflow(wf)  # verifies the chain: the prefix is now known here
    known = chain_cache.for_engine(db.engine).get(wf)
    assert known is not None
    with event_reads(db) as seen:
        orch.get_workflow(wf)
    assert seen == []  # the row's anchor is the verified prefix: no event read, none hashed

    replica_db = Database(db.url)
    try:
        replica = WorkflowOrchestrator(database=replica_db)
        req = await pause(replica, wf, "cp1", parameters={"n": 1})
        decide(replica, req, "APPROVED")
    finally:
        replica_db.dispose()
    with event_reads(db) as seen:
        orch.get_approval_response(req)
    assert [p.get("seq") for p in seen] == [known.length]  # only the events after the prefix
    after = chain_cache.for_engine(db.engine).get(wf)
    assert after is not None and after.length > known.length
    assert orch.verify_audit(wf)[1] is None


async def test_a_forged_event_appended_by_another_process_is_refused_by_a_warm_read(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    orch.get_workflow(wf)
    with db.transaction() as conn:  # a new event whose content does not hash to what it says
        audit.append(conn, wf, "note", "tester", {"n": 1})
    with db.transaction() as conn:
        last = conn.execute(select(workflows.c.audit_seq).where(workflows.c.workflow_id == wf)).scalar_one()
        conn.execute(
            update(audit_events)
            .where(audit_events.c.workflow_id == wf, audit_events.c.seq == last)
            .values(actor="mallory")
        )
    with pytest.raises(Tampered) as err:
        orch.get_workflow(wf)
    assert err.value.table == "audit_events"


async def test_an_old_event_changed_after_the_cache_filled(db: Database) -> None:
    """The documented gap, pinned down: a warm read does not re-hash an old event, but it still serves
    only rows that match what was verified; ``audit verify`` reports the change and drops the prefix, so
    this process refuses from then on, as a fresh process does at once."""
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    req = await pause(orch, wf, "cp1")
    decide(orch, req, "APPROVED")
    assert orch.get_approval_response(req) is not None  # verified: the cache is warm
    with db.transaction() as conn:
        conn.execute(
            update(audit_events)
            .where(audit_events.c.workflow_id == wf, audit_events.c.kind == "decision")
            .values(actor="mallory")
        )
    assert orch.get_approval_response(req) is not None  # warm: the old event is not re-hashed
    fresh_db = Database(db.url)
    try:
        with pytest.raises(Tampered):  # a process that starts now verifies the chain whole
            WorkflowOrchestrator(database=fresh_db).get_approval_response(req)
    finally:
        fresh_db.dispose()
    count, broken = orch.verify_audit(wf)
    assert broken is not None and count > 0
    with pytest.raises(Tampered):  # verify dropped the prefix: this process refuses too
        orch.get_approval_response(req)


async def test_a_served_row_changed_after_the_cache_filled_is_refused(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    req = await pause(orch, wf, "cp1")
    decide(orch, req, "MODIFIED", modifications={"n": 5})
    assert orch.get_approval_response(req) is not None
    assert wf in chain_cache.for_engine(db.engine)
    with db.transaction() as conn:
        conn.execute(
            update(approval_responses)
            .where(approval_responses.c.request_id == req)
            .values(modifications={"n": 6})
        )
    with pytest.raises(Tampered) as err:
        orch.get_approval_response(req)
    assert err.value.table == "approval_responses"


async def test_a_moved_anchor_is_refused_by_a_warm_read(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    orch.get_workflow(wf)
    with db.transaction() as conn:
        conn.execute(update(workflows).where(workflows.c.workflow_id == wf).values(audit_head="f" * 64))
    with pytest.raises(Tampered) as err:
        orch.get_workflow(wf)
    assert err.value.table == "workflows"


async def test_entries_zero_turns_the_cache_off(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFERUN_CHAIN_CACHE_ENTRIES", "0")
    off_db = Database(db.url)
    try:
        orch = WorkflowOrchestrator(database=off_db)
        wf = started(orch)
        orch.get_workflow(wf)
        assert len(chain_cache.for_engine(off_db.engine)) == 0
        with event_reads(off_db) as seen:
            orch.get_workflow(wf)
        assert [p.get("seq") for p in seen] == [0]  # the whole chain, every time
    finally:
        off_db.dispose()


def test_the_cache_is_bounded_and_never_shortens_a_prefix() -> None:
    cache = chain_cache.ChainCache(2)
    a3, a1 = ChainFacts("a", length=3, head="x"), ChainFacts("a", length=1, head="y")
    cache.put(a3)
    cache.put(a1)  # a reader with an older snapshot
    assert cache.get("a") is a3
    cache.put(ChainFacts("b", length=1))
    cache.get("a")
    cache.put(ChainFacts("c", length=1))  # evicts the least recently used: b
    assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2


async def test_a_replica_that_only_decides_hashes_only_the_events_after_its_prefix(db: Database) -> None:
    """A decision's access check (``submit_approval(authorize=...)``) reads under the workflow's lock,
    which seeds the transaction's chain; nothing is appended yet, so what it verifies is committed and is
    remembered. It was not (a seeded chain counted as written): on a replica that only decides, every
    decision re-read and re-hashed the workflow's whole chain, a cost growing with its history."""
    from saferun.core.state_machine.models import ApprovalDecision, ApprovalResponse

    agent = WorkflowOrchestrator(database=db)
    wf = started(agent)
    desk_db = Database(db.url)  # the reviewers' replica: its own engine and cache
    try:
        desk = WorkflowOrchestrator(database=desk_db)
        seen_views: list[Any] = []

        def approve(request_id: str) -> None:
            response = ApprovalResponse(
                request_id=request_id, decision=ApprovalDecision.APPROVED, approved_by="reviewer"
            )
            desk.submit_approval(None, response, authorize=seen_views.append)

        approve(await pause(agent, wf, "cp1"))  # the first: the whole chain (nothing known here yet)
        known = chain_cache.for_engine(desk_db.engine).get(wf)
        assert known is not None  # remembered, though the check ran inside the deciding transaction
        request_id = await pause(agent, wf, "cp2")  # the agent's replica appends
        with event_reads(desk_db) as seen:
            approve(request_id)
        assert [p.get("seq") for p in seen] == [known.length]  # only what was appended since
        assert len(seen_views) == 2
    finally:
        desk_db.dispose()
    assert agent.verify_audit(wf)[1] is None
