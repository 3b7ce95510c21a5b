"""Checkpoint artifacts: content-addressed, compressed, deduplicated, verified on every read.

An artifact is a set of named *parts* (say, the top-level fields of an agent's state, each as canonical
JSON bytes). Everything lives in the ``blobs`` table, keyed by a sha256:

- **Content addressing.** A blob's key is the sha256 of the bytes it stands for, so a key is also its
  own checksum, equal content is stored once whoever writes it, and a blob is never updated: the same
  key can only ever mean the same bytes. Three kinds of blob:

  ``chunk``     a content-defined piece of a part (``saferun.domain.chunking``), stored zstd-compressed
                (or ``raw`` when compressing would not make it smaller); key = sha256 of the piece.
  ``index``     how to reassemble a part from its chunks: the ordered chunk keys and sizes;
                key = sha256 of the *whole part*.
  ``manifest``  the artifact itself: canonical JSON of its type and ``[name, part sha256, size]`` per
                part; key = sha256 of those bytes, and the artifact's uri is
                ``x402://artifacts/sha256:<that key>``.
  ``delta``     a whole part as copies from an earlier version of the same part plus the changed bytes
                (``saferun.domain.delta``); key = sha256 of the whole part, like an index.

  A part that is a single chunk (anything up to ``MIN_CHUNK_SIZE``, and any part FastCDC does not cut)
  has chunk key == part key, so it is stored as that one chunk with no index. Reading therefore treats
  a key uniformly: a ``chunk`` or ``manifest`` blob holds the bytes itself, an ``index`` blob lists the
  keys whose bytes, concatenated, are the bytes. Whichever kind got a key first serves it for everyone.

- **Dedupe at two levels.** A part whose key is already stored costs nothing: it is not even chunked
  (an unchanged 1 MB field of a new checkpoint writes 0 bytes). A changed part is chunked and only the
  chunks not yet stored are compressed and written, so appending to a long list writes about one
  chunk plus the part's index and a new manifest.

- **Deltas for scattered edits.** A writer that names a *lineage* (a workflow, a LangGraph thread) stores
  a changed part as a delta against that lineage's previous version of the part when this process
  wrote or read it and the base is still stored (checked in the same probe, so no extra statement):
  an agent that rewrites 1 % of a 1 MB memory writes ~0.6 % of it instead of every 16 KiB chunk the
  edits touched. Chains are at most ``MAX_DELTA_CHAIN`` deep (then the part is chunked afresh), so a
  cold read applies a bounded number of deltas; each rebuilt part is verified by its sha256 like
  every other value. Without a lineage, or in a fresh process, parts are chunked as before.

- **Verify on read.** ``get`` recomputes the sha256 of every chunk, every reassembled part and the
  manifest, and checks every size against the index and manifest; any disagreement raises
  ``ArtifactCorrupted`` naming the key that failed. Bytes that do not verify are never returned.

- **Concurrent writers.** Every insert is "on conflict do nothing": two transactions storing the same
  blob or artifact at once both succeed, and since the key fixes the content it does not matter whose
  row won.

- **Garbage collection** (``storage.gc``) deletes blobs nothing refers to. It is safe because every
  writer *reads* a stored blob (the probe) in the transaction that will refer to it: keep it that way (a
  cache that skips the probe would let a sweep delete what the writer is about to reuse).

The caller owns the transaction: every method takes a ``Connection`` and never commits.
"""

from __future__ import annotations

import hashlib
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import zstandard
from sqlalchemy import Connection, select

from saferun.domain import chunking
from saferun.domain import delta as deltas
from saferun.domain.canonical import canonical_bytes, canonical_loads, check_json
from saferun.errors import ArtifactCorrupted, ArtifactNotFound, InvalidInput
from saferun.storage.driver_sql import Insert, KeyLookup
from saferun.storage.schema import artifacts, blobs, utcnow

URI_PREFIX = "x402://artifacts/sha256:"
MANIFEST_VERSION = 1
ZSTD_LEVEL = 3

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_CHUNK, _INDEX, _MANIFEST, _DELTA = "chunk", "index", "manifest", "delta"
_ZSTD, _RAW = "zstd", "raw"
# An index is one version byte, then per chunk its sha256 digest and its size (a chunk is <= 64 KiB).
_INDEX_VERSION = b"\x01"
_INDEX_ENTRY = struct.Struct(">32sI")
# A chain of indexes only forms when a chunk's bytes happen to equal a whole other part; anything
# deeper than this is a tampered store looping on itself, not data.
_MAX_DEPTH = 16
# A delta blob is a version byte, the base part's sha256 digest, the chain depth (1 = its base is not a
# delta), then the operations of saferun.domain.delta.
_DELTA_VERSION = 1
_DELTA_HEADER = struct.Struct(">B32sB")
MAX_DELTA_CHAIN = 16
# Parts smaller than this are chunked (as one chunk): a delta would save a few hundred bytes at most.
DELTA_MIN_SIZE = 4 * 1024
# parts at least this big are probed before they are stored; smaller ones are one chunk and no delta
PROBE_MIN_SIZE = min(DELTA_MIN_SIZE, chunking.MIN_CHUNK_SIZE)


