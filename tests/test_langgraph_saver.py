"""SafeRunSaver against LangGraph's published conformance suite, plus what the suite does not check."""

from __future__ import annotations

import itertools
import operator
import random
import sqlite3
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import ProgressCallbacks
from langgraph.graph import END, START, StateGraph
from sqlalchemy import func, select, update

from saferun.errors import ArtifactCorrupted, InvalidInput
from saferun.integrations.langgraph.checkpoint import SafeRunSaver
from saferun.storage.artifacts import ArtifactStore
from saferun.storage.database import Database
from saferun.storage.schema import blobs, lg_blobs, lg_checkpoints, utcnow


async def test_conformance_all_capabilities(db: Database) -> None:
    @checkpointer_test(name="SafeRunSaver")
    async def saferun_saver() -> AsyncIterator[SafeRunSaver]:
        yield SafeRunSaver(db)

    report = await validate(saferun_saver, progress=ProgressCallbacks.verbose())
    report.print_report()
    assert report.passed_all_base()
    assert report.passed_all(), (
        "every extended capability must pass too (copy_thread, delete_for_runs, prune)"
    )
    for name, result in report.results.items():
        assert result.detected and result.tests_failed == 0 and result.tests_skipped == 0, name
    assert sum(r.tests_passed for r in report.results.values()) >= 80


# -- a real graph on the saver ---------------------------------------------------------------------------
class State(TypedDict):
    big: str
    counter: int
    messages: Annotated[list[str], operator.add]
    extra: Any


def _graph(saver: SafeRunSaver, steps: int = 3) -> Any:
    builder = StateGraph(State)
    names = [f"step{i}" for i in range(steps)]
    for i, name in enumerate(names):
        builder.add_node(name, lambda s, i=i: {"counter": s["counter"] + 1, "messages": [f"message {i}"]})
    builder.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    return builder.compile(checkpointer=saver)


def _blob_bytes(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(blobs.c.stored_size), 0))).scalar_one())


def test_graph_round_trip_and_unchanged_channel_costs_nothing(db: Database) -> None:
    saver = SafeRunSaver(db)
    big = random.Random(1).randbytes(500_000).hex()  # 1 MB that does not compress away
    graph = _graph(saver, steps=1)
    config = {"configurable": {"thread_id": "t1"}}
    graph.invoke({"big": big, "counter": 0, "messages": [], "extra": None}, config)
    after_first = _blob_bytes(db)
    graph = _graph(saver, steps=6)
    graph.invoke({"counter": 0}, {"configurable": {"thread_id": "t1"}})
    state = graph.get_state(config)
    assert state.values["big"] == big and state.values["counter"] == 6
    # six more checkpoints with the 1 MB channel unchanged: a few small blobs, nowhere near another 1 MB copy
    assert _blob_bytes(db) - after_first < 20_000
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(lg_checkpoints)).scalar_one() >= 8


def test_unknown_thread_is_none(db: Database) -> None:
    saver = SafeRunSaver(db)
    assert saver.get_tuple({"configurable": {"thread_id": "nobody"}}) is None
    assert saver.get({"configurable": {"thread_id": "nobody", "checkpoint_id": "x"}}) is None
    assert list(saver.list({"configurable": {"thread_id": "nobody"}})) == []
    state = _graph(saver).get_state({"configurable": {"thread_id": "nobody"}})
    assert state.values == {} and state.next == ()


def test_unserializable_channel_names_the_channel_and_writes_nothing(db: Database) -> None:
    saver = SafeRunSaver(db)
    graph = _graph(saver, steps=1)
    with pytest.raises(InvalidInput) as info:
        graph.invoke(
            {"big": "x", "counter": 0, "messages": [], "extra": object()},
            {"configurable": {"thread_id": "u"}},
        )
    assert "extra" in str(info.value)
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(lg_checkpoints)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(lg_blobs)).scalar_one() == 0


