"""The artifact store: content addressing, two-level dedupe, verify-on-read, safe concurrent writers.

Every test runs on SQLite and on PostgreSQL (the ``db`` fixture).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Connection, event, func, select, update

from saferun.domain import chunking
from saferun.domain.canonical import canonical_bytes
from saferun.errors import ArtifactCorrupted, ArtifactNotFound, InvalidInput, StateNotSerializable
from saferun.storage import artifact_blobs
from saferun.storage import artifacts as artifacts_module
from saferun.storage.artifacts import ArtifactStore, StoredArtifact, make_uri, parse_uri
from saferun.storage.database import Database
from saferun.storage.schema import artifacts, blobs

MB = 1_000_000
store = ArtifactStore(cache_bytes=0)  # every read below goes to the database and verifies


def _agent_log(n_bytes: int, seed: int = 1) -> tuple[list[dict[str, Any]], Any]:
    """A list of agent-step records whose canonical JSON is about ``n_bytes``, plus a maker of more."""
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 10))) for _ in range(3000)]

    def item(i: int) -> dict[str, Any]:
        return {
            "step": i,
            "tool": rng.choice(["search", "fetch", "pay", "summarize"]),
            "query": " ".join(rng.choices(words, k=rng.randint(3, 8))),
            "result": " ".join(rng.choices(words, k=rng.randint(20, 120))),
            "cost_micro": rng.randint(0, 10**6),
        }

    log: list[dict[str, Any]] = []
    size = 2
    while size < n_bytes:
        log.append(item(len(log)))
        size += len(canonical_bytes(log[-1])) + 1
    return log, item


def _put(
    db: Database,
    parts: dict[str, bytes],
    artifact_type: str = "agent_state",
    metadata: dict[str, Any] | None = None,
) -> StoredArtifact:
    with db.transaction() as conn:
        return store.put(conn, parts, artifact_type=artifact_type, metadata=metadata or {})


def _get(db: Database, uri: str) -> dict[str, bytes]:
    with db.transaction() as conn:
        return store.get(conn, uri)


def _blob(conn: Connection, key: str) -> Any:
    return conn.execute(select(blobs).where(blobs.c.sha256 == key)).mappings().one()


def _flip_middle_byte(db: Database, key: str) -> None:
    with db.transaction() as conn:
        data = bytearray(_blob(conn, key)["data"])
        data[len(data) // 2] ^= 0x01
        conn.execute(update(blobs).where(blobs.c.sha256 == key).values(data=bytes(data)))


def _chunk_keys(part: bytes) -> list[str]:
    return [artifact_blobs.blob_key(c) for c in chunking.split(part)]


@pytest.fixture
def log_1mb() -> bytes:
    return canonical_bytes(_agent_log(MB)[0])


# -- round trips ----------------------------------------------------------------------------------------


def test_several_parts_round_trip_byte_for_byte(db: Database, log_1mb: bytes) -> None:
    parts = {
        "agent_memory": canonical_bytes({"goal": "book a flight", "notes": ["a", "b"]}),
        "api_calls": log_1mb,  # many chunks
        "binary": random.Random(2).randbytes(200_000),  # incompressible: stored raw
        "empty": b"",
        "same_as_memory": canonical_bytes({"goal": "book a flight", "notes": ["a", "b"]}),
    }
    stored = _put(db, parts)
    assert stored.uri == make_uri(stored.sha256)
    assert parse_uri(stored.uri) == stored.sha256
    assert _get(db, stored.uri) == parts


def test_put_bytes_and_get_bytes_round_trip(db: Database) -> None:
    content = b"final report\n" * 10_000
    with db.transaction() as conn:
        stored = store.put_bytes(conn, content, artifact_type="result", metadata={"name": "report.txt"})
        assert store.get_bytes(conn, stored.uri) == content
        assert store.get(conn, stored.uri) == {"content": content}


def test_get_bytes_refuses_an_artifact_with_several_parts(db: Database) -> None:
    stored = _put(db, {"a": b"1", "b": b"2"})
    with db.transaction() as conn, pytest.raises(InvalidInput) as exc:
        store.get_bytes(conn, stored.uri)
    assert exc.value.field == "artifact_uri"


def test_info_returns_the_artifacts_row(db: Database) -> None:
    stored = _put(db, {"a": b"x" * 50_000}, artifact_type="checkpoint", metadata={"workflow": "wf-1"})
    with db.transaction() as conn:
        row = store.info(conn, stored.uri)
        assert row is not None
        assert row["artifact_type"] == "checkpoint"
        assert row["metadata"] == {"workflow": "wf-1"}
        assert (row["raw_size"], row["compressed_size"]) == (stored.raw_size, stored.compressed_size)
        assert row["created_at"].tzinfo is not None
        assert store.info(conn, make_uri("0" * 64)) is None


# -- dedupe ------------------------------------------------------------------------------------------------


def test_identical_content_twice_gives_the_same_uri_and_costs_nothing(db: Database, log_1mb: bytes) -> None:
    parts = {"api_calls": log_1mb, "counter": b"7"}
    first = _put(db, parts)
    second = _put(db, dict(parts))
    assert first.uri == second.uri
    assert first.new_bytes > 0
    assert second.new_bytes == 0
    assert (second.raw_size, second.compressed_size) == (first.raw_size, first.compressed_size)


def test_the_uri_depends_on_content_and_type_not_on_part_order(db: Database) -> None:
    a = _put(db, {"x": b"1", "y": b"2"})
    assert _put(db, {"y": b"2", "x": b"1"}).uri == a.uri
    assert _put(db, {"x": b"1", "y": b"3"}).uri != a.uri
    assert _put(db, {"x": b"1", "y": b"2"}, artifact_type="other").uri != a.uri


def test_unchanged_1mb_part_costs_nothing_when_a_small_part_changes(db: Database, log_1mb: bytes) -> None:
    _put(db, {"api_calls": log_1mb, "counter": b"1"})
    with db.transaction() as conn:
        blobs_before = conn.execute(select(func.count()).select_from(blobs)).scalar_one()
    second = _put(db, {"api_calls": log_1mb, "counter": b"2"})
    with db.transaction() as conn:
        blobs_after = conn.execute(select(func.count()).select_from(blobs)).scalar_one()
    # measured: 161 bytes (a 1-byte chunk and a ~160-byte manifest) for a 1,000,000-byte part
    assert blobs_after - blobs_before == 2
    assert second.new_bytes < 300
    assert _get(db, second.uri)["api_calls"] == log_1mb


def test_appending_one_item_to_a_long_list_stores_about_one_chunk(db: Database) -> None:
    log, make_item = _agent_log(MB)
    before = canonical_bytes(log)
    first = _put(db, {"api_calls": before})
    after = canonical_bytes([*log, make_item(len(log))])
    second = _put(db, {"api_calls": after})
    # measured: ~5.8 KB (the changed last chunk ~3.3 KB, the part's index ~2.2 KB, the manifest) against
    # ~490 KB for the first write of the same list: the bound is one average chunk plus the index
    index_size = 1 + 36 * len(chunking.split(after))
    assert second.new_bytes < chunking.AVG_CHUNK_SIZE + index_size
    assert second.new_bytes < first.new_bytes / 40
    assert _get(db, second.uri) == {"api_calls": after}


def test_editing_one_item_in_the_middle_stores_about_one_chunk(db: Database) -> None:
    log, _ = _agent_log(MB)
    first = _put(db, {"api_calls": canonical_bytes(log)})
    log[len(log) // 2] = {**log[len(log) // 2], "cost_micro": -1}
    edited = canonical_bytes(log)
    second = _put(db, {"api_calls": edited})
    # measured: ~10.6 KB (one rewritten chunk plus the index)
    assert second.new_bytes < 2 * chunking.AVG_CHUNK_SIZE
    assert second.new_bytes < first.new_bytes / 20
    assert _get(db, second.uri) == {"api_calls": edited}


def test_a_part_equal_to_a_stored_manifest_is_served_by_that_manifest(db: Database) -> None:
    """A key names bytes, whatever kind of blob first stored them: nothing is stored twice."""
    first = _put(db, {"a": b"alpha", "b": b"beta"})
    with db.transaction() as conn:
        manifest = artifact_blobs.Reader(conn, {}).read([first.sha256])[first.sha256]
        second = store.put_bytes(conn, manifest, artifact_type="copy", metadata={})
        assert store.get_bytes(conn, second.uri) == manifest
    with db.transaction() as conn:
        assert _blob(conn, first.sha256)["kind"] == "manifest"
        second_manifest = _blob(conn, second.sha256)
    assert second.new_bytes == len(second_manifest["data"])  # only its own manifest was new


def test_a_chunk_already_stored_as_a_whole_part_is_reassembled_through_its_index(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk key can name a part stored earlier as an index; reading follows the index."""
    inner = canonical_bytes(_agent_log(150_000, seed=4)[0])
    tail = canonical_bytes(_agent_log(30_000, seed=5)[0])
    outer = inner + tail
    first = _put(db, {"inner": inner})
    with db.transaction() as conn:
        assert _blob(conn, artifact_blobs.blob_key(inner))["kind"] == "index"

    real_split = chunking.split

    def split_at_inner(data: bytes) -> list[memoryview]:
        view = memoryview(data)
        return [view[: len(inner)], view[len(inner) :]] if bytes(data) == outer else real_split(data)

    monkeypatch.setattr(chunking, "split", split_at_inner)
    second = _put(db, {"outer": outer})
    monkeypatch.setattr(chunking, "split", real_split)

    assert _get(db, second.uri) == {"outer": outer}
    # the inner part's chunks are shared, only the tail chunk, the outer index and a manifest are new
    with db.transaction() as conn:
        tail_blob = _blob(conn, artifact_blobs.blob_key(tail))
    assert second.compressed_size == first.compressed_size + tail_blob["stored_size"]


