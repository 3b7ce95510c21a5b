#!/usr/bin/env python3
"""SafeRun durable checkpoints vs LangGraph's SqliteSaver, in one run, on the same state shapes.

The LangGraph side is the peer's anchor script, vendored unchanged as ``benchmarks/langgraph_anchor.py`` so
the comparison runs from a clone (``--anchor PATH`` drives another copy), imported and driven phase by
phase. Its ``make_memory`` builds the agent memory for both sides, so the states are identical: a large
memory dict (1 KB / 100 KB / 1 MB as msgpack), a counter bumped every step and a list that grows by one
small item per step. The memory never changes in Tables 1-4; Table 5 edits a share of it every step.

Per memory size, each side gets a fresh SQLite file and is measured on:

  1. time per durable checkpoint   SafeRun: ``await orch.create_checkpoint(wf, ExecutionState(...))`` on an
                                   EXECUTING workflow whose one checkpoint needs no approval (so each call
                                   is a pure durable capture that passes and commits), STEPS times;
                                   LangGraph: ``SqliteSaver.put()`` called directly, and one graph.invoke()
                                   looping STEPS supersteps with durability="sync" (and "async").
  2. bytes per checkpoint          SafeRun: the snapshots' ``new_bytes`` (blob bytes the artifact store
                                   inserted) and main DB file growth after ``PRAGMA wal_checkpoint(TRUNCATE)``
                                   (the anchor's ``db_bytes``); LangGraph: checkpoint blob length and the
                                   same DB growth measurement.
  3. latest-state load             SafeRun: a new Database + orchestrator calling ``latest_approved_state``
                                   on the STEPS-checkpoint workflow, first call then warm repeats;
                                   LangGraph: ``graph.get_state()`` on a thread holding STEPS+1 checkpoints.
  4. checkpoint -> decision -> resume cycle, CYCLES times on one workflow / thread. Per cycle:
       SafeRun    pause: ``await orch.pause()`` = build the state, store it (content-addressed, deduped),
                  snapshot row, approval request + its sub-job and notice, state change, audit events:
                  one transaction, one fsync'd commit (``--two-calls``: the seed's two calls, two commits);
                  resume: the decision as the API and the dashboard make it, ``decide_request(APPROVED)``
                  (claim exactly once, decision row, milestone and saga bookkeeping, state change, audit:
                  one commit; ``submit_approval`` on a checkout without it) + ``await wait_for_decision``
                  + the state the agent continues from reloaded (``latest_approved_state``), as
                  ``run.checkpoint`` does.
       LangGraph  pause: ``invoke(input)`` runs ``propose`` then ``review`` until ``interrupt()``; it writes
                  the checkpoints of those supersteps (every channel, the memory included) and the pending
                  writes; resume: ``invoke(Command(resume=...))`` reloads the checkpoint, re-runs ``review``
                  with the answer and writes the final checkpoint. No decision record, no audit, no money.
  5. memory edited every checkpoint (``--edit-fractions``, default 1 % and 10 % of the notes, scattered
     through the dict; the same edits on both sides): time per durable checkpoint and bytes per checkpoint,
     SafeRun ``create_checkpoint`` vs LangGraph's sync loop whose node returns the edited memory,
     ``--edit-steps`` checkpoints each.

Run:  bash benchmarks/setup_bench_venv.sh && .bench-venv/bin/python benchmarks/bench_checkpoints.py
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata as md
import importlib.util
import json
import os
import platform
import shutil
import sqlite3
import sys
import time
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ANCHOR = Path(__file__).resolve().parent / "langgraph_anchor.py"  # the peer's script, vendored
SIZE_LABELS = {"1KB": 1_000, "100KB": 100_000, "1MB": 1_000_000}
SYNC_LEVELS = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}

# --------------------------------------------------------------------------------------------- anchor


def load_anchor(path: Path) -> ModuleType:
    """Import the peer's LangGraph benchmark from its path (it stays where it is)."""
    if not path.is_file():
        sys.exit(f"anchor not found: {path} (pass --anchor PATH)")
    spec = importlib.util.spec_from_file_location("bench_langgraph", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # registered before exec: LangGraph resolves the State TypedDict's string annotations via sys.modules
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        sys.exit(
            f"cannot import the anchor's dependencies ({exc}); run this with the benchmark venv:\n"
            f"  bash benchmarks/setup_bench_venv.sh && .bench-venv/bin/python benchmarks/bench_checkpoints.py"
        )
    return module


def force_lg_synchronous(anchor: ModuleType, level: str) -> None:
    """Make every SqliteSaver connection the anchor opens use ``PRAGMA synchronous=<level>``."""
    original = anchor.open_saver

    def open_saver(path: str) -> tuple[sqlite3.Connection, Any]:
        conn, saver = original(path)
        conn.execute(f"PRAGMA synchronous={level}")
        return conn, saver

    anchor.open_saver = open_saver


# --------------------------------------------------------------------------------------------- SafeRun


def saferun_database(path: str, synchronous: str | None) -> Any:
    from sqlalchemy import event

    from saferun.storage.database import Database

    db = Database(f"sqlite:///{path}")
    if synchronous is not None:
        # runs after SafeRun's own connect listener (registration order), so it overrides its NORMAL
        @event.listens_for(db.engine, "connect")
        def _sync(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute(f"PRAGMA synchronous={synchronous}")

    return db


def sqlite_pragma(db: Any, name: str) -> Any:
    with db.read() as conn:
        return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


def new_workflow(orch: Any, *, requires_approval: bool, name: str) -> str:
    from saferun.core.state_machine.models import CheckpointConfig, WorkflowConfig

    config = WorkflowConfig(
        name=name,
        checkpoints=[
            CheckpointConfig(checkpoint_id="cp_step", name="step", requires_approval=requires_approval)
        ],
        escrow_amount=Decimal("100"),
        poster_id="poster",
        executor_id="agent",
        supervisor_id="reviewer",
    )
    wf = orch.initialize_workflow(config)
    orch.start_execution(wf.workflow_id)
    return wf.workflow_id


def file_bytes(path: str) -> int:
    """The anchor's ``db_bytes``: main DB file size after folding the WAL back into it."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return os.path.getsize(path)
    finally:
        conn.close()


async def saferun_steps(path: str, mem: dict, n: int, synchronous: str | None, anchor: ModuleType) -> dict:
    """N durable captures on one EXECUTING workflow; per-call time, new_bytes and DB growth."""
    from saferun.core.state_machine.models import ExecutionState
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    db = saferun_database(path, synchronous)
    orch = WorkflowOrchestrator(database=db)
    wf = new_workflow(orch, requires_approval=False, name="bench-steps")
    size0 = file_bytes(path)
    size1 = size0
    items: list[str] = []
    times: list[float] = []
    new_bytes: list[int] = []
    for i in range(n):
        items.append(f"i{i}")
        t0 = time.perf_counter()
        snap = await orch.create_checkpoint(
            wf,
            ExecutionState(
                checkpoint_id="cp_step",
                agent_memory=mem,
                intermediate_outputs={"counter": i + 1, "items": list(items)},
            ),
        )
        times.append(time.perf_counter() - t0)
        new_bytes.append(snap.new_bytes)
        if i == 0:
            size1 = file_bytes(path)  # after the first capture, which stores the memory once
    size_n = file_bytes(path)
    assert snap.status == "passed", snap.status
    assert orch.get_workflow(wf).current_state.value == "executing"
    sync_level = sqlite_pragma(db, "synchronous")
    db.dispose()
    mean, p50, p99 = anchor.stats_ms(times)
    steady = new_bytes[1:] or new_bytes
    return dict(
        workflow_id=wf,
        n=n,
        mean=mean,
        p50=p50,
        p99=p99,
        times_ms=[t * 1e3 for t in times],
        new_bytes_first=new_bytes[0],
        new_bytes_steady=sum(steady) / len(steady),
        new_bytes=new_bytes,
        raw_size=snap.raw_size_bytes,
        compressed_size=snap.compressed_size_bytes,
        growth_steady=(size_n - size1) / max(1, n - 1),
        growth_amortized=(size_n - size0) / n,
        synchronous=sync_level,
    )


def saferun_load(
    path: str, wf: str, n: int, mem: dict, synchronous: str | None, anchor: ModuleType, reps: int = 50
) -> dict:
    """Latest state from a fresh Database/orchestrator (nothing cached), first call and warm repeats."""
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    db = saferun_database(path, synchronous)  # new engine: no connection, no statement cache yet
    orch = WorkflowOrchestrator(database=db)
    # What the anchor's phase_get_state does before starting LangGraph's clock: one count of the thread's
    # checkpoints on the new connection (which opens it and makes SQLite read the schema). Here: the same
    # count of the workflow's snapshots, as driver SQL on the pooled connection the load will use, so
    # SQLAlchemy's statement cache stays cold and everything the load compiles is still timed.
    with db.read() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM snapshots WHERE workflow_id = ?", (wf,)).scalar_one()
    t0 = time.perf_counter()
    state = orch.latest_approved_state(wf)
    first = time.perf_counter() - t0
    assert state is not None and state.intermediate_outputs["counter"] == n
    assert len(state.intermediate_outputs["items"]) == n and state.agent_memory == mem
    warm = []
    for _ in range(reps):
        t0 = time.perf_counter()
        orch.latest_approved_state(wf)
        warm.append(time.perf_counter() - t0)
    snap_id = orch.get_workflow(wf).last_approved_snapshot_id
    by_id = []
    for _ in range(reps):
        t0 = time.perf_counter()
        orch.get_snapshot_state(snap_id)
        by_id.append(time.perf_counter() - t0)
    db.dispose()
    return dict(first=first * 1e3, warm=anchor.stats_ms(warm), by_id=anchor.stats_ms(by_id))


async def saferun_cycles(
    path: str, mem: dict, cycles: int, synchronous: str | None, anchor: ModuleType
) -> dict:
    """pause (checkpoint + request) -> submit_approval(APPROVED) -> wait_for_decision, CYCLES times."""
    from saferun.core.state_machine.models import ApprovalDecision, ApprovalResponse, ExecutionState
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    db = saferun_database(path, synchronous)
    orch = WorkflowOrchestrator(database=db)
    wf = new_workflow(orch, requires_approval=True, name="bench-cycle")
    size0 = file_bytes(path)
    items: list[str] = []
    t_pause, t_resume, t_cycle = [], [], []
    for i in range(cycles):
        items.append(f"p{i}")
        t0 = time.perf_counter()
        state = ExecutionState(
            checkpoint_id="cp_step",
            agent_memory=mem,
            intermediate_outputs={"counter": i + 1, "items": list(items)},
        )
        if TWO_CALLS:  # the seed's create_checkpoint + request_approval, two transactions
            snap = await orch.create_checkpoint(wf, state)
            req = orch.request_approval(wf, snap.snapshot_id, "apply_change", {"counter": i + 1})
        else:  # what run.checkpoint(...) does: both in one transaction
            _, maybe_req = await orch.pause(wf, state, "apply_change", {"counter": i + 1})
            assert maybe_req is not None
            req = maybe_req
        t1 = time.perf_counter()
        approve = ApprovalResponse(
            request_id=req.request_id, decision=ApprovalDecision.APPROVED, approved_by="reviewer"
        )
        if hasattr(orch, "decide_request"):  # a reviewer's decision through the API or the dashboard
            orch.decide_request(approve, workflow_id=wf)
        else:  # an older checkout (an A/B "before" run): the library call, which also re-read the counts
            orch.submit_approval(wf, approve)
        resp = await orch.wait_for_decision(req.request_id)
        resumed = orch.latest_approved_state(wf)  # the state the agent continues from, as run.checkpoint
        t2 = time.perf_counter()
        assert resp.decision == ApprovalDecision.APPROVED
        assert resumed is not None and resumed.intermediate_outputs["counter"] == i + 1
        t_pause.append(t1 - t0)
        t_resume.append(t2 - t1)
        t_cycle.append(t2 - t0)
    size1 = file_bytes(path)
    assert orch.get_workflow(wf).current_state.value == "executing"
    db.dispose()
    return dict(
        pause=anchor.stats_ms(t_pause),
        resume=anchor.stats_ms(t_resume),
        cycle=anchor.stats_ms(t_cycle),
        growth_per_cycle=(size1 - size0) / cycles,
        cycle_ms=[t * 1e3 for t in t_cycle],
    )


TWO_CALLS = False

# --------------------------------------------------------------------------------------------- mutating


def edited(mem: dict, step: int, fraction: float) -> dict:
    """A copy of ``mem`` with ``fraction`` of its notes rewritten (same length), scattered through the dict
    and moving with ``step``: what an agent that revises part of its memory each step produces."""
    keys = list(mem)
    k = max(1, round(fraction * len(keys)))
    stride = max(1, len(keys) // k)
    out = dict(mem)
    for j in range(k):
        key = keys[(step + j * stride) % len(keys)]
        tag = f"e{step}:"
        out[key] = tag + mem[key][len(tag) :]
    return out


async def saferun_mutating(path: str, mem: dict, n: int, fraction: float, synchronous: str | None) -> dict:
    """N captures, each with the memory edited from the previous one: time, new_bytes, DB growth."""
    from saferun.core.state_machine.models import ExecutionState
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    db = saferun_database(path, synchronous)
    orch = WorkflowOrchestrator(database=db)
    wf = new_workflow(orch, requires_approval=False, name="bench-mutating")
    await orch.create_checkpoint(wf, ExecutionState(checkpoint_id="cp_step", agent_memory=mem))
    size0 = file_bytes(path)
    times: list[float] = []
    new_bytes: list[int] = []
    current = mem
    for i in range(n):
        t0 = time.perf_counter()
        current = edited(current, i, fraction)
        snap = await orch.create_checkpoint(
            wf,
            ExecutionState(
                checkpoint_id="cp_step", agent_memory=current, intermediate_outputs={"counter": i + 1}
            ),
        )
        times.append(time.perf_counter() - t0)
        new_bytes.append(snap.new_bytes)
    growth = (file_bytes(path) - size0) / n
    assert orch.latest_approved_state(wf).agent_memory == current  # type: ignore[union-attr]
    db.dispose()
    return dict(mean=sum(times) / n * 1e3, new_bytes=sum(new_bytes) / n, growth=growth)


def langgraph_mutating(anchor: ModuleType, path: str, mem: dict, n: int, fraction: float) -> dict:
    """The anchor's sync loop, but the node returns the memory edited as SafeRun's side gets it."""
    conn, saver = anchor.open_saver(path)
    g = anchor.StateGraph(anchor.State)

    def step(state: dict) -> dict:
        c = state["counter"]
        return {"counter": c + 1, "items": [f"i{c}"], "memory": edited(state["memory"], c, fraction)}

    g.add_node("step", step)
    g.add_edge(anchor.START, "step")
    g.add_conditional_edges(
        "step", lambda st: "step" if st["counter"] < n else anchor.END, ["step", anchor.END]
    )
    graph = g.compile(checkpointer=saver)
    tid = "mutating"
    cfg = {"configurable": {"thread_id": tid}, "recursion_limit": n + 50}
    size0 = anchor.db_bytes(conn, path)
    t0 = time.perf_counter()
    out = graph.invoke({"memory": mem, "counter": 0, "items": []}, cfg, durability="sync")
    wall = time.perf_counter() - t0
    assert out["counter"] == n
    nck, avg_blob, _, _ = anchor.table_stats(conn, tid)
    growth = (anchor.db_bytes(conn, path) - size0) / nck
    conn.close()
    return dict(mean=wall / n * 1e3, avg_blob=avg_blob, growth=growth)


# --------------------------------------------------------------------------------------------- LangGraph


def langgraph_size(anchor: ModuleType, d: str, mem: dict, a: argparse.Namespace) -> dict:
    out: dict[str, Any] = {}
    if a.lg_async:
        out["loop_async"] = anchor.phase_loop(f"{d}/lg_loop_async.db", mem, a.steps, "async")
    ls = out["loop_sync"] = anchor.phase_loop(f"{d}/lg_loop_sync.db", mem, a.steps, "sync")
    out["get_state"] = anchor.phase_get_state(f"{d}/lg_loop_sync.db", ls["tid"], a.steps)
    out["put"] = anchor.phase_put(f"{d}/lg_put.db", f"{d}/lg_loop_sync.db", ls["tid"], a.steps)
    out["hitl"] = anchor.phase_hitl(f"{d}/lg_hitl.db", mem, a.cycles, inspect=False)
    conn, _ = anchor.open_saver(f"{d}/lg_put.db")
    out["synchronous"] = conn.execute("PRAGMA synchronous").fetchone()[0]
    conn.close()
    return out


# --------------------------------------------------------------------------------------------- report


def ratio(a: float, b: float) -> str:
    if b == 0:
        return "n/a"
    r = a / b
    return f"{r * 100:.2f} %" if r < 0.1 else f"{r:.2f}x"


def fmt3(t: tuple[float, float, float] | list[float]) -> str:
    return f"{t[0]:8.2f} {t[1]:8.2f} {t[2]:8.2f}"


def report(rows: list[dict], a: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    p = lines.append
    p("")
    p(f"Table 1 - time per durable checkpoint, {a.steps} checkpoints on one workflow/thread, ms")
    p("  SafeRun: await create_checkpoint(wf, ExecutionState(...)) (state construction included);")
    p("  LangGraph: SqliteSaver.put() called directly; and a graph looping N supersteps, mean = wall / N")
    hdr = (
        f"{'payload':>8} | {'SafeRun mean':>12} {'p50':>8} {'p99':>8} | {'LG put mean':>11} {'p50':>8} "
        f"{'p99':>8} | {'LG loop sync':>12}"
    )
    if a.lg_async:
        hdr += f" {'LG loop async':>13}"
    hdr += f" | {'SR/put':>7} {'SR/sync':>7}"
    p(hdr)
    for r in rows:
        s, lg = r["saferun"]["steps"], r["langgraph"]
        line = (
            f"{r['label']:>8} | {s['mean']:12.2f} {s['p50']:8.2f} {s['p99']:8.2f} | "
            f"{lg['put']['put'][0]:11.2f} {lg['put']['put'][1]:8.2f} {lg['put']['put'][2]:8.2f} | "
            f"{lg['loop_sync']['mean']:12.2f}"
        )
        if a.lg_async:
            line += f" {lg['loop_async']['mean']:13.2f}"
        line += (
            f" | {ratio(s['mean'], lg['put']['put'][0]):>7} {ratio(s['mean'], lg['loop_sync']['mean']):>7}"
        )
        p(line)

    p("")
    p("Table 2 - bytes written per checkpoint (memory unchanged between checkpoints)")
    p("  new_bytes = blob bytes SafeRun's artifact store inserted (1st capture / mean of the rest);")
    p("  DB growth = main file growth after PRAGMA wal_checkpoint(TRUNCATE): steady = per checkpoint")
    p("  after the first, amortized = incl. the first; LangGraph: put() growth (every row carries the")
    p("  memory: steady) and the sync loop's growth (incl. the one-time input write: amortized)")
    p(
        f"{'payload':>8} | {'SR new_B 1st':>12} {'rest':>8} | {'SR DB steady':>12} {'amortized':>10} | "
        f"{'LG blob B':>10} {'LG DB steady':>12} {'amortized':>10} | {'steady':>7} {'amort.':>7} "
        f"{'new/blob':>8}"
    )
    for r in rows:
        s, lg = r["saferun"]["steps"], r["langgraph"]
        p(
            f"{r['label']:>8} | {s['new_bytes_first']:>12,} {s['new_bytes_steady']:>8,.0f} | "
            f"{s['growth_steady']:>12,.0f} {s['growth_amortized']:>10,.0f} | "
            f"{lg['loop_sync']['avg_blob']:>10,.0f} {lg['put']['growth']:>12,.0f} "
            f"{lg['loop_sync']['growth']:>10,.0f} | {ratio(s['growth_steady'], lg['put']['growth']):>7} "
            f"{ratio(s['growth_amortized'], lg['loop_sync']['growth']):>7} "
            f"{ratio(s['new_bytes_steady'], lg['loop_sync']['avg_blob']):>8}"
        )

    p("")
    p(
        f"Table 3 - load the latest state, fresh handle, workflow/thread with {a.steps} (LG: +1) "
        "checkpoints, ms"
    )
    p("  SafeRun: new Database + orchestrator, latest_approved_state(wf) (and get_snapshot_state warm);")
    p("  LangGraph: new connection, graph.get_state(config)")
    p(
        f"{'payload':>8} | {'SR 1st':>7} {'SR warm mean':>12} {'p50':>8} {'p99':>8} {'by-id mean':>10} | "
        f"{'LG 1st':>7} {'LG warm mean':>12} {'p50':>8} {'p99':>8} | {'1st':>7} {'warm':>7}"
    )
    for r in rows:
        s, g = r["saferun"]["load"], r["langgraph"]["get_state"]
        p(
            f"{r['label']:>8} | {s['first']:7.2f} {fmt3(s['warm']):>30} {s['by_id'][0]:10.2f} | "
            f"{g['first']:7.2f} {fmt3(g['warm']):>30} | {ratio(s['first'], g['first']):>7} "
            f"{ratio(s['warm'][0], g['warm'][0]):>7}"
        )

    p("")
    p(f"Table 4 - checkpoint -> decision -> resume cycle, {a.cycles} cycles on one workflow/thread, ms")
    p("  SafeRun: pause() = create_checkpoint + request_approval in one transaction, as run.checkpoint()")
    p("  does (--two-calls: the seed's two calls) | decide_request(APPROVED) (the API's decision) +")
    p("  wait_for_decision +")
    p("  latest_approved_state (the state the agent continues from, reloaded);")
    p("  LangGraph: invoke() until interrupt() | invoke(Command(resume=...))")
    p(
        f"{'payload':>8} | {'SR pause':>8} {'resume':>8} {'cycle mean':>10} {'p50':>8} {'p99':>8} | "
        f"{'LG pause':>8} {'resume':>8} {'cycle mean':>10} {'p50':>8} {'p99':>8} | {'mean':>7} {'p50':>7} | "
        f"{'SR B/cyc':>9} {'LG B/cyc':>10}"
    )
    for r in rows:
        s, h = r["saferun"]["cycle"], r["langgraph"]["hitl"]
        p(
            f"{r['label']:>8} | {s['pause'][0]:8.2f} {s['resume'][0]:8.2f} {fmt3(s['cycle']):>28} | "
            f"{h['interrupt'][0]:8.2f} {h['resume'][0]:8.2f} {fmt3(h['cycle']):>28} | "
            f"{ratio(s['cycle'][0], h['cycle'][0]):>7} {ratio(s['cycle'][1], h['cycle'][1]):>7} | "
            f"{s['growth_per_cycle']:>9,.0f} {h['growth_per_cycle']:>10,.0f}"
        )
    if any(r.get("mutating") for r in rows):
        p("")
        p(f"Table 5 - memory edited every checkpoint, {a.edit_steps} checkpoints per run")
        p("  edited = share of the memory's notes rewritten each step (scattered); time per durable")
        p("  checkpoint (edit included on both sides) and bytes per checkpoint: SafeRun new_bytes and")
        p("  DB growth vs LangGraph's blob and DB growth (sync loop); the unchanged case is Tables 1-2")
        p(
            f"{'payload':>8} {'edited':>7} | {'SR ms':>7} {'LG ms':>7} {'SR/LG':>7} | {'SR new_B':>10} "
            f"{'SR DB B':>10} | {'LG blob B':>10} {'LG DB B':>10} | {'new/blob':>8} {'DB/DB':>7}"
        )
        for r in rows:
            for m in r.get("mutating", []):
                sr, lg = m["saferun"], m["langgraph"]
                p(
                    f"{r['label']:>8} {m['fraction'] * 100:>6.0f}% | {sr['mean']:7.2f} {lg['mean']:7.2f} "
                    f"{ratio(sr['mean'], lg['mean']):>7} | "
                    f"{sr['new_bytes']:>10,.0f} {sr['growth']:>10,.0f} | "
                    f"{lg['avg_blob']:>10,.0f} {lg['growth']:>10,.0f} | "
                    f"{ratio(sr['new_bytes'], lg['avg_blob']):>8} {ratio(sr['growth'], lg['growth']):>7}"
                )
    return lines


def verdicts(rows: list[dict]) -> list[tuple[str, bool | None, str]]:
    out: list[tuple[str, bool | None, str]] = []
    big = next((r for r in rows if r["target"] == 1_000_000), None)
    if big is None:
        out.append(("(a) bytes/checkpoint at 1 MB < 1 % of LangGraph's", None, "1 MB size not run"))
    else:
        s, lg = big["saferun"]["steps"], big["langgraph"]
        r_db = s["growth_steady"] / lg["put"]["growth"]
        r_new = s["new_bytes_steady"] / lg["loop_sync"]["avg_blob"]
        r_am = s["growth_amortized"] / lg["loop_sync"]["growth"]
        out.append(
            (
                "(a) bytes/checkpoint at 1 MB < 1 % of LangGraph's",
                r_db < 0.01 and r_new < 0.01,
                f"DB growth steady {s['growth_steady']:,.0f} vs {lg['put']['growth']:,.0f} B = "
                f"{r_db * 100:.2f} %; new_bytes {s['new_bytes_steady']:,.0f} vs blob "
                f"{lg['loop_sync']['avg_blob']:,.0f} B = {r_new * 100:.2f} %; (amortized over "
                f"{s['n']} incl. the first capture: {r_am * 100:.2f} %)",
            )
        )
    worst = max(rows, key=lambda r: r["saferun"]["cycle"]["cycle"][0] / r["langgraph"]["hitl"]["cycle"][0])
    rr = worst["saferun"]["cycle"]["cycle"][0] / worst["langgraph"]["hitl"]["cycle"][0]
    per_size = ", ".join(
        f"{r['label']} {r['saferun']['cycle']['cycle'][0] / r['langgraph']['hitl']['cycle'][0]:.2f}x"
        for r in rows
    )
    out.append(
        (
            "(b) cycle time <= 1/2 of LangGraph's at every size",
            rr <= 0.5,
            f"mean ratio per size: {per_size} (worst {worst['label']})",
        )
    )
    ok = True
    parts = []
    for r in rows:
        s, g = r["saferun"]["load"], r["langgraph"]["get_state"]
        ok = ok and s["first"] <= g["first"] and s["warm"][0] <= g["warm"][0]
        parts.append(
            f"{r['label']} 1st {s['first'] / g['first']:.2f}x warm {s['warm'][0] / g['warm'][0]:.2f}x"
        )
    out.append(("(c) latest-state load no slower than LangGraph's", ok, ", ".join(parts)))
    return out


# --------------------------------------------------------------------------------------------- main


def parse_sizes(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        key = item.strip().upper().replace(" ", "")
        if not key:
            continue
        if key in SIZE_LABELS:
            out.append((key[:-2] + " " + key[-2:], SIZE_LABELS[key]))
        elif key.isdigit():
            out.append((f"{int(key):,} B", int(key)))
        else:
            raise argparse.ArgumentTypeError(f"size {item!r}: use 1KB, 100KB, 1MB or a byte count")
    if not out:
        raise argparse.ArgumentTypeError("no sizes given")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="checkpoints per run (default 200, as the anchor)")
    ap.add_argument(
        "--cycles", type=int, default=200, help="decision cycles per size (default 200, as the anchor)"
    )
    ap.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes("1KB,100KB,1MB"),
        help="comma-separated memory sizes: 1KB,100KB,1MB or byte counts",
    )
    ap.add_argument("--dir", default="/tmp/saferun_bench", help="where the SQLite files go (wiped first)")
    ap.add_argument("--anchor", type=Path, default=DEFAULT_ANCHOR, help="path of bench_langgraph.py")
    ap.add_argument("--json", type=Path, help="also write the raw numbers to this file")
    ap.add_argument(
        "--synchronous",
        choices=["as-shipped", "normal", "full"],
        default="as-shipped",
        help="SQLite PRAGMA synchronous: each library's own default (SafeRun NORMAL, LangGraph "
        "FULL), or the same level forced on both",
    )
    ap.add_argument(
        "--no-lg-async",
        dest="lg_async",
        action="store_false",
        help="skip LangGraph's durability='async' loop (informational only)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the .db files")
    ap.add_argument(
        "--edit-fractions",
        default="0.01,0.1",
        help="Table 5: shares of the memory's notes edited per checkpoint (empty: skip Table 5)",
    )
    ap.add_argument("--edit-steps", type=int, default=50, help="Table 5: checkpoints per run")
    ap.add_argument(
        "--two-calls",
        action="store_true",
        help="cycle through the seed's create_checkpoint + request_approval (two transactions) instead of "
        "pause(), the one-transaction call run.checkpoint(...) makes",
    )
    a = ap.parse_args()
    global TWO_CALLS
    TWO_CALLS = a.two_calls
    if a.steps < 2 or a.cycles < 1:
        ap.error("need --steps >= 2 and --cycles >= 1")

    anchor = load_anchor(a.anchor.resolve())
    sr_sync = None if a.synchronous == "as-shipped" else a.synchronous.upper()
    if sr_sync is not None:
        force_lg_synchronous(anchor, sr_sync)

    shutil.rmtree(a.dir, ignore_errors=True)
    os.makedirs(a.dir)

    versions = {
        p: md.version(p)
        for p in ("saferun", "langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite", "ormsgpack")
    }
    facts = dict(
        nproc=os.cpu_count(),
        python=platform.python_version(),
        sqlite=sqlite3.sqlite_version,
        machine=platform.machine(),
        **versions,
    )
    print("# SafeRun durable checkpoints vs LangGraph SqliteSaver")
    print(" | ".join(f"{k} {v}" for k, v in facts.items()))
    print(
        f"anchor {a.anchor} | db dir {a.dir} | steps={a.steps} cycles={a.cycles} | "
        f"synchronous={a.synchronous}"
    )

    T0 = time.perf_counter()
    rows: list[dict] = []
    for label, target in a.sizes:
        mem = anchor.make_memory(target)
        msz = len(anchor.ormsgpack.packb(mem))
        d = os.path.join(a.dir, label.replace(" ", "").replace(",", ""))
        os.makedirs(d)
        gc.collect()
        lg = langgraph_size(anchor, d, mem, a)
        gc.collect()
        steps = asyncio.run(saferun_steps(f"{d}/sr_steps.db", mem, a.steps, sr_sync, anchor))
        load = saferun_load(f"{d}/sr_steps.db", steps["workflow_id"], a.steps, mem, sr_sync, anchor)
        gc.collect()
        cycle = asyncio.run(saferun_cycles(f"{d}/sr_cycle.db", mem, a.cycles, sr_sync, anchor))
        mutating = []
        for fraction in [float(x) for x in a.edit_fractions.split(",") if x]:
            gc.collect()
            tag = f"{fraction:g}".replace(".", "_")
            lg_m = langgraph_mutating(anchor, f"{d}/lg_mut_{tag}.db", mem, a.edit_steps, fraction)
            gc.collect()
            sr_m = asyncio.run(saferun_mutating(f"{d}/sr_mut_{tag}.db", mem, a.edit_steps, fraction, sr_sync))
            mutating.append(dict(fraction=fraction, saferun=sr_m, langgraph=lg_m))
        rows.append(
            dict(
                label=label,
                target=target,
                msgpack_bytes=msz,
                notes=len(mem),
                saferun=dict(steps=steps, load=load, cycle=cycle),
                langgraph=lg,
                mutating=mutating,
            )
        )
        print(f"  [{label} done, elapsed {time.perf_counter() - T0:.1f} s]", file=sys.stderr, flush=True)
        if not a.keep:
            shutil.rmtree(d)

    sync_names = {v: k for k, v in SYNC_LEVELS.items()}
    sr_level = sync_names.get(rows[0]["saferun"]["steps"]["synchronous"])
    lg_level = sync_names.get(rows[0]["langgraph"]["synchronous"])
    print(f"PRAGMA synchronous in effect: SafeRun {sr_level}, LangGraph {lg_level} (both journal_mode=WAL)")
    print(
        "memory payloads: "
        + ", ".join(
            f"{r['label']} = {r['msgpack_bytes']:,} B msgpack / {r['saferun']['steps']['raw_size']:,} B "
            f"canonical JSON state ({r['notes']:,} notes)"
            for r in rows
        )
    )
    lines = report(rows, a)
    print("\n".join(lines))
    print("\nTargets")
    results = verdicts(rows)
    for name, ok, detail in results:
        word = "n/a " if ok is None else ("MET " if ok else "MISS")
        print(f"  [{word}] {name}: {detail}")
    elapsed = time.perf_counter() - T0
    print(f"\ntotal benchmark wall time: {elapsed:.1f} s")

    if a.json:
        a.json.write_text(
            json.dumps(
                dict(
                    facts=facts,
                    args=dict(
                        steps=a.steps,
                        cycles=a.cycles,
                        sizes=a.sizes,
                        synchronous=a.synchronous,
                        anchor=str(a.anchor),
                    ),
                    rows=rows,
                    targets=[dict(name=n, met=ok, detail=dt) for n, ok, dt in results],
                    wall_seconds=elapsed,
                ),
                indent=1,
                default=str,
            )
        )
        print(f"raw numbers written to {a.json}")


if __name__ == "__main__":
    main()