@dataclass(frozen=True, slots=True)
class ArtifactInput:
    """One artifact for :meth:`ArtifactStore.put_many`: its parts, ``artifacts`` metadata and lineage."""

    parts: Mapping[str, bytes]
    metadata: dict[str, Any]
    lineage: str | None = None


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    """What one ``put`` stored; the sizes are what a snapshot row records about its artifact.

    ``compressed_size`` counts every chunk the artifact references once, whoever wrote it (what the
    artifact occupies); ``new_bytes`` counts only the blob bytes this call inserted (what it cost).
    """

    uri: str
    sha256: str
    raw_size: int
    compressed_size: int
    new_bytes: int


def make_uri(sha: str) -> str:
    """The uri of the artifact whose manifest hashes to ``sha``; refuses anything that is not a sha256."""
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise InvalidInput("sha256", f"{sha!r} is not a lowercase hex sha256")
    return URI_PREFIX + sha


def parse_uri(uri: str) -> str:
    """The manifest sha256 a uri names; strict (lowercase hex only) so one artifact has one uri."""
    if isinstance(uri, str) and uri.startswith(URI_PREFIX):
        sha = uri[len(URI_PREFIX) :]
        if _SHA_RE.fullmatch(sha):
            return sha
    raise InvalidInput("artifact_uri", f"{uri!r} is not an artifact uri ({URI_PREFIX}<64 lowercase hex>)")


@dataclass(slots=True)
class _Plan:
    """What ``put_many`` works out for one item before touching the store."""

    item: ArtifactInput
    named: list[tuple[str, bytes]]
    part_keys: dict[str, str]
    manifest: bytes
    manifest_key: str
    bases: dict[str, _Hint]


class _Row(NamedTuple):
    key: str
    kind: str
    codec: str
    raw_size: int
    stored_size: int
    data: bytes | None  # None when a probe skipped the payload


