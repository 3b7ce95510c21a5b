#!/usr/bin/env python3
"""Remote agents against real SafeRun servers on loopback: cycle throughput and decision-to-resume latency.

For each store (SQLite: one server; PostgreSQL: two replicas) and each agent count (default 1, 4, 8) the
script starts real ``saferun serve`` processes on a fresh database, then N agent *processes*. Each agent
creates its workflow, waits at a common start line, then runs CYCLES times: POST a checkpoint (state
stored and approval requested in one transaction), hand the request id to the reviewers, long-poll
``GET /api/approvals/{id}?wait=30`` until the decision arrives. Reviewer threads in this process submit
``APPROVED`` for each request as it comes in; on PostgreSQL the decision goes to the *other* replica than
the one the agent long-polls, so every resume crosses processes (LISTEN/NOTIFY).

Reported per run:
- cycles/s: checkpoint -> decision -> resume cycles completed, over the wall time from the start line to
  the last resume (workflow creation and process start-up are outside it);
- decision-to-resume latency: from just before a reviewer sends the decision to the moment the agent's
  long-poll returns with it (it includes the decision's own transaction): p50 / p99 / max;
- CPU per cycle of the servers, of the agents and reviewers, and of the local PostgreSQL server's
  processes, and the two limits that CPU puts on the rate (``ceilings``): the machine's (all its cores
  busy with this work) and the servers' (each Python server process busy on one core). The measured rate
  is read against the lower one, measured in the same run.

Where things come from (arguments win over the environment):
- ``--sqlite-url`` / ``SAFERUN_BENCH_SQLITE_URL``: default a fresh file in a temporary directory per run
  (a given URL is used as is, so give a new file each time if you want a fresh database);
- ``--postgres-url`` / ``SAFERUN_BENCH_POSTGRES_URL``: default the local trust server, database ``test``;
  each run gets a fresh schema there, dropped afterwards;
- ``--ports`` / ``SAFERUN_BENCH_PORTS``: comma-separated ports for the servers, first the SQLite one, then
  the PostgreSQL replicas (default: free ports picked at start).

Run:  .venv/bin/python benchmarks/bench_server.py [--agents 1,4,8] [--cycles 40] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
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

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BEFORE = (15.0, 22.0)  # issue 12: HTTP cycles/s measured before this work, flat from 1 to 8 agents
TARGET_FACTOR = 10  # target: >= 10x that at 8 agents
TARGET_P99_MS = 20.0  # target: decision -> resume p99 at 4 agents


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVER_SRC: str | None = None  # --server-src: another checkout's code for the servers (a "before" run)


def start_server(database_url: str, port: int) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "DATABASE_URL": database_url, "SAFERUN_AUTH": "open"}
    if SERVER_SRC:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [SERVER_SRC, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "saferun.cli.main", "serve", "--port", str(port), "--no-demo"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode} (port taken?)")
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server on {url} did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux ``/proc``; 0 elsewhere): a cost that, unlike wall
    time, other engineers' load on the machine hardly changes."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_pids(database_url: str) -> list[int]:
    """The local PostgreSQL server's processes (backends, writers, autovacuum), whose CPU is part of a
    cycle's cost on this machine; none for SQLite (it runs inside the server) or a remote database."""
    if not database_url.startswith("postgresql") or not any(
        h in database_url for h in ("@127.0.0.1", "@localhost", "@[::1]", "@/")
    ):
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def agent(
    urls: list[str],
    index: int,
    cycles: int,
    memory_bytes: int,
    start: Any,
    requests: Any,
    resumed: Any,
    spent: Any,
) -> None:
    """One remote agent process: it long-polls replica ``index % len(urls)``."""
    home = index % len(urls)
    memory = {"notes": "x" * memory_bytes}
    with httpx.Client(base_url=urls[home], timeout=60) as c:
        wf = c.post(
            "/api/workflows",
            json={
                "name": f"bench-{index}",
                "checkpoint_names": ["Review"],
                "escrow_amount": "10",
                "poster_id": "poster",
                "executor_id": "agent",
                "supervisor_id": "bench_reviewer",
            },
        ).json()["workflow_id"]
        c.post(f"/api/workflows/{wf}/start").raise_for_status()
        start.wait()
        cpu0 = time.process_time()
        for i in range(cycles):
            body = {
                "state": {
                    "checkpoint_id": "review",
                    "agent_memory": memory,
                    "intermediate_outputs": {"i": i},
                },
                "summary": f"cycle {i}",
            }
            for _ in range(20):  # a 503 (the store's lock held too long) says when to retry, as a client does
                cp = c.post(f"/api/workflows/{wf}/checkpoints", json=body)
                if cp.status_code != 503:
                    break
                time.sleep(min(float(cp.headers.get("retry-after", "1")), 1.0))
            cp.raise_for_status()
            req = cp.json()["approval_request_id"]
            requests.put((req, home))
            while True:
                got = c.get(f"/api/approvals/{req}", params={"wait": 30})
                got.raise_for_status()
                if got.json()["decision"] is not None:
                    break
            resumed.put((req, time.time()))
        spent.put(time.process_time() - cpu0)


