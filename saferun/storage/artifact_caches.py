"""The artifact store's per-process memory (``storage.artifacts``): what it verified, and the last version
of each part per lineage.

- ``VerifiedCache``: manifests and parts whose hashes this process has checked, so a warm read returns
  them without fetching or hashing again. Only verified bytes enter it.
- ``LineageHints``: the last version of each part a lineage (a workflow, a LangGraph thread) wrote or
  read here, the base a changed part may be stored as a delta against. Safe to hold unverified because a
  delta is only written after the probe finds its base's key stored, and the key fixes those bytes.

Both are LRUs bounded by total bytes and safe to share between threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from saferun.domain import delta as deltas


class VerifiedCache:
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
class LineageHint:
    sha: str
    data: bytes
    anchors: deltas.Anchors | None = None


class LineageHints:
    """LRU of the last version of each part per lineage, bounded by total bytes: the bases of deltas.

    Holds what this process wrote (or was given) rather than what it verified, which is safe because a
    delta is only stored when its base key is found in the store, and content addressing makes those
    stored bytes equal to these.
    """

    def __init__(self, max_bytes: int, min_size: int) -> None:
        self.max_bytes = max_bytes
        self.min_size = min_size  # a smaller part is never a delta's base: not worth holding
        self._hints: OrderedDict[tuple[str, str], LineageHint] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, lineage: str | None, name: str) -> LineageHint | None:
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
        if len(data) < self.min_size or len(data) > self.max_bytes // 4:
            return
        with self._lock:
            old = self._hints.pop((lineage, name), None)
            if old is not None:
                self._size -= len(old.data)
                if old.sha == sha:
                    self._hints[(lineage, name)] = old
                    self._size += len(old.data)
                    return
            self._hints[(lineage, name)] = LineageHint(sha, data, anchors)
            self._size += len(data)
            while self._size > self.max_bytes:
                _, gone = self._hints.popitem(last=False)
                self._size -= len(gone.data)
