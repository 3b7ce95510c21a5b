"""One LangGraph graph, four checkpointers, one run: LangGraph's SqliteSaver and PostgresSaver against
SafeRun's SafeRunSaver on SQLite and on PostgreSQL.

The graph's state is what long-running agents carry: a large channel that never changes after the first
step (``big``: 1 KB / 100 KB / 1 MB of incompressible text), a small one that changes every step
(``counter``) and an append-only message list (``messages``, one short message per step). Each saver
gets a fresh database; the graph is fed ``big`` once, then loops ``--steps`` supersteps with
``durability="sync"`` (every checkpoint committed before the next step starts).

Measured per saver and size:
  bytes/ckpt   payload bytes the saver added per checkpoint during the loop (checkpoint + metadata +
               channel values + writes; for SafeRun, the blob bytes newly stored plus its rows' payloads)
  step ms      wall time of the looping ``invoke`` divided by the number of steps
  get_state    ``graph.get_state`` latency: first (a new saver on the same database: for LangGraph's a
               new connection, for SafeRun's a new read connection (both opened before the timer starts)
               and an empty cache of verified parts,
               so every byte is fetched, decompressed and hash-checked; the median of 7 such saver
               openings) and warm (mean of 50 more calls)
  interrupt    one ``interrupt()`` -> ``Command(resume=...)`` cycle on the same state (mean of --cycles)

    .venv/bin/python benchmarks/bench_langgraph_saver.py [--steps 50] [--cycles 20] [--sizes 1KB,100KB,1MB]
        [--repeat N] [--calls]   (--calls: also each saver call's median time inside the graph)

PostgreSQL comes from SAFERUN_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test); each
saver gets its own schema, dropped at the end. Without PostgreSQL, its two columns are skipped.
"""

from __future__ import annotations

import argparse
import operator
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from sqlalchemy import Text, cast, create_engine, func, select, text

from saferun.integrations.langgraph.checkpoint import SafeRunSaver
from saferun.storage.artifacts import ArtifactStore
from saferun.storage.bare_reads import close_thread_connection, thread_connection
from saferun.storage.database import Database
from saferun.storage.schema import blobs, lg_checkpoints, lg_writes

