"""The embedded platform's Artifacts and Identity calls: content-addressed artifacts, and the registered
identities with their reputation inputs (``verify_identity``, ``get_user_profile``,
``record_approval_quality``).

Two small mixins of ``saferun.platform.embedded.EmbeddedPlatform`` in one module: both are records the
platform keeps and reads back, with none of the jobs' or the escrow's workflow bookkeeping.
"""

from __future__ import annotations

import base64
import hashlib
import math
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select

from saferun.domain import platform_policy as rules_of
from saferun.domain.policy import Role, parse_roles
from saferun.errors import ArtifactNotFound, Conflict, InvalidInput
from saferun.platform import scope
from saferun.platform.embedded_core import EmbeddedCore, _enforce, _iso, _json_dict, _workflow_id
from saferun.storage import identities as id_store
from saferun.storage import marketplace as market
from saferun.storage.visibility import artifact_visible


class ArtifactCalls(EmbeddedCore):
    """Artifacts: ``create_artifact``, ``get_artifact``."""

    async def create_artifact(
        self,
        artifact_type: str,
        content: str | bytes,
        metadata: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Store ``content`` (text is stored as its UTF-8 bytes) as a content-addressed artifact."""
        if isinstance(content, str):
            data = content.encode("utf-8")
        elif isinstance(content, bytes | bytearray | memoryview):
            data = bytes(content)
        else:
            raise InvalidInput("content", f"must be text or bytes, got {type(content).__name__}")
        metadata = _json_dict(metadata, "metadata")

        def work(conn: Connection) -> dict[str, Any]:
            stored = self.db.artifacts.put_bytes(conn, data, artifact_type=artifact_type, metadata=metadata)
            if self.caller is not None and self.caller.authenticated and self.caller.has(Role.PLATFORM):
                scope.hold_artifact(conn, stored.uri, self.caller.identity_id)
            return {
                "artifact_id": stored.sha256,
                "uri": stored.uri,
                "size_bytes": stored.raw_size,
                "compressed_size_bytes": stored.compressed_size,
            }

        args = {
            "artifact_type": artifact_type,
            "content_sha256": hashlib.sha256(data).hexdigest(),
            "metadata": metadata,
        }
        return self._mutate("create_artifact", args, idempotency_key, work)

    async def get_artifact(self, artifact_uri: str) -> dict[str, Any]:
        """The stored value: ``content`` is its text, or base64 when the bytes are not UTF-8
        (``content_encoding`` says which)."""
        if not isinstance(artifact_uri, str):
            raise InvalidInput("artifact_uri", f"must be a string, got {type(artifact_uri).__name__}")
        self._may("get_artifact")
        with self.db.read() as conn:
            self._artifact_in_scope(conn, artifact_uri)
            data = self.db.artifacts.get_bytes(conn, artifact_uri)
            info = self.db.artifacts.info(conn, artifact_uri) or {}
        try:
            content, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            content, encoding = base64.b64encode(data).decode("ascii"), "base64"
        return {
            "uri": artifact_uri,
            "content": content,
            "content_encoding": encoding,
            "artifact_type": info.get("artifact_type"),
            "metadata": info.get("metadata") or {},
        }

    def _artifact_in_scope(self, conn: Connection, uri: str) -> None:
        """A platform reads an artifact it stored itself, or one a workflow it may see references; any
        other answers exactly like a missing one (knowing a hash is not a key)."""
        caller = self.caller
        if caller is None or not caller.authenticated or caller.is_admin:
            return
        if self.db.artifacts.info(conn, uri) is None:
            return  # get_bytes answers the missing artifact itself
        if scope.holds_artifact(conn, uri, caller.identity_id) or artifact_visible(conn, caller, uri):
            return
        raise ArtifactNotFound(uri)


class IdentityCalls(EmbeddedCore):
    """Identity: ``verify_identity``, ``get_user_profile``, ``record_approval_quality``."""

    async def verify_identity(self, user_id: str, role: str) -> bool:
        """Whether ``user_id`` is a registered, enabled identity with ``role`` (unknown identity: False)."""
        # a malformed id is 422, as everywhere else, not "not verified" (that is for ids no one holds)
        user_id = id_store.validate_identity_id(user_id, "user_id")
        if not isinstance(role, str):
            raise InvalidInput("role", f"must be a role name, got {type(role).__name__}")
        (wanted,) = parse_roles([role], "role")
        self._may("verify_identity")
        with self.db.read() as conn:
            row = (
                conn.execute(select(id_store.identities).where(id_store.identities.c.identity_id == user_id))
                .mappings()
                .first()
            )
        return row is not None and not row["disabled"] and wanted in id_store.roles_of(row)

    async def get_user_profile(self, user_id: str) -> dict[str, Any]:
        user_id = id_store.validate_identity_id(user_id, "user_id")
        self._may("get_user_profile")
        with self.db.read() as conn:
            row = id_store.get_identity(conn, user_id)
            reputation = market.reputations(conn, [user_id])[user_id]
            profile = market.get_profile(conn, user_id)
            ratings = market.rating_count(conn, user_id)
        return {
            "user_id": user_id,
            "display_name": row["display_name"],
            "roles": sorted(r.value for r in id_store.roles_of(row)),
            "disabled": bool(row["disabled"]),
            "reputation": reputation,
            "ratings_count": ratings,
            "supervisor_profile": None if profile is None else self._profile_dict(profile, reputation),
            "created_at": _iso(row["created_at"]),
        }

    async def record_approval_quality(
        self, supervisor_id: str, workflow_id: str, quality_score: Any, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        workflow_id = _workflow_id(workflow_id)
        if isinstance(quality_score, bool) or not isinstance(quality_score, int | float | Decimal):
            raise InvalidInput("quality_score", f"must be a number between 0 and 1, got {quality_score!r}")
        score = float(quality_score)
        if not math.isfinite(score) or not 0 <= score <= 1:
            raise InvalidInput("quality_score", f"must be between 0 and 1, got {quality_score!r}")

        def work(conn: Connection) -> dict[str, Any]:
            supervisor = self._party(conn, supervisor_id, "supervisor_id", Role.SUPERVISOR, strict=True)
            self._require_worked_on(conn, supervisor, workflow_id)
            if self.caller is not None:  # only the outcome sets it, never the caller
                terms = scope.workflow_terms(conn, workflow_id)
                assert terms is not None  # the guard found it
                _enforce(rules_of.check_quality(terms, supervisor, score))
            existing = market.get_quality(conn, supervisor, workflow_id)
            if existing is None:
                market.add_quality(conn, supervisor, workflow_id, score)
            elif existing["quality_score"] != score:
                raise Conflict(
                    f"approval quality of {supervisor!r} on workflow {workflow_id!r} was already recorded",
                    supervisor_id=supervisor,
                    workflow_id=workflow_id,
                )
            return {
                "supervisor_id": supervisor,
                "workflow_id": workflow_id,
                "quality_score": score,
                "reputation": market.reputations(conn, [supervisor])[supervisor],
            }

        args = {"supervisor_id": supervisor_id, "workflow_id": workflow_id, "quality_score": repr(score)}
        guard = self._workflow_guard(workflow_id, "scores its supervisor's approvals")
        return self._mutate("record_approval_quality", args, idempotency_key, work, guard)
