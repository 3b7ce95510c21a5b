"""The blob layer under the artifact store (``storage.artifacts``): what each kind of blob holds, how one
is encoded, and reading keys back verified.

Split from ``storage.artifacts`` along its seam: the store decides *what* to write (which parts are new,
chunks or a delta, the manifest) and caches what it verified; this module knows the formats (``chunk``,
``index``, ``manifest``, ``delta``; zstd or raw) and turns stored rows back into bytes, checking every
hash and size on the way (``Reader``). A blob's key is the sha256 of the bytes it stands for
(``blob_key``), so every decoded value can be checked against its own key.
"""

from __future__ import annotations

import hashlib
import re
import struct
import threading
from collections.abc import Collection
from typing import NamedTuple

import zstandard
from sqlalchemy import Connection

from saferun.domain import delta as deltas
from saferun.domain.canonical import canonical_loads
from saferun.errors import ArtifactCorrupted
from saferun.storage.driver_sql import KeyLookup

MANIFEST_VERSION = 1
ZSTD_LEVEL = 3

SHA_RE = re.compile(r"[0-9a-f]{64}")
CHUNK, INDEX, MANIFEST, DELTA = "chunk", "index", "manifest", "delta"
_ZSTD, _RAW = "zstd", "raw"
# An index is one version byte, then per chunk its sha256 digest and its size (a chunk is <= 64 KiB).
_INDEX_VERSION = b"\x01"
_INDEX_ENTRY = struct.Struct(">32sI")
# A chain of indexes only forms when a chunk's bytes happen to equal a whole other part; anything
# deeper than this is a tampered store looping on itself, not data.
MAX_DEPTH = 16
# A delta blob is a version byte, the base part's sha256 digest, the chain depth (1 = its base is not a
# delta), then the operations of saferun.domain.delta.
_DELTA_VERSION = 1
_DELTA_HEADER = struct.Struct(">B32sB")
MAX_DELTA_CHAIN = 16


class BlobRow(NamedTuple):
    key: str
    kind: str
    codec: str
    raw_size: int
    stored_size: int
    data: bytes | None  # None when a probe skipped the payload


def encode_index(entries: list[tuple[str, int]]) -> bytes:
    return _INDEX_VERSION + b"".join(_INDEX_ENTRY.pack(bytes.fromhex(k), n) for k, n in entries)


def delta_header(key: str, data: bytes) -> tuple[str, int, bytes]:
    """A delta blob's base key, chain depth and operations."""
    if len(data) < _DELTA_HEADER.size:
        raise ArtifactCorrupted(key, "malformed delta")
    version, base, depth = _DELTA_HEADER.unpack_from(data)
    if version != _DELTA_VERSION or not 1 <= depth <= MAX_DELTA_CHAIN:
        raise ArtifactCorrupted(key, "malformed delta header")
    return base.hex(), depth, data[_DELTA_HEADER.size :]


def pack_delta(base: str, depth: int, ops: bytes) -> bytes:
    """A delta blob: its header (version, the base part's key, the chain depth) and the operations."""
    return _DELTA_HEADER.pack(_DELTA_VERSION, bytes.fromhex(base), depth) + ops


# -- reading -------------------------------------------------------------------------------------------


