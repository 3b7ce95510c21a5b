# Vendored copy of the peer benchmark /work/shared/anchors/bench_langgraph.py (issue 12, target 6: the
# LangGraph comparison must run from a clone). Unchanged below this header; bench_checkpoints.py imports it
# from here by default (--anchor PATH points it at another copy). Refresh it with a plain copy.
# ruff: noqa
#!/usr/bin/env python3
"""Benchmark LangGraph's SqliteSaver checkpointer (file-backed SQLite in /tmp).

State = {"memory": <large dict, never modified after input>,
         "counter": int (bumped every step),
         "items": Annotated[list, operator.add] (one small item appended per step),
         "decision": str (HITL graph only)}

Phases, per memory payload size (1 KB / 100 KB / 1 MB, serialized msgpack size):
  A  graph loop   : ONE graph.invoke() running N supersteps of a self-looping node,
                    durability="async" (LangGraph default) and durability="sync".
                    per-step time = gap between consecutive node entries;
                    mean = total invoke wall time / N.
  B  put() direct : checkpointer.put() called N times with checkpoints shaped like
                    the loop's (only the "counter" channel version changes).
  C  storage      : checkpoint blob bytes per row, and main DB file growth per
                    checkpoint after PRAGMA wal_checkpoint(TRUNCATE).
  D  get_state    : graph.get_state() on a thread holding N+1 checkpoints
                    (first call on a fresh connection, then warm repeats).
  E  HITL cycle   : START -> propose -> review(interrupt()) ; invoke(input) runs
                    until the interrupt, invoke(Command(resume=...)) finishes.
                    Repeated CYCLES times on one thread (history grows).

Usage:  python bench_langgraph.py [--steps 200] [--cycles 200] [--dir /tmp/lgprobe/bench_dbs]
"""
from __future__ import annotations

import argparse
import gc
import importlib.metadata as md
import operator
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import time
from typing import Annotated, Any, TypedDict

import ormsgpack
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

SIZES = [("1 KB", 1_000), ("100 KB", 100_000), ("1 MB", 1_000_000)]
WORDS = ("agent tool call result plan step memory note user fact source check "
         "value graph node edge state write read update review approve reject "
         "modify budget cost time error retry context summary").split()


class State(TypedDict, total=False):
    memory: dict
    counter: int
    items: Annotated[list, operator.add]
    decision: str


