"""``X402Integration``: the seed's client for the five x402 primitives, on one of two platforms.

- **Remote** (``X402_API_URL`` set, or ``api_url=``): ``saferun.platform.remote.RemotePlatform`` speaks HTTP
  to that platform with ``X402_API_KEY`` (required: construction fails at once without it), retrying
  timeouts, dropped connections and 5xx with exponential backoff and jitter, and sending an idempotency
  key with every mutating call so a retried release never pays twice. Another SafeRun server is such a
  platform: ``X402_API_URL=https://that-server/x402`` with the key of an identity holding the ``platform``
  role there.
- **Embedded** (the default, no ``X402_API_URL``): ``saferun.platform.embedded.EmbeddedPlatform`` on
  SafeRun's own database, needing no service or key; said once in the log.

Every call delegates to ``self.platform`` (a ``saferun.platform.base.Platform``) and answers what the seed
shows. Each mutating call takes an optional ``idempotency_key``; errors are ``saferun.errors`` classes on
both platforms.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from saferun.config import get_settings
from saferun.core.rollback.reconciliation import RetryPolicy
from saferun.errors import SafeRunError
from saferun.platform.base import Platform
from saferun.platform.embedded import EmbeddedPlatform
from saferun.platform.remote import DEFAULT_TIMEOUT, RemotePlatform
from saferun.storage.database import Database, get_database

if TYPE_CHECKING:
    from saferun.storage.artifacts import ArtifactStore

log = logging.getLogger(__name__)
_announced: set[str] = set()


def _announce(mode: str, message: str, *args: Any) -> None:
    """Log which platform is in use, once per process and mode."""
    if mode not in _announced:
        _announced.add(mode)
        log.info(message, *args)


class X402Integration:
    """``X402Integration()`` reads ``X402_API_URL`` / ``X402_API_KEY``; arguments override them.

    ``database`` is the embedded platform's database (default: the configured one) and is ``None`` for a
    remote platform, as is ``artifacts``; ``timeout`` (seconds per attempt) and ``retry`` tune the remote
    client.
    """

    def __init__(
        self,
        api_key: str | None = None,
        api_url: str | None = None,
        *,
        database: Database | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
    ) -> None:
        settings = get_settings()
        self.api_url = api_url or settings.x402_api_url or None
        secret = settings.x402_api_key.get_secret_value() if settings.x402_api_key else None
        self.api_key = api_key or secret or None
        self.database: Database | None
        self.artifacts: ArtifactStore | None
        self.platform: Platform
        if self.api_url:
            if not self.api_key or not self.api_key.strip():
                raise SafeRunError(
                    f"X402_API_KEY is required when X402_API_URL is set ({self.api_url}): set X402_API_KEY "
                    "(environment or .env) to the platform's API key, or unset X402_API_URL to use the "
                    "embedded platform",
                    api_url=self.api_url,
                )
            self.database = None
            self.artifacts = None
            self.platform = RemotePlatform(self.api_url, self.api_key, timeout=timeout, retry=retry)
            _announce("remote", "x402: using the remote platform at %s", self.platform.api_url)
        else:
            self.database = database or get_database()
            self.artifacts = self.database.artifacts
            self.platform = EmbeddedPlatform(self.database)
            _announce(
                "embedded",
                "x402: using the embedded platform in %s (set X402_API_URL for a remote one)",
                self.database.engine.url.render_as_string(hide_password=True),
            )

    @property
    def mode(self) -> str:
        """``"remote"`` (an x402 platform over HTTP) or ``"embedded"`` (SafeRun's own database)."""
        return "remote" if isinstance(self.platform, RemotePlatform) else "embedded"

    @property
    def client(self) -> X402Integration:
        """The original's ``integration.client`` (its HTTP client): the same calls are on this object."""
        return self

    def __repr__(self) -> str:  # never the key
        where = self.api_url if self.mode == "remote" else "embedded"
        return f"X402Integration({where})"

    async def close(self) -> None:
        """Release the remote platform's connections (nothing to release for the embedded one)."""
        await self.platform.close()

    async def __aenter__(self) -> X402Integration:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- Jobs ---------------------------------------------------------------------------------------------

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

    async def update_job_status(
        self, job_id: str, status: str, reason: str = "", *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self.platform.update_job_status(job_id, status, reason, idempotency_key=idempotency_key)

    # --- Escrow -------------------------------------------------------------------------------------------

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

    async def get_escrow(self, escrow_id: str) -> dict[str, Any]:
        return await self.platform.get_escrow(escrow_id)

    # --- The original SafeRun-X402's workflow helpers (docs/original-api.md) ------------------------------

    async def setup_supervised_workflow(
        self,
        workflow_id: str,
        workflow_config: dict[str, Any],
        escrow_amount: float,
        poster_id: str,
        executor_id: str,
        supervisor_id: str | None = None,
    ) -> dict[str, Any]:
        """The original's setup plan (5 keys). Nothing is created: SafeRun's orchestrator creates the job
        and locks the escrow in the transaction that creates the workflow (``initialize_workflow``)."""
        return {
            "workflow_id": workflow_id,
            "job_id": f"job_{uuid.uuid4()}",
            "escrow_id": None,
            "supervisor_id": supervisor_id or workflow_config.get("supervisor_id") or "default_supervisor",
            "status": "ready",
        }

    async def store_checkpoint_artifact(
        self, checkpoint_id: str, checkpoint_data: str, metadata: dict[str, Any]
    ) -> str:
        """Store a serialized checkpoint as a platform artifact; returns its URI (read back with
        ``get_artifact``, or ``CheckpointManager.load_checkpoint_from_artifact``)."""
        stored = await self.create_artifact(
            "checkpoint_state", checkpoint_data, {"checkpoint_id": checkpoint_id, **(metadata or {})}
        )
        return str(stored["uri"])

    async def calculate_settlement(
        self, workflow_id: str, completion_percentage: float, escrow_amount: float
    ) -> dict[str, Any]:
        return calculate_settlement(workflow_id, completion_percentage, escrow_amount)

    async def settle_workflow(
        self,
        workflow_id: str,
        escrow_id: str | None,
        escrow_amount: float,
        completion_percentage: float,
        executor_id: str,
        supervisor_id: str,
    ) -> dict[str, Any]:
        """The original's settlement *plan*; no money moves here. SafeRun pays approved milestones from
        the escrow as they are approved and refunds the rest at ``complete_workflow``/``fail_workflow``."""
        return calculate_settlement(workflow_id, completion_percentage, escrow_amount)

    # --- Artifacts ----------------------------------------------------------------------------------------

    async def create_artifact(
        self,
        artifact_type: str,
        content: str | bytes,
        metadata: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        return await self.platform.create_artifact(
            artifact_type, content, metadata, idempotency_key=idempotency_key
        )

    async def get_artifact(self, artifact_uri: str) -> dict[str, Any]:
        return await self.platform.get_artifact(artifact_uri)

    # --- Identity -----------------------------------------------------------------------------------------

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

    # --- Marketplace --------------------------------------------------------------------------------------

    async def register_supervisor(
        self,
        supervisor_id: str,
        specialties: list[str],
        price_per_approval: Any,
        available: bool = True,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        return await self.platform.register_supervisor(
            supervisor_id, specialties, price_per_approval, available, idempotency_key=idempotency_key
        )

    async def find_supervisors(self, workflow_type: str, min_reputation: float = 0.0) -> list[dict[str, Any]]:
        return await self.platform.find_supervisors(workflow_type, min_reputation)

    async def request_supervisor(
        self, supervisor_id: str, workflow_id: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self.platform.request_supervisor(
            supervisor_id, workflow_id, idempotency_key=idempotency_key
        )

    async def assign_supervisor(
        self,
        workflow_id: str,
        workflow_type: str,
        min_reputation: float = 0.0,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        return await self.platform.assign_supervisor(
            workflow_id, workflow_type, min_reputation, idempotency_key=idempotency_key
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


def calculate_settlement(
    workflow_id: str, completion_percentage: float, escrow_amount: float
) -> dict[str, Any]:
    """The original's 90/10 split of ``escrow * completion`` (floats, completion not clamped), computed in
    Decimal so the two amounts add up to the payout exactly as printed."""
    payout = Decimal(str(escrow_amount)) * Decimal(str(completion_percentage))
    executor = payout * Decimal("0.9")
    return {
        "workflow_id": workflow_id,
        "completion_percentage": completion_percentage,
        "total_escrow": escrow_amount,
        "total_payout": float(payout),
        "splits": [
            {"recipient_type": "executor", "amount": float(executor), "reason": "partial_completion"},
            {"recipient_type": "supervisor", "amount": float(payout - executor), "reason": "supervision_fee"},
        ],
    }


def __getattr__(name: str) -> Any:
    # the original's HTTP client and its retry decorator (original_client.py)
    if name in ("X402Client", "retry_on_failure"):
        from saferun.api.x402 import original_client

        return getattr(original_client, name)
    raise AttributeError(name)