class ArtifactStore:
    """Share one per process. Every method works inside the caller's transaction.

    Reads keep a bounded cache of *verified* manifests and parts, keyed by their SHA-256: content
    addressing makes them immutable, so an unchanged 1 MB agent memory is fetched, decompressed and
    hashed once per process instead of on every load. The cache is filled only by reads that verified
    the bytes (never by writes), so a process checks every stored byte the first time it reads it.
    ``cache_bytes=0`` turns it off.
    """

    def __init__(self, cache_bytes: int = 64 * 1024 * 1024) -> None:
        self._cache = _VerifiedCache(cache_bytes)
        self._lineages = _LineageHints(cache_bytes // 2)

    def put(
        self,
        conn: Connection,
        parts: Mapping[str, bytes],
        *,
        artifact_type: str,
        metadata: dict[str, Any],
        lineage: str | None = None,
    ) -> StoredArtifact:
        """Store ``parts`` (or find them already stored) and record the artifact; idempotent.

        ``lineage`` names the series this artifact continues (a workflow's checkpoints, a LangGraph
        thread): a changed part may then be stored as a delta against the series' previous version of
        that part. The artifact's uri and content are the same either way.
        """
        return self.put_many(conn, [ArtifactInput(parts, metadata, lineage)], artifact_type=artifact_type)[0]

    def put_uri(
        self,
        conn: Connection,
        parts: Mapping[str, bytes],
        *,
        artifact_type: str,
        metadata: dict[str, Any],
        lineage: str | None = None,
    ) -> str:
        """:meth:`put` for a caller that keeps only the uri (the LangGraph saver). The blobs' INSERT asks
        nothing back, where :meth:`put`'s returns the keys it added, to count ``new_bytes``. On
        PostgreSQL that answer was a round trip in the middle of a pipelined transaction; without it the
        INSERT rides the transaction's closing sync. What is stored is the same."""
        item = ArtifactInput(parts, metadata, lineage)
        return self.put_many(conn, [item], artifact_type=artifact_type, count_new=False)[0].uri

    def put_many(
        self,
        conn: Connection,
        items: Sequence[ArtifactInput],
        *,
        artifact_type: str,
        count_new: bool = True,
    ) -> list[StoredArtifact]:
        """:meth:`put` for many artifacts with the statements of one: one probe of every key, one
        multi-row INSERT of the new blobs, one of the ``artifacts`` rows (the bulk path's checkpoints).

        Each answer is what a ``put`` per item, in order, would have returned: a blob two items share is
        written once and its bytes count in the ``new_bytes`` of the first. Items of one call are not
        delta bases for each other (give them distinct lineages, as the bulk path's workflows are).
        With ``count_new=False`` (:meth:`put_uri`) nothing is counted and ``new_bytes`` is 0.
        """
        _check_type(artifact_type)
        plans: list[_Plan] = []
        for item in items:
            named = _check_parts(item.parts)
            if not isinstance(item.metadata, dict):
                raise InvalidInput("metadata", f"must be a dict, got {type(item.metadata).__name__}")
            check_json(item.metadata, "metadata")
            part_keys = {name: _sha(data) for name, data in named}
            manifest = canonical_bytes(
                {
                    "v": MANIFEST_VERSION,
                    "type": artifact_type,
                    "parts": [[name, part_keys[name], len(data)] for name, data in named],
                }
            )
            # Earlier versions of the changed parts, as this process last saw them in the same lineage.
            bases = {
                name: hint
                for name, data in named
                if len(data) >= DELTA_MIN_SIZE
                and (hint := self._lineages.get(item.lineage, name)) is not None
                and hint.sha != part_keys[name]
            }
            plans.append(_Plan(item, named, part_keys, manifest, _sha(manifest), bases))

        # One probe answers "is this part stored" (for parts big enough to be chunked or delta-encoded,
        # whose work it saves) and "is each base still there". A small part and a manifest are one blob
        # each, inserted if absent (``ON CONFLICT DO NOTHING``): asking first cost a statement (on
        # PostgreSQL a round trip) to save compressing a few KB, and a LangGraph step's values are small.
        probed = [
            key
            for p in plans
            for key in (
                *(p.part_keys[name] for name, data in p.named if len(data) >= PROBE_MIN_SIZE),
                *(h.sha for h in p.bases.values()),
            )
        ]
        known = _probe(conn, probed) if probed else {}
        pending: dict[str, dict[str, Any]] = {}  # key -> row to insert, in insertion order
        owner: dict[str, int] = {}  # key -> the plan that added it (whose new_bytes it counts in)
        now = utcnow()

        def add(index: int, key: str, kind: str, raw: bytes | memoryview) -> None:
            codec, data = _encode(raw)
            pending[key] = {
                "sha256": key,
                "kind": kind,
                "codec": codec,
                "raw_size": len(raw),
                "stored_size": len(data),
                "data": data,
                "created_at": now,
            }
            owner[key] = index

        new_anchors: dict[str, deltas.Anchors] = {}  # a delta-stored part: the anchors of its new value
        chunked: list[tuple[int, str, list[tuple[str, memoryview]]]] = []
        for index, plan in enumerate(plans):
            for name, data in plan.named:
                key = plan.part_keys[name]
                if key in known or key in pending:
                    continue  # already stored: not even chunked
                hint = plan.bases.get(name)
                if hint is not None and (encoded := _delta_blob(hint, known.get(hint.sha), data)) is not None:
                    blob, new_anchors[key] = encoded
                    add(index, key, _DELTA, blob)
                    continue
                pieces = chunking.split(data)
                if len(pieces) <= 1:
                    add(index, key, _CHUNK, data)  # chunk key == part key: the chunk is the part
                else:
                    chunked.append((index, key, [(_sha(p), p) for p in pieces]))

        chunk_keys = {ck for _, _, pieces in chunked for ck, _ in pieces}
        known.update(_probe(conn, [k for k in chunk_keys if k not in known and k not in pending]))
        for index, key, pieces in chunked:
            for ck, piece in pieces:
                if ck not in known and ck not in pending:
                    add(index, ck, _CHUNK, piece)
            add(index, key, _INDEX, _encode_index([(ck, len(p)) for ck, p in pieces]))
        for index, plan in enumerate(plans):
            if plan.manifest_key not in known and plan.manifest_key not in pending:
                add(index, plan.manifest_key, _MANIFEST, plan.manifest)

        inserted = _insert_blobs(conn, list(pending.values()), count_new)
        new_bytes = [0] * len(plans)
        for key in inserted:
            new_bytes[owner[key]] += len(pending[key]["data"])
        known.update(
            {
                k: _Row(k, r["kind"], r["codec"], r["raw_size"], r["stored_size"], r["data"])
                for k, r in pending.items()
            }
        )
        out: list[StoredArtifact] = []
        rows: list[dict[str, Any]] = []
        for index, plan in enumerate(plans):
            compressed = sum(_leaf_sizes(conn, plan.part_keys.values(), known).values())
            raw_size = sum(len(data) for _, data in plan.named)
            if plan.item.lineage is not None:
                for name, data in plan.named:
                    key = plan.part_keys[name]
                    self._lineages.put(plan.item.lineage, name, key, data, new_anchors.get(key))
            uri = make_uri(plan.manifest_key)
            rows.append(
                {
                    "uri": uri,
                    "artifact_type": artifact_type,
                    "metadata": plan.item.metadata,
                    "raw_size": raw_size,
                    "compressed_size": compressed,
                    "created_at": now,
                }
            )
            out.append(StoredArtifact(uri, plan.manifest_key, raw_size, compressed, new_bytes[index]))
        if rows:
            _INSERT_ARTIFACT.execute(conn, rows)
        return out

    def put_bytes(
        self, conn: Connection, content: bytes, *, artifact_type: str, metadata: dict[str, Any]
    ) -> StoredArtifact:
        """A single opaque value (a result file, a report): one part named ``content``."""
        return self.put(conn, {"content": content}, artifact_type=artifact_type, metadata=metadata)

    def get(self, conn: Connection, uri: str, only: Collection[str] | None = None) -> dict[str, bytes]:
        """The artifact's parts (all, or those named in ``only``), each verified against its sha256 and
        size before it is returned."""
        return self.get_many(conn, [uri], only)[uri]

    def get_many(
        self, conn: Connection, uris: Collection[str], only: Collection[str] | None = None
    ) -> dict[str, dict[str, bytes]]:
        """:meth:`get` for several artifacts, with one statement per level of their trees together, not
        per artifact. Why: a LangGraph checkpoint's channels live in as many artifacts as there were
        checkpoints that changed them, and a first read fetched each one's manifest and then its parts in
        turn: two statements per artifact, each a round trip on PostgreSQL (six for a 1 KB graph)."""
        keys = {uri: parse_uri(uri) for uri in uris}
        entries: dict[str, list[tuple[str, str, int]]] = {}
        unknown: dict[str, str] = {}  # uri -> key of a manifest not in the verified cache
        for uri, key in keys.items():
            cached = self._cache.manifest(key)
            if cached is None:
                unknown[uri] = key
            else:
                entries[uri] = cached
        reader = _Reader(conn, {})
        if unknown:
            found = _fetch(conn, set(unknown.values()))
            for uri, key in unknown.items():
                row = found.get(key)
                if row is None:
                    raise ArtifactNotFound(uri)
                if row.kind != _MANIFEST and not _ARTIFACT_ROW.rows(conn, [uri]):
                    raise ArtifactNotFound(uri)  # the key names some other blob, not an artifact
            reader = _Reader(conn, found)
            manifests = reader.read(list(dict.fromkeys(unknown.values())))
            for uri, key in unknown.items():
                entries[uri] = _parse_manifest(key, manifests[key])
                self._cache.add_manifest(key, entries[uri])
        if only is not None:
            entries = {uri: [e for e in listed if e[0] in only] for uri, listed in entries.items()}
        missing = list(
            dict.fromkeys(
                sha for listed in entries.values() for _, sha, _ in listed if self._cache.part(sha) is None
            )
        )
        values = reader.read(missing) if missing else {}
        out: dict[str, dict[str, bytes]] = {}
        for uri in keys:
            parts: dict[str, bytes] = {}
            for name, sha, size in entries[uri]:
                value = values.get(sha)
                if value is None:
                    value = self._cache.part(sha)
                    assert value is not None
                elif len(value) != size:
                    raise ArtifactCorrupted(sha, f"part {name!r} is {len(value)} bytes, manifest says {size}")
                parts[name] = value
            out[uri] = parts
        for sha, value in values.items():
            self._cache.add_part(sha, value)
        return out

    def get_cached(self, uri: str) -> dict[str, bytes] | None:
        """The artifact's parts when this process has already verified all of them, else None."""
        return self._cache.parts_of(parse_uri(uri))

    def get_bytes(self, conn: Connection, uri: str) -> bytes:
        """The value ``put_bytes`` stored; refuses a multi-part artifact rather than guess a part."""
        parts = self.get(conn, uri)
        if set(parts) != {"content"}:
            raise InvalidInput("artifact_uri", f"{uri} has parts {sorted(parts)}, not one 'content' part")
        return parts["content"]

    def closure(self, conn: Connection, uri: str) -> set[str]:
        """Every blob key the artifact needs (manifest, parts, index entries, delta bases), verified:
        what an export must carry so the artifact can be rebuilt and checked somewhere else."""
        key = parse_uri(uri)
        reader = _Reader(conn, {})
        entries = _parse_manifest(key, reader.read([key])[key])
        reader.read([sha for _, sha, _ in entries])
        return set(reader.rows)

    def info(self, conn: Connection, uri: str) -> dict[str, Any] | None:
        """The ``artifacts`` row (type, metadata, sizes, created_at) without touching any blob."""
        parse_uri(uri)
        row = conn.execute(select(artifacts).where(artifacts.c.uri == uri)).mappings().first()
        return None if row is None else dict(row)


def check_artifact_row(
    conn: Connection, uri: str, *, artifact_type: str, raw_size: int, compressed_size: int
) -> str | None:
    """Why the ``artifacts`` row of ``uri`` disagrees with what a (chain-verified) snapshot recorded about
    it, or None. One primary-key read; the blobs themselves are verified by ``get``."""
    row = conn.execute(select(artifacts).where(artifacts.c.uri == uri)).mappings().first()
    return artifact_row_problem(
        uri, row, artifact_type=artifact_type, raw_size=raw_size, compressed_size=compressed_size
    )


def artifact_row_problem(
    uri: str, row: Mapping[str, Any] | None, *, artifact_type: str, raw_size: int, compressed_size: int
) -> str | None:
    """``check_artifact_row`` on a row already read (say, joined to its snapshot)."""
    if row is None or row["uri"] is None:
        return f"artifact {uri} has no artifacts row"
    for name, expected in (
        ("artifact_type", artifact_type),
        ("raw_size", raw_size),
        ("compressed_size", compressed_size),
    ):
        if row[name] != expected:
            return f"artifact {uri}: {name} {row[name]!r} is not the {expected!r} its snapshot recorded"
    return None


class _VerifiedCache:
    """LRU of verified manifests (small) and parts (bounded by total bytes)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._parts: OrderedDict[str, bytes] = OrderedDict()
        self._manifests: OrderedDict[str, list[tuple[str, str, int]]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def part(self, sha: str) -> bytes | None:
        with self._lock:
            value = self._parts.get(sha)
            if value is not None:
                self._parts.move_to_end(sha)
            return value

    def parts_of(self, key: str) -> dict[str, bytes] | None:
        """Every part of the manifest ``key`` by name, under one lock; None unless all are here."""
        with self._lock:
            entries = self._manifests.get(key)
            if entries is None:
                return None
            out: dict[str, bytes] = {}
            for name, sha, _ in entries:
                value = self._parts.get(sha)
                if value is None:
                    return None
                self._parts.move_to_end(sha)
                out[name] = value
            return out

    def manifest(self, key: str) -> list[tuple[str, str, int]] | None:
        with self._lock:
            return self._manifests.get(key)

    def add_part(self, sha: str, value: bytes) -> None:
        if len(value) > self.max_bytes // 4:
            return
        with self._lock:
            if sha in self._parts:
                return
            self._parts[sha] = value
            self._size += len(value)
            while self._size > self.max_bytes:
                _, old = self._parts.popitem(last=False)
                self._size -= len(old)

    def add_manifest(self, key: str, entries: list[tuple[str, str, int]]) -> None:
        if self.max_bytes <= 0:
            return
        with self._lock:
            self._manifests[key] = entries
            while len(self._manifests) > 4096:
                self._manifests.popitem(last=False)


@dataclass(slots=True)
class _Hint:
    sha: str
    data: bytes
    anchors: deltas.Anchors | None = None


class _LineageHints:
    """LRU of the last version of each part per lineage, bounded by total bytes: the bases of deltas.

    Holds what this process wrote (or was given) rather than what it verified, which is safe because a
    delta is only stored when its base key is found in the store, and content addressing makes those
    stored bytes equal to these.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._hints: OrderedDict[tuple[str, str], _Hint] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, lineage: str | None, name: str) -> _Hint | None:
        if lineage is None:
            return None
        with self._lock:
            hint = self._hints.get((lineage, name))
            if hint is not None:
                self._hints.move_to_end((lineage, name))
            return hint

    def put(
        self, lineage: str, name: str, sha: str, data: bytes, anchors: deltas.Anchors | None = None
    ) -> None:
        if len(data) < DELTA_MIN_SIZE or len(data) > self.max_bytes // 4:
            return
        with self._lock:
            old = self._hints.pop((lineage, name), None)
            if old is not None:
                self._size -= len(old.data)
                if old.sha == sha:
                    self._hints[(lineage, name)] = old
                    self._size += len(old.data)
                    return
            self._hints[(lineage, name)] = _Hint(sha, data, anchors)
            self._size += len(data)
            while self._size > self.max_bytes:
                _, gone = self._hints.popitem(last=False)
                self._size -= len(gone.data)


