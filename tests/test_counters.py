"""The counts the database keeps (``storage.counters``, triggers of revision 0017) equal ``COUNT(*)``.

After a randomized mix of everything that moves a count (create, pause, approve, modify, reject,
rollback, cancel, fail, settle and complete, expiry by the sweep, bulk create, fork, a transaction that
dies half-way), with writers racing each other and the compaction, on SQLite and on PostgreSQL; and
``/api/stats`` reads them in one statement without touching the rows it counts.
"""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import timedelta
from typing import Any, ClassVar

import httpx
from sqlalchemy import event, text

from saferun.api.server import create_app
from saferun.core.bulk import PausedWorkflow, create_paused
from saferun.core.state_machine.models import CheckpointConfig, ExecutionState, WorkflowConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.policy import Caller, Role, may_see_workflow
from saferun.errors import SafeRunError
from saferun.storage import counters
from saferun.storage import workflows as wf_store
from saferun.storage.database import Database
from saferun.storage.queue import QueueFilter
from saferun.storage.schema import utcnow
from tests.helpers import decide, pause

TRIGGERS = {
    f"counters_{t}_{w}"
    for t in ("workflows", "approval_requests", "approval_responses")
    for w in ("ins", "del", "upd")
}


def agree(db: Database) -> counters.Counts:
    with db.read() as conn:
        kept, truth = counters.read(conn), counters.recount(conn)
    assert kept.comparable() == truth.comparable()
    return kept


def config(i: int, executor: str = "agent", supervisor: str | None = "reviewer") -> WorkflowConfig:
    return WorkflowConfig(
        name=f"wf {i}",
        checkpoints=[
            CheckpointConfig(name="One", checkpoint_id="cp1", timeout_seconds=600),
            CheckpointConfig(name="Two", checkpoint_id="cp2", timeout_seconds=600),
        ],
        escrow_amount="10.00",
        poster_id="poster",
        executor_id=executor,
        supervisor_id=supervisor,
    )


def bulk_item(i: int) -> PausedWorkflow:
    cfg = config(i, executor=f"bulk_agent_{i % 3}", supervisor=f"bulk_sup_{i % 2}")
    state = ExecutionState(checkpoint_id="cp1", parameters={"budget": i})
    return PausedWorkflow(cfg, state, f"bulk {i}?", {}, {"risk": {"level": ("low", "high")[i % 2]}})


def test_the_triggers_exist_after_the_migrations(db: Database) -> None:
    with db.read() as conn:
        if db.is_sqlite:
            names = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars()
        else:
            names = conn.execute(
                text(
                    "SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                    "WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal"
                )
            ).scalars()
        assert set(names) >= TRIGGERS