def reviewer(urls: list[str], requests: Any, sent: dict[str, float], stop: threading.Event) -> None:
    """Decides every request it takes, on another replica than the agent's when there are several."""
    clients = [httpx.Client(base_url=u, timeout=60) for u in urls]
    try:
        while not stop.is_set():
            try:
                req, home = requests.get(timeout=0.2)
            except queue.Empty:
                continue
            c = clients[(home + 1) % len(clients)]
            sent[req] = time.time()
            for attempt in range(5):
                answer = c.post(
                    "/api/approvals/submit",
                    json={"request_id": req, "decision": "APPROVED", "approved_by": "bench_reviewer"},
                )
                if answer.is_success:
                    break
                # say what the server answered (a loaded machine can make a replica answer 503 or, rarely,
                # refuse a decision); retry a few times, then leave it (the run then times out, loudly)
                print(f"  reviewer: {req} -> {answer.status_code} {answer.text[:300]}", file=sys.stderr)
                time.sleep(0.05 * (attempt + 1))
    finally:
        for c in clients:
            c.close()


def run_once(database_url: str, ports: list[int], agents: int, cycles: int, memory: int) -> dict[str, Any]:
    servers = [start_server(database_url, p) for p in ports]
    urls = [u for _, u in servers]
    ctx = mp.get_context("spawn")
    requests, resumed, spent, start = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
    sent: dict[str, float] = {}
    stop = threading.Event()
    reviewers = [
        threading.Thread(target=reviewer, args=(urls, requests, sent, stop), daemon=True)
        for _ in range(min(agents, 4))
    ]
    procs = [
        ctx.Process(target=agent, args=(urls, i, cycles, memory, start, requests, resumed, spent))
        for i in range(agents)
    ]
    try:
        for t in reviewers:
            t.start()
        for p in procs:
            p.start()
        time.sleep(0.5)  # the agents create and start their workflows, then wait at the start line
        _wait_ready(urls[0], agents)
        server_cpu0 = sum(cpu_seconds(p.pid) for p, _ in servers)
        db_cpu0 = {pid: cpu_seconds(pid) for pid in database_pids(database_url)}
        own_cpu0 = time.process_time()
        t0 = time.perf_counter()
        start.set()
        latencies = []
        for _ in range(agents * cycles):
            req, at = resumed.get(timeout=120)
            latencies.append(at - sent[req])
        wall = time.perf_counter() - t0
        server_cpu = sum(cpu_seconds(p.pid) for p, _ in servers) - server_cpu0
        # a backend opened during the run (a pool growing) counts whole; one that ended is not seen
        db_cpu = sum(cpu_seconds(pid) - db_cpu0.get(pid, 0.0) for pid in database_pids(database_url))
        client_cpu = time.process_time() - own_cpu0 + sum(spent.get(timeout=30) for _ in procs)
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        for proc, _ in servers:
            proc.terminate()
            proc.wait(timeout=30)
    ms = sorted(x * 1e3 for x in latencies)
    return {
        "cycles": len(ms),
        "wall_s": wall,
        "cycles_per_s": len(ms) / wall,
        "p50": statistics.median(ms),
        "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max": ms[-1],
        # CPU per cycle: the servers' (all replicas), and the agents' plus the reviewers' (this process)
        "server_cpu_ms": server_cpu * 1e3 / len(ms),
        "client_cpu_ms": client_cpu * 1e3 / len(ms),
        "db_cpu_ms": db_cpu * 1e3 / len(ms),  # the local PostgreSQL server's processes (0 for SQLite)
        "load": os.getloadavg()[0],
        **ceilings(server_cpu, client_cpu, db_cpu, len(ms), len(servers)),
    }