class Reader:
    """Resolves keys to verified bytes, fetching each level of the tree with one IN query per batch."""

    def __init__(self, conn: Connection, fetched: dict[str, BlobRow]) -> None:
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
            if depth > MAX_DEPTH + MAX_DELTA_CHAIN:
                raise ArtifactCorrupted(frontier[0], "blobs nest deeper than any stored value can")
            self.rows.update(fetch(self.conn, [k for k in frontier if k not in self.rows]))
            nxt: list[str] = []
            for key in frontier:
                row = self.rows.get(key)
                if row is None:
                    # A part the (verified) manifest names is missing: blame the part. A chunk an index
                    # names is missing: the index is as likely wrong as the chunk lost, so blame the index.
                    raise ArtifactCorrupted(parents.get(key, key), f"blob {key} is not stored")
                if row.kind == INDEX and key not in self.indexes:
                    self.indexes[key] = decode_index(key, decode(row))
                    children = [child for child, _ in self.indexes[key]]
                elif row.kind == DELTA and key not in self.deltas:
                    base, _, ops = delta_header(key, decode(row))
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
        if depth > MAX_DEPTH + MAX_DELTA_CHAIN:
            raise ArtifactCorrupted(key, "blob refers back to itself")
        row = self.rows[key]
        if row.kind == INDEX:
            pieces: list[bytes] = []
            for child, size in self.indexes[key]:
                piece = self._value(child, depth + 1)
                if len(piece) != size:
                    raise ArtifactCorrupted(key, f"chunk {child} is {len(piece)} bytes, index says {size}")
                pieces.append(piece)
            value = b"".join(pieces)
            if blob_key(value) != key:
                raise ArtifactCorrupted(key, "reassembled chunks do not hash to the part's key")
        elif row.kind == DELTA:
            base, ops = self.deltas[key]
            try:
                value = deltas.apply(self._value(base, depth + 1), ops)
            except deltas.DeltaError as exc:
                raise ArtifactCorrupted(key, f"delta does not fit its base: {exc}") from None
            if blob_key(value) != key:
                raise ArtifactCorrupted(key, "delta applied to its base does not hash to the part's key")
        elif row.kind in (CHUNK, MANIFEST):
            value = decode(row)
            if blob_key(value) != key:
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
    for key, row in select_blobs(conn, keys, "refs").items():
        if row.kind == MANIFEST:
            out[key] = [sha for _, sha, _ in parse_manifest(key, decode(row))]
        elif row.kind == INDEX:
            out[key] = [child for child, _ in decode_index(key, decode(row))]
        elif row.kind == DELTA:
            out[key] = [delta_header(key, decode(row))[0]]
        elif row.kind == CHUNK:
            out[key] = []
        else:
            raise ArtifactCorrupted(key, f"unknown blob kind {row.kind!r}")
    return out


def parse_manifest(key: str, data: bytes) -> list[tuple[str, str, int]]:
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
            and SHA_RE.fullmatch(entry[1])
            and type(entry[2]) is int
            and entry[2] >= 0
        ):
            raise ArtifactCorrupted(key, f"malformed manifest entry {entry!r}")
        out.append((entry[0], entry[1], entry[2]))
    return out


def decode_index(key: str, data: bytes) -> list[tuple[str, int]]:
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


def encode(raw: bytes | memoryview) -> tuple[str, bytes]:
    """zstd unless that does not shrink it (random bytes, tiny values): never pay to store more."""
    packed = _compressor().compress(raw)
    if len(packed) < len(raw):
        return _ZSTD, packed
    return _RAW, bytes(raw)


def decode(row: BlobRow) -> bytes:
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


_SIZES = "sha256, kind, codec, raw_size, stored_size"
# what comes back with each blob's sizes: the payload always, or only where a reader must follow it
_WHICH = {
    "fetch": "data",
    "probe": f"CASE WHEN kind IN ('{INDEX}', '{DELTA}') THEN data END",
    "refs": f"CASE WHEN kind IN ('{MANIFEST}', '{INDEX}', '{DELTA}') THEN data END",
}
# Driver SQL text (``storage.driver_sql``): these run several times per checkpoint on every path
_LOOKUPS = {purpose: KeyLookup("blobs", "sha256", [_SIZES, data]) for purpose, data in _WHICH.items()}


def fetch(conn: Connection, keys: Collection[str]) -> dict[str, BlobRow]:
    """Whole blobs (with data) for ``keys``; absent keys are simply missing from the answer."""
    return select_blobs(conn, keys, "fetch")


def probe(conn: Connection, keys: Collection[str]) -> dict[str, BlobRow]:
    """Which ``keys`` exist, with sizes; the payload only for indexes, which a writer must follow."""
    return select_blobs(conn, keys, "probe")


def select_blobs(conn: Connection, keys: Collection[str], purpose: str) -> dict[str, BlobRow]:
    out: dict[str, BlobRow] = {}
    for key, kind, codec, raw_size, stored_size, data in _LOOKUPS[purpose].rows(conn, keys):
        out[key] = BlobRow(key, kind, codec, raw_size, stored_size, None if data is None else bytes(data))
    return out


def blob_key(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()
