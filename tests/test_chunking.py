"""Content-defined chunking: pure, deterministic, lossless, and stable in front of an edit."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from saferun.domain.canonical import canonical_bytes
from saferun.domain.chunking import AVG_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, boundaries, split


def _agent_log(n_items: int, seed: int = 3) -> list[dict[str, object]]:
    rng = random.Random(seed)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(2000)]
    return [
        {
            "step": i,
            "tool": rng.choice(["search", "fetch", "pay"]),
            "result": " ".join(rng.choices(words, k=rng.randint(20, 120))),
            "cost_micro": rng.randint(0, 10**6),
        }
        for i in range(n_items)
    ]


# A value from a few bytes to several maximum-size chunks, cheap to generate at any size.
values = st.one_of(
    st.binary(max_size=3 * MIN_CHUNK_SIZE),
    st.builds(
        lambda seed, n: random.Random(seed).randbytes(n),
        st.integers(0, 2**32),
        st.integers(0, 6 * MAX_CHUNK_SIZE),
    ),
)


def test_sizes_are_ordered_the_way_fastcdc_requires() -> None:
    assert 64 <= MIN_CHUNK_SIZE < AVG_CHUNK_SIZE < MAX_CHUNK_SIZE


def test_empty_value_has_no_chunks() -> None:
    assert split(b"") == []


def test_value_up_to_the_minimum_size_is_one_chunk() -> None:
    for size in (1, 100, MIN_CHUNK_SIZE):
        data = random.Random(size).randbytes(size)
        assert [bytes(c) for c in split(data)] == [data]


@settings(deadline=None, max_examples=60)
@given(values)
def test_chunks_reassemble_to_the_input_and_respect_the_sizes(data: bytes) -> None:
    chunks = split(data)
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= MAX_CHUNK_SIZE for c in chunks)
    assert all(len(c) >= MIN_CHUNK_SIZE for c in chunks[:-1])


@settings(deadline=None, max_examples=60)
@given(values, st.binary(min_size=1, max_size=2 * MAX_CHUNK_SIZE))
def test_boundaries_before_an_append_stay_the_same(data: bytes, suffix: bytes) -> None:
    before = boundaries(data)
    after = boundaries(data + suffix)
    # every cut but the last one (which only ended because the data did) survives the append
    assert after[: len(before) - 1] == before[:-1]


def test_boundaries_are_deterministic() -> None:
    data = random.Random(11).randbytes(1_000_000)
    assert boundaries(data) == boundaries(bytes(data))
    assert [bytes(c) for c in split(data)] == [bytes(c) for c in split(bytearray(data))]


def test_boundaries_never_drift_between_releases() -> None:
    """Stored chunk keys dedupe only if old and new code cut alike; changing the sizes must be deliberate."""
    data = random.Random(0).randbytes(300_000)
    assert boundaries(data) == [
        17919,
        33361,
        47262,
        70521,
        84471,
        92763,
        97229,
        107630,
        122869,
        134410,
        145073,
        157545,
        164791,
        176128,
        209808,
        223125,
        231318,
        260504,
        270992,
        285877,
        300000,
    ]


def test_appending_to_a_json_list_changes_only_the_last_chunk() -> None:
    log = _agent_log(3000)
    before = split(canonical_bytes(log))
    after = split(canonical_bytes([*log, {"step": 3000, "tool": "pay", "result": "ok", "cost_micro": 5}]))
    assert len(before) > 20
    assert [bytes(c) for c in after[: len(before) - 1]] == [bytes(c) for c in before[:-1]]
    assert len(after) - (len(before) - 1) <= 2


def test_editing_one_item_in_the_middle_changes_only_nearby_chunks() -> None:
    log = _agent_log(3000)
    old = {bytes(c) for c in split(canonical_bytes(log))}
    log[1500] = {**log[1500], "result": "changed"}
    new = [bytes(c) for c in split(canonical_bytes(log))]
    assert len([c for c in new if c not in old]) <= 2


def test_split_returns_views_over_the_input() -> None:
    data = random.Random(5).randbytes(200_000)
    chunks = split(data)
    assert all(isinstance(c, memoryview) and c.obj is data for c in chunks)
