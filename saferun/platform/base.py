"""``Platform``: the one interface of the x402 platform, whoever serves it.

Two implementations: ``EmbeddedPlatform`` (SafeRun's own database, ``saferun.platform.embedded``) and
``RemotePlatform`` (another server's ``/x402`` API over HTTP, ``saferun.platform.remote``).
``X402Integration`` picks one and delegates every call to it.

The seed's calls (all async) with the shapes its examples use, plus the few SafeRun adds (``get_job``,
``update_job_status``, ``get_escrow``, ``register_supervisor``, ``assign_supervisor``). Every mutating call
takes ``idempotency_key``: a repeat with the same key and arguments answers the first call's result and
changes nothing (so a retried release never pays twice); the same key with other arguments is
``IdempotencyConflict``. Bad input raises the ``saferun.errors`` class that names the problem
(``InvalidInput``/``InvalidAmount`` with ``field``, ``NotFound``, ``Conflict``, ``Forbidden`` with
``rule``) and moves nothing, on both implementations.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

MUTATING_CALLS = (
    "create_job",
    "create_approval_subjob",
    "update_job_status",
    "lock_escrow",
    "release_escrow",
    "split_payment",
    "create_artifact",
    "record_approval_quality",
    "register_supervisor",
    "request_supervisor",
    "assign_supervisor",
    "rate_supervisor",
)
READ_CALLS = (
    "get_job",
    "get_escrow",
    "get_artifact",
    "verify_identity",
    "get_user_profile",
    "find_supervisors",
)


@runtime_checkable
class Platform(Protocol):
    """The x402 platform's calls. Amounts are numbers or decimal strings with at most 6 decimals."""

    # --- Jobs -------------------------------------------------------------------------------------------
    async def create_job(
        self,
        job_type: str,
        job_data: dict[str, Any],
        escrow_amount: Any,
        executor_id: str,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``{"job_id", "job_type", "parent_job_id", "workflow_id", "status", "data", "history",
        "subjobs", "created_at", "updated_at"}``"""
        ...

    async def create_approval_subjob(
        self,
        parent_job_id: str,
        checkpoint_id: str,
        supervisor_id: str,
        approval_data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """The new sub-job, shaped like ``create_job``'s answer (``job_type`` ``"approval"``)."""
        ...

    async def get_job(self, job_id: str) -> dict[str, Any]: ...

    async def update_job_status(
        self, job_id: str, status: str, reason: str = "", *, idempotency_key: str | None = None
    ) -> dict[str, Any]: ...

    # --- Escrow -----------------------------------------------------------------------------------------
    async def lock_escrow(
        self,
        workflow_id: str,
        amount: Any,
        poster_id: str,
        executor_id: str,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``{"escrow_id", "workflow_id", "amount", "amount_micro", "status": "locked", ...}``"""
        ...

    async def release_escrow(
        self,
        escrow_id: str,
        amount: Any,
        recipient_id: str,
        reason: str,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``{"escrow_id", "release_id", "amount", "recipient_id", "status": "released", "remaining",
        ...}``"""
        ...

    async def split_payment(
        self,
        escrow_id: str,
        splits: list[dict[str, Any]],
        *,
        total: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``{"escrow_id", "split_id", "status": "split", "total", "payments": [...], "remaining", ...}``"""
        ...

    async def get_escrow(self, escrow_id: str) -> dict[str, Any]:
        """``{"escrow_id", "locked", "released", "refunded", "held", "held_micro", "invariant_holds"}``"""
        ...

    # --- Artifacts --------------------------------------------------------------------------------------
    async def create_artifact(
        self,
        artifact_type: str,
        content: str | bytes,
        metadata: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """``{"artifact_id", "uri": "x402://artifacts/sha256:...", "size_bytes", "compressed_size_bytes"}``"""
        ...

    async def get_artifact(self, artifact_uri: str) -> dict[str, Any]:
        """``{"uri", "content", "content_encoding", "artifact_type", "metadata"}``; ``content`` is the text
        (``content_encoding`` ``"utf-8"``), or base64 of bytes that are not UTF-8 (``"base64"``)."""
        ...

    # --- Identity ---------------------------------------------------------------------------------------
    async def verify_identity(self, user_id: str, role: str) -> bool: ...

    async def get_user_profile(self, user_id: str) -> dict[str, Any]:
        """``{"user_id", "display_name", "roles", "disabled", "reputation", "ratings_count",
        "supervisor_profile", "created_at"}``"""
        ...

    async def record_approval_quality(
        self, supervisor_id: str, workflow_id: str, quality_score: Any, *, idempotency_key: str | None = None
    ) -> dict[str, Any]: ...

    # --- Marketplace ------------------------------------------------------------------------------------
    async def register_supervisor(
        self,
        supervisor_id: str,
        specialties: list[str],
        price_per_approval: Any,
        available: bool = True,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]: ...

    async def find_supervisors(self, workflow_type: str, min_reputation: float = 0.0) -> list[dict[str, Any]]:
        """``[{"supervisor_id", "reputation", "specialties", "available", "price_per_approval", ...}]``"""
        ...

    async def request_supervisor(
        self, supervisor_id: str, workflow_id: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]: ...

    async def assign_supervisor(
        self,
        workflow_id: str,
        workflow_type: str,
        min_reputation: float = 0.0,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]: ...

    async def rate_supervisor(
        self,
        supervisor_id: str,
        workflow_id: str,
        rating: int,
        review: str = "",
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]: ...

    async def close(self) -> None:
        """Release what the platform holds (the remote one's connection pool)."""
        ...