def ceilings(server_cpu: float, client_cpu: float, db_cpu: float, cycles: int, replicas: int) -> dict:
    """The throughput this run's CPU cost allows, the limit the measured rate is read against:
    ``machine``: every core of this machine busy with this cycle's work (servers, agents, reviewers and
    the local database), ``nproc * 1000 / total CPU ms per cycle``; ``server``: each server process busy
    on one core (a Python process runs its Python code on one core at a time),
    ``replicas * 1000 / server CPU ms per cycle``. The lower one bounds what the run could reach."""
    per_cycle = (server_cpu + client_cpu + db_cpu) * 1e3 / cycles
    server = server_cpu * 1e3 / cycles
    return {
        "ceiling_machine": (os.cpu_count() or 1) * 1000 / per_cycle if per_cycle else 0.0,
        "ceiling_server": replicas * 1000 / server if server else 0.0,
    }


def _wait_ready(url: str, agents: int) -> None:
    """Until every agent's workflow is executing (so the start line is the same for all)."""
    with httpx.Client(base_url=url, timeout=10) as c:
        for _ in range(600):
            body = c.get("/api/stats").json()
            if body["workflow_states"].get("executing", 0) >= agents:
                return
            time.sleep(0.05)
    raise RuntimeError("agents did not get their workflows started")


def fresh_schema(base: str) -> tuple[str, str]:
    from sqlalchemy import create_engine, text

    eng = create_engine(base)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with eng.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    sep = "&" if "?" in base else "?"
    return schema, f"{base}{sep}options=-csearch_path%3D{schema}"