# -- writing -------------------------------------------------------------------------------------------


def _delta_blob(base: _Hint, row: _Row | None, data: bytes) -> tuple[bytes, deltas.Anchors] | None:
    """``data`` as a delta blob against ``base``, or None when chunking it is the better choice: the
    base is not stored (its transaction never committed), the chain is already as deep as allowed, or
    the edit touched so much that the delta would not be much smaller than the value."""
    if row is None:
        return None
    depth = 1
    if row.kind == _DELTA:
        depth = _delta_header(row.key, _decode(row))[1] + 1
    if depth > MAX_DELTA_CHAIN:
        return None
    if base.anchors is None:
        base.anchors = deltas.anchors(base.data)
    ops, anchors = deltas.encode_and_anchor(base.data, data, base.anchors)
    if len(ops) > len(data) // 2:
        return None
    return _DELTA_HEADER.pack(_DELTA_VERSION, bytes.fromhex(base.sha), depth) + ops, anchors


def _delta_header(key: str, data: bytes) -> tuple[str, int, bytes]:
    """A delta blob's base key, chain depth and operations."""
    if len(data) < _DELTA_HEADER.size:
        raise ArtifactCorrupted(key, "malformed delta")
    version, base, depth = _DELTA_HEADER.unpack_from(data)
    if version != _DELTA_VERSION or not 1 <= depth <= MAX_DELTA_CHAIN:
        raise ArtifactCorrupted(key, "malformed delta header")
    return base.hex(), depth, data[_DELTA_HEADER.size :]


