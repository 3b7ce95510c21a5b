"""Turning an ``ExecutionState`` into artifact parts and back.

Each top-level field becomes its own part, encoded as canonical JSON, so a field that did not change
between checkpoints (a large agent memory) is recognised by its hash and costs no new bytes; the
artifact store chunks changed fields so an append stores only the new tail.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from saferun.core.state_machine.models import ExecutionState
from saferun.domain.canonical import canonical_bytes, canonical_loads
from saferun.storage.artifacts import ArtifactInput, ArtifactStore, StoredArtifact

ARTIFACT_TYPE = "checkpoint_state"

log = logging.getLogger(__name__)


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
        # a workflow's checkpoints are one lineage: a changed field is stored as a delta on its last version
        return self.store.put(
            conn, parts, artifact_type=ARTIFACT_TYPE, metadata=metadata, lineage=metadata.get("workflow_id")
        )

    def store_states(
        self, conn: Connection, items: list[tuple[dict[str, bytes], dict[str, str]]]
    ) -> list[StoredArtifact]:
        """``store_state`` for many workflows' states with the statements of one (the bulk path)."""
        inputs = [ArtifactInput(parts, meta, meta.get("workflow_id")) for parts, meta in items]
        return self.store.put_many(conn, inputs, artifact_type=ARTIFACT_TYPE)

    def load_state(self, conn: Connection, uri: str) -> ExecutionState:
        return state_from_parts(self.store.get(conn, uri))

    def load_field(self, conn: Connection, uri: str, name: str) -> Any:
        """One field of a stored state, without reading the others (a large memory stays unread)."""
        parts = self.store.get(conn, uri, only={name})
        return canonical_loads(parts[name]) if name in parts else None


# --- The original SafeRun-X402 API (docs/original-api.md): in-process capture, JSON export/import ---

_SEED_FIELDS = ("agent_memory", "api_calls", "intermediate_outputs", "decision_trace", "resource_consumption")


def _seed_dict(state: ExecutionState) -> dict[str, Any]:
    """The original's key order; SafeRun's extra fields follow only when set, so seed states match it."""
    data: dict[str, Any] = {"checkpoint_id": state.checkpoint_id, "timestamp": state.timestamp.isoformat()}
    for name in _SEED_FIELDS:
        data[name] = getattr(state, name)
    for name in ExecutionState.part_names():
        if name not in data and getattr(state, name):
            data[name] = getattr(state, name)
    return data


class StateCapture:
    """Builds, serialises, hashes and compares execution states (the original's capture module)."""

    def __init__(self) -> None:
        self.capture_history: list[dict[str, Any]] = []

    def capture_state(
        self,
        checkpoint_id: str,
        agent_memory: dict[str, Any],
        api_calls: list[dict[str, Any]],
        intermediate_outputs: dict[str, Any],
        decision_trace: list[str],
        resource_consumption: dict[str, float],
    ) -> ExecutionState:
        state = ExecutionState(
            checkpoint_id=checkpoint_id,
            agent_memory=agent_memory,
            api_calls=api_calls,
            intermediate_outputs=intermediate_outputs,
            decision_trace=decision_trace,
            resource_consumption=resource_consumption,
        )
        dumped = state.model_dump()
        dumped["timestamp"] = state.timestamp
        self.capture_history.append(
            {"checkpoint_id": checkpoint_id, "timestamp": state.timestamp.isoformat(), "state": dumped}
        )
        return state

    def serialize_state(self, execution_state: ExecutionState) -> str:
        """Indent-2 JSON; raises (TypeError) on content JSON cannot express, as the original did."""
        return json.dumps(_seed_dict(execution_state), indent=2)

    def deserialize_state(self, serialized: str) -> ExecutionState:
        """The inverse of ``serialize_state``; raises on malformed input (ValueError or ValidationError)."""
        data = json.loads(serialized)
        if not isinstance(data, dict):
            raise ValueError("a serialized state is a JSON object")
        stamp = data.pop("timestamp", None)
        state = ExecutionState.model_validate(data)
        if stamp is not None:
            if not isinstance(stamp, str):
                raise ValueError("timestamp must be an ISO string")
            state.timestamp = datetime.fromisoformat(stamp)
        return state

    def compute_state_hash(self, execution_state: ExecutionState) -> str:
        return hashlib.sha256(self.serialize_state(execution_state).encode("utf-8")).hexdigest()

    def compare_states(self, state1: ExecutionState, state2: ExecutionState) -> dict[str, Any]:
        return {
            "memory_diff": _dict_diff(state1.agent_memory, state2.agent_memory),
            "outputs_diff": _dict_diff(state1.intermediate_outputs, state2.intermediate_outputs),
            "resource_diff": _dict_diff(state1.resource_consumption, state2.resource_consumption),
            "api_calls_added": len(state2.api_calls) - len(state1.api_calls),
            "decisions_added": len(state2.decision_trace) - len(state1.decision_trace),
        }