PG = os.environ.get("SAFERUN_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SIZES = {"1KB": 1024, "100KB": 100 * 1024, "1MB": 1024 * 1024}
FIRST_SAMPLES = 7  # first (cold) reads per saver and size, each on a newly opened saver; the median is shown


class State(TypedDict):
    big: str
    counter: int
    limit: int
    messages: Annotated[list[str], operator.add]


def step(state: State) -> dict[str, Any]:
    return {"counter": state["counter"] + 1, "messages": [f"step {state['counter']} done"]}


def route(state: State) -> str:
    return "step" if state["counter"] < state["limit"] else END


def ask(state: State) -> dict[str, Any]:
    answer = interrupt({"question": "go on?", "counter": state["counter"]})
    return {"counter": state["counter"] + (1 if answer == "yes" else 0)}


def loop_graph(saver: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", route)
    return builder.compile(checkpointer=saver)


def hitl_graph(saver: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    return builder.compile(checkpointer=saver)


# -------------------------------------------------------------------------------------------- the savers
@dataclass
class Subject:
    """One saver under test: how to open it (again, cold) and how many payload bytes it holds."""

    name: str
    open: Callable[[], Any]  # a context manager yielding a saver
    payload_bytes: Callable[[], int]
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def _sqlite_saver(path: str) -> Subject:
    from langgraph.checkpoint.sqlite import SqliteSaver

    @contextmanager
    def open_() -> Iterator[Any]:
        conn = sqlite3.connect(path, check_same_thread=False)
        try:
            yield SqliteSaver(conn)
        finally:
            conn.close()

    def payload() -> int:
        with sqlite3.connect(path) as conn:
            a = conn.execute(
                "select coalesce(sum(length(checkpoint) + length(metadata)), 0) from checkpoints"
            ).fetchone()[0]
            b = conn.execute("select coalesce(sum(length(value)), 0) from writes").fetchone()[0]
        return int(a) + int(b)

    return Subject("LG SqliteSaver", open_, payload)


def _pg_url(schema: str) -> str:
    sep = "&" if "?" in PG else "?"
    return f"{PG}{sep}options=-csearch_path%3D{schema}"


def _new_schema() -> tuple[str, Callable[[], None]]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'create schema "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'drop schema if exists "{schema}" cascade'))
        admin.dispose()

    return schema, drop


def _postgres_saver() -> Subject:
    from langgraph.checkpoint.postgres import PostgresSaver

    schema, drop = _new_schema()
    url = _pg_url(schema)
    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()

    @contextmanager
    def open_() -> Iterator[Any]:
        with PostgresSaver.from_conn_string(url) as saver:
            yield saver

    def payload() -> int:
        import psycopg

        with psycopg.connect(url) as conn:
            a = conn.execute(
                "select coalesce(sum(octet_length(checkpoint::text) + octet_length(metadata::text)), 0)"
                " from checkpoints"
            ).fetchone()[0]
            b = conn.execute("select coalesce(sum(octet_length(blob)), 0) from checkpoint_blobs").fetchone()[
                0
            ]
            c = conn.execute("select coalesce(sum(octet_length(blob)), 0) from checkpoint_writes").fetchone()[
                0
            ]
        return int(a) + int(b) + int(c)

    return Subject("LG PostgresSaver", open_, payload, [drop])


def _saferun_subject(name: str, url: str, cleanup: list[Callable[[], None]]) -> Subject:
    db = Database(url)  # migrated here, outside the timings; one engine per subject, as in one process
    cleanup = [db.dispose, *cleanup]

    @contextmanager
    def open_() -> Iterator[Any]:
        db.artifacts = ArtifactStore()  # an empty cache of verified parts: every byte read is checked again
        # and a new read connection, opened here as LangGraph's savers open theirs before the timer starts
        close_thread_connection(db)
        thread_connection(db)
        yield SafeRunSaver(db)

    def payload() -> int:
        db = Database(url, migrate=False)
        try:
            with db.read() as conn:
                a = conn.execute(select(func.coalesce(func.sum(blobs.c.stored_size), 0))).scalar_one()
                b = conn.execute(
                    select(
                        func.coalesce(
                            func.sum(
                                func.length(lg_checkpoints.c.checkpoint)
                                + func.length(lg_checkpoints.c.metadata)
                            ),
                            0,
                        )
                    )
                ).scalar_one()
                c = conn.execute(
                    select(func.coalesce(func.sum(func.length(lg_writes.c.value)), 0))
                ).scalar_one()
                # the checkpoint's channel versions, kept as JSON on PostgreSQL for one-statement reads
                d = conn.execute(
                    select(
                        func.coalesce(func.sum(func.length(cast(lg_checkpoints.c.channel_versions, Text))), 0)
                    )
                ).scalar_one()
        finally:
            db.dispose()
        return int(a) + int(b) + int(c) + int(d)

    return Subject(name, open_, payload, cleanup)


_ORDER = ["LG SqliteSaver", "SafeRun SQLite", "LG PostgresSaver", "SafeRun PG"]  # the table's row order


def subjects(tmp: str, size: str, with_pg: bool) -> list[Subject]:
    out = [
        _sqlite_saver(os.path.join(tmp, f"lg_{size}.db")),
        _saferun_subject("SafeRun SQLite", f"sqlite:///{tmp}/saferun_{size}.db", []),
    ]
    if with_pg:
        out.append(_postgres_saver())
        schema, drop = _new_schema()
        pg = _pg_url(schema).replace("postgresql://", "postgresql+psycopg://", 1)
        out.append(_saferun_subject("SafeRun PG", pg, [drop]))
    return out


# ------------------------------------------------------------------------------------------ measuring
CALLS = ("put", "put_writes", "get_tuple")


@contextmanager
def timed_calls(saver: Any, stage: str, into: dict[str, list[float]] | None) -> Iterator[None]:
    """With ``--calls``: time each ``put`` / ``put_writes`` / ``get_tuple`` the graph makes (ms), keyed
    ``<stage>.<method>``. Inside a graph the calls run on LangGraph's threads, next to its own Python, so
    they can cost more than the same calls replayed alone; this says where a step or a cycle went."""
    if into is None:
        yield
        return

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                into.setdefault(f"{stage}.{name}", []).append((time.perf_counter() - start) * 1000)

        return timed

    for name in CALLS:
        setattr(saver, name, wrap(name, getattr(saver, name)))
    try:
        yield
    finally:
        for name in CALLS:
            delattr(saver, name)  # the instance attribute goes; the class's method is back


def measure(subject: Subject, size: int, steps: int, cycles: int, calls: bool = False) -> dict[str, float]:
    big = random.Random(size).randbytes(size // 2).hex()
    timings: dict[str, list[float]] | None = {} if calls else None
    thread = {"configurable": {"thread_id": "bench"}, "recursion_limit": steps + 10}
    with subject.open() as saver:
        graph = loop_graph(saver)
        graph.invoke({"big": big, "counter": 0, "limit": 1, "messages": []}, thread, durability="sync")
        before = subject.payload_bytes()
        with timed_calls(saver, "step", timings):
            start = time.perf_counter()
            graph.invoke({"limit": steps + 1}, thread, durability="sync")
            step_ms = (time.perf_counter() - start) * 1000 / steps
        written = subject.payload_bytes() - before
        checkpoints = len(list(saver.list(thread))) - 2  # the loop's own (input + steps)
    firsts = []
    for _ in range(FIRST_SAMPLES):  # each a new saver (new connection, nothing verified yet): the median
        with subject.open() as saver:
            graph = loop_graph(saver)
            start = time.perf_counter()
            first = graph.get_state(thread)
            firsts.append((time.perf_counter() - start) * 1000)
            assert first.values["big"] == big and first.values["counter"] == steps + 1
    with subject.open() as saver:
        graph = loop_graph(saver)
        graph.get_state(thread)
        warm = []
        for _ in range(50):
            start = time.perf_counter()
            graph.get_state(thread)
            warm.append((time.perf_counter() - start) * 1000)
    with subject.open() as saver:
        graph = hitl_graph(saver)
        hitl = {"configurable": {"thread_id": "hitl"}}
        graph.invoke({"big": big, "counter": 0, "limit": 0, "messages": []}, hitl, durability="sync")
        graph.invoke(Command(resume="yes"), hitl, durability="sync")
        times = []
        with timed_calls(saver, "cycle", timings):
            for _ in range(cycles):
                start = time.perf_counter()
                graph.invoke({"counter": 0}, hitl, durability="sync")  # runs to the interrupt
                out = graph.invoke(Command(resume="yes"), hitl, durability="sync")
                times.append((time.perf_counter() - start) * 1000)
                assert out["counter"] == 1
    result = {
        "bytes": written / max(checkpoints, 1),
        "step": step_ms,
        "first": statistics.median(firsts),
        "warm": statistics.fmean(warm),
        "cycle": statistics.fmean(times),
    }
    for key, values in (timings or {}).items():
        result[key] = statistics.median(values)
    return result


def pg_available() -> bool:
    try:
        engine = create_engine(PG.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return True
    except Exception as exc:
        print(f"PostgreSQL not reachable at {PG} ({type(exc).__name__}): its columns are skipped")
        return False


def verdicts(size: str, runs: dict[str, list[dict[str, float]]]) -> list[str]:
    """The issue's targets, checked on the medians over the runs; with several runs, each ratio's spread
    (run by run, SafeRun over the peer measured in the same round) follows the verdict."""
    out = []
    slack = 1.2 if size == "1KB" else 1.0
    pairs = [("SafeRun SQLite", "LG SqliteSaver", "SqliteSaver")]
    if "LG PostgresSaver" in runs:
        pairs.append(("SafeRun PG", "LG PostgresSaver", "PostgresSaver"))
    for ours, peer, peer_name in pairs:
        sqlite = peer_name == "SqliteSaver"
        if size == "1MB":
            share = 0.01 if sqlite else 0.05
            out.append(_check(f"bytes <= {share:.0%} of {peer_name}", runs, ours, peer, "bytes", share))
        checks = (
            (("step", "step"), ("warm", "get_state warm"), ("first", "get_state first"))
            if sqlite
            else (
                ("step", "PG step"),
                ("warm", "PG get_state warm"),
                ("first", "PG get_state first"),
                ("cycle", "PG interrupt"),
            )
        )
        for key, label in checks:
            limit = slack if sqlite else 1.0
            shown = f"{label} <= {limit}x {peer_name}" if sqlite else f"{label} <= {peer_name}"
            out.append(_check(shown, runs, ours, peer, key, limit))
    return out


def _check(
    label: str, runs: dict[str, list[dict[str, float]]], ours: str, peer: str, key: str, limit: float
) -> str:
    ok = median(runs, ours, key) <= limit * median(runs, peer, key)
    ratios = [a[key] / b[key] for a, b in zip(runs[ours], runs[peer], strict=True) if b[key]]
    spread = ""
    if len(ratios) > 1:
        spread = f" (ratio {min(ratios):.2f}-{max(ratios):.2f}x over {len(ratios)} runs)"
    return f"{'met' if ok else 'MISSED'}: {label}{spread}"


def median(runs: dict[str, list[dict[str, float]]], name: str, key: str) -> float:
    return statistics.median(r[key] for r in runs[name])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--sizes", default="1KB,100KB,1MB")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds per size, each on fresh databases with the savers in alternating order; the table "
        "shows medians and the targets the spread of each ratio (this machine's run-to-run noise is "
        "larger than some of the gaps measured)",
    )
    parser.add_argument(
        "--calls",
        action="store_true",
        help="also time each saver call inside the graph (put, put_writes, get_tuple) and print their "
        "medians per stage: where a step and an interrupt cycle go",
    )
    args = parser.parse_args()
    with_pg = not args.no_postgres and pg_available()
    tmp = tempfile.mkdtemp(prefix="bench_lg_saver_")
    header = (
        "| size | saver | bytes/ckpt | step ms (sync) | get_state first ms | get_state warm ms "
        "| interrupt->resume ms |\n|---|---|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    notes = []
    call_keys = [f"{stage}.{name}" for stage in ("step", "cycle") for name in CALLS]
    call_lines = [
        "| size | saver | " + " | ".join(f"{k} ms" for k in call_keys) + " |",
        "|---|---|" + "---:|" * len(call_keys),
    ]
    try:
        for size in args.sizes.split(","):
            runs: dict[str, list[dict[str, float]]] = {}
            for round_ in range(args.repeat):
                folder = os.path.join(tmp, f"{size}_{round_}")
                os.makedirs(folder)
                order = subjects(folder, size, with_pg)
                if round_ % 2:
                    order.reverse()  # a drift in the machine's speed does not always favour one side
                for subject in order:
                    try:
                        r = measure(subject, SIZES[size], args.steps, args.cycles, args.calls)
                    finally:
                        for fn in subject.cleanup:
                            fn()
                    runs.setdefault(subject.name, []).append(r)
            for name, measured in sorted(runs.items(), key=lambda item: _ORDER.index(item[0])):
                m = {key: median(runs, name, key) for key in measured[0]}
                lines.append(
                    f"| {size} | {name} | {m['bytes']:,.0f} | {m['step']:.2f} | {m['first']:.2f} "
                    f"| {m['warm']:.2f} | {m['cycle']:.2f} |"
                )
                call_lines.append(
                    f"| {size} | {name} | "
                    + " | ".join(f"{m[k]:.3f}" if k in m else "-" for k in call_keys)
                    + " |"
                )
            notes.append(f"{size}: " + "; ".join(verdicts(size, runs)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rounds = f", medians of {args.repeat} rounds" if args.repeat > 1 else ""
    print(f"\n{args.steps} steps per loop, {args.cycles} interrupt cycles, durability='sync'{rounds}\n")
    print("\n".join(lines))
    print("\nTargets (on the medians):" if args.repeat > 1 else "\nTargets (this run):")
    print("\n".join(f"- {n}" for n in notes))
    if args.calls:
        print(
            "\nMedian time of each saver call inside the graph "
            "(ms; step = the loop, cycle = interrupt -> resume):\n"
        )
        print("\n".join(call_lines))


if __name__ == "__main__":
    main()