# -- sizes -------------------------------------------------------------------------------------------------


def test_raw_and_compressed_sizes_count_each_chunk_once(db: Database, log_1mb: bytes) -> None:
    noise = random.Random(9).randbytes(100_000)
    parts = {"log": log_1mb, "log_again": log_1mb, "noise": noise, "small": b"tiny"}
    stored = _put(db, parts)
    assert stored.raw_size == sum(len(v) for v in parts.values())
    with db.transaction() as conn:
        rows = conn.execute(
            select(blobs.c.kind, blobs.c.codec, blobs.c.stored_size, func.length(blobs.c.data))
        ).all()
        row = store.info(conn, stored.uri)
    chunk_rows = [r for r in rows if r.kind == "chunk"]
    # the only artifact in this database: it references every chunk, each counted once
    assert stored.compressed_size == sum(r.stored_size for r in chunk_rows)
    assert stored.compressed_size < stored.raw_size / 2
    # a fresh database: everything the call wrote is new, and stored_size is the data length
    assert stored.new_bytes == sum(r[3] for r in rows) == sum(r.stored_size for r in rows)
    assert {r.codec for r in chunk_rows} == {"zstd", "raw"}  # the random bytes did not compress
    assert row is not None and row["compressed_size"] == stored.compressed_size
    assert row["raw_size"] == stored.raw_size


