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

Three modules: this one decides what to write and answers reads; ``storage.artifact_blobs`` holds the blob
formats and reads keys back verified; ``storage.artifact_caches`` holds the per-process memory (what was
verified, and the lineages' last versions).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from saferun.domain import chunking
from saferun.domain import delta as deltas
from saferun.domain.canonical import canonical_bytes, check_json
from saferun.errors import ArtifactCorrupted, ArtifactNotFound, InvalidInput
from saferun.storage.artifact_blobs import (
    CHUNK,
    DELTA,
    INDEX,
    MANIFEST,
    MANIFEST_VERSION,
    MAX_DELTA_CHAIN,
    MAX_DEPTH,
    SHA_RE,
    BlobRow,
    Reader,
    blob_key,
    decode,
    decode_index,
    delta_header,
    encode,
    encode_index,
    fetch,
    pack_delta,
    parse_manifest,
    probe,
)
from saferun.storage.artifact_caches import LineageHint, LineageHints, VerifiedCache
from saferun.storage.driver_sql import Insert, KeyLookup
from saferun.storage.schema import artifacts, blobs, utcnow

URI_PREFIX = "x402://artifacts/sha256:"
_URI_PREFIX_LEN = len(URI_PREFIX)
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
    # the manifest's (name, sha256, size) entries, for ``ArtifactStore.remember`` after the commit
    entries: tuple[tuple[str, str, int], ...] = ()


def make_uri(sha: str) -> str:
    """The uri of the artifact whose manifest hashes to ``sha``; refuses anything that is not a sha256."""
    if not isinstance(sha, str) or not SHA_RE.fullmatch(sha):
        raise InvalidInput("sha256", f"{sha!r} is not a lowercase hex sha256")
    return URI_PREFIX + sha


def parse_uri(uri: str) -> str:
    """The manifest sha256 a uri names; strict (lowercase hex only) so one artifact has one uri."""
    if isinstance(uri, str) and uri.startswith(URI_PREFIX):
        sha = uri[len(URI_PREFIX) :]
        if SHA_RE.fullmatch(sha):
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
    bases: dict[str, LineageHint]


class ArtifactStore:
    """Share one per process. Every method works inside the caller's transaction.

    Reads keep a bounded cache of *verified* manifests and parts, keyed by their SHA-256: content
    addressing makes them immutable, so an unchanged 1 MB agent memory is fetched, decompressed and
    hashed once per process instead of on every load. The cache is filled only by reads that verified
    the bytes (never by writes), so a process checks every stored byte the first time it reads it.
    ``cache_bytes=0`` turns it off.
    """

    def __init__(self, cache_bytes: int = 64 * 1024 * 1024) -> None:
        self._cache = VerifiedCache(cache_bytes)
        self._lineages = LineageHints(cache_bytes // 2, min_size=DELTA_MIN_SIZE)

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
        With ``count_new=False`` nothing is counted and ``new_bytes`` is 0: the blobs' INSERT asks nothing
        back, which on PostgreSQL would be a round trip in the middle of a pipelined transaction (the
        LangGraph saver's writes, whose transaction then costs one).
        """
        _check_type(artifact_type)
        plans: list[_Plan] = []
        for item in items:
            named = _check_parts(item.parts)
            if not isinstance(item.metadata, dict):
                raise InvalidInput("metadata", f"must be a dict, got {type(item.metadata).__name__}")
            check_json(item.metadata, "metadata")
            part_keys = {name: blob_key(data) for name, data in named}
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
            plans.append(_Plan(item, named, part_keys, manifest, blob_key(manifest), bases))

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
        known = probe(conn, probed) if probed else {}
        pending: dict[str, dict[str, Any]] = {}  # key -> row to insert, in insertion order
        owner: dict[str, int] = {}  # key -> the plan that added it (whose new_bytes it counts in)
        now = utcnow()

        def add(index: int, key: str, kind: str, raw: bytes | memoryview) -> None:
            codec, data = encode(raw)
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
                    add(index, key, DELTA, blob)
                    continue
                pieces = chunking.split(data)
                if len(pieces) <= 1:
                    add(index, key, CHUNK, data)  # chunk key == part key: the chunk is the part
                else:
                    chunked.append((index, key, [(blob_key(p), p) for p in pieces]))

        chunk_keys = {ck for _, _, pieces in chunked for ck, _ in pieces}
        known.update(probe(conn, [k for k in chunk_keys if k not in known and k not in pending]))
        for index, key, pieces in chunked:
            for ck, piece in pieces:
                if ck not in known and ck not in pending:
                    add(index, ck, CHUNK, piece)
            add(index, key, INDEX, encode_index([(ck, len(p)) for ck, p in pieces]))
        for index, plan in enumerate(plans):
            if plan.manifest_key not in known and plan.manifest_key not in pending:
                add(index, plan.manifest_key, MANIFEST, plan.manifest)

        inserted = _insert_blobs(conn, list(pending.values()), count_new)
        new_bytes = [0] * len(plans)
        for key in inserted:
            new_bytes[owner[key]] += len(pending[key]["data"])
        known.update(
            {
                k: BlobRow(k, r["kind"], r["codec"], r["raw_size"], r["stored_size"], r["data"])
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
            entries = tuple((name, plan.part_keys[name], len(data)) for name, data in plan.named)
            stored = StoredArtifact(uri, plan.manifest_key, raw_size, compressed, new_bytes[index], entries)
            out.append(stored)
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
        if unknown:
            found = fetch(conn, set(unknown.values()))
            for uri, key in unknown.items():
                row = found.get(key)
                if row is None:
                    raise ArtifactNotFound(uri)
                if row.kind != MANIFEST and not _ARTIFACT_ROW.rows(conn, [uri]):
                    raise ArtifactNotFound(uri)  # the key names some other blob, not an artifact
            reader = Reader(conn, found)
            manifests = reader.read(list(dict.fromkeys(unknown.values())))
            for uri, key in unknown.items():
                entries[uri] = parse_manifest(key, manifests[key])
                self._cache.add_manifest(key, entries[uri])
        if only is not None:
            entries = {uri: [e for e in listed if e[0] in only] for uri, listed in entries.items()}
        values = self.get_parts(conn, [sha for listed in entries.values() for _, sha, _ in listed])
        out: dict[str, dict[str, bytes]] = {}
        for uri in keys:
            parts: dict[str, bytes] = {}
            for name, sha, size in entries[uri]:
                value = values[sha]
                if len(value) != size:
                    raise ArtifactCorrupted(sha, f"part {name!r} is {len(value)} bytes, manifest says {size}")
                parts[name] = value
            out[uri] = parts
        return out

    def get_parts(
        self, conn: Connection, keys: Collection[str], fetched: Mapping[str, BlobRow] | None = None
    ) -> dict[str, bytes]:
        """Parts by their keys (the sha256 of their bytes, as a manifest lists them), verified: from the
        verified cache, or fetched (one statement per level of their trees) and checked against their
        keys. For a reader that learned the keys from a row of its own (``lg_blobs.part_key``), so it
        needs no manifest: the key fixes the bytes as the manifest's entry would. ``fetched``: blob rows
        the caller already holds (read with its own statement); they are checked as fetched ones are."""
        out: dict[str, bytes] = {}
        missing: list[str] = []
        for key in dict.fromkeys(keys):
            cached = self._cache.part(key)
            if cached is None:
                missing.append(key)
            else:
                out[key] = cached
        if missing:
            values = Reader(conn, dict(fetched or {})).read(missing)
            for key, value in values.items():
                self._cache.add_part(key, value)
            out.update(values)
        return out

    def remember(self, stored: StoredArtifact, parts: Mapping[str, bytes]) -> None:
        """Once the transaction that wrote ``stored`` has committed: its manifest and ``parts`` (the bytes
        it was made from) enter the verified cache, so this process's next read of them fetches nothing.

        Why they count as verified: each part's key is the sha256 this process computed from exactly
        these bytes, which is all a verified read establishes about them; what a read of the stored
        copy adds is that the database still holds them, and that is re-established by any process
        with a cold cache (a restart, another replica), as after any cached read. Why: a LangGraph
        interrupt -> resume read back the state its own ``put`` had just written, two round trips per
        read on PostgreSQL (the manifest's level, then the parts')."""
        for name, sha, _size in stored.entries:
            self._cache.add_part(sha, bytes(parts[name]))
        self._cache.add_manifest(stored.sha256, list(stored.entries))

    def get_cached(self, uri: str) -> dict[str, bytes] | None:
        """The artifact's parts when this process has already verified all of them, else None.

        No ``parse_uri`` here (its regex is a fifth of a warm LangGraph ``get_state``): only verified
        manifests are in the cache, under their lowercase sha256, so a malformed uri simply misses, and
        the read that follows a miss (``get``/``get_many``) refuses it as before."""
        if not isinstance(uri, str) or not uri.startswith(URI_PREFIX):
            return None
        return self._cache.parts_of(uri[_URI_PREFIX_LEN:])

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
        reader = Reader(conn, {})
        entries = parse_manifest(key, reader.read([key])[key])
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


# -- writing -------------------------------------------------------------------------------------------


def _delta_blob(base: LineageHint, row: BlobRow | None, data: bytes) -> tuple[bytes, deltas.Anchors] | None:
    """``data`` as a delta blob against ``base``, or None when chunking it is the better choice: the
    base is not stored (its transaction never committed), the chain is already as deep as allowed, or
    the edit touched so much that the delta would not be much smaller than the value."""
    if row is None:
        return None
    depth = 1
    if row.kind == DELTA:
        depth = delta_header(row.key, decode(row))[1] + 1
    if depth > MAX_DELTA_CHAIN:
        return None
    if base.anchors is None:
        base.anchors = deltas.anchors(base.data)
    ops, anchors = deltas.encode_and_anchor(base.data, data, base.anchors)
    if len(ops) > len(data) // 2:
        return None
    return pack_delta(base.sha, depth, ops), anchors


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


def _leaf_sizes(conn: Connection, roots: Iterable[str], known: dict[str, BlobRow]) -> dict[str, int]:
    """Stored size of every distinct chunk under ``roots``, following indexes (probing what is unknown)."""
    sizes: dict[str, int] = {}
    frontier = list(dict.fromkeys(roots))
    seen = set(frontier)
    depth = 0
    while frontier:
        depth += 1
        if depth > MAX_DEPTH:
            raise ArtifactCorrupted(frontier[0], "indexes nest deeper than any stored value can")
        known.update(probe(conn, [k for k in frontier if k not in known]))
        nxt: list[str] = []
        for key in frontier:
            row = known.get(key)
            if row is None:
                raise ArtifactCorrupted(key, "referenced blob is missing")
            if row.kind == INDEX:
                for child, _ in decode_index(key, decode(row)):
                    if child not in seen:
                        seen.add(child)
                        nxt.append(child)
            else:
                sizes[key] = row.stored_size
        frontier = nxt
    return sizes
