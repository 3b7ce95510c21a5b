"""100,000 paused workflows (issue 12 target 4), once in CI on SQLite: counts and statements, never time.

The bulk path fills the store; then every list a reviewer or an agent reads is checked to do the same,
bounded work as on an empty store: the same number of statements, a page of ``limit`` rows, a true
``total``, and an answer whose size does not grow with the queue. The wall-clock numbers are in
``benchmarks/bench_scale.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import event, func, select

from saferun.api.server import create_app
from saferun.core.bulk import create_paused
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from saferun.storage.schema import approval_requests, audit_events, ledger_legs, notifications, workflows
from tests.test_api import client_for
from tests.test_pagination import item

# SCALE_TEST_N: a smaller run while working on this test; CI uses the 100,000
N = int(os.environ.get("SCALE_TEST_N", "100000"))


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_c: object, _cur: object, statement: str, *_: object) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


async def reads(db: Database, api: httpx.AsyncClient, cursor: str | None) -> dict[str, tuple[int, int]]:
    """Statements and answer bytes of each list read."""
    urls = {
        "pending": "/api/approvals/pending",
        "pending deep": f"/api/approvals/pending?cursor={cursor}" if cursor else "/api/approvals/pending",
        "pending filtered": "/api/approvals/pending?risk=high&assigned_to=sup_a",
        "workflows": "/api/workflows",
        "stats": "/api/stats",
        "dashboard": "/approvals",
        "nav": "/ui/fragments/nav",
    }
    out = {}
    for name, url in urls.items():
        with statements(db) as seen:
            res = await api.get(url)
        assert res.status_code == 200, (url, res.text[:300])
        out[name] = (len(seen), len(res.content))
    return out


@pytest.mark.slow
async def test_a_hundred_thousand_paused_workflows_cost_what_a_few_do(sqlite_db: Database) -> None:
    db = sqlite_db
    orch = WorkflowOrchestrator(database=db)
    create_paused(orch, [item(i) for i in range(500)], per_transaction=500)  # every page full
    async with client_for(create_app(orch, auth="open", sweep=False)) as api:
        small_page = (await api.get("/api/approvals/pending")).json()
        assert small_page["total"] == 500
        small = await reads(db, api, small_page["next_cursor"])

        for start in range(500, N, 10_000):  # the rest, in slices so the inputs never all sit in memory
            create_paused(orch, [item(i) for i in range(start, min(N, start + 10_000))], per_transaction=2000)

        with db.read() as conn:

            def count(table: object, *where: object) -> int:
                return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())

            assert count(workflows, workflows.c.state == "awaiting_approval") == N
            assert count(approval_requests, approval_requests.c.status == "pending") == N
            assert count(notifications, notifications.c.kind == "waiting") == N
            assert count(audit_events) == 5 * N  # created, escrow locked, started, captured, paused
            assert conn.execute(select(func.sum(ledger_legs.c.amount_micro))).scalar_one() == 0

        first = (await api.get("/api/approvals/pending")).json()
        assert first["total"] == N and len(first["pending_approvals"]) == 100 and first["has_more"]
        cursor, walked = first["next_cursor"], 100
        while walked < N // 2:  # deep into the queue, as a reader paging on would be
            page = (await api.get("/api/approvals/pending", params={"limit": 500, "cursor": cursor})).json()
            cursor, walked = page["next_cursor"], walked + len(page["pending_approvals"])
        big = await reads(db, api, cursor)
        workflows_page = (await api.get("/api/workflows")).json()
        assert workflows_page["total"] == N and len(workflows_page["workflows"]) == 100
        stats = (await api.get("/api/stats")).json()
        assert stats["pending_approvals"] == N and stats["total_workflows"] == N

    for name in small:
        assert big[name][0] == small[name][0], (name, small[name], big[name])  # same statements
        # the answer does not grow with the queue (digits of the totals aside)
        assert big[name][1] <= small[name][1] * 1.25 + 2048, (name, small[name], big[name])
    assert orch.verify_audit(first["pending_approvals"][0]["workflow_id"])[1] is None