# -- verify on read ----------------------------------------------------------------------------------------


def test_a_flipped_byte_in_a_chunk_is_detected(db: Database, log_1mb: bytes) -> None:
    stored = _put(db, {"api_calls": log_1mb})
    key = _chunk_keys(log_1mb)[3]
    _flip_middle_byte(db, key)
    with pytest.raises(ArtifactCorrupted) as exc:
        _get(db, stored.uri)
    assert exc.value.key == key


def test_a_flipped_byte_in_an_uncompressed_chunk_is_detected(db: Database) -> None:
    noise = random.Random(8).randbytes(300_000)
    stored = _put(db, {"noise": noise})
    key = _chunk_keys(noise)[1]
    with db.transaction() as conn:
        assert _blob(conn, key)["codec"] == "raw"
    _flip_middle_byte(db, key)
    with pytest.raises(ArtifactCorrupted) as exc:
        _get(db, stored.uri)
    assert exc.value.key == key


def test_a_flipped_byte_in_an_index_is_detected(db: Database, log_1mb: bytes) -> None:
    stored = _put(db, {"api_calls": log_1mb})
    part_key = artifact_blobs.blob_key(log_1mb)
    _flip_middle_byte(db, part_key)
    with pytest.raises(ArtifactCorrupted) as exc:
        _get(db, stored.uri)
    assert exc.value.key == part_key


def test_a_flipped_byte_in_a_manifest_is_detected(db: Database) -> None:
    stored = _put(db, {"a": b"alpha", "b": b"beta"})
    _flip_middle_byte(db, stored.sha256)
    with pytest.raises(ArtifactCorrupted) as exc:
        _get(db, stored.uri)
    assert exc.value.key == stored.sha256


