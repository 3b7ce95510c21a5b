"""``GET /api/stats`` counts pending requests with an aggregate, not by fetching every row (issue 12,
target 4): the number is right, and no statement it runs selects the rows of ``approval_requests``."""

from __future__ import annotations

from sqlalchemy import event

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.test_api import client_for, paused


async def test_stats_counts_pending_with_one_aggregate(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    async with client_for(create_app(orch, auth="open", sweep=False)) as api:
        for _ in range(3):
            await paused(api)
        seen: list[str] = []

        def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            seen.append(" ".join(statement.lower().split()))

        event.listen(db.engine, "before_cursor_execute", record)
        try:
            stats = (await api.get("/api/stats")).json()
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
    assert stats["pending_approvals"] == 3 and stats["total_workflows"] == 3
    # the counts the database keeps answer (tests/test_counters.py); nothing reads the requests' rows
    on_requests = [q for q in seen if "from approval_requests" in q]
    assert all(q.startswith("select count(") for q in on_requests), on_requests