def make_memory(target: int) -> dict:
    """Dict of ~100-byte text notes whose msgpack encoding is ~target bytes."""
    rnd = random.Random(target)
    mem: dict[str, str] = {}
    i = 0
    while len(ormsgpack.packb(mem)) < target:
        # add in chunks to keep generation fast
        for _ in range(max(1, (target - len(ormsgpack.packb(mem))) // 100)):
            mem[f"note{i:06d}"] = " ".join(rnd.choice(WORDS) for _ in range(14))[:88]
            i += 1
    return mem


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def stats_ms(xs: list[float]) -> tuple[float, float, float]:
    return (statistics.fmean(xs) * 1e3, pct(xs, 50) * 1e3, pct(xs, 99) * 1e3)


def open_saver(path: str) -> tuple[sqlite3.Connection, SqliteSaver]:
    conn = sqlite3.connect(path, check_same_thread=False)  # same as SqliteSaver.from_conn_string
    saver = SqliteSaver(conn)
    saver.setup()
    return conn, saver


def db_bytes(conn: sqlite3.Connection, path: str) -> int:
    """Main DB file size after folding the WAL back into it."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(path)


def table_stats(conn: sqlite3.Connection, thread_id: str) -> tuple[int, float, int, int]:
    n, avg = conn.execute(
        "SELECT count(*), avg(length(checkpoint)) FROM checkpoints WHERE thread_id=?",
        (thread_id,)).fetchone()
    wn, wsum = conn.execute(
        "SELECT count(*), coalesce(sum(length(value)),0) FROM writes "
        "WHERE thread_id=? AND channel != 'memory'",  # exclude the one-time input write
        (thread_id,)).fetchone()
    return n, avg or 0.0, wn, wsum


# --------------------------------------------------------------------------- graphs
def build_loop_graph(saver: SqliteSaver, n_steps: int, stamps: list[float]):
    def step(state: State) -> dict:
        stamps.append(time.perf_counter())
        c = state["counter"]
        return {"counter": c + 1, "items": [f"i{c}"]}

    def route(state: State) -> str:
        return "step" if state["counter"] < n_steps else END

    g = StateGraph(State)
    g.add_node("step", step)
    g.add_edge(START, "step")
    g.add_conditional_edges("step", route, ["step", END])
    return g.compile(checkpointer=saver)


def build_hitl_graph(saver: SqliteSaver):
    def propose(state: State) -> dict:
        c = state.get("counter", 0)
        return {"counter": c + 1, "items": [f"p{c}"]}

    def review(state: State) -> dict:
        answer = interrupt({"action": "apply_change", "counter": state["counter"]})
        return {"decision": answer["decision"]}

    g = StateGraph(State)
    g.add_node("propose", propose)
    g.add_node("review", review)
    g.add_edge(START, "propose")
    g.add_edge("propose", "review")
    g.add_edge("review", END)
    return g.compile(checkpointer=saver)


# --------------------------------------------------------------------------- phases
def phase_loop(path: str, mem: dict, n: int, durability: str) -> dict:
    conn, saver = open_saver(path)
    stamps: list[float] = []
    graph = build_loop_graph(saver, n, stamps)
    tid = f"loop-{durability}"
    cfg = {"configurable": {"thread_id": tid}, "recursion_limit": n + 50}
    size0 = db_bytes(conn, path)
    t0 = time.perf_counter()
    out = graph.invoke({"memory": mem, "counter": 0, "items": []}, cfg, durability=durability)
    wall = time.perf_counter() - t0
    assert out["counter"] == n and len(out["items"]) == n
    size1 = db_bytes(conn, path)
    nck, avg_blob, nw, wsum = table_stats(conn, tid)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    conn.close()
    m, p50, p99 = stats_ms(gaps)
    return dict(wall=wall, mean=wall / n * 1e3, gap_mean=m, p50=p50, p99=p99,
                nck=nck, avg_blob=avg_blob, growth=(size1 - size0) / nck,
                writes_per_step=wsum / n, tid=tid)


def phase_get_state(path: str, tid: str, n: int, reps: int = 50) -> dict:
    conn, saver = open_saver(path)
    graph = build_loop_graph(saver, n, [])
    cfg = {"configurable": {"thread_id": tid}}
    nck = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id=?", (tid,)).fetchone()[0]
    t0 = time.perf_counter()
    snap = graph.get_state(cfg)
    first = time.perf_counter() - t0
    assert snap.values["counter"] == n
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        graph.get_state(cfg)
        ts.append(time.perf_counter() - t0)
    tg = []
    for _ in range(reps):
        t0 = time.perf_counter()
        saver.get_tuple(cfg)
        tg.append(time.perf_counter() - t0)
    conn.close()
    return dict(nck=nck, first=first * 1e3, warm=stats_ms(ts), get_tuple=stats_ms(tg))


def phase_put(path: str, seed_path: str, seed_tid: str, n: int) -> dict:
    # take a real checkpoint produced by the loop graph as the template
    sconn, ssaver = open_saver(seed_path)
    tpl = ssaver.get_tuple({"configurable": {"thread_id": seed_tid}}).checkpoint
    sconn.close()
    conn, saver = open_saver(path)
    tid = "direct-put"
    cfg = {"configurable": {"thread_id": tid, "checkpoint_ns": ""}}
    size0 = db_bytes(conn, path)
    cp = tpl
    ts = []
    for i in range(n):
        vers = dict(cp["channel_versions"])
        vers["counter"] = saver.get_next_version(vers.get("counter"), None)
        new = dict(cp)
        new["id"] = str(uuid6(clock_seq=i))
        new["channel_values"] = {**cp["channel_values"], "counter": i}
        new["channel_versions"] = vers
        t0 = time.perf_counter()
        cfg = saver.put(cfg, new, {"source": "loop", "step": i, "parents": {}},
                        {"counter": vers["counter"]})
        ts.append(time.perf_counter() - t0)
        cp = new
    size1 = db_bytes(conn, path)
    conn.close()
    return dict(put=stats_ms(ts), growth=(size1 - size0) / n)


def phase_hitl(path: str, mem: dict, cycles: int, inspect: bool) -> dict:
    conn, saver = open_saver(path)
    graph = build_hitl_graph(saver)
    tid = "hitl"
    cfg = {"configurable": {"thread_id": tid}}
    t_int, t_res, t_cyc = [], [], []
    paused_rows = None
    size0 = db_bytes(conn, path)
    for i in range(cycles):
        inp = {"memory": mem, "counter": 0, "items": []} if i == 0 else {"decision": "pending"}
        t0 = time.perf_counter()
        out = graph.invoke(inp, cfg)
        t1 = time.perf_counter()
        assert "__interrupt__" in out, out.keys()
        if inspect and i == 1:  # what is on disk while paused (2nd cycle: steady state)
            snap = graph.get_state(cfg)
            cid = snap.config["configurable"]["checkpoint_id"]
            paused_rows = dict(
                next=snap.next,
                interrupts=[(it.id[:8], it.value) for it in snap.interrupts],
                ckpt_bytes=conn.execute(
                    "SELECT length(checkpoint) FROM checkpoints WHERE thread_id=? AND checkpoint_id=?",
                    (tid, cid)).fetchone()[0],
                writes=conn.execute(
                    "SELECT task_id, channel, type, length(value) FROM writes "
                    "WHERE thread_id=? AND checkpoint_id=? ORDER BY task_id, idx",
                    (tid, cid)).fetchall())
        t2 = time.perf_counter()
        out2 = graph.invoke(Command(resume={"decision": "approve"}), cfg)
        t3 = time.perf_counter()
        assert out2["decision"] == "approve" and out2["counter"] == i + 1, out2.get("counter")
        t_int.append(t1 - t0)  # inspection (if any) happened between t1 and t2: untimed
        t_res.append(t3 - t2)
        t_cyc.append((t1 - t0) + (t3 - t2))
    size1 = db_bytes(conn, path)
    nck, avg_blob, nw, wsum = table_stats(conn, tid)
    conn.close()
    return dict(interrupt=stats_ms(t_int), resume=stats_ms(t_res),
                cycle=stats_ms(t_cyc), nck=nck, ck_per_cycle=nck / cycles,
                growth_per_cycle=(size1 - size0) / cycles, paused=paused_rows)


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--dir", default="/tmp/lgprobe/bench_dbs")
    ap.add_argument("--keep", action="store_true", help="keep the .sqlite files")
    a = ap.parse_args()

    shutil.rmtree(a.dir, ignore_errors=True)
    os.makedirs(a.dir)
    probe = sqlite3.connect(os.path.join(a.dir, "probe.db"))
    probe.execute("PRAGMA journal_mode=WAL")
    sync_mode = probe.execute("PRAGMA synchronous").fetchone()[0]
    page = probe.execute("PRAGMA page_size").fetchone()[0]
    probe.close()

    print("# LangGraph SqliteSaver benchmark")
    print(f"python {platform.python_version()} | langgraph {md.version('langgraph')} | "
          f"langgraph-checkpoint {md.version('langgraph-checkpoint')} | "
          f"langgraph-checkpoint-sqlite {md.version('langgraph-checkpoint-sqlite')} | "
          f"ormsgpack {md.version('ormsgpack')} | sqlite {sqlite3.sqlite_version}")
    print(f"cpus={os.cpu_count()} | db dir={a.dir} | journal_mode=WAL (set by SqliteSaver.setup) "
          f"| synchronous={sync_mode} (2=FULL, python default) | page_size={page}")
    print(f"N steps={a.steps} per loop run, HITL cycles={a.cycles}; each step: counter+=1 and "
          f"append 1 small item; 'memory' written once as input, never modified\n")

    T0 = time.perf_counter()
    rows = []
    for label, target in SIZES:
        mem = make_memory(target)
        msz = len(ormsgpack.packb(mem))
        d = os.path.join(a.dir, label.replace(" ", ""))
        os.makedirs(d)
        gc.collect()
        la = phase_loop(f"{d}/loop_async.db", mem, a.steps, "async")
        ls = phase_loop(f"{d}/loop_sync.db", mem, a.steps, "sync")
        gs = phase_get_state(f"{d}/loop_sync.db", ls["tid"], a.steps)
        pu = phase_put(f"{d}/put.db", f"{d}/loop_sync.db", ls["tid"], a.steps)
        hi = phase_hitl(f"{d}/hitl.db", mem, a.cycles, inspect=(target == 1_000))
        rows.append((label, msz, len(mem), la, ls, gs, pu, hi))
        print(f"  [{label} done, elapsed {time.perf_counter() - T0:.1f} s]", file=sys.stderr)
        if not a.keep:
            shutil.rmtree(d)

    f = lambda t: f"{t[0]:7.2f} {t[1]:7.2f} {t[2]:7.2f}"
    print("Table 1 - time per checkpointed step, ONE graph.invoke() looping N supersteps "
          "(mean = invoke wall / N; p50/p99 = gap between node entries), ms")
    print("  (async = LangGraph default: put() runs in a background thread, so async p50/p99 gaps "
          "show scheduling, not persistence; the mean is the throughput)")
    print(f"{'payload':>8} {'memory B':>9} | {'async: mean':>11} {'p50':>7} {'p99':>7} | "
          f"{'sync: mean':>10} {'p50':>7} {'p99':>7}")
    for label, msz, _, la, ls, *_ in rows:
        print(f"{label:>8} {msz:>9,} | {la['mean']:11.2f} {la['p50']:7.2f} {la['p99']:7.2f} | "
              f"{ls['mean']:10.2f} {ls['p50']:7.2f} {ls['p99']:7.2f}")

    print("\nTable 2 - SqliteSaver.put() called directly (serialize + INSERT + COMMIT), "
          "N calls, ms: mean p50 p99")
    for label, msz, _, la, ls, gs, pu, hi in rows:
        print(f"{label:>8} | put() {f(pu['put'])}")

    print("\nTable 3 - storage per checkpoint (memory unchanged between checkpoints)")
    print(f"{'payload':>8} | {'ckpt rows':>9} {'blob B/ckpt':>12} {'DB growth B/ckpt':>17} "
          f"{'writes-table B/step':>19} | {'put(): DB B/ckpt':>16}")
    print(f"{'':>8} | {'(sync run)':>9} {'(msgpack)':>12} {'(after WAL trunc)':>17} "
          f"{'(excl. 1x input)':>19} | {'':>16}")
    for label, msz, _, la, ls, gs, pu, hi in rows:
        print(f"{label:>8} | {ls['nck']:>9} {ls['avg_blob']:>12,.0f} {ls['growth']:>17,.0f} "
              f"{ls['writes_per_step']:>19,.0f} | {pu['growth']:>16,.0f}")

    print("\nTable 4 - load latest state, thread with N+1 checkpoints, ms")
    print(f"{'payload':>8} | {'ckpts':>5} | {'get_state 1st (new conn)':>24} | "
          f"{'get_state warm: mean p50 p99':>28} | {'get_tuple warm: mean p50 p99':>28}")
    for label, msz, _, la, ls, gs, pu, hi in rows:
        print(f"{label:>8} | {gs['nck']:>5} | {gs['first']:>24.2f} | {f(gs['warm']):>28} | "
              f"{f(gs['get_tuple']):>28}")

    print(f"\nTable 5 - interrupt -> resume cycle on one thread, {a.cycles} cycles "
          "(default durability), ms: mean p50 p99")
    print(f"{'payload':>8} | {'invoke->interrupt':>23} | {'Command(resume)':>23} | "
          f"{'full cycle':>23} | {'ckpts/cycle':>11} {'DB B/cycle':>12}")
    for label, msz, _, la, ls, gs, pu, hi in rows:
        print(f"{label:>8} | {f(hi['interrupt'])} | {f(hi['resume'])} | {f(hi['cycle'])} | "
              f"{hi['ck_per_cycle']:>11.2f} {hi['growth_per_cycle']:>12,.0f}")

    p = rows[0][7]["paused"]
    if p:
        print("\nWhile paused (1 KB run, cycle 2): next =", p["next"], "| interrupts =", p["interrupts"])
        print(f"  latest checkpoint row: {p['ckpt_bytes']} B; writes rows on it "
              "(task_id[:8], channel, type, bytes):")
        for tid_, ch, ty, ln in p["writes"]:
            print(f"    {tid_[:8]}  {ch:<14} {ty:<8} {ln}")
    print(f"\ntotal benchmark wall time: {time.perf_counter() - T0:.1f} s")


if __name__ == "__main__":
    main()
