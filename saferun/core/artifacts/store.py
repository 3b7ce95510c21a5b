"""The original's file-backed, content-addressed artifact store (``saferun://artifacts/<sha256>``).

SafeRun's own checkpoint artifacts live in the database (saferun/storage/artifacts.py: chunked,
compressed, verified). This module keeps the original's small API for code written against it: one
JSON file per content hash under ``base_dir``, written atomically (temporary file, then rename) so a
crash never leaves a half-written record a later ``get`` would read.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

URI_PREFIX = "saferun://artifacts/"


@dataclass(frozen=True)
class StoredArtifact:
    artifact_id: str
    uri: str
    content_hash: str
    size_bytes: int
    created_at: str
    metadata: dict[str, Any] = field(default_factory=dict)


class ArtifactStore:
    def __init__(self, base_dir: str | Path) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)

    def create(self, artifact_type: str, content: str, metadata: dict[str, Any]) -> dict[str, Any]:
        """Store ``content``; returns the record without the content (the original's shape)."""
        data = content.encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        record = {
            "artifact_id": "artifact_" + digest[:16],
            "uri": URI_PREFIX + digest,
            "type": artifact_type,
            "content_hash": digest,
            "size_bytes": len(data),
            "metadata": metadata,
            "created_at": datetime.now(UTC).replace(tzinfo=None).isoformat() + "Z",
        }
        self._write(digest, {**record, "content": content})
        return record

    def get(self, artifact_uri: str) -> dict[str, Any]:
        """The full record with ``content``; ValueError for a foreign URI, FileNotFoundError if absent."""
        if not isinstance(artifact_uri, str) or not artifact_uri.startswith(URI_PREFIX):
            raise ValueError(f"not a saferun artifact URI: {artifact_uri!r}")
        digest = artifact_uri[len(URI_PREFIX) :]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a saferun artifact URI: {artifact_uri!r}")
        path = self.base_dir / f"{digest}.json"
        record = json.loads(path.read_text(encoding="utf-8"))
        if hashlib.sha256(record.get("content", "").encode("utf-8")).hexdigest() != digest:
            raise ValueError(f"artifact {artifact_uri} does not match its hash (corrupted file)")
        return record

    def _write(self, digest: str, record: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.base_dir, prefix=f".{digest[:8]}", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.base_dir / f"{digest}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
