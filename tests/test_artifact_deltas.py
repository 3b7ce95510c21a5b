"""Deltas: a changed part stored as copies from its lineage's previous version plus the changed bytes.

Pure encoding tests first (any base, any new value round-trips), then the store on SQLite and PostgreSQL:
the bytes a scattered edit costs, verification of rebuilt parts, tampering, bounded chains, and the
fallbacks (no lineage, a base that never committed).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from saferun.domain import delta
from saferun.domain.canonical import canonical_bytes
from saferun.errors import ArtifactCorrupted
from saferun.storage import artifact_blobs
from saferun.storage.artifacts import MAX_DELTA_CHAIN, ArtifactStore
from saferun.storage.database import Database
from saferun.storage.schema import blobs


def _notes(n: int, seed: int = 1) -> tuple[list[dict[str, Any]], Any]:
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(5000)]

    def note(i: int) -> dict[str, Any]:
        return {"id": i, "text": " ".join(rng.choices(words, k=12)), "score": rng.randint(0, 10**6)}

    return [note(i) for i in range(n)], note


def _edit(notes: list[dict[str, Any]], note: Any, fraction: float, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = list(notes)
    for i in rng.sample(range(len(notes)), max(1, int(len(notes) * fraction))):
        out[i] = note(i)
    return out


# -- the encoding (pure) ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=6000), st.binary(max_size=6000))
def test_any_value_round_trips_against_any_base(base: bytes, new: bytes) -> None:
    assert delta.apply(base, delta.encode(base, new)) == new


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=2000, max_size=20000), st.data())
def test_an_edited_value_round_trips_and_costs_about_the_edit(base: bytes, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(base)))
    cut = data.draw(st.integers(0, min(100, len(base) - at)))
    insert = data.draw(st.binary(max_size=100))
    new = base[:at] + insert + base[at + cut :]
    ops = delta.encode(base, new)
    assert delta.apply(base, ops) == new
    # copies cover everything but the edit and the anchors it disturbed (at most a few anchor pieces)
    assert len(ops) <= len(insert) + 4 * delta.ANCHOR_MAX + 32


def test_a_delta_is_deterministic_and_reuses_precomputed_anchors() -> None:
    notes, note = _notes(2000)
    base = canonical_bytes(notes)
    new = canonical_bytes(_edit(notes, note, 0.01, seed=2))
    anchors = delta.anchors(base)
    assert delta.encode(base, new) == delta.encode(base, new, anchors)


@pytest.mark.parametrize(
    "bad",
    [b"\x07", b"\x00\x80", b"\x00\x05\xff\x7f", b"\x01\x05ab", b"\x00" + b"\xff" * 12],
)
def test_a_malformed_delta_is_a_delta_error(bad: bytes) -> None:
    with pytest.raises(delta.DeltaError):
        delta.apply(b"0123456789", bad)


# -- the store -------------------------------------------------------------------------------------------


def _put(db: Database, store: ArtifactStore, value: bytes, lineage: str | None = "wf-1") -> Any:
    with db.transaction() as conn:
        return store.put(
            conn, {"agent_memory": value}, artifact_type="agent_state", metadata={}, lineage=lineage
        )


def _get(db: Database, store: ArtifactStore, uri: str) -> bytes:
    with db.transaction() as conn:
        return store.get(conn, uri)["agent_memory"]


def _kind(db: Database, value: bytes) -> str:
    with db.transaction() as conn:
        return conn.execute(
            select(blobs.c.kind).where(blobs.c.sha256 == artifact_blobs.blob_key(value))
        ).scalar_one()


@pytest.mark.parametrize(("fraction", "limit"), [(0.001, 0.005), (0.01, 0.02), (0.10, 0.12)])
def test_a_scattered_edit_costs_about_what_changed(db: Database, fraction: float, limit: float) -> None:
    """1 MB of notes, a share of them rewritten: the new bytes stay near the edited share (with 16 KiB
    chunks alone, 1 % rewrote ~26 % of the value)."""
    notes, note = _notes(7500)
    base = canonical_bytes(notes)
    new = canonical_bytes(_edit(notes, note, fraction, seed=3))
    writer = ArtifactStore()
    _put(db, writer, base)
    stored = _put(db, writer, new)
    assert _kind(db, new) == "delta"
    assert stored.new_bytes <= limit * len(new), (stored.new_bytes, len(new))
    assert _get(db, ArtifactStore(cache_bytes=0), stored.uri) == new  # a cold reader rebuilds and verifies


def test_without_a_lineage_or_in_a_fresh_process_parts_are_chunked(db: Database) -> None:
    notes, note = _notes(2000)
    base, new = canonical_bytes(notes), canonical_bytes(_edit(notes, note, 0.01, seed=4))
    _put(db, ArtifactStore(), base)
    _put(db, ArtifactStore(), new)  # another process: it never saw the base
    assert _kind(db, new) == "index"
    writer = ArtifactStore()
    _put(db, writer, base, lineage=None)
    newer = canonical_bytes(_edit(notes, note, 0.01, seed=5))
    _put(db, writer, newer, lineage=None)
    assert _kind(db, newer) == "index"


def test_a_base_whose_transaction_rolled_back_is_never_used(db: Database) -> None:
    notes, note = _notes(2000)
    base, new = canonical_bytes(notes), canonical_bytes(_edit(notes, note, 0.01, seed=6))
    writer = ArtifactStore()
    with pytest.raises(RuntimeError), db.transaction() as conn:
        writer.put(conn, {"agent_memory": base}, artifact_type="agent_state", metadata={}, lineage="wf-1")
        raise RuntimeError("the checkpoint's transaction fails after the artifact was written")
    stored = _put(db, writer, new)
    assert _kind(db, new) == "index"  # its base is not in the store, so no delta points at it
    assert _get(db, ArtifactStore(cache_bytes=0), stored.uri) == new


def test_chains_stop_at_the_limit_and_every_version_still_reads(db: Database) -> None:
    notes, note = _notes(1500)
    writer = ArtifactStore()
    versions, uris = [], []
    for i in range(MAX_DELTA_CHAIN + 3):
        notes = _edit(notes, note, 0.01, seed=100 + i)
        versions.append(canonical_bytes(notes))
        uris.append(_put(db, writer, versions[-1]).uri)
    kinds = [_kind(db, v) for v in versions]
    assert kinds[0] == "index" and kinds[1 : MAX_DELTA_CHAIN + 1] == ["delta"] * MAX_DELTA_CHAIN
    assert kinds[MAX_DELTA_CHAIN + 1] == "index"  # the chain restarts from a chunked copy
    assert kinds[MAX_DELTA_CHAIN + 2] == "delta"
    cold = ArtifactStore(cache_bytes=0)
    assert [_get(db, cold, uri) for uri in uris] == versions


def test_a_flipped_byte_in_a_delta_is_detected(db: Database) -> None:
    notes, note = _notes(2000)
    base, new = canonical_bytes(notes), canonical_bytes(_edit(notes, note, 0.01, seed=7))
    writer = ArtifactStore()
    _put(db, writer, base)
    stored = _put(db, writer, new)
    key = artifact_blobs.blob_key(new)
    with db.transaction() as conn:
        row = conn.execute(select(blobs).where(blobs.c.sha256 == key)).mappings().one()
        for i in range(0, len(row["data"]), max(1, len(row["data"]) // 40)):
            data = bytearray(row["data"])
            data[i] ^= 0x01
            conn.execute(update(blobs).where(blobs.c.sha256 == key).values(data=bytes(data)))
            with pytest.raises(ArtifactCorrupted) as exc:
                ArtifactStore(cache_bytes=0).get(conn, stored.uri)
            assert exc.value.key in {key, artifact_blobs.blob_key(base)}
        conn.execute(update(blobs).where(blobs.c.sha256 == key).values(data=row["data"]))


def test_a_tampered_base_is_detected_through_the_delta(db: Database) -> None:
    notes, note = _notes(2000)
    base, new = canonical_bytes(notes), canonical_bytes(_edit(notes, note, 0.01, seed=8))
    writer = ArtifactStore()
    _put(db, writer, base)
    stored = _put(db, writer, new)
    base_key = artifact_blobs.blob_key(base)
    with db.transaction() as conn:
        # the base part is an index: point it at the wrong chunks by swapping two entries
        data = bytearray(conn.execute(select(blobs.c.data).where(blobs.c.sha256 == base_key)).scalar_one())
        data[1:37], data[37:73] = data[37:73], data[1:37]
        conn.execute(update(blobs).where(blobs.c.sha256 == base_key).values(data=bytes(data)))
    with pytest.raises(ArtifactCorrupted):
        _get(db, ArtifactStore(cache_bytes=0), stored.uri)
