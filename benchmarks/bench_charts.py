"""The dashboard's charts at scale (issue 14, item 5): ``/stats`` over ``--n`` workflows.

For each store (SQLite file, PostgreSQL schema):
1. creates ``--n`` paused workflows with the bulk path (``saferun.core.bulk.create_paused``: the engine's
   own rows, an escrow lock each);
2. marks ``--decided`` of them decided with one ``INSERT … SELECT`` (a response per request, spread over
   a week, a mix of approve / modify / reject / timeout and four deciders). These rows exist only to give
   the aggregates something to count: they skip the engine (no release postings, no audit events), so the
   store is not a valid SafeRun history, and the run uses a throw-away database;
3. times ``orch.chart_data()`` (the nine grouped queries), the ``/stats`` page and its live fragment,
   ``--samples`` times each, in process through the ASGI app.

Wall-clock numbers belong here, never in tests: ``tests/test_charts.py`` checks that the statements are a
fixed set of aggregates instead.

Run:  .venv/bin/python benchmarks/bench_charts.py [--n 100000] [--decided 0.6] [--stores sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import text

from benchmarks.bench_scale import drop_pg, item, pg_database
from saferun.api.server import create_app
from saferun.core.bulk import create_paused
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database

# first spread the requests over the last week, then one response per chosen request: decision and
# decider by request number, made a few seconds to a day after the request
SPREAD_SQL = {
    "sqlite": "UPDATE approval_requests SET created_at = "
    "datetime(created_at, '-' || (abs(random()) % 604800) || ' seconds')",
    "postgresql": "UPDATE approval_requests SET created_at = "
    "created_at - make_interval(secs => floor(random() * 604800))",
}
LATER = {
    "sqlite": "datetime(r.created_at, '+' || (abs(random()) % 86400) || ' seconds')",
    "postgresql": "r.created_at + make_interval(secs => floor(random() * 86400))",
}
DECIDE_SQL = """
INSERT INTO approval_responses
    (response_id, request_id, workflow_id, decision, rationale, approved_by, modifications, automatic,
     created_at)
SELECT 'resp_' || r.request_id, r.request_id, r.workflow_id,
       CASE WHEN r.n % 10 < 6 THEN 'APPROVED' WHEN r.n % 10 < 8 THEN 'MODIFIED' ELSE 'REJECTED' END,
       'bench', 'sup_' || (r.n % 4), NULL, r.n % 10 = 9, {later}
FROM (SELECT request_id, workflow_id, created_at, ROW_NUMBER() OVER (ORDER BY request_id) AS n
      FROM approval_requests) AS r
WHERE r.n % 100 < :percent
"""
MARK_SQL = (
    "UPDATE approval_requests SET status = 'decided' "
    "WHERE request_id IN (SELECT request_id FROM approval_responses)"
)


def create(orch: WorkflowOrchestrator, n: int) -> float:
    start = time.perf_counter()
    done = 0
    while done < n:
        batch = min(5000, n - done)
        create_paused(orch, [item(i) for i in range(done, done + batch)], per_transaction=1000)
        done += batch
        print(f"  created {done:,} ({done / (time.perf_counter() - start):,.0f}/s)", flush=True)
    return time.perf_counter() - start


def decide(db: Database, fraction: float) -> int:
    dialect = db.engine.dialect.name
    with db.engine.begin() as conn:
        conn.execute(text(SPREAD_SQL[dialect]))
        conn.execute(text(DECIDE_SQL.format(later=LATER[dialect])), {"percent": int(fraction * 100)})
        conn.execute(text(MARK_SQL))
        return int(conn.execute(text("SELECT COUNT(*) FROM approval_responses")).scalar_one())


def timed_call(fn: Any, samples: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[-1]


async def timed_get(api: httpx.AsyncClient, url: str, samples: int) -> tuple[float, float]:
    await api.get(url)
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        res = await api.get(url)
        times.append((time.perf_counter() - t) * 1000)
        assert res.status_code == 200 and "chart-latency" in res.text, (url, res.status_code)
    times.sort()
    return statistics.median(times), times[-1]


async def pages(orch: WorkflowOrchestrator, samples: int) -> dict[str, tuple[float, float]]:
    app = create_app(orch, auth="open", sweep=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as api:
        return {
            "/stats page": await timed_get(api, "/stats", samples),
            "/ui/fragments/stats (live refresh)": await timed_get(api, "/ui/fragments/stats", samples),
        }


def run_store(store: str, args: argparse.Namespace) -> dict[str, Any] | None:
    print(f"\n== {store}: {args.n:,} workflows", flush=True)
    schema = None
    if store == "sqlite":
        db = Database(f"sqlite:///{Path(tempfile.mkdtemp()) / 'charts.db'}")
    else:
        made = pg_database()
        if made is None:
            return None
        db, schema = made
    try:
        orch = WorkflowOrchestrator(database=db)
        out: dict[str, Any] = {"create_s": create(orch, args.n)}
        out["decided"] = decide(db, args.decided)
        data = orch.chart_data()
        out["check"] = (data.latency.total, sum(data.pending_age), data.money.values["lock"][-1])
        out["chart_data()"] = timed_call(orch.chart_data, args.samples)
        out.update(asyncio.run(pages(orch, args.samples)))
        return out
    finally:
        db.dispose()
        if schema:
            drop_pg(schema)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--decided", type=float, default=0.6, help="share of requests given a response")
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--samples", type=int, default=10)
    args = ap.parse_args()
    results = {s: r for s in args.stores.split(",") if (r := run_store(s, args)) is not None}
    print(f"\n### Charts over {args.n:,} workflows (p50 / max of {args.samples}, in process)\n")
    stores = list(results)
    print("| what | " + " | ".join(stores) + " |")
    print("|---|" + "---|" * len(stores))
    for row in ("chart_data()", "/stats page", "/ui/fragments/stats (live refresh)"):
        print(
            f"| {row} | "
            + " | ".join(f"{results[s][row][0]:.0f} / {results[s][row][1]:.0f} ms" for s in stores)
            + " |"
        )
    print("| responses counted | " + " | ".join(f"{results[s]['decided']:,}" for s in stores) + " |")
    for s in stores:
        human, pending, locked = results[s]["check"]
        print(f"  {s}: {human:,} human decisions, {pending:,} pending, {locked:,} micro-units locked")


if __name__ == "__main__":
    main()