class Mix:
    """Random operations on a pool of workflows; any refusal (a wrong state, a lost race) is fine, it
    must simply leave the counts as the rows are."""

    def __init__(self, orch: WorkflowOrchestrator, rng: random.Random) -> None:
        self.orch, self.rng = orch, rng
        self.wfs: list[str] = []
        self.n = 0
        self.done: dict[str, int] = {}

    def pick(self, *states: str) -> str | None:
        pool = [w for w in self.wfs if self.orch.get_workflow(w).current_state.value in states]
        return self.rng.choice(pool) if pool else None

    def pending(self, wf: str) -> str | None:
        page = self.orch.pending_page(QueueFilter(workflow_id=wf), limit=1)
        return page.items[0].request.request_id if page.items else None

    def create(self) -> bool:
        self.n += 1
        who = self.rng.choice([("agent", "reviewer"), ("agent2", None), ("agent", "reviewer2")])
        wf = self.orch.initialize_workflow(config(self.n, *who)).workflow_id
        self.wfs.append(wf)
        if self.rng.random() < 0.8:
            self.orch.start_execution(wf)
        return True

    def start(self) -> bool:
        if wf := self.pick("initialized"):
            self.orch.start_execution(wf)
        return wf is not None

    def pause(self) -> bool:
        if wf := self.pick("executing"):
            cp = f"cp{self.orch.get_workflow(wf).current_checkpoint + 1}"
            asyncio.run(pause(self.orch, wf, cp, parameters={"budget": 10}))
        return wf is not None

    def decide(self, how: str) -> bool:
        if (wf := self.pick("awaiting_approval")) and (req := self.pending(wf)):
            decide(self.orch, req, how, modifications={"budget": 5} if how == "MODIFIED" else None)
            return True
        return False

    def approve(self) -> bool:
        return self.decide("APPROVED")

    def modify(self) -> bool:
        return self.decide("MODIFIED")

    def reject(self) -> bool:
        return self.decide("REJECTED")

    def rollback(self) -> bool:
        if wf := self.pick("rolling_back"):
            self.orch.rollback(wf)
        return wf is not None

    def cancel(self) -> bool:
        if wf := self.pick("initialized", "executing", "awaiting_approval"):
            self.orch.cancel_workflow(wf, "stop", actor="poster")
        return wf is not None

    def fail(self) -> bool:
        if wf := self.pick("executing"):
            self.orch.fail_workflow(wf, "boom")
        return wf is not None

    def finish(self) -> bool:
        if wf := self.pick("executing"):
            self.orch.settle_workflow(wf, {"ok": True})
            if self.rng.random() < 0.7:
                self.orch.complete_workflow(wf)
        return wf is not None

    def expire(self) -> bool:
        if (wf := self.pick("awaiting_approval")) and (req := self.pending(wf)):
            return bool(self.orch.sweep_expired(utcnow() + timedelta(days=1), only=req))
        return False

    def bulk(self) -> bool:
        items = [bulk_item(1000 * self.n + i) for i in range(self.rng.randint(1, 6))]
        self.n += 1
        self.wfs.extend(c.workflow_id for c in create_paused(self.orch, items, per_transaction=4))
        return True

    def fork(self) -> bool:
        pool = [w for w in self.wfs if self.orch.get_workflow(w).current_checkpoint >= 1]
        if pool:
            self.wfs.append(self.orch.fork_workflow(self.rng.choice(pool), "cp1", actor="poster").workflow_id)
        return bool(pool)

    def crash(self) -> bool:
        """A transaction that writes a workflow and a state change, then dies: no count moves."""
        self.n += 1
        try:
            with self.orch.db.transaction() as conn:
                wf_store.insert_workflow(
                    conn,
                    workflow_id=f"wf_crash_{self.n}",
                    name="x",
                    description="",
                    state="executing",
                    config={},
                    poster_id="poster",
                    executor_id="ghost",
                    supervisor_id="ghost_sup",
                    escrow_micro=0,
                )
                raise RuntimeError("the process dies here")
        except RuntimeError:
            return True

    WEIGHTS: ClassVar[dict[str, int]] = {
        "create": 4,
        "start": 1,
        "pause": 4,
        "approve": 3,
        "modify": 1,
        "reject": 2,
        "rollback": 2,
        "cancel": 1,
        "fail": 1,
        "finish": 1,
        "expire": 1,
        "bulk": 1,
        "fork": 1,
        "crash": 1,
    }

    def step(self) -> None:
        name = self.rng.choices(list(self.WEIGHTS), weights=list(self.WEIGHTS.values()))[0]
        try:
            if getattr(self, name)():
                self.done[name] = self.done.get(name, 0) + 1
        except SafeRunError:
            pass  # refused (a state the pick raced past, a fork of a workflow without that checkpoint)


