"""Wake-ups on commit (core/notify) and the resumable event feed (core/events), on both databases.

No test here limits wall-clock time: they check that a waiter received the notice (and what woke it),
with generous timeouts that only stop a broken run from hanging.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from datetime import datetime

import pytest
from sqlalchemy import insert

from saferun.core import events, notify
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import DecisionConflict
from saferun.storage.database import Database
from saferun.storage.schema import transitions, utcnow
from tests.helpers import decide, make_config, pause, started

ORCH_LOG = "saferun.core.state_machine.orchestrator"
GENEROUS = 60.0  # only stops a broken run from hanging; never a latency requirement


@pytest.fixture
def orch(db: Database) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=db)


@pytest.fixture
def pg(pg_db: Database) -> Database:
    return pg_db


async def listening(db: Database) -> notify.Notifier:
    notifier = notify.notifier_for(db)
    assert await notifier.astart(timeout=GENEROUS)
    # PostgreSQL: LISTEN connected; SQLite: this process's peer socket bound (unless SAFERUN_PEER_WAKEUPS=0)
    assert notifier.listening == (not db.is_sqlite or notifier.peer_directory is not None)
    return notifier


def wake_reason(caplog: pytest.LogCaptureFixture, request_id: str) -> str:
    found = [
        r for r in caplog.records if getattr(r, "request_id", None) == request_id and hasattr(r, "woken_by")
    ]
    assert found, "wait_for_decision logged no wake-up"
    return str(found[-1].woken_by)


async def waiting(caplog: pytest.LogCaptureFixture, request_id: str) -> None:
    """Until wait_for_decision has read the store once and started waiting."""
    for _ in range(int(GENEROUS / 0.001)):
        if any(
            getattr(r, "request_id", None) == request_id and r.getMessage().startswith("waiting")
            for r in caplog.records
        ):
            return
        await asyncio.sleep(0.001)
    raise AssertionError("wait_for_decision never started waiting")


async def test_a_watch_is_woken_when_another_thread_commits_the_decision(
    db: Database, orch: WorkflowOrchestrator
) -> None:
    notifier = await listening(db)
    wf = started(orch)
    req = await pause(orch, wf)
    with notifier.watch("decision", req) as watch:
        worker = threading.Thread(target=decide, args=(orch, req, "APPROVED"))
        worker.start()
        woke = await watch.wait(GENEROUS)  # nothing polls here: only the notice can wake it
        # the notice follows the commit, so what it announces is already readable
        response = orch.get_approval_response(req)
        worker.join()
    assert woke and watch.notices >= 1
    assert response is not None and response.decision.value == "APPROVED"


async def test_wait_for_decision_is_woken_by_the_notice_not_by_a_poll(
    db: Database, orch: WorkflowOrchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=ORCH_LOG)
    await listening(db)
    wf = started(orch)
    req = await pause(orch, wf, parameters={"count": 10})
    waiter = asyncio.create_task(orch.wait_for_decision(req, timeout=GENEROUS, poll_interval=GENEROUS))
    await waiting(caplog, req)
    # decided on this event loop's thread: the waiter cannot run (or poll) until the commit is done, so
    # what wakes it next is the notice (SQLite: delivered after commit; PostgreSQL: NOTIFY)
    decide(orch, req, "MODIFIED", modifications={"count": 5})
    response = await waiter
    assert response.decision.value == "MODIFIED"
    assert wake_reason(caplog, req) == "notice"


async def test_a_decision_from_another_thread_wakes_wait_for_decision(
    db: Database, orch: WorkflowOrchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=ORCH_LOG)
    notifier = await listening(db)
    wf = started(orch)
    req = await pause(orch, wf)
    waiter = asyncio.create_task(orch.wait_for_decision(req, timeout=GENEROUS, poll_interval=GENEROUS))
    await waiting(caplog, req)
    worker = threading.Thread(target=decide, args=(orch, req, "REJECTED"))
    worker.start()
    response = await waiter  # a poll_interval of a minute: returning at all means something woke it
    worker.join()
    assert response.decision.value == "REJECTED"
    # SQLite backs its polls off from 5 ms (other processes can only be seen that way), so one of them
    # may find the decision first; with the PostgreSQL listener up polling is at poll_interval
    assert wake_reason(caplog, req) in ({"notice"} if notifier.listening else {"notice", "poll"})


async def test_a_rolled_back_transaction_publishes_nothing(db: Database) -> None:
    notifier = await listening(db)
    tag = uuid.uuid4().hex
    with notifier.subscribe({"test"}) as sub:
        with pytest.raises(RuntimeError), db.transaction() as conn:
            notify.publish(conn, "test", f"{tag}:rolled-back")
            raise RuntimeError("abort")
        with db.transaction():
            pass  # the same pooled connection commits again: nothing left over may leak out
        with db.transaction() as conn:
            notify.publish(conn, "test", f"{tag}:committed")
        received = []
        while not received:
            item = await sub.get(GENEROUS)
            assert item is not None, "the committed notice never arrived"
            if item[1].startswith(tag):  # notices are database-wide: ignore other runs' ones
                received.append(item)
    # notices arrive in commit order, so a leaked rolled-back one would have come first
    assert received == [("test", f"{tag}:committed")]


async def test_a_refused_decision_publishes_nothing(db: Database, orch: WorkflowOrchestrator) -> None:
    notifier = await listening(db)
    wf = started(orch)
    req = await pause(orch, wf)
    tag = uuid.uuid4().hex
    with notifier.subscribe({"decision", "test"}) as sub:
        decide(orch, req, "APPROVED")
        with pytest.raises(DecisionConflict):
            decide(orch, req, "REJECTED")
        with db.transaction() as conn:
            notify.publish(conn, "test", tag)  # a marker committed after both attempts
        seen: list[tuple[str, str]] = []
        while ("test", tag) not in seen:
            item = await sub.get(GENEROUS)
            assert item is not None, "the marker never arrived"
            seen.append(item)
    assert seen.count(("decision", req)) == 1


async def test_wait_for_change_wakes_on_any_state_change(db: Database, orch: WorkflowOrchestrator) -> None:
    await listening(db)
    config = make_config()
    orch.initialize_workflow(config)
    waiter = asyncio.create_task(events.wait_for_change(db, GENEROUS))
    await asyncio.sleep(0)  # let it register
    worker = threading.Thread(target=orch.start_execution, args=(config.workflow_id,))
    worker.start()
    assert await waiter
    worker.join()


async def test_a_subscription_streams_decisions_and_state_changes(
    db: Database, orch: WorkflowOrchestrator
) -> None:
    await listening(db)
    wf = started(orch)
    req = await pause(orch, wf)
    async with notify.notifier_for(db).subscribe({"decision", "workflow"}) as sub:
        decide(orch, req, "APPROVED")
        seen: list[tuple[str, str]] = []
        while not {("decision", req), ("workflow", wf)} <= set(seen):
            item = await sub.get(GENEROUS)
            assert item is not None, f"missing notices; got {seen}"
            seen.append(item)


async def test_events_since_pages_through_every_state_change_in_order(
    db: Database, orch: WorkflowOrchestrator
) -> None:
    wfs = [started(orch) for _ in range(2)]
    for wf in wfs:
        req = await pause(orch, wf)
        decide(orch, req, "APPROVED")
    with db.read() as conn:
        everything = events.events_since(conn, 0, 1000)
        last = events.last_event_id(conn)
        pages, after = [], 0
        while page := events.events_since(conn, after, 2):
            assert len(page) <= 2
            pages.extend(page)
            after = page[-1]["id"]
        assert events.events_since(conn, last, 10) == []
    ids = [e["id"] for e in everything]
    assert ids == sorted(set(ids)) and ids[-1] == last
    assert pages == everything
    history = sorted((h for wf in wfs for h in orch.history(wf)), key=lambda h: h["id"])
    assert [(e["id"], e["workflow_id"], e["to_state"]) for e in everything] == [
        (h["id"], h["workflow_id"], h["to_state"]) for h in history
    ]
    # each workflow: created, started, awaiting approval (the new request), approved
    assert [e["to_state"] for e in everything if e["workflow_id"] == wfs[0]] == [
        "initialized",
        "executing",
        "awaiting_approval",
        "executing",
    ]
    first = everything[0]
    assert set(first) == {"id", "workflow_id", "from_state", "to_state", "event", "actor", "reason", "at"}
    assert datetime.fromisoformat(first["at"]).tzinfo is not None


def test_a_young_id_gap_holds_the_feed_back_and_an_old_one_is_skipped(pg: Database) -> None:
    """PostgreSQL hands out ids at INSERT: an id whose transaction may still commit must not be jumped."""
    orch = WorkflowOrchestrator(database=pg)
    config = make_config()
    orch.initialize_workflow(config)
    with pg.read() as conn:
        before = events.last_event_id(conn)
    row = {"workflow_id": config.workflow_id, "to_state": "x", "event": "x", "actor": "x", "at": utcnow()}
    with pytest.raises(RuntimeError), pg.transaction() as conn:
        conn.execute(insert(transitions).values(**row))  # consumes the next id, then rolls back
        raise RuntimeError("abort")
    orch.start_execution(config.workflow_id)
    with pg.read() as conn:
        assert events.events_since(conn, before, 10) == []  # the gap could be a transaction in flight
        later = events.events_since(conn, before, 10, gap_grace=0)
    assert [e["to_state"] for e in later] == ["executing"] and later[0]["id"] == before + 2


async def test_the_listener_reconnects_and_wakes_waiters_after_losing_its_connection(pg: Database) -> None:
    from sqlalchemy import text

    orch = WorkflowOrchestrator(database=pg)
    notifier = await listening(pg)
    wf = started(orch)
    req = await pause(orch, wf)
    with notifier.watch("decision", req) as watch:
        with pg.transaction() as conn:  # kill exactly our listener's server process
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": notifier.backend_pid})
        assert await watch.wait(GENEROUS)  # the resync wake-up after reconnecting
        while not notifier.listening:
            await asyncio.sleep(0.01)
        assert notifier.stats.connects >= 2
        worker = threading.Thread(target=decide, args=(orch, req, "APPROVED"))
        worker.start()
        while True:  # nothing polls: only notices (or a late resync) wake this loop
            watch.clear()
            if orch.get_approval_response(req) is not None:
                break
            assert await watch.wait(GENEROUS), "the reconnected listener delivered nothing"
        worker.join()


@pytest.mark.parametrize("subscription", [False, True])
async def test_a_waiter_cancelled_as_its_notice_arrives_is_cancelled(
    sqlite_db: Database, subscription: bool
) -> None:
    """The notice lands in the same loop turn as the cancellation (an agent shutting down as its decision
    arrives): the waiter must end cancelled, not swallow it and wait on (Python 3.11's wait_for did)."""
    notifier = notify.notifier_for(sqlite_db)
    with notifier.watch("decision", "req_x") as watch, notifier.subscribe({"decision"}) as sub:
        task = asyncio.ensure_future(sub.get(30) if subscription else watch.wait(30))
        await asyncio.sleep(0)  # the task is now waiting
        notifier.deliver("decision", "req_x")
        await asyncio.sleep(0)  # the notice's callback is queued ahead of the cancellation
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), 5)