def drop_schema(base: str, schema: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(base)
    with eng.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    eng.dispose()


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get
    ap.add_argument("--agents", default=env("SAFERUN_BENCH_AGENTS", "1,4,8"), help="agent counts, e.g. 1,4,8")
    ap.add_argument("--cycles", type=int, default=40, help="cycles per agent")
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration (spread is reported)")
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--memory-bytes", type=int, default=1000, help="size of each agent's memory field")
    ap.add_argument("--sqlite-url", default=env("SAFERUN_BENCH_SQLITE_URL"))
    ap.add_argument("--postgres-url", default=env("SAFERUN_BENCH_POSTGRES_URL", DEFAULT_PG))
    ap.add_argument("--ports", default=env("SAFERUN_BENCH_PORTS"), help="SQLite port, then 2 PG ports")
    ap.add_argument(
        "--server-src",
        default=env("SAFERUN_BENCH_SERVER_SRC"),
        help="run the servers from this source tree (e.g. an export of an older commit) to measure 'before'",
    )
    ap.add_argument("--json", help="also write every run's numbers here")
    return ap.parse_args()


def main() -> None:
    global SERVER_SRC
    a = parse_args()
    SERVER_SRC = a.server_src
    counts = [int(x) for x in str(a.agents).split(",") if x]
    given = [int(p) for p in a.ports.split(",")] if a.ports else []
    sqlite_port = given[0] if given else None
    pg_ports = given[1:3] if len(given) >= 3 else None
    runs: list[dict[str, Any]] = []
    for store in [s for s in a.stores.split(",") if s]:
        for n in counts:
            for rep in range(a.repeat):
                if store == "sqlite":
                    with tempfile.TemporaryDirectory() as d:
                        url = a.sqlite_url or f"sqlite:///{Path(d) / 'bench.db'}"
                        r = run_once(url, [sqlite_port or free_port()], n, a.cycles, a.memory_bytes)
                else:
                    schema, url = fresh_schema(a.postgres_url)
                    try:
                        ports = pg_ports or [free_port(), free_port()]
                        r = run_once(url, ports, n, a.cycles, a.memory_bytes)
                    finally:
                        drop_schema(a.postgres_url, schema)
                r.update(store=store, agents=n, run=rep + 1, replicas=1 if store == "sqlite" else 2)
                runs.append(r)
                print(
                    f"  {store:<8} {n} agents run {rep + 1}: {r['cycles_per_s']:.1f} cycles/s, "
                    f"resume p50 {r['p50']:.1f} p99 {r['p99']:.1f} ms | CPU/cycle server "
                    f"{r['server_cpu_ms']:.1f} client {r['client_cpu_ms']:.1f} db {r['db_cpu_ms']:.1f} ms "
                    f"| CPU limit {min(r['ceiling_machine'], r['ceiling_server']):.0f} cycles/s "
                    f"| load {r['load']:.1f}",
                    flush=True,
                )
    report(runs, a)
    if a.json:
        Path(a.json).write_text(json.dumps(runs, indent=2))


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def report(runs: list[dict[str, Any]], a: argparse.Namespace) -> None:
    print(
        f"\nnproc {os.cpu_count()} | python {sys.version.split()[0]} | {a.cycles} cycles per agent | "
        f"memory field {a.memory_bytes} B | {a.repeat} run(s) per row (min-max shown)"
    )
    print(
        f"{'store':<10} {'replicas':>8} {'agents':>6} | {'cycles/s':>13} {'x before':>11} | "
        f"{'resume p50 ms':>13} {'p99 ms':>11} {'max ms':>13} | {'CPU ms/cycle: server':>20} "
        f"{'client':>11} {'db':>9} | {'CPU limit: machine':>18} {'server':>13} | {'load':>9}"
    )
    keys = sorted({(r["store"], r["agents"]) for r in runs}, key=lambda k: (k[0] != "sqlite", k[1]))
    for store, n in keys:
        rs = [r for r in runs if (r["store"], r["agents"]) == (store, n)]
        tput = [r["cycles_per_s"] for r in rs]
        factor = f"{min(tput) / BEFORE[1]:.1f}-{max(tput) / BEFORE[0]:.1f}x"
        print(
            f"{'SQLite' if store == 'sqlite' else 'PostgreSQL':<10} {rs[0]['replicas']:>8} {n:>6} | "
            f"{spread(tput):>13} {factor:>11} | {spread([r['p50'] for r in rs]):>13} "
            f"{spread([r['p99'] for r in rs]):>11} {spread([r['max'] for r in rs]):>13} | "
            f"{spread([r['server_cpu_ms'] for r in rs]):>20} "
            f"{spread([r['client_cpu_ms'] for r in rs]):>11} {spread([r['db_cpu_ms'] for r in rs]):>9} | "
            f"{spread([r['ceiling_machine'] for r in rs], '{:.0f}'):>18} "
            f"{spread([r['ceiling_server'] for r in rs], '{:.0f}'):>13} | "
            f"{spread([r['load'] for r in rs]):>9}"
        )
    print(
        f"before (issue 12): {BEFORE[0]:.0f}-{BEFORE[1]:.0f} cycles/s at 1 to 8 agents, SQLite and PostgreSQL"
    )
    for store in sorted({r["store"] for r in runs}):
        eight = [r["cycles_per_s"] for r in runs if r["store"] == store and r["agents"] == 8]
        four = [r["p99"] for r in runs if r["store"] == store and r["agents"] == 4]
        if eight:
            goal = TARGET_FACTOR * BEFORE[0]
            ok = "MET " if min(eight) >= goal else "MISS"
            print(
                f"  [{ok}] {store}: 8 agents >= {TARGET_FACTOR}x before ({goal:.0f}-"
                f"{TARGET_FACTOR * BEFORE[1]:.0f} cycles/s): {spread(eight)}"
            )
        if four:
            ok = "MET " if max(four) <= TARGET_P99_MS else "MISS"
            print(
                f"  [{ok}] {store}: decision -> resume p99 at 4 agents <= {TARGET_P99_MS:.0f} ms: "
                f"{spread(four)}"
            )


if __name__ == "__main__":
    main()
