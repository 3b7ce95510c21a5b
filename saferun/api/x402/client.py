"""``X402Integration``: the seed's client for the five x402 primitives.

With no ``X402_API_URL`` it is the *embedded* platform: jobs, escrow, artifacts, identities and the
supervisor marketplace live in SafeRun's own database (the default, needing no service or key). The
Artifacts calls are implemented here; every other seed call delegates to
``saferun.platform.embedded.EmbeddedPlatform`` (each mutating one takes an optional ``idempotency_key``).
The orchestrator still drives its own jobs and escrow inside its transactions (so a state change and its
money movement commit together). A remote platform over HTTP is not part of this build: setting
``X402_API_URL`` is refused at construction, loudly, instead of being silently ignored.
"""

from __future__ import annotations

import logging
from typing import Any

from saferun.config import get_settings
from saferun.errors import SafeRunError
from saferun.platform.embedded import EmbeddedPlatform
from saferun.storage.database import Database, get_database

log = logging.getLogger(__name__)
_announced = False


class X402Integration:
    def __init__(
        self, api_key: str | None = None, api_url: str | None = None, *, database: Database | None = None
    ) -> None:
        global _announced
        settings = get_settings()
        self.api_url = api_url or settings.x402_api_url
        self.api_key = api_key or settings.x402_api_key
        if self.api_url:
            raise SafeRunError(
                f"X402_API_URL is set ({self.api_url}), but this SafeRun build has only the embedded x402 "
                "platform; unset X402_API_URL to use it",
                api_url=self.api_url,
            )
        self.database = database or get_database()
        self.artifacts = self.database.artifacts
        self.platform = EmbeddedPlatform(self.database)
        if not _announced:
            log.info(
                "x402: using the embedded platform in %s (set X402_API_URL for a remote one)",
                self.database.engine.url.render_as_string(hide_password=True),
            )
            _announced = True

    @property
    def mode(self) -> str:
        return "embedded"

    async def create_artifact(
        self, artifact_type: str, content: str | bytes, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        with self.database.transaction() as conn:
            stored = self.artifacts.put_bytes(
                conn, data, artifact_type=artifact_type, metadata=metadata or {}
            )
        return {
            "artifact_id": stored.sha256,
            "uri": stored.uri,
            "size_bytes": stored.raw_size,
            "compressed_size_bytes": stored.compressed_size,
        }

    async def get_artifact(self, artifact_uri: str) -> dict[str, Any]:
        with self.database.read() as conn:
            data = self.artifacts.get_bytes(conn, artifact_uri)
            info = self.artifacts.info(conn, artifact_uri) or {}
        return {
            "uri": artifact_uri,
            "content": data.decode("utf-8"),
            "artifact_type": info.get("artifact_type"),
            "metadata": info.get("metadata", {}),
        }

    # --- Jobs, Escrow, Identity, Marketplace: the embedded platform ---------------------------------------

    async def create_job(
        self,
        job_type: str,
        job_data: dict[str, Any],
        escrow_amount: Any,
        executor_id: str,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        return await self.platform.create_job(
            job_type, job_data, escrow_amount, executor_id, idempotency_key=idempotency_key
        )

    async def create_approval_subjob(
        self,
        parent_job_id: str,
        checkpoint_id: str,
        supervisor_id: str,
        approval_data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        return await self.platform.create_approval_subjob(
            parent_job_id, checkpoint_id, supervisor_id, approval_data, idempotency_key=idempotency_key
        )

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return await self.platform.get_job(job_id)

    async def lock_escrow(
        self,
        workflow_id: str,
        amount: Any,
        poster_id: str,
        executor_id: str,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        return await self.platform.lock_escrow(
            workflow_id, amount, poster_id, executor_id, idempotency_key=idempotency_key
        )

    async def release_escrow(
        self,
        escrow_id: str,
        amount: Any,
        recipient_id: str,
        reason: str,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        return await self.platform.release_escrow(
            escrow_id, amount, recipient_id, reason, idempotency_key=idempotency_key
        )

    async def split_payment(
        self,
        escrow_id: str,
        splits: list[dict[str, Any]],
        *,
        total: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        return await self.platform.split_payment(
            escrow_id, splits, total=total, idempotency_key=idempotency_key
        )

    async def verify_identity(self, user_id: str, role: str) -> bool:
        return await self.platform.verify_identity(user_id, role)

    async def get_user_profile(self, user_id: str) -> dict[str, Any]:
        return await self.platform.get_user_profile(user_id)

    async def record_approval_quality(
        self, supervisor_id: str, workflow_id: str, quality_score: Any, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self.platform.record_approval_quality(
            supervisor_id, workflow_id, quality_score, idempotency_key=idempotency_key
        )

    async def find_supervisors(self, workflow_type: str, min_reputation: float = 0.0) -> list[dict[str, Any]]:
        return await self.platform.find_supervisors(workflow_type, min_reputation)

    async def request_supervisor(
        self, supervisor_id: str, workflow_id: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self.platform.request_supervisor(
            supervisor_id, workflow_id, idempotency_key=idempotency_key
        )

    async def rate_supervisor(
        self,
        supervisor_id: str,
        workflow_id: str,
        rating: int,
        review: str = "",
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        return await self.platform.rate_supervisor(
            supervisor_id, workflow_id, rating, review, idempotency_key=idempotency_key
        )

    async def close(self) -> None:
        """Nothing to release for the embedded platform: the database handle is shared per process."""
