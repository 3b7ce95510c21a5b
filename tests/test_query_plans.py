"""Every main list query is an index read in its sort order, on SQLite and PostgreSQL (issue 12 target 4).

Each query below is the statement the list really runs (``storage.queue.page_statement``,
``storage.workflows.list_statement`` and their counts), explained by the database itself: SQLite's
``EXPLAIN QUERY PLAN`` and PostgreSQL's ``EXPLAIN (FORMAT JSON)``. The plan must read
``approval_requests`` / ``workflows`` through an index and must not sort: a full scan plus a sort is what
made the unpaged queue cost seconds at 30,000 rows. PostgreSQL is asked with ``enable_seqscan``,
``enable_sort`` and ``enable_incremental_sort`` off after ``ANALYZE``: on a test-sized table a scan is
cheaper, so this checks that an index *can* serve the query in order (the planner would otherwise be free
to pick a scan on 60 rows); a query no index fits still shows a Seq Scan or Sort node and fails.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Select, func, select, text

from saferun.core.bulk import create_paused
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.policy import Caller, Role
from saferun.storage import queue, snapshots
from saferun.storage import workflows as wf_store
from saferun.storage.database import Database
from saferun.storage.queue import QueueFilter
from saferun.storage.schema import workflows
from saferun.storage.visibility import visible_workflows
from tests.test_pagination import item

NOW = datetime.now(UTC)
SUPERVISOR = Caller(identity_id="sup_a", roles=frozenset({Role.SUPERVISOR}), authenticated=True)
LIVE = workflows.c.state.notin_(["completed", "failed"])  # as storage.workflows.active_parties
AFTER = (NOW + timedelta(hours=1), "req_0000000000000000")


def queries() -> dict[str, tuple[Select[Any], str, bool]]:
    """name -> (statement, the table that must be read by index, whether the query has an ORDER BY)."""
    page = queue.page_statement
    return {
        "queue first page": (
            page(QueueFilter(), limit=100, after=None, now=NOW, caller=None),
            "approval_requests",
            True,
        ),
        "queue deep cursor": (
            page(QueueFilter(), limit=100, after=AFTER, now=NOW, caller=None),
            "approval_requests",
            True,
        ),
        "queue as a supervisor": (
            page(QueueFilter(), limit=100, after=AFTER, now=NOW, caller=SUPERVISOR),
            "approval_requests",
            True,
        ),
        "queue assigned to me": (
            page(QueueFilter(assigned_to="sup_a"), limit=100, after=AFTER, now=NOW, caller=None),
            "approval_requests",
            True,
        ),
        "queue by risk": (
            page(QueueFilter(risk="high"), limit=100, after=None, now=NOW, caller=None),
            "approval_requests",
            True,
        ),
        "queue expiring soon": (
            page(QueueFilter(expiring_within=600), limit=100, after=None, now=NOW, caller=None),
            "approval_requests",
            True,
        ),
        "queue count": (
            queue.count_statement(QueueFilter(), now=NOW, caller=None),
            "approval_requests",
            False,
        ),
        "queue count assigned": (
            queue.count_statement(QueueFilter(assigned_to="sup_a"), now=NOW, caller=None),
            "approval_requests",
            False,
        ),
        "workflows first page": (wf_store.list_statement(limit=100), "workflows", True),
        "workflows deep cursor": (
            wf_store.list_statement(limit=100, after=(NOW - timedelta(days=1), "wf_zzz")),
            "workflows",
            True,
        ),
        "workflows of a state": (
            wf_store.list_statement(state="awaiting_approval", limit=100),
            "workflows",
            True,
        ),
        # a restricted caller's workflows: SQLite may instead look up each of the rule's terms by its own
        # index (MULTI-INDEX OR over poster/executor/supervisor) and sort only those rows; either way no
        # row outside the caller's view is read, which is what the no-scan check holds it to
        "workflows as a supervisor": (
            wf_store.list_statement(limit=100, where=visible_workflows(SUPERVISOR)),
            "workflows",
            False,
        ),
        "workflows count of a state": (wf_store.count_statement(state="executing"), "workflows", False),
        # /api/stats: active executors and supervisors (COUNT DISTINCT over the workflows not ended)
        "stats active executors": (
            select(func.count(func.distinct(workflows.c.executor_id))).where(LIVE),
            "workflows",
            False,
        ),
        "stats active supervisors": (
            select(func.count(func.distinct(workflows.c.supervisor_id))).where(
                LIVE, workflows.c.supervisor_id.is_not(None)
            ),
            "workflows",
            False,
        ),
        # a state labelled freely is bound to the first configured checkpoint not yet passed: one probe of
        # ix_snapshots_workflow_checkpoint per configured checkpoint, never the workflow's whole history
        "checkpoint a free label binds to": (
            snapshots.first_open_statement(3).params(b_wf="wf_x", b_cp0="a", b_cp1="b", b_cp2="c"),
            "snapshots",
            False,
        ),
    }


@pytest.fixture
def filled(db: Database) -> Database:
    orch = WorkflowOrchestrator(database=db)
    create_paused(orch, [item(i, supervisor=f"sup_{'ab'[i % 2]}") for i in range(60)], per_transaction=30)
    if db.dialect == "postgresql":
        with db.transaction() as conn:
            conn.execute(text("ANALYZE"))
    return db


def sqlite_plan(db: Database, stmt: Select[Any]) -> list[str]:
    sql = str(stmt.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True}))
    with db.read() as conn:
        return [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]


def pg_nodes(db: Database, stmt: Select[Any]) -> list[dict[str, Any]]:
    sql = str(stmt.compile(dialect=db.engine.dialect, compile_kwargs={"literal_binds": True}))
    with db.transaction() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        conn.execute(text("SET LOCAL enable_sort = off"))
        conn.execute(text("SET LOCAL enable_incremental_sort = off"))
        raw = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}").scalar_one()
    plan = raw if isinstance(raw, list) else json.loads(raw)
    out: list[dict[str, Any]] = []
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(node.get("Plans", []))
    return out


@pytest.mark.parametrize("name", list(queries()))
def test_list_queries_read_an_index_in_order(filled: Database, name: str) -> None:
    stmt, table, ordered = queries()[name]
    if filled.dialect == "sqlite":
        plan = sqlite_plan(filled, stmt)
        on_table = [line for line in plan if f" {table} " in f" {line} "]
        assert on_table, plan
        assert all("INDEX" in line for line in on_table), (name, plan)  # never "SCAN <table>" alone
        assert not any(line.startswith("SCAN") and "INDEX" not in line for line in on_table), (name, plan)
        if ordered:
            assert not any("TEMP B-TREE FOR ORDER BY" in line for line in plan), (name, plan)
        return
    nodes = pg_nodes(filled, stmt)
    reads = [n for n in nodes if n.get("Relation Name") == table]
    assert reads, (name, nodes)
    assert all(n["Node Type"] != "Seq Scan" for n in reads), (name, [n["Node Type"] for n in nodes])
    # an index scan, or a bitmap heap scan fed by one (PostgreSQL's way to count many rows of an index)
    assert all("Index" in n["Node Type"] or n["Node Type"] == "Bitmap Heap Scan" for n in reads), (
        name,
        [n["Node Type"] for n in nodes],
    )
    if ordered:
        assert not any(n["Node Type"] in ("Sort", "Incremental Sort") for n in nodes), (
            name,
            [n["Node Type"] for n in nodes],
        )


def test_binding_a_free_label_probes_each_checkpoint_not_the_history(filled: Database) -> None:
    """The probes look a (workflow, checkpoint) pair up in the index: the cost of binding a freely
    labelled state does not grow with the workflow's earlier snapshots (a key of workflow_id alone
    would walk them all)."""
    stmt = snapshots.first_open_statement(2).params(b_wf="wf_x", b_cp0="a", b_cp1="b")
    if filled.dialect == "sqlite":
        lines = [line for line in sqlite_plan(filled, stmt) if " snapshots " in f" {line} "]
        assert len(lines) == 2, lines
        assert all("workflow_id=? AND checkpoint_id=?" in line for line in lines), lines
        return
    reads = [n for n in pg_nodes(filled, stmt) if n.get("Relation Name") == "snapshots"]
    assert len(reads) == 2, reads
    assert all("checkpoint_id" in n.get("Index Cond", "") for n in reads), reads
