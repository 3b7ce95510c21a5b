"""Garbage collection of the artifact store (``saferun.storage.gc``, ``saferun gc``, ``SafeRunSaver``).

Pruned LangGraph threads free their blobs; every other thread's checkpoints still read and verify (from a
process with an empty cache, so every byte is read back and hashed); a delta's base is kept while the
delta is; an artifact re-referenced while a collection runs is kept, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
from datetime import timedelta
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from sqlalchemy import func, insert, select, text

from saferun.errors import ArtifactNotFound, InvalidInput
from saferun.integrations.langgraph.checkpoint import SafeRunSaver
from saferun.storage import gc
from saferun.storage.artifact_blobs import references
from saferun.storage.artifacts import parse_uri
from saferun.storage.database import Database
from saferun.storage.schema import artifacts, blobs, lg_blobs, platform_artifacts, utcnow
from tests.cli_support import cli

NOW = timedelta(0)  # grace 0: everything stored before the call is old enough to collect


class State(TypedDict):
    big: str
    counter: int


def _graph(saver: SafeRunSaver, steps: int, edit: bool = False) -> Any:
    """``steps`` nodes; each bumps ``counter`` and, with ``edit``, changes one character of ``big`` (so
    ``big`` is stored as a delta against its previous version)."""
    builder = StateGraph(State)
    names = [f"step{i}" for i in range(steps)]

    def node(state: State, i: int) -> dict[str, Any]:
        out: dict[str, Any] = {"counter": state["counter"] + 1}
        if edit:
            at = 997 * (i + 1) % len(state["big"])
            out["big"] = state["big"][:at] + "#" + state["big"][at + 1 :]
        return out

    for i, name in enumerate(names):
        builder.add_node(name, lambda s, i=i: node(s, i))
    builder.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    return builder.compile(checkpointer=saver)


def _run(saver: SafeRunSaver, thread: str, big: str, steps: int = 3, edit: bool = False) -> None:
    _graph(saver, steps, edit).invoke({"big": big, "counter": 0}, {"configurable": {"thread_id": thread}})


def _big(seed: int, size: int = 40_000) -> str:
    return random.Random(seed).randbytes(size // 2).hex()  # does not compress away


def _fresh(db: Database) -> SafeRunSaver:
    """A saver as another process would have it: an empty verified cache, so reads hash stored bytes."""
    saver = SafeRunSaver(Database(db.url))
    saver.db.artifacts._cache.max_bytes = 0
    return saver


def _every_checkpoint(saver: SafeRunSaver, thread: str) -> list[dict[str, Any]]:
    """Every checkpoint of the thread, each loaded with its channel values (verified on read)."""
    listed = list(saver.list({"configurable": {"thread_id": thread}}))
    values = []
    for item in listed:
        loaded = saver.get_tuple(item.config)
        assert loaded is not None
        values.append(loaded.checkpoint["channel_values"])
    return values


def _count(db: Database, table: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_deleted_thread_is_freed_and_the_others_still_read_and_verify(db: Database) -> None:
    saver = SafeRunSaver(db)
    _run(saver, "gone", _big(1))
    _run(saver, "kept", _big(2))
    _run(saver, "shares", _big(1) + "!")  # most of "gone"'s big value: its chunks are shared
    before = _every_checkpoint(_fresh(db), "kept") + _every_checkpoint(_fresh(db), "shares")
    saver.delete_thread("gone")
    blobs_before = _count(db, blobs)

    report = saver.collect_garbage(grace=NOW)

    assert report.deleted_blobs > 0 and report.deleted_artifacts > 0 and not report.dry_run
    assert _count(db, blobs) == blobs_before - report.deleted_blobs
    reader = _fresh(db)
    assert _every_checkpoint(reader, "kept") + _every_checkpoint(reader, "shares") == before
    assert reader.get_tuple({"configurable": {"thread_id": "gone"}}) is None
    assert any(v.get("big") == _big(1) + "!" for v in _every_checkpoint(reader, "shares"))
    # nothing left to collect: a second run deletes nothing
    again = gc.collect(db, grace=NOW)
    assert (again.deleted_blobs, again.deleted_artifacts) == (0, 0)


def test_prune_keep_latest_then_gc_keeps_the_delta_bases_the_latest_needs(db: Database) -> None:
    saver = SafeRunSaver(db)
    _run(saver, "edited", _big(3), steps=6, edit=True)
    _run(saver, "other", _big(4), steps=2)
    latest = _fresh(db).get_tuple({"configurable": {"thread_id": "edited"}})
    assert latest is not None
    saver.prune(["edited"], strategy="keep_latest")

    report = gc.collect(db, grace=NOW)

    assert report.deleted_blobs > 0
    with db.read() as conn:
        uris = set(
            conn.execute(select(lg_blobs.c.artifact_uri).where(lg_blobs.c.artifact_uri.isnot(None))).scalars()
        )
        manifests = references(conn, [parse_uri(u) for u in uris])
        parts = {p for refs in manifests.values() for p in refs}
        deltas = conn.execute(select(blobs.c.sha256).where(blobs.c.kind == "delta")).scalars().all()
        bases = {refs[0] for refs in references(conn, deltas).values()}
        stored = set(conn.execute(select(blobs.c.sha256)).scalars())
    # the latest checkpoint's big value is a delta on versions no remaining checkpoint names: kept anyway
    assert deltas and bases - parts, "the edited channel should be stored as a chain of deltas"
    assert bases <= stored
    reader = _fresh(db)
    again = reader.get_tuple({"configurable": {"thread_id": "edited"}})
    assert again is not None
    assert again.checkpoint["channel_values"] == latest.checkpoint["channel_values"]
    assert len(_every_checkpoint(reader, "other")) == 4  # input, start, two steps


def test_young_unreferenced_artifacts_wait_for_the_grace_period(db: Database) -> None:
    with db.transaction() as conn:
        uri = db.artifacts.put_bytes(
            conn, b"stored, not yet referenced", artifact_type="report", metadata={}
        ).uri

    kept = gc.collect(db)  # default grace: an hour
    assert kept.deleted_blobs == 0
    dry = gc.collect(db, grace=NOW, dry_run=True)
    assert dry.dry_run and dry.deleted_blobs == 2 and dry.deleted_artifacts == 1  # its manifest and one chunk
    with db.read() as conn:
        assert db.artifacts.info(conn, uri) is not None

    gone = gc.collect(db, grace=NOW)
    assert (gone.deleted_blobs, gone.deleted_artifacts) == (2, 1)
    fresh = Database(db.url)
    with fresh.read() as conn, pytest.raises(ArtifactNotFound):
        fresh.artifacts.get(conn, uri)
    fresh.dispose()


def test_negative_grace_is_refused_naming_it(db: Database) -> None:
    with pytest.raises(InvalidInput) as info:
        gc.collect(db, grace=timedelta(seconds=-1))
    assert info.value.field == "grace"


def test_an_artifact_referenced_after_the_mark_is_revived(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.transaction() as conn:
        uri = db.artifacts.put(conn, {"a": _big(5).encode()}, artifact_type="state", metadata={}).uri
    real_mark = gc._mark
    calls = []

    def mark_then_reference(*args: Any) -> Any:
        out = real_mark(*args)
        if not calls:  # between the mark and the sweep, a writer stores the same value and refers to it
            with db.transaction() as conn:
                again = db.artifacts.put(conn, {"a": _big(5).encode()}, artifact_type="state", metadata={})
                assert again.new_bytes == 0  # deduplicated: it relies on the blobs already stored
                conn.execute(
                    insert(platform_artifacts).values(uri=again.uri, platform_id="p1", created_at=utcnow())
                )
        calls.append(1)
        return out

    monkeypatch.setattr(gc, "_mark", mark_then_reference)
    report = gc.collect(db, grace=NOW)

    assert report.revived > 0 and report.deleted_blobs == 0
    fresh = Database(db.url)
    with fresh.read() as conn:
        assert fresh.artifacts.get(conn, uri) == {"a": _big(5).encode()}
    fresh.dispose()


def test_a_writer_in_flight_holds_the_sweep_until_it_commits(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the sweep's lock closes: a writer's transaction found an unreferenced blob stored (so it
    does not store it again) and will refer to it when it commits; the sweep must not delete it."""
    value = {"a": _big(6).encode()}
    with db.transaction() as conn:
        uri = db.artifacts.put(conn, value, artifact_type="state", metadata={}).uri
    probed, marked, release = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with db.transaction() as conn:
                again = db.artifacts.put(conn, value, artifact_type="state", metadata={})
                assert again.new_bytes == 0
                probed.set()
                release.wait()
                conn.execute(
                    insert(platform_artifacts).values(uri=again.uri, platform_id="p1", created_at=utcnow())
                )
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)
            probed.set()

    real_mark = gc._mark

    def mark(*args: Any) -> Any:
        out = real_mark(*args)
        marked.set()
        return out

    monkeypatch.setattr(gc, "_mark", mark)
    reports: list[gc.GcReport] = []
    w = threading.Thread(target=writer, daemon=True)
    collector = threading.Thread(target=lambda: reports.append(gc.collect(db, grace=NOW)), daemon=True)
    waiting = 1  # SQLite: the sweep's BEGIN IMMEDIATE queues behind the writer's; nothing to observe
    try:
        w.start()
        assert probed.wait(60) and not errors
        collector.start()
        assert marked.wait(60)
        if not db.is_sqlite:  # see the sweep actually wait for the writer before letting it commit
            waiting = _sweep_waits_for_blobs(db)
    finally:
        release.set()
        w.join(60)
        collector.join(60)
    assert waiting, "the sweep should wait for the writer's transaction"
    assert not errors and reports
    assert reports[0].deleted_blobs == 0
    fresh = Database(db.url)
    with fresh.read() as conn:
        assert fresh.artifacts.get(conn, uri) == value
    fresh.dispose()