def _dict_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {
        "added": {k: v for k, v in new.items() if k not in old},
        "removed": {k: v for k, v in old.items() if k not in new},
        "changed": {k: {"old": old[k], "new": new[k]} for k in old if k in new and old[k] != new[k]},
    }


class CheckpointManager:
    """The original's in-process checkpoint table (ID -> state), with JSON export and import.

    Durable checkpoints of a workflow live in the orchestrator's store; this class is the original's
    scratch table that agents and tests use directly, kept exactly as callers of the original see it.
    """

    def __init__(self) -> None:
        self.state_capture = StateCapture()
        self.checkpoints: dict[str, ExecutionState] = {}

    def create_checkpoint(
        self,
        checkpoint_id: str,
        agent_memory: dict[str, Any],
        api_calls: list[dict[str, Any]] | None = None,
        intermediate_outputs: dict[str, Any] | None = None,
        decision_trace: list[str] | None = None,
        resource_consumption: dict[str, float] | None = None,
    ) -> ExecutionState:
        state = self.state_capture.capture_state(
            checkpoint_id,
            agent_memory,
            api_calls or [],
            intermediate_outputs or {},
            decision_trace or [],
            resource_consumption or {},
        )
        self.checkpoints[checkpoint_id] = state
        return state

    def get_checkpoint(self, checkpoint_id: str) -> ExecutionState | None:
        return self.checkpoints.get(checkpoint_id)

    def restore_checkpoint(self, checkpoint_id: str) -> ExecutionState | None:
        return self.checkpoints.get(checkpoint_id)

    def list_checkpoints(self) -> list[str]:
        return list(self.checkpoints)

    def delete_checkpoint(self, checkpoint_id: str) -> bool:
        return self.checkpoints.pop(checkpoint_id, None) is not None

    def export_checkpoint(self, checkpoint_id: str) -> str | None:
        state = self.checkpoints.get(checkpoint_id)
        return None if state is None else self.state_capture.serialize_state(state)

    def import_checkpoint(self, checkpoint_id: str, serialized: str) -> bool:
        """``False`` (and nothing stored) for anything that is not a serialized state; never raises."""
        try:
            state = self.state_capture.deserialize_state(serialized)
        except Exception as exc:  # the original's contract: any malformed input is a plain False
            log.warning("import_checkpoint %s refused: %s", checkpoint_id, exc)
            return False
        self.checkpoints[checkpoint_id] = state
        return True

    async def load_checkpoint_from_artifact(
        self, artifact_uri: str, checkpoint_id: str, x402_client: Any
    ) -> ExecutionState:
        """Read a stored checkpoint back: from an ``X402Client`` (``get_artifact``) or, closing the
        original's gap, from an ``X402Integration`` (its local ``artifacts`` store)."""
        if not x402_client:
            raise ValueError("x402_client is required to load a checkpoint artifact")
        getter = getattr(x402_client, "get_artifact", None)
        if getter is not None:
            artifact = await getter(artifact_uri)
        elif getattr(x402_client, "artifacts", None) is not None:
            artifact = x402_client.artifacts.get(artifact_uri)
        else:
            raise ValueError("x402_client has neither get_artifact nor artifacts")
        content = (artifact or {}).get("content")
        if not content:
            raise ValueError(f"artifact {artifact_uri} has no content")
        state = self.state_capture.deserialize_state(content)
        self.checkpoints[checkpoint_id] = state
        return state