# -- writing (helpers) -----------------------------------------------------------------------------------


def _check_parts(parts: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
    """Parts sorted by name, the order the manifest lists them in (so equal parts give one uri)."""
    if not isinstance(parts, Mapping):
        raise InvalidInput("parts", f"must be a mapping of name to bytes, got {type(parts).__name__}")
    out: list[tuple[str, bytes]] = []
    for name, data in parts.items():
        if not isinstance(name, str):
            raise InvalidInput("parts", f"part name {name!r} is not a str")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInput(f"parts.{name}", f"must be bytes, got {type(data).__name__}")
        out.append((name, data if isinstance(data, bytes) else bytes(data)))
    return sorted(out, key=lambda item: item[0])


def _check_type(artifact_type: str) -> None:
    limit = getattr(artifacts.c.artifact_type.type, "length", None) or 64
    if not isinstance(artifact_type, str) or not 0 < len(artifact_type) <= limit:
        raise InvalidInput("artifact_type", f"must be a non-empty str of at most {limit} characters")


def _encode_index(entries: list[tuple[str, int]]) -> bytes:
    return _INDEX_VERSION + b"".join(_INDEX_ENTRY.pack(bytes.fromhex(k), n) for k, n in entries)


_SIZES = "sha256, kind, codec, raw_size, stored_size"
# what comes back with each blob's sizes: the payload always, or only where a reader must follow it
_WHICH = {
    "fetch": "data",
    "probe": f"CASE WHEN kind IN ('{_INDEX}', '{_DELTA}') THEN data END",
    "refs": f"CASE WHEN kind IN ('{_MANIFEST}', '{_INDEX}', '{_DELTA}') THEN data END",
}
# Driver SQL text (``storage.driver_sql``): these run several times per checkpoint on every path
_LOOKUPS = {purpose: KeyLookup("blobs", "sha256", [_SIZES, data]) for purpose, data in _WHICH.items()}
_INSERT_BLOBS = Insert(blobs, ["sha256"], returning="sha256")
_INSERT_BLOBS_QUIET = Insert(blobs, ["sha256"])
_INSERT_ARTIFACT = Insert(artifacts, ["uri"])
_ARTIFACT_ROW = KeyLookup("artifacts", "uri", ["uri"])


def _insert_blobs(conn: Connection, rows: list[dict[str, Any]], count_new: bool = True) -> set[str]:
    """Insert, skipping keys another writer got to first; the keys *this* call actually added (with
    ``count_new``; else none are asked for)."""
    if not rows:
        return set()
    # Key order, so two writers sharing chunks wait on each other's rows in one order, never deadlock.
    rows = sorted(rows, key=lambda r: r["sha256"])
    if not count_new:
        _INSERT_BLOBS_QUIET.execute(conn, rows)
        return set()
    return set(_INSERT_BLOBS.execute(conn, rows))


def _leaf_sizes(conn: Connection, roots: Iterable[str], known: dict[str, _Row]) -> dict[str, int]:
    """Stored size of every distinct chunk under ``roots``, following indexes (probing what is unknown)."""
    sizes: dict[str, int] = {}
    frontier = list(dict.fromkeys(roots))
    seen = set(frontier)
    depth = 0
    while frontier:
        depth += 1
        if depth > _MAX_DEPTH:
            raise ArtifactCorrupted(frontier[0], "indexes nest deeper than any stored value can")
        known.update(_probe(conn, [k for k in frontier if k not in known]))
        nxt: list[str] = []
        for key in frontier:
            row = known.get(key)
            if row is None:
                raise ArtifactCorrupted(key, "referenced blob is missing")
            if row.kind == _INDEX:
                for child, _ in _decode_index(key, _decode(row)):
                    if child not in seen:
                        seen.add(child)
                        nxt.append(child)
            else:
                sizes[key] = row.stored_size
        frontier = nxt
    return sizes


# -- reading -------------------------------------------------------------------------------------------


class _Reader:
    """Resolves keys to verified bytes, fetching each level of the tree with one IN query per batch."""

    def __init__(self, conn: Connection, fetched: dict[str, _Row]) -> None:
        self.conn = conn
        self.rows = fetched
        self.indexes: dict[str, list[tuple[str, int]]] = {}
        self.deltas: dict[str, tuple[str, bytes]] = {}
        self.values: dict[str, bytes] = {}

    def read(self, keys: list[str]) -> dict[str, bytes]:
        self._load(keys)
        return {k: self._value(k, 0) for k in keys}

    def _load(self, keys: list[str]) -> None:
        """Fetch ``keys`` and, level by level, every chunk their indexes name."""
        frontier = list(dict.fromkeys(keys))
        seen = set(frontier)
        parents: dict[str, str] = {}
        depth = 0
        while frontier:
            depth += 1
            if depth > _MAX_DEPTH + MAX_DELTA_CHAIN:
                raise ArtifactCorrupted(frontier[0], "blobs nest deeper than any stored value can")
            self.rows.update(_fetch(self.conn, [k for k in frontier if k not in self.rows]))
            nxt: list[str] = []
            for key in frontier:
                row = self.rows.get(key)
                if row is None:
                    # A part the (verified) manifest names is missing: blame the part. A chunk an index
                    # names is missing: the index is as likely wrong as the chunk lost, so blame the index.
                    raise ArtifactCorrupted(parents.get(key, key), f"blob {key} is not stored")
                if row.kind == _INDEX and key not in self.indexes:
                    self.indexes[key] = _decode_index(key, _decode(row))
                    children = [child for child, _ in self.indexes[key]]
                elif row.kind == _DELTA and key not in self.deltas:
                    base, _, ops = _delta_header(key, _decode(row))
                    self.deltas[key] = (base, ops)
                    children = [base]
                else:
                    children = []
                for child in children:
                    if child not in seen:
                        seen.add(child)
                        parents[child] = key
                        nxt.append(child)
            frontier = nxt

    def _value(self, key: str, depth: int) -> bytes:
        if key in self.values:
            return self.values[key]
        if depth > _MAX_DEPTH + MAX_DELTA_CHAIN:
            raise ArtifactCorrupted(key, "blob refers back to itself")
        row = self.rows[key]
        if row.kind == _INDEX:
            pieces: list[bytes] = []
            for child, size in self.indexes[key]:
                piece = self._value(child, depth + 1)
                if len(piece) != size:
                    raise ArtifactCorrupted(key, f"chunk {child} is {len(piece)} bytes, index says {size}")
                pieces.append(piece)
            value = b"".join(pieces)
            if _sha(value) != key:
                raise ArtifactCorrupted(key, "reassembled chunks do not hash to the part's key")
        elif row.kind == _DELTA:
            base, ops = self.deltas[key]
            try:
                value = deltas.apply(self._value(base, depth + 1), ops)
            except deltas.DeltaError as exc:
                raise ArtifactCorrupted(key, f"delta does not fit its base: {exc}") from None
            if _sha(value) != key:
                raise ArtifactCorrupted(key, "delta applied to its base does not hash to the part's key")
        elif row.kind in (_CHUNK, _MANIFEST):
            value = _decode(row)
            if _sha(value) != key:
                raise ArtifactCorrupted(key, f"{row.kind} bytes do not hash to their key")
        else:
            raise ArtifactCorrupted(key, f"unknown blob kind {row.kind!r}")
        self.values[key] = value
        return value


def references(conn: Connection, keys: Collection[str]) -> dict[str, list[str]]:
    """For each stored key in ``keys``, the blob keys it refers to: a manifest's parts, an index's chunks,
    a delta's base (a chunk refers to none). Absent keys are missing from the answer. What garbage
    collection (``storage.gc``) must keep alive with a blob; a blob it cannot parse is ``ArtifactCorrupted``
    (never "refers to nothing", which would let its children be deleted)."""
    out: dict[str, list[str]] = {}
    for key, row in _select(conn, keys, "refs").items():
        if row.kind == _MANIFEST:
            out[key] = [sha for _, sha, _ in _parse_manifest(key, _decode(row))]
        elif row.kind == _INDEX:
            out[key] = [child for child, _ in _decode_index(key, _decode(row))]
        elif row.kind == _DELTA:
            out[key] = [_delta_header(key, _decode(row))[0]]
        elif row.kind == _CHUNK:
            out[key] = []
        else:
            raise ArtifactCorrupted(key, f"unknown blob kind {row.kind!r}")
    return out


def _parse_manifest(key: str, data: bytes) -> list[tuple[str, str, int]]:
    """The manifest's ``[name, sha256, size]`` entries; its bytes verified, this checks its shape."""
    try:
        doc = canonical_loads(data)
    except ValueError:
        raise ArtifactCorrupted(key, "manifest is not JSON") from None
    entries = doc.get("parts") if isinstance(doc, dict) and doc.get("v") == MANIFEST_VERSION else None
    if not isinstance(entries, list):
        raise ArtifactCorrupted(key, f"not a version {MANIFEST_VERSION} manifest")
    out: list[tuple[str, str, int]] = []
    for entry in entries:
        if not (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], str)
            and isinstance(entry[1], str)
            and _SHA_RE.fullmatch(entry[1])
            and type(entry[2]) is int
            and entry[2] >= 0
        ):
            raise ArtifactCorrupted(key, f"malformed manifest entry {entry!r}")
        out.append((entry[0], entry[1], entry[2]))
    return out