def _sweep_waits_for_blobs(db: Database) -> int:
    """How many lock requests on ``blobs`` are waiting, once one is (polled: the sweep gets there soon
    after its mark; a bounded number of polls, never an assertion about time)."""
    with db.engine.connect() as conn:
        for _ in range(600):
            waiting = int(
                conn.execute(
                    text("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'blobs'::regclass")
                ).scalar_one()
            )
            if waiting:
                return waiting
            conn.execute(text("SELECT pg_sleep(0.05)"))
    return 0


def test_copying_a_thread_whose_artifacts_were_collected_is_refused(db: Database) -> None:
    saver = SafeRunSaver(db)
    _run(saver, "src", _big(7), steps=1)
    with db.transaction() as conn:  # what a concurrent delete_thread + gc would leave behind
        conn.execute(blobs.delete().where(blobs.c.kind == "manifest"))
    with pytest.raises(ArtifactNotFound):
        saver.copy_thread("src", "dst")
    assert _every_checkpoint(saver, "dst") == []


def test_the_gc_command_reports_and_deletes(database_env: Database) -> None:
    saver = SafeRunSaver(database_env)
    _run(saver, "t", _big(8), steps=2)
    saver.delete_thread("t")

    dry = cli("gc", "--grace", "0", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.output)
    assert planned["dry_run"] and planned["deleted_blobs"] > 0

    done = cli("gc", "--grace", "0")
    assert done.exit_code == 0, done.output
    assert f"deleted {planned['deleted_blobs']:,} blobs" in done.output
    assert _count(database_env, blobs) == planned["blobs"] - planned["deleted_blobs"]
    assert _count(database_env, artifacts) == 0

    bad = cli("gc", "--grace", "-5")
    assert bad.exit_code == 2 and "--grace" in bad.output
