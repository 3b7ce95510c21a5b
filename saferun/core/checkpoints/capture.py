"""Turning an ``ExecutionState`` into artifact parts and back.

Each top-level field becomes its own part, encoded as canonical JSON, so a field that did not change
between checkpoints (a large agent memory) is recognised by its hash and costs no new bytes; the
artifact store chunks changed fields so an append stores only the new tail.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from saferun.core.state_machine.models import ExecutionState
from saferun.domain.canonical import canonical_bytes, canonical_loads
from saferun.storage.artifacts import ArtifactStore, StoredArtifact

ARTIFACT_TYPE = "checkpoint_state"


def state_parts(state: ExecutionState) -> dict[str, bytes]:
    """Canonical bytes per field; refuses non-JSON values with the field path (StateNotSerializable)."""
    parts = {"checkpoint_id": canonical_bytes(state.checkpoint_id, "checkpoint_id")}
    for name in ExecutionState.part_names():
        parts[name] = canonical_bytes(getattr(state, name), name)
    return parts


def state_from_parts(parts: dict[str, bytes]) -> ExecutionState:
    # model_construct: the bytes were validated on the way in and verified by hash on the way out
    values = {name: canonical_loads(data) for name, data in parts.items()}
    return ExecutionState.model_construct(**values)


class CheckpointCapture:
    """Stores and restores execution states as content-addressed artifacts."""

    def __init__(self, store: ArtifactStore | None = None) -> None:
        self.store = store or ArtifactStore()

    def store_state(
        self, conn: Connection, parts: dict[str, bytes], metadata: dict[str, str]
    ) -> StoredArtifact:
        return self.store.put(conn, parts, artifact_type=ARTIFACT_TYPE, metadata=metadata)

    def load_state(self, conn: Connection, uri: str) -> ExecutionState:
        return state_from_parts(self.store.get(conn, uri))

    def load_field(self, conn: Connection, uri: str, name: str) -> Any:
        """One field of a stored state, without reading the others (a large memory stays unread)."""
        parts = self.store.get(conn, uri, only={name})
        return canonical_loads(parts[name]) if name in parts else None