def _decode_index(key: str, data: bytes) -> list[tuple[str, int]]:
    body = data[len(_INDEX_VERSION) :]
    if not data.startswith(_INDEX_VERSION) or len(body) % _INDEX_ENTRY.size:
        raise ArtifactCorrupted(key, "malformed index")
    return [(digest.hex(), size) for digest, size in _INDEX_ENTRY.iter_unpack(body)]


# -- blobs -------------------------------------------------------------------------------------------

_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    """One per thread: a ZstdCompressor must not be used by two threads at once."""
    comp = getattr(_local, "compressor", None)
    if comp is None:
        comp = _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_local, "decompressor", None)
    if dec is None:
        dec = _local.decompressor = zstandard.ZstdDecompressor()
    return dec


def _encode(raw: bytes | memoryview) -> tuple[str, bytes]:
    """zstd unless that does not shrink it (random bytes, tiny values): never pay to store more."""
    packed = _compressor().compress(raw)
    if len(packed) < len(raw):
        return _ZSTD, packed
    return _RAW, bytes(raw)


def _decode(row: _Row) -> bytes:
    """The blob's stored bytes, uncompressed; checks the sizes so a forged header cannot balloon memory."""
    data = row.data
    if data is None:
        raise AssertionError(f"blob {row.key} was probed without its data")
    if len(data) != row.stored_size:
        raise ArtifactCorrupted(row.key, f"{len(data)} stored bytes, recorded size {row.stored_size}")
    if row.codec == _ZSTD:
        try:
            if zstandard.frame_content_size(data) != row.raw_size:
                raise ArtifactCorrupted(row.key, "zstd frame size disagrees with the recorded size")
            value = _decompressor().decompress(data)
        except zstandard.ZstdError as exc:
            raise ArtifactCorrupted(row.key, f"zstd data does not decompress: {exc}") from None
    elif row.codec == _RAW:
        value = data
    else:
        raise ArtifactCorrupted(row.key, f"unknown codec {row.codec!r}")
    if len(value) != row.raw_size:
        raise ArtifactCorrupted(row.key, f"{len(value)} bytes, recorded size {row.raw_size}")
    return value


def _fetch(conn: Connection, keys: Collection[str]) -> dict[str, _Row]:
    """Whole blobs (with data) for ``keys``; absent keys are simply missing from the answer."""
    return _select(conn, keys, "fetch")


def _probe(conn: Connection, keys: Collection[str]) -> dict[str, _Row]:
    """Which ``keys`` exist, with sizes; the payload only for indexes, which a writer must follow."""
    return _select(conn, keys, "probe")


def _select(conn: Connection, keys: Collection[str], purpose: str) -> dict[str, _Row]:
    out: dict[str, _Row] = {}
    for key, kind, codec, raw_size, stored_size, data in _LOOKUPS[purpose].rows(conn, keys):
        out[key] = _Row(key, kind, codec, raw_size, stored_size, None if data is None else bytes(data))
    return out


def _sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()