def test_a_chunk_swapped_for_another_valid_chunk_is_detected(db: Database, log_1mb: bytes) -> None:
    stored = _put(db, {"api_calls": log_1mb})
    keys = _chunk_keys(log_1mb)
    with db.transaction() as conn:
        other = _blob(conn, keys[5])
        conn.execute(
            update(blobs)
            .where(blobs.c.sha256 == keys[2])
            .values(data=other["data"], codec=other["codec"], raw_size=other["raw_size"])
        )
    with pytest.raises(ArtifactCorrupted) as exc:
        _get(db, stored.uri)
    assert exc.value.key == keys[2]


def test_a_missing_chunk_is_blamed_on_the_index_that_names_it(db: Database, log_1mb: bytes) -> None:
    stored = _put(db, {"api_calls": log_1mb})
    with db.transaction() as conn:
        conn.execute(blobs.delete().where(blobs.c.sha256 == _chunk_keys(log_1mb)[0]))
    with pytest.raises(ArtifactCorrupted) as exc:
        _get(db, stored.uri)
    assert exc.value.key == artifact_blobs.blob_key(log_1mb)


def test_a_lying_size_column_is_detected_before_decompressing(db: Database, log_1mb: bytes) -> None:
    stored = _put(db, {"api_calls": log_1mb})
    key = _chunk_keys(log_1mb)[0]
    with db.transaction() as conn:
        conn.execute(update(blobs).where(blobs.c.sha256 == key).values(raw_size=10**12))
    with pytest.raises(ArtifactCorrupted) as exc:
        _get(db, stored.uri)
    assert exc.value.key == key


# -- addressing errors -------------------------------------------------------------------------------------


def test_unknown_uri_raises_artifact_not_found(db: Database) -> None:
    uri = make_uri("ab" * 32)
    with db.transaction() as conn, pytest.raises(ArtifactNotFound) as exc:
        store.get(conn, uri)
    assert exc.value.uri == uri


def test_a_uri_naming_a_chunk_is_not_an_artifact(db: Database, log_1mb: bytes) -> None:
    _put(db, {"api_calls": log_1mb})
    uri = make_uri(_chunk_keys(log_1mb)[0])
    with db.transaction() as conn, pytest.raises(ArtifactNotFound):
        store.get(conn, uri)


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "sha256:" + "a" * 64,
        "x402://artifacts/sha256:" + "a" * 63,
        "x402://artifacts/sha256:" + "A" * 64,
        "x402://artifacts/sha256:" + "g" * 64,
        "x402://artifacts/sha256:" + "a" * 64 + "/",
        "x402://other/sha256:" + "a" * 64,
        None,
    ],
)
def test_malformed_uri_raises_invalid_input(db: Database, uri: Any) -> None:
    with db.transaction() as conn:
        for call in (store.get, store.get_bytes, store.info):
            with pytest.raises(InvalidInput) as exc:
                call(conn, uri)
            assert exc.value.field == "artifact_uri"


def test_make_uri_refuses_what_is_not_a_sha256() -> None:
    with pytest.raises(InvalidInput):
        make_uri("xyz")


def test_put_refuses_malformed_input(db: Database) -> None:
    with db.transaction() as conn:
        with pytest.raises(InvalidInput) as exc:
            store.put(conn, {"a": "text, not bytes"}, artifact_type="t", metadata={})  # type: ignore[dict-item]
        assert exc.value.field == "parts.a"
        with pytest.raises(InvalidInput) as exc:
            store.put(conn, {"a": b""}, artifact_type="t" * 65, metadata={})
        assert exc.value.field == "artifact_type"
        with pytest.raises(StateNotSerializable):
            store.put(conn, {"a": b""}, artifact_type="t", metadata={"when": object()})


# -- concurrent writers ------------------------------------------------------------------------------------


def test_the_same_artifact_stored_in_two_transactions_has_one_uri(db: Database, log_1mb: bytes) -> None:
    parts = {"api_calls": log_1mb, "counter": b"1"}
    first = _put(db, parts, metadata={"writer": 1})
    second = _put(db, parts, metadata={"writer": 2})
    assert first.uri == second.uri
    assert second.new_bytes == 0
    with db.transaction() as conn:
        row = store.info(conn, first.uri)
        count = conn.execute(select(func.count()).select_from(artifacts)).scalar_one()
    assert row is not None and row["metadata"] == {"writer": 1}  # the first writer's row stands
    assert count == 1