def test_the_channel_names_the_schema_and_fits_postgres_limit() -> None:
    assert notify.channel_for("public") == notify.channel_for(None) == "saferun"  # in-place upgrades keep it
    assert notify.channel_for("tenant_a") == "saferun:tenant_a"
    long = notify.channel_for("s" * 63)
    assert long.startswith("saferun:") and len(long.encode()) <= 63
    assert long != notify.channel_for("s" * 62 + "t")


async def test_two_deployments_in_two_schemas_of_one_database_never_wake_each_other(pg: Database) -> None:
    """PostgreSQL delivers a notice to every session of the database; each deployment (schema) listens on
    its own channel, so a commit in one is neither a wake-up nor a hint (an event stream's workflow id) in
    the other. The marker proves the negative: the listener reads notices in commit order, so once the
    later marker arrived, the earlier foreign notice would have too."""
    from conftest import fresh_pg_database

    others = fresh_pg_database()
    other = next(others)
    try:
        mine, theirs = await listening(pg), await listening(other)
        assert mine.channel and theirs.channel and mine.channel != theirs.channel
        with (
            mine.watch("decision", "shared-key") as foreign,
            mine.watch("decision", "marker") as marker,
            theirs.watch("decision", "shared-key") as own,
        ):
            for watch in (foreign, marker, own):
                watch.clear()  # the wake-up every waiter gets when a listener connects
            with other.transaction() as conn:
                notify.publish(conn, "decision", "shared-key")
            assert await own.wait(GENEROUS)  # delivered where it belongs
            with pg.transaction() as conn:
                notify.publish(conn, "decision", "marker")
            assert await marker.wait(GENEROUS)
            assert foreign.notices == 0
    finally:
        others.close()
