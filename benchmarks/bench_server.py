#!/usr/bin/env python3
"""Remote agents against a real SafeRun server on loopback: decision-to-resume latency and cycle rate.

For each store (SQLite; PostgreSQL when reachable) the script starts real ``saferun serve`` processes
(one on SQLite; two replicas on PostgreSQL, agents long-polling one while the reviewer decides on the
other), then N agent *processes*. Each agent runs CYCLES times: POST a checkpoint (state stored and
approval requested in one transaction), hand the request id to the reviewer, long-poll
``GET /api/approvals/{id}?wait=30`` until the decision arrives. The reviewer (this process) submits
``APPROVED`` for each request as it comes in.

Reported per store:
- decision-to-resume latency: from just before the reviewer sends the decision to the moment the agent's
  long-poll returns with it (so it includes the decision's own transaction), p50 / p99 / max;
- cycles per second: completed checkpoint -> decision -> resume cycles over the wall time of the run.

Run:  .venv/bin/python benchmarks/bench_server.py [--agents 4] [--cycles 50] [--stores sqlite,postgres]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

PG_URL = os.environ.get("SAFERUN_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "SAFERUN_AUTH": "open"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "saferun.cli.main", "serve", "--port", str(port), "--no-demo"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server on {url} did not start")


def agent(url: str, cycles: int, requests: Any, resumed: Any, memory_bytes: int) -> None:
    """One remote agent process."""
    memory = {"notes": "x" * memory_bytes}
    with httpx.Client(base_url=url, timeout=60) as c:
        wf = c.post(
            "/api/workflows",
            json={
                "name": "bench",
                "checkpoint_names": ["Review"],
                "escrow_amount": "10",
                "poster_id": "poster",
                "executor_id": "agent",
                "supervisor_id": "bench_reviewer",
            },
        ).json()["workflow_id"]
        c.post(f"/api/workflows/{wf}/start").raise_for_status()
        for i in range(cycles):
            cp = c.post(
                f"/api/workflows/{wf}/checkpoints",
                json={
                    "state": {
                        "checkpoint_id": "review",
                        "agent_memory": memory,
                        "intermediate_outputs": {"i": i},
                    },
                    "summary": f"cycle {i}",
                },
            )
            cp.raise_for_status()
            req = cp.json()["approval_request_id"]
            requests.put(req)
            while True:
                got = c.get(f"/api/approvals/{req}", params={"wait": 30}).json()
                if got["decision"] is not None:
                    break
            resumed.put((req, time.time()))


def reviewer(url: str, total: int, requests: Any, sent: dict[str, float]) -> None:
    with httpx.Client(base_url=url, timeout=60) as c:
        for _ in range(total):
            req = requests.get()
            sent[req] = time.time()
            c.post(
                "/api/approvals/submit",
                json={"request_id": req, "decision": "APPROVED", "approved_by": "bench_reviewer"},
            ).raise_for_status()


def run_store(name: str, database_url: str, replicas: int, agents: int, cycles: int, memory: int) -> dict:
    servers = [start_server(database_url) for _ in range(replicas)]
    agent_url, reviewer_url = servers[0][1], servers[-1][1]
    ctx = mp.get_context("spawn")
    requests, resumed = ctx.Queue(), ctx.Queue()
    sent: dict[str, float] = {}
    total = agents * cycles
    t0 = time.perf_counter()
    rev = threading.Thread(target=reviewer, args=(reviewer_url, total, requests, sent), daemon=True)
    rev.start()
    procs = [
        ctx.Process(target=agent, args=(agent_url, cycles, requests, resumed, memory)) for _ in range(agents)
    ]
    for p in procs:
        p.start()
    latencies = []
    for _ in range(total):
        req, at = resumed.get(timeout=120)
        latencies.append(at - sent[req])
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(timeout=30)
    rev.join(timeout=30)
    for proc, _ in servers:
        proc.terminate()
        proc.wait(timeout=30)
    ms = sorted(x * 1e3 for x in latencies)
    return {
        "store": name,
        "replicas": replicas,
        "agents": agents,
        "cycles": total,
        "p50": statistics.median(ms),
        "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max": ms[-1],
        "cycles_per_s": total / wall,
    }


def postgres_schema() -> tuple[str, str] | None:
    try:
        from sqlalchemy import create_engine, text

        eng = create_engine(PG_URL)
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with eng.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        eng.dispose()
        return schema, f"{PG_URL}?options=-csearch_path%3D{schema}"
    except Exception as exc:
        print(f"PostgreSQL not reachable at {PG_URL}: {exc}".splitlines()[0])
        return None


def drop_schema(schema: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(PG_URL)
    with eng.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    eng.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument("--cycles", type=int, default=50, help="cycles per agent")
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--memory-bytes", type=int, default=1000, help="size of each agent's memory field")
    a = ap.parse_args()
    rows = []
    if "sqlite" in a.stores:
        with tempfile.TemporaryDirectory() as d:
            rows.append(
                run_store(
                    "SQLite", f"sqlite:///{Path(d) / 'bench.db'}", 1, a.agents, a.cycles, a.memory_bytes
                )
            )
    if "postgres" in a.stores and (pg := postgres_schema()):
        schema, url = pg
        try:
            rows.append(run_store("PostgreSQL", url, 2, a.agents, a.cycles, a.memory_bytes))
        finally:
            drop_schema(schema)
    print(
        f"\nnproc {os.cpu_count()} | python {sys.version.split()[0]} | {a.agents} agent processes x "
        f"{a.cycles} cycles | memory field {a.memory_bytes} B"
    )
    print(
        f"{'store':<11} {'replicas':>8} {'cycles':>7} | {'resume p50 ms':>13} {'p99 ms':>8} {'max ms':>8} | "
        f"{'cycles/s':>8}"
    )
    for r in rows:
        print(
            f"{r['store']:<11} {r['replicas']:>8} {r['cycles']:>7} | {r['p50']:>13.2f} {r['p99']:>8.2f} "
            f"{r['max']:>8.2f} | {r['cycles_per_s']:>8.1f}"
        )


if __name__ == "__main__":
    main()
