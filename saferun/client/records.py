"""What the server keeps, read over HTTP: health and stats, snapshots and state, artifacts, the audit chain,
the signed decision record, signing keys and the escrow ledger."""

from __future__ import annotations

from saferun.client.calls import B, Call, J, Sends, get, seg


def artifact_sha(ref: str) -> str:
    """The sha256 of an artifact given as its hex digest or its ``x402://artifacts/sha256:...`` uri."""
    return ref.rsplit(":", 1)[1] if ref.startswith("x402://") else ref


class RecordEndpoints:
    """How each read-only record endpoint's request is built."""

    @staticmethod
    def health() -> Call:
        return get("/api/health")

    @staticmethod
    def stats() -> Call:
        return get("/api/stats")

    @staticmethod
    def artifact(ref: str) -> Call:
        return get(f"/api/artifacts/{seg(artifact_sha(ref))}", expect="bytes")

    @staticmethod
    def snapshots(workflow_id: str) -> Call:
        return get(f"/api/workflows/{seg(workflow_id)}/snapshots")

    @staticmethod
    def latest_state(workflow_id: str) -> Call:
        return get(f"/api/workflows/{seg(workflow_id)}/state")

    @staticmethod
    def audit(workflow_id: str) -> Call:
        return get(f"/api/workflows/{seg(workflow_id)}/audit")

    @staticmethod
    def export_bundle(workflow_id: str) -> Call:
        return get(f"/api/workflows/{seg(workflow_id)}/export", expect="bytes")

    @staticmethod
    def signing_keys() -> Call:
        return get("/api/signing-keys")

    @staticmethod
    def ledger(workflow_id: str) -> Call:
        return get(f"/api/workflows/{seg(workflow_id)}/ledger")


class RecordMethods(Sends[J, B]):
    """The record reads of both clients (awaited on the async one)."""

    def health(self) -> J:
        return self._json(RecordEndpoints.health())

    def stats(self) -> J:
        return self._json(RecordEndpoints.stats())

    def artifact(self, ref: str) -> B:
        """An artifact's verified bytes (a state artifact: its parts as one JSON object)."""
        return self._bytes(RecordEndpoints.artifact(ref))

    def snapshots(self, workflow_id: str) -> J:
        return self._json(RecordEndpoints.snapshots(workflow_id))

    def latest_state(self, workflow_id: str) -> J:
        return self._json(RecordEndpoints.latest_state(workflow_id))

    def audit(self, workflow_id: str) -> J:
        return self._json(RecordEndpoints.audit(workflow_id))

    def export_bundle(self, workflow_id: str) -> B:
        """The workflow's signed decision record; check it with ``saferun.core.bundles.verify_bundle``."""
        return self._bytes(RecordEndpoints.export_bundle(workflow_id))

    def signing_keys(self) -> J:
        return self._json(RecordEndpoints.signing_keys())

    def ledger(self, workflow_id: str) -> J:
        return self._json(RecordEndpoints.ledger(workflow_id))