def test_a_writer_that_finds_its_blobs_already_inserted_still_succeeds(
    db: Database, log_1mb: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a writer racing another sees: its probe missed rows that its insert then collides with."""
    parts = {"api_calls": log_1mb}
    first = _put(db, parts)
    monkeypatch.setattr(artifacts_module, "probe", lambda conn, keys: {})
    second = _put(db, parts)
    assert second.uri == first.uri
    assert second.new_bytes == 0
    assert second.compressed_size == first.compressed_size
    assert _get(db, second.uri) == parts


def test_two_concurrent_writers_of_the_same_artifact_both_succeed(db: Database, log_1mb: bytes) -> None:
    parts = {"api_calls": log_1mb, "counter": b"1"}
    first_stored = threading.Event()

    def writer(wait: bool) -> StoredArtifact:
        if wait:
            assert first_stored.wait(10)
        with db.transaction() as conn:
            result = store.put(conn, parts, artifact_type="agent_state", metadata={})
            if not wait:
                first_stored.set()
                time.sleep(0.3)  # keep the transaction open while the other writer runs
            return result

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(writer, False), pool.submit(writer, True)
        first, second = a.result(timeout=60), b.result(timeout=60)
    assert first.uri == second.uri
    assert first.new_bytes > 0 and second.new_bytes == 0
    assert _get(db, first.uri) == parts


# -- query count -------------------------------------------------------------------------------------------


@pytest.fixture
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    yield seen
    event.remove(db.engine, "before_cursor_execute", record)


def test_get_fetches_chunks_with_one_query_per_level(
    db: Database, log_1mb: bytes, statements: list[str]
) -> None:
    noise = random.Random(3).randbytes(500_000)
    stored = _put(db, {"log": log_1mb, "noise": noise, "small": b"s"})
    statements.clear()
    with db.transaction() as conn:
        store.get(conn, stored.uri)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # manifest, then both indexes and the small part, then all ~70 chunks
    assert len(selects) == 3


def test_the_read_cache_never_returns_bytes_it_did_not_verify(db: Database) -> None:
    cached = ArtifactStore()
    part = b"x" * 50_000 + b"y" * 50_000
    with db.transaction() as conn:
        stored = cached.put(conn, {"agent_memory": part}, artifact_type="checkpoint_state", metadata={})
    key = _chunk_keys(part)[0]
    _flip_middle_byte(db, key)
    # never read by this store: the first read verifies and finds the damage
    with db.read() as conn, pytest.raises(ArtifactCorrupted):
        cached.get(conn, stored.uri)
    _flip_middle_byte(db, key)  # repair
    with db.read() as conn:
        assert cached.get(conn, stored.uri) == {"agent_memory": part}
    _flip_middle_byte(db, key)  # damage again after a verified read
    with db.read() as conn:
        assert cached.get(conn, stored.uri) == {"agent_memory": part}  # the verified original, not the damage
        with pytest.raises(ArtifactCorrupted):
            ArtifactStore().get(conn, stored.uri)  # any other process (fresh store) finds it


def test_get_many_reads_several_artifacts_with_one_statement_per_level(db: Database) -> None:
    """A first read of a LangGraph checkpoint names several artifacts (one per checkpoint that changed a
    channel); ``get_many`` fetches their manifests together, then their parts together: two statements,
    where one ``get`` each took two apiece. Same answers, same verification, ``only`` honoured."""
    with db.transaction() as conn:
        parts = [{"a": f"value {i}".encode(), "b": bytes([i]) * 50} for i in range(3)]
        uris = [store.put(conn, p, artifact_type="t", metadata={}).uri for p in parts]
    statements: list[str] = []
    listener = lambda *a: statements.append(a[2])  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        with db.read() as conn:
            got = ArtifactStore(cache_bytes=0).get_many(conn, uris)
            assert len([s for s in statements if "blobs" in s]) == 2
            only = ArtifactStore(cache_bytes=0).get_many(conn, uris, only={"b"})
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    with db.read() as conn:
        assert got == {uri: store.get(conn, uri) for uri in uris}
    assert got[uris[1]] == {"a": b"value 1", "b": bytes([1]) * 50}
    assert only == {uri: {"b": parts["b"]} for uri, parts in got.items()}