def test_the_kept_counts_equal_count_star_after_a_random_mix(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    mix = Mix(orch, random.Random(12))
    for i in range(90):
        mix.step()
        if i % 10 == 9:
            agree(db)
    kept = agree(db)
    assert set(mix.done) == set(Mix.WEIGHTS), mix.done  # every operation happened at least once
    # the mix reached every kind of count, so the comparison was not vacuous
    assert {"workflows", "requests", "responses", "executor", "supervisor"} <= set(kept.comparable())
    assert len(kept.of("requests")) >= 2 and len(kept.of("workflows")) >= 3
    with db.transaction() as conn:
        counters.compact(conn)
    assert agree(db).comparable() == kept.comparable()  # folding changes no count


def test_counts_stay_exact_with_racing_writers_and_compactions(db: Database) -> None:
    """Four writers create, pause and decide at once while a fifth compacts: no count is lost or doubled
    (PostgreSQL's delta rows take no lock; its compaction folds exactly the rows it deletes)."""
    orch = WorkflowOrchestrator(database=db)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(k: int) -> None:
        try:
            for i in range(6):
                wf = orch.initialize_workflow(config(100 * k + i, executor=f"agent{k}")).workflow_id
                orch.start_execution(wf)
                req = asyncio.run(pause(orch, wf, "cp1", parameters={"budget": 1}))
                decide(orch, req, ("APPROVED", "REJECTED")[i % 2])
        except BaseException as exc:  # reported below
            errors.append(exc)

    def compactor() -> None:
        try:
            while not stop.is_set():
                with db.transaction() as conn:
                    counters.compact(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    folding = threading.Thread(target=compactor)
    folding.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    folding.join()
    assert not errors, errors
    kept = agree(db)
    assert kept.total("workflows") == 24 and kept.total("responses") == 24
    assert len(kept.of("executor")) == 4


def test_compaction_folds_deltas_and_drops_parties_whose_work_ended(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    for i in range(3):
        wf = orch.initialize_workflow(config(i, executor=f"one_off_{i}")).workflow_id
        orch.start_execution(wf)
        orch.fail_workflow(wf, "done")
    with db.read() as conn:
        assert counters.read(conn).of("executor") == {}  # ended work: not active
    with db.transaction() as conn:
        counters.compact(conn)
        rows = conn.execute(text("SELECT kind, key, n FROM counters")).all()
    assert all(n != 0 for _, _, n in rows)  # zeros dropped
    assert len({(k, key) for k, key, _ in rows}) == len(rows)  # one row per count
    assert orch.compact_counters() is False  # nothing left to fold: one small read, no write
    agree(db)


async def test_stats_reads_the_kept_counts_in_one_statement(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    for i in range(3):
        wf = orch.initialize_workflow(config(i)).workflow_id
        orch.start_execution(wf)
        await pause(orch, wf, "cp1", parameters={"budget": 1})
    app = create_app(orch, auth="open", sweep=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as api:
        seen: list[str] = []

        def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            if not statement.startswith("BEGIN"):  # SQLite's own BEGIN is not a query
                seen.append(" ".join(statement.lower().split()))

        event.listen(db.engine, "before_cursor_execute", record)
        try:
            stats = (await api.get("/api/stats")).json()
            stats_statements = list(seen)
            seen.clear()
            listed = (await api.get("/api/workflows")).json()
            queue = (await api.get("/api/approvals/pending")).json()
            list_statements = list(seen)
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
    assert stats["pending_approvals"] == 3 and stats["total_workflows"] == 3
    assert stats["workflow_states"] == {"awaiting_approval": 3} and stats["active_executors"] == 1
    assert len(stats_statements) == 1 and "from counters" in stats_statements[0], stats_statements
    assert listed["total"] == 3 and queue["total"] == 3
    # the lists' totals come from the counts too: no COUNT over the rows they list
    assert not [q for q in list_statements if q.startswith("select count(")], list_statements


def test_a_restricted_caller_gets_counts_of_what_they_may_see(db: Database) -> None:
    """The kept counts are global, so they answer only callers who see everything; an executor's or a
    supervisor's numbers are counted over their own workflows (the one visibility rule)."""
    orch = WorkflowOrchestrator(database=db)
    parties = [("agent_a", "sup_a"), ("agent_b", "sup_b"), ("agent_b", None)]
    for i, (executor, supervisor) in enumerate(parties * 2):
        wf = orch.initialize_workflow(config(i, executor, supervisor)).workflow_id
        orch.start_execution(wf)
        if i % 2 == 0:
            asyncio.run(pause(orch, wf, "cp1", parameters={"budget": 1}))
    everyone = orch.stats(visible_to=Caller.open())
    assert everyone["total_workflows"] == 6 and everyone["pending_approvals"] == 3
    callers = [
        Caller(identity_id="agent_a", roles=frozenset({Role.EXECUTOR}), authenticated=True),
        Caller(identity_id="sup_b", roles=frozenset({Role.SUPERVISOR}), authenticated=True),
        Caller(identity_id="nobody", roles=frozenset({Role.POSTER}), authenticated=True),
    ]
    rows = orch.list_workflows(limit=100)
    for caller in callers:
        mine = [
            w
            for w in rows
            if may_see_workflow(
                caller,
                poster_id=w.config.poster_id,
                executor_id=w.config.executor_id,
                supervisor_id=w.supervisor_id,
                platform_id=None,
            )
        ]
        got: dict[str, Any] = orch.stats(visible_to=caller)
        assert got["total_workflows"] == len(mine), caller
        assert got["pending_approvals"] == sum(w.current_state.value == "awaiting_approval" for w in mine)
        assert orch.workflows_page(visible_to=caller).total == len(mine)
        assert orch.count_pending(visible_to=caller) == got["pending_approvals"]


def test_store_wide_charts_are_reused_only_while_no_count_moved(db: Database) -> None:
    """``/stats``' charts (seconds of grouped queries at 100,000 workflows) are reused while the kept counts
    stand still, for at most ``CACHE_SECONDS``; a decision changes them, so the next read is fresh."""
    orch = WorkflowOrchestrator(database=db)
    wf = orch.initialize_workflow(config(1)).workflow_id
    orch.start_execution(wf)
    req = asyncio.run(pause(orch, wf, "cp1", parameters={"budget": 1}))
    seen: list[str] = []

    def record(_c: object, _cur: object, statement: str, *_: object) -> None:
        if not statement.startswith("BEGIN"):
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        first = orch.chart_data()
        assert len(seen) > 5  # the stamp and the grouped queries
        seen.clear()
        again = orch.chart_data()
        assert again is first and len(seen) == 1  # the counts' stamp, nothing else
        seen.clear()
        decide(orch, req, "APPROVED")
        seen.clear()
        fresh = orch.chart_data()
        assert fresh is not first and len(seen) > 5
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert sum(fresh.decisions.values["APPROVED"]) == 1 and first.latency.total == 0
    assert fresh.pending_age == [0] * len(fresh.pending_age)
    # a restricted caller's charts are their own entry; one workflow's charts are never cached
    agent = Caller(identity_id="agent", roles=frozenset({Role.EXECUTOR}), authenticated=True)
    assert orch.chart_data(visible_to=agent) is not fresh
    assert orch.chart_data(workflow_id=wf) is not orch.chart_data(workflow_id=wf)
