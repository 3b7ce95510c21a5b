"""Flat at 100,000 paused workflows (issue 12 target 4): bulk creation, then the lists that must not grow.

For each store (SQLite file, PostgreSQL schema):
1. creates ``--n`` paused workflows with the bulk path (``saferun.core.bulk.create_paused``) and, beside
   it, ``--baseline`` workflows through the per-workflow calls (initialize -> start -> pause), and prints
   both rates;
2. times ``--samples`` requests each, in process through the ASGI app (no network): the pending queue's
   first page and a page at a deep cursor (half-way through the queue), ``/api/stats``,
   ``GET /api/workflows`` (first page, with its true total), the dashboard queue ``/approvals`` and
   ``/stats`` (cold: its chart cache emptied before each request, a tenth of the samples; and warm);
3. reads the process's RSS before and after the dashboard requests (flat: no page loads the whole queue).

The table is printed beside the targets (50 ms; 200 ms for the dashboard page) and the numbers the issue
measured before (unpaged, at 30k SQLite / 20k PostgreSQL pending). Wall-clock numbers belong here, never
in tests: ``tests/test_scale.py`` checks counts and statements at 100,000 rows instead.

Run:  .venv/bin/python benchmarks/bench_scale.py [--n 100000] [--stores sqlite,postgres] [--samples 50]
PostgreSQL: SAFERUN_BENCH_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test); the
run uses a fresh schema and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import create_engine, text

from saferun.api.heap import freeze_startup_heap
from saferun.api.server import create_app
from saferun.core.bulk import PausedWorkflow, create_paused
from saferun.core.state_machine.models import CheckpointConfig, ExecutionState, WorkflowConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database

PG_URL = os.environ.get("SAFERUN_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RISKS = ["low", "medium", "high", "critical"]
# what the issue measured before this work (unpaged lists, N+1 dashboard)
OLD = {
    "pending, first page": "3.1–4.1 s / 2.6–2.9 s (unpaged, 30k / 20k)",
    "pending, deep cursor": "— (no paging)",
    "/api/stats": "0.9–1.5 s",
    "GET /api/workflows": "0.3–0.44 s (SQLite)",
    "dashboard /approvals": "19–29 s / 62–79 s, 550 MB RSS",
    "dashboard /stats (cold: counts + charts)": "4.8–6 s (SQLite)",
    "dashboard /stats (charts reused)": "—",
}
TARGET = {
    "pending, first page": "p99 ≤ 50 ms",
    "pending, deep cursor": "p99 ≤ 50 ms",
    "/api/stats": "p99 ≤ 50 ms",
    "GET /api/workflows": "p99 ≤ 50 ms",
    "dashboard /approvals": "p99 ≤ 200 ms",
    "dashboard /stats (cold: counts + charts)": "p99 ≤ 200 ms if possible",
    "dashboard /stats (charts reused)": "p99 ≤ 200 ms if possible",
}


def item(i: int) -> PausedWorkflow:
    """A realistic small paused workflow: two checkpoints, escrow, a risk level, a few parameters."""
    cfg = WorkflowConfig(
        name=f"Job {i}",
        checkpoints=[
            CheckpointConfig(name="Plan", checkpoint_id="plan", timeout_seconds=86_400 + (i * 7919) % 86_400),
            CheckpointConfig(name="Deliver", checkpoint_id="deliver"),
        ],
        escrow_amount=10,
        poster_id="bench_poster",
        executor_id="bench_executor",
        supervisor_id=f"bench_supervisor_{i % 20}",
    )
    state = ExecutionState(
        checkpoint_id="plan",
        parameters={"budget": 100 + i % 50, "vendor": f"v{i % 7}"},
        intermediate_outputs={"records": i % 1000},
    )
    review = {"risk": {"level": RISKS[i % 4]}, "confidence": 0.5 + (i % 50) / 100}
    return PausedWorkflow(cfg, state, f"Approve plan {i}?", {"i": i}, review)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bulk_rate(orch: WorkflowOrchestrator, n: int, per_transaction: int) -> float:
    done, start, step = 0, time.perf_counter(), 10_000
    while done < n:
        batch = [item(i) for i in range(done, min(n, done + step))]
        create_paused(orch, batch, per_transaction=per_transaction)
        done += len(batch)
        rate = done / (time.perf_counter() - start)
        print(f"  bulk: {done:,} created, {rate:,.0f}/s", flush=True)
    return n / (time.perf_counter() - start)


def per_workflow_rate(orch: WorkflowOrchestrator, n: int, offset: int) -> float:
    start = time.perf_counter()
    for i in range(offset, offset + n):
        it = item(i)
        wf = orch.initialize_workflow(it.config)
        orch.start_execution(wf.workflow_id)
        asyncio.run(orch.pause(wf.workflow_id, it.state, it.summary, it.context, **it.review))
    return n / (time.perf_counter() - start)


async def timed(api: httpx.AsyncClient, url: str, samples: int) -> tuple[float, float]:
    await api.get(url)  # warm
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        res = await api.get(url)
        times.append((time.perf_counter() - t) * 1000)
        assert res.status_code == 200, (url, res.status_code, res.text[:300])
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]


async def cold_stats(orch: WorkflowOrchestrator, api: httpx.AsyncClient, samples: int) -> tuple[float, float]:
    """``/stats`` with the chart cache emptied before each request: what the first viewer after a
    change waits for."""
    times = []
    for _ in range(samples):
        orch.__dict__.pop("_chart_cache", None)
        t = time.perf_counter()
        res = await api.get("/stats")
        times.append((time.perf_counter() - t) * 1000)
        assert res.status_code == 200, res.text[:300]
    times.sort()
    return statistics.median(times), times[-1]


async def measure(orch: WorkflowOrchestrator, n: int, samples: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    app = create_app(orch, auth="open", sweep=False)
    # as `saferun serve` does once its app is built: full GC passes skip the startup objects
    # (saferun/api/heap.py); without it one pass of ~100 ms lands on a sampled request and is its p99
    freeze_startup_heap()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as api:
        first = (await api.get("/api/approvals/pending")).json()
        assert first["total"] >= n and len(first["pending_approvals"]) == 100, first["total"]
        cursor, walked = None, 0
        while walked < n // 2:  # a cursor half-way through the queue, as a reader paging on would hold
            page = (
                await api.get(
                    "/api/approvals/pending", params={"limit": 500, **({"cursor": cursor} if cursor else {})}
                )
            ).json()
            cursor, walked = page["next_cursor"], walked + len(page["pending_approvals"])
        wf_page = (await api.get("/api/workflows")).json()
        out["totals"] = {"pending": first["total"], "workflows": wf_page["total"]}
        out["pending, first page"] = await timed(api, "/api/approvals/pending", samples)
        out["pending, deep cursor"] = await timed(api, f"/api/approvals/pending?cursor={cursor}", samples)
        out["pending, filtered (risk=high, first page)"] = await timed(
            api, "/api/approvals/pending?risk=high", samples
        )
        out["/api/stats"] = await timed(api, "/api/stats", samples)
        out["GET /api/workflows"] = await timed(api, "/api/workflows", samples)
        before = rss_mb()
        out["dashboard /approvals"] = await timed(api, "/approvals", samples)
        html = (await api.get("/approvals")).text
        out["page_kb"] = len(html.encode()) / 1024
        out["rss"] = (before, rss_mb())
        # /stats: the totals are kept counts; the charts' grouped queries run when the cache is cold
        # (a fresh process, or after any change) and are reused for up to 10 s while nothing changed
        out["dashboard /stats (cold: counts + charts)"] = await cold_stats(orch, api, max(3, samples // 10))
        out["dashboard /stats (charts reused)"] = await timed(api, "/stats", samples)
    gc.unfreeze()  # the next store's run starts as a new server would
    return out


def pg_database() -> tuple[Database, str] | None:
    schema = f"bench_scale_{uuid.uuid4().hex[:8]}"
    try:
        admin = create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
    except Exception as exc:
        print(f"PostgreSQL not reachable at {PG_URL}: {str(exc).splitlines()[0]}")
        return None
    sep = "&" if "?" in PG_URL else "?"
    return Database(f"{PG_URL}{sep}options=-csearch_path%3D{schema}"), schema


def drop_pg(schema: str) -> None:
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def run_store(store: str, args: argparse.Namespace) -> dict[str, Any] | None:
    print(f"\n== {store}: {args.n:,} paused workflows", flush=True)
    schema = None
    if store == "sqlite":
        path = Path(tempfile.mkdtemp()) / "scale.db"
        db = Database(f"sqlite:///{path}")
    else:
        made = pg_database()
        if made is None:
            return None
        db, schema = made
    try:
        orch = WorkflowOrchestrator(database=db)
        result: dict[str, Any] = {"per_workflow": per_workflow_rate(orch, args.baseline, args.n)}
        print(f"  per-workflow path: {result['per_workflow']:.1f}/s", flush=True)
        result["bulk"] = bulk_rate(orch, args.n, args.per_transaction)
        result.update(asyncio.run(measure(orch, args.n, args.samples)))
        return result
    finally:
        db.dispose()
        if schema:
            drop_pg(schema)


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    stores = list(results)
    how = f"p50 / p99 of {args.samples} requests, in process"
    print(f"\n### {args.n:,} paused workflows ({', '.join(stores)}; {how})\n")
    print("| what | " + " | ".join(f"{s} p50 / p99" for s in stores) + " | target | before (issue 12) |")
    print("|---|" + "---|" * len(stores) + "---|---|")
    rows = [
        "pending, first page",
        "pending, deep cursor",
        "pending, filtered (risk=high, first page)",
        "/api/stats",
        "GET /api/workflows",
        "dashboard /approvals",
        "dashboard /stats (cold: counts + charts)",
        "dashboard /stats (charts reused)",
    ]
    for row in rows:
        cells = [f"{results[s][row][0]:.1f} / {results[s][row][1]:.1f} ms" for s in stores]
        print(f"| {row} | " + " | ".join(cells) + f" | {TARGET.get(row, '—')} | {OLD.get(row, '—')} |")
    print(
        "| dashboard page size | "
        + " | ".join(f"{results[s]['page_kb']:.0f} KB" for s in stores)
        + " | flat | 16–24 MB |"
    )
    print(
        "| RSS before → after the dashboard requests | "
        + " | ".join(f"{results[s]['rss'][0]:.0f} → {results[s]['rss'][1]:.0f} MB" for s in stores)
        + " | flat | 550 MB |"
    )
    print(
        "| create paused workflows: bulk path | "
        + " | ".join(f"{results[s]['bulk']:,.0f}/s" for s in stores)
        + " | ≥ 10x per-workflow | 36–43/s SQLite, 22–28/s PG |"
    )
    print(
        "| … per-workflow path, same run | "
        + " | ".join(f"{results[s]['per_workflow']:,.1f}/s" for s in stores)
        + " | | |"
    )
    print(
        "| bulk ÷ per-workflow | "
        + " | ".join(f"{results[s]['bulk'] / results[s]['per_workflow']:.1f}x" for s in stores)
        + " | ≥ 10x | |"
    )
    print(
        "| totals (pending / workflows) | "
        + " | ".join(
            f"{results[s]['totals']['pending']:,} / {results[s]['totals']['workflows']:,}" for s in stores
        )
        + " | | |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument(
        "--baseline", type=int, default=100, help="workflows created through the per-workflow calls"
    )
    ap.add_argument("--per-transaction", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--stores", default="sqlite,postgres")
    args = ap.parse_args()
    results = {}
    for store in args.stores.split(","):
        got = run_store(store.strip(), args)
        if got is not None:
            results[store.strip()] = got
    report(results, args)


if __name__ == "__main__":
    main()