def test_tampered_channel_blob_is_an_error_on_read(db: Database) -> None:
    saver = SafeRunSaver(db)
    graph = _graph(saver, steps=2)
    config = {"configurable": {"thread_id": "tamper"}}
    graph.invoke({"big": "secret payload " * 100, "counter": 0, "messages": [], "extra": None}, config)
    with db.transaction() as conn:
        rows = conn.execute(select(blobs.c.sha256, blobs.c.data).where(blobs.c.kind == "chunk")).all()
        for sha, data in rows:
            if not data:
                continue
            flipped = bytes([data[0] ^ 0x01]) + data[1:]
            conn.execute(update(blobs).where(blobs.c.sha256 == sha).values(data=flipped))
    fresh = SafeRunSaver(Database(db.url) if db.is_sqlite else db)
    fresh.db.artifacts = ArtifactStore()  # an empty cache, as a process that starts afresh has: it reads
    fresh.db.artifacts._cache.max_bytes = 0  # the stored bytes (this process cached what it wrote)
    with pytest.raises(ArtifactCorrupted):
        fresh.get_tuple(config)


def test_a_state_this_process_wrote_is_read_back_without_fetching_its_blobs(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its commit, a ``put`` leaves the parts it wrote in the verified cache (their keys are the
    hashes of those very bytes), so the interrupt -> resume read of that state fetches no blob: on
    PostgreSQL that was two round trips per read. A ``put`` whose transaction fails leaves nothing."""
    from saferun.integrations.langgraph import checkpoint as module

    saver = SafeRunSaver(db)
    graph = _graph(saver, steps=2)
    config = {"configurable": {"thread_id": "written"}}
    graph.invoke({"big": "b" * 3000, "counter": 0, "messages": [], "extra": None}, config)
    fetched: list[int] = []
    real_get_many = db.artifacts.get_many

    def counting(conn: Any, uris: Any, only: Any = None) -> Any:
        fetched.append(len(uris))
        return real_get_many(conn, uris, only)

    monkeypatch.setattr(db.artifacts, "get_many", counting)
    assert graph.get_state(config).values["counter"] == 2
    assert fetched == []  # every channel's artifact was in the cache: nothing read from the store

    def fail(*_args: Any, **_kw: Any) -> None:
        raise RuntimeError("the checkpoint row could not be written")

    checkpoint = saver.get_tuple(config).checkpoint
    changed = {**checkpoint, "id": "1f1f0000-0000-6000-8000-000000000001"}
    changed["channel_values"] = {**checkpoint["channel_values"], "counter": 99}
    monkeypatch.setattr(module.UPSERT_CHECKPOINT, "execute", fail)
    with pytest.raises(RuntimeError):
        saver.put(config, changed, {}, {"counter": "99.0"})
    from saferun.storage.artifact_blobs import blob_key

    written = saver.serde.dumps_typed(99)[1]
    assert db.artifacts._cache.part(blob_key(written)) is None  # rolled back: not remembered


def test_warm_get_state_is_two_selects_and_sees_deletes_and_copies(sqlite_db: Database) -> None:
    """Warm, a read is what LangGraph's SqliteSaver does: the checkpoint row and its pending writes, on a
    long-lived per-thread connection. The blob rows it remembered are forgotten when this process deletes
    or copies a thread, so a re-created thread's values are read again, not served from memory."""
    from saferun.storage import bare_reads

    saver = SafeRunSaver(sqlite_db)
    config = {"configurable": {"thread_id": "warm"}}
    graph = _graph(saver, steps=3)
    graph.invoke({"big": "b" * 5000, "counter": 0, "messages": [], "extra": None}, config)
    assert graph.get_state(config).values["counter"] == 3  # fills the verified-parts and blob-row caches
    statements: list[str] = []
    reader = bare_reads.thread_connection(sqlite_db)
    reader.set_trace_callback(statements.append)
    try:
        state = graph.get_state(config)
    finally:
        reader.set_trace_callback(None)
    assert state.values["big"] == "b" * 5000 and state.values["counter"] == 3
    assert [s.split()[0].lower() for s in statements] == ["select", "select"], statements
    assert "lg_checkpoints" in statements[0] and "lg_writes" in statements[1]

    saver.copy_thread("warm", "copy")
    copied = {"configurable": {"thread_id": "copy"}}
    assert graph.get_state(copied).values["big"] == "b" * 5000
    saver.delete_thread("warm")
    assert saver.get_tuple(config) is None
    graph = _graph(saver, steps=1)
    graph.invoke({"big": "new", "counter": 0, "messages": [], "extra": None}, config)
    assert graph.get_state(config).values["big"] == "new"
    with pytest.raises(sqlite3.OperationalError, match="readonly database"):
        reader.execute("delete from lg_checkpoints")  # the bare reader can never write


@pytest.mark.postgres
def test_postgres_warm_reads_survive_a_dropped_connection(pg_db: Database) -> None:
    """The PostgreSQL bare reader is one autocommit, read-only connection per thread: a warm read is one
    SELECT with no BEGIN/ROLLBACK round trips, and a connection the server drops is replaced."""
    from saferun.storage import bare_reads

    saver = SafeRunSaver(pg_db)
    config = {"configurable": {"thread_id": "pg-warm"}}
    graph = _graph(saver, steps=2)
    graph.invoke({"big": "p" * 3000, "counter": 0, "messages": [], "extra": None}, config)
    assert graph.get_state(config).values["counter"] == 2
    reader = bare_reads.thread_connection(pg_db)
    assert reader is not None and reader.autocommit
    with pytest.raises(Exception, match="read-only transaction"):
        reader.execute("delete from lg_checkpoints")
    with pg_db.transaction() as conn:
        conn.exec_driver_sql(f"select pg_terminate_backend({reader.info.backend_pid})")
    assert graph.get_state(config).values["big"] == "p" * 3000  # a new connection, the same answer
    assert bare_reads.thread_connection(pg_db) is not reader


@pytest.mark.postgres
def test_a_postgres_read_is_one_statement_with_its_channels_and_writes(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL each statement is a round trip, so a checkpoint, the rows of its channel versions and
    its pending writes come in one SELECT (by the versions column of migration 0022), as PostgresSaver
    reads; a saver that has remembered nothing still needs only that one. A row written before 0022 (no
    versions column) is read the previous way, to the same answer."""
    import psycopg

    saver = SafeRunSaver(pg_db)
    config = {"configurable": {"thread_id": "pg-one", "checkpoint_ns": ""}}
    graph = _graph(saver, steps=2)
    graph.invoke({"big": "q" * 3000, "counter": 0, "messages": [], "extra": None}, config)
    latest = saver.get_tuple(config)  # verifies the parts: the reads below find them in this process
    assert latest is not None
    saver.put_writes(latest.config, [("counter", 7), ("messages", ["pending"])], task_id="t1")
    executed: list[str] = []
    real = psycopg.Cursor.execute

    def spy(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        executed.append(str(query))
        return real(self, query, params, **kw)

    monkeypatch.setattr(psycopg.Cursor, "execute", spy)
    got = SafeRunSaver(pg_db).get_tuple(config)  # a new saver: no blob rows remembered
    assert len(executed) == 1 and "lg_blobs" in executed[0] and "lg_writes" in executed[0], executed
    assert got is not None and got.checkpoint["channel_values"]["big"] == "q" * 3000
    assert got.checkpoint["channel_values"]["counter"] == 2
    assert got.pending_writes == [("t1", "counter", 7), ("t1", "messages", ["pending"])]
    by_id = SafeRunSaver(pg_db).get_tuple(latest.config)
    assert by_id is not None and by_id.checkpoint == got.checkpoint and len(executed) == 2

    assert b"channel_versions" not in _stored_checkpoint_bytes(pg_db, "pg-one")  # kept once, in the column

    monkeypatch.setattr(psycopg.Cursor, "execute", real)
    legacy = SafeRunSaver(pg_db)
    legacy._one_statement_reads = False  # writes rows as before 0022: versions in the bytes, column NULL
    old_config = {"configurable": {"thread_id": "pg-old", "checkpoint_ns": ""}}
    _graph(legacy, steps=2).invoke(
        {"big": "q" * 3000, "counter": 0, "messages": [], "extra": None}, old_config
    )
    assert b"channel_versions" in _stored_checkpoint_bytes(pg_db, "pg-old")
    monkeypatch.setattr(psycopg.Cursor, "execute", spy)
    executed.clear()
    old = SafeRunSaver(pg_db).get_tuple(old_config)
    assert len(executed) == 3, executed  # the row, its channels' rows, its writes
    assert old is not None and old.checkpoint["channel_values"] == {
        k: v for k, v in got.checkpoint["channel_values"].items() if k in old.checkpoint["channel_values"]
    }
    assert old.checkpoint["channel_values"]["big"] == "q" * 3000
    SafeRunSaver(pg_db).prune(["pg-one", "pg-old"])  # keeps the latest's channel rows: found by the column
    for thread in (config, old_config):
        kept = SafeRunSaver(pg_db).get_tuple(thread)
        assert kept is not None and kept.checkpoint["channel_values"]["big"] == "q" * 3000


def _stored_checkpoint_bytes(db: Database, thread_id: str) -> bytes:
    with db.read() as conn:
        return b"".join(
            bytes(row[0])
            for row in conn.exec_driver_sql(
                "select checkpoint from lg_checkpoints where thread_id = %(t)s", {"t": thread_id}
            )
        )


def test_a_small_step_is_two_short_transactions_without_a_probe(sqlite_db: Database) -> None:
    """A step's ``put`` and ``put_writes`` on the driver connection (``storage.bare_writes``): what
    SQLite runs is BEGIN IMMEDIATE, the INSERTs and COMMIT, twice; small values are inserted if absent,
    not probed first."""
    from langgraph.checkpoint.base import empty_checkpoint
    from sqlalchemy import event

    saver = SafeRunSaver(sqlite_db)
    sqlite_db.engine.dispose()  # new pooled connections, each traced from its first statement
    statements: list[str] = []
    event.listen(sqlite_db.engine, "connect", lambda dbapi, _: dbapi.set_trace_callback(statements.append))
    checkpoint = empty_checkpoint()
    versions = {"counter": saver.get_next_version(None, None), "messages": saver.get_next_version(None, None)}
    checkpoint["channel_values"] = {"counter": 1, "messages": ["hello"]}
    checkpoint["channel_versions"] = versions
    config = saver.put({"configurable": {"thread_id": "s", "checkpoint_ns": ""}}, checkpoint, {}, versions)
    saver.put_writes(config, [("counter", 2)], task_id="task-1")

    heads = [" ".join(s.split()[:3]).upper() for s in statements]
    assert heads == [
        "BEGIN IMMEDIATE",
        "INSERT INTO BLOBS",  # the two values and the manifest (executemany; nothing asked back)
        "INSERT INTO BLOBS",
        "INSERT INTO BLOBS",
        "INSERT INTO ARTIFACTS",
        "INSERT INTO LG_BLOBS",  # executemany: one per channel
        "INSERT INTO LG_BLOBS",
        "INSERT INTO LG_CHECKPOINTS",
        "COMMIT",
        "BEGIN IMMEDIATE",
        "INSERT INTO LG_WRITES",
        "COMMIT",
    ], statements
    fresh = SafeRunSaver(Database(sqlite_db.url))
    got = fresh.get_tuple(config)
    assert got is not None and got.checkpoint["channel_values"] == {"counter": 1, "messages": ["hello"]}
    assert got.pending_writes == [("task-1", "counter", 2)]


@pytest.mark.postgres
def test_a_small_postgres_step_is_one_round_trip_per_transaction(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a step's ``put`` and ``put_writes`` each wait for the server once, as
    PostgresSaver's autocommit pipeline does: no BEGIN sync, no RETURNING of the stored blobs' keys (the
    saver keeps only the uri), the COMMIT answered with the pipeline's closing sync."""
    from langgraph.checkpoint.base import empty_checkpoint
    from test_bare_writes import RoundTrips

    saver = SafeRunSaver(pg_db)
    trips = RoundTrips(monkeypatch)
    checkpoint = empty_checkpoint()
    versions = {"counter": saver.get_next_version(None, None), "messages": saver.get_next_version(None, None)}
    checkpoint["channel_values"] = {"counter": 1, "messages": ["hello"]}
    checkpoint["channel_versions"] = versions
    start = {"configurable": {"thread_id": "pg-step", "checkpoint_ns": ""}}
    config = saver.put(start, checkpoint, {}, versions)
    assert (trips.syncs, trips.fetches) == (1, 0)
    saver.put_writes(config, [("counter", 2), ("messages", ["bye"])], task_id="task-1")
    assert (trips.syncs, trips.fetches) == (2, 0)
    fresh = Database(pg_db.url, migrate=False)
    try:
        got = SafeRunSaver(fresh).get_tuple(config)
    finally:
        fresh.dispose()
    assert got is not None and got.checkpoint["channel_values"] == {"counter": 1, "messages": ["hello"]}
    assert sorted(got.pending_writes) == [("task-1", "counter", 2), ("task-1", "messages", ["bye"])]


def test_first_get_state_reads_on_the_bare_cursor_and_falls_back_when_a_row_vanishes(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first read (nothing verified in this process yet) fetches and verifies the artifacts on the
    per-thread bare cursor, not through SQLAlchemy; if a row it needs is gone (a concurrent delete or
    prune), the transactional path answers instead."""
    from sqlalchemy import event

    from saferun.errors import ArtifactNotFound
    from saferun.storage.artifacts import ArtifactStore

    config = {"configurable": {"thread_id": "cold"}}
    _graph(SafeRunSaver(sqlite_db), steps=2).invoke(
        {"big": "c" * 20_000, "counter": 0, "messages": [], "extra": None}, config
    )
    engine_statements: list[str] = []
    event.listen(sqlite_db.engine, "before_cursor_execute", lambda *a: engine_statements.append(a[2]))

    sqlite_db.artifacts = ArtifactStore()  # nothing verified yet
    state = _graph(SafeRunSaver(sqlite_db)).get_state(config)
    assert state.values["big"] == "c" * 20_000 and state.values["counter"] == 2
    assert engine_statements == []  # all on the bare cursor

    sqlite_db.artifacts = ArtifactStore()
    real_get, real_parts = ArtifactStore.get_many, ArtifactStore.get_parts
    calls: list[object] = []
    gone: list[object] = []

    def vanished(self: ArtifactStore, conn: Any, keys: Any, fetched: Any = None) -> dict[str, bytes]:
        # the bare read fetches the parts by the keys on their rows (migration 0025): one is gone, once
        if not gone:
            gone.append(conn)
            calls.append(type(conn).__name__)
            raise ArtifactNotFound(next(iter(keys)))
        return real_parts(self, conn, keys, fetched)

    def through_manifests(
        self: ArtifactStore, conn: Any, uris: Any, only: Any = None
    ) -> dict[str, dict[str, bytes]]:
        calls.append(type(conn).__name__)
        return real_get(self, conn, uris, only)

    monkeypatch.setattr(ArtifactStore, "get_parts", vanished)
    monkeypatch.setattr(ArtifactStore, "get_many", through_manifests)
    state = _graph(SafeRunSaver(sqlite_db)).get_state(config)
    assert state.values["big"] == "c" * 20_000 and state.values["counter"] == 2
    assert calls[0] == "BareConnection" and "Connection" in calls[1:]
    assert any("lg_checkpoints" in s for s in engine_statements)  # the transactional path answered


def test_a_cold_read_fetches_parts_by_their_keys_and_old_rows_through_manifests(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each channel version's row carries its part's key (migration 0025): a first read fetches the parts
    directly and checks them against those keys, no manifest (on PostgreSQL the first read of a thread
    brings them with the checkpoint's row: one statement); a row from before the migration (no key) is
    read through its artifact's manifest as before, with the same values."""
    from saferun.storage import artifact_blobs
    from saferun.storage import artifacts as artifacts_module

    config = {"configurable": {"thread_id": "keys"}}
    _graph(SafeRunSaver(db), steps=2).invoke(
        {"big": "k" * 3_000, "counter": 0, "messages": [], "extra": None}, config
    )
    with db.read() as conn:
        keys = conn.execute(select(lg_blobs.c.part_key).where(lg_blobs.c.thread_id == "keys")).scalars().all()
        assert keys and all(k is None or len(k) == 64 for k in keys) and any(keys)

    kinds: list[str] = []
    real_fetch = artifact_blobs.fetch

    def recording(conn: Any, wanted: Any) -> Any:
        found = real_fetch(conn, wanted)
        kinds.extend(row.kind for row in found.values())
        return found

    monkeypatch.setattr(artifact_blobs, "fetch", recording)  # the part trees' levels
    monkeypatch.setattr(artifacts_module, "fetch", recording)  # the manifests' level
    db.artifacts = ArtifactStore()  # nothing verified in this process
    state = _graph(SafeRunSaver(db)).get_state(config)
    assert state.values["big"] == "k" * 3_000 and state.values["counter"] == 2
    assert artifact_blobs.MANIFEST not in kinds, kinds
    if db.is_sqlite:
        assert kinds  # the parts, by their keys
    else:  # PostgreSQL's first read of a thread brings the parts' blobs with the row: nothing else
        assert kinds == [], kinds

    with db.transaction() as conn:  # as written before the migration
        conn.execute(update(lg_blobs).where(lg_blobs.c.thread_id == "keys").values(part_key=None))
    kinds.clear()
    db.artifacts = ArtifactStore()
    state = _graph(SafeRunSaver(db)).get_state(config)
    assert state.values["big"] == "k" * 3_000 and state.values["counter"] == 2
    assert artifact_blobs.MANIFEST in kinds


def test_postgresql_cold_read_looks_up_each_part_by_its_key(pg_db: Database) -> None:
    """The first read of a thread brings its parts' blobs in the same statement: by a key lookup per
    version, never a scan or hash join over the blobs table (which holds every artifact's chunks)."""
    saver = SafeRunSaver(pg_db)
    config = {"configurable": {"thread_id": "plan"}}
    _graph(saver, steps=3).invoke({"big": "p" * 5_000, "counter": 0, "messages": [], "extra": None}, config)
    rows = [
        {
            "sha256": f"{i:064x}",
            "kind": "chunk",
            "codec": "raw",
            "raw_size": 1,
            "stored_size": 1,
            "data": b"x",
            "created_at": utcnow(),
        }
        for i in range(3_000)
    ]
    with pg_db.transaction() as conn:
        conn.execute(blobs.insert(), rows)
    with pg_db.connection() as conn:
        conn.exec_driver_sql("ANALYZE blobs")
        conn.exec_driver_sql("ANALYZE lg_blobs")
        sql = saver._sql.cold_latest.replace("%s", "'plan'", 1).replace("%s", "''", 1)
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))
    assert "Index Scan using pk_blobs on blobs" in plan, plan
    assert "Seq Scan on blobs" not in plan and "Hash Join" not in plan, plan
