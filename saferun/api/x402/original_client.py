"""The original SafeRun-X402's ``X402Client`` and ``retry_on_failure``: its HTTP wire calls, kept for code
written against it. SafeRun's own calls go through ``X402Integration`` (``client.py``), which speaks to
the embedded platform or a remote one with idempotency keys; this class sends exactly the original's
requests to ``settings.x402_api_url``.

The waits come from SafeRun's one backoff policy (``RetryPolicy``), with the original's attempts and
base delay; like the original, every ``httpx.HTTPError`` (4xx included) is retried and anything else
is raised at once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import httpx

from saferun.config import get_settings
from saferun.core.rollback.reconciliation import RetryPolicy
from saferun.outbound import refuse_redirects_async

P = ParamSpec("P")
T = TypeVar("T")
PLACEHOLDER_URL = "https://api.x402.io"


def retry_on_failure(
    max_retries: int = 3, delay: float = 1.0, backoff: float = 2.0
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    policy = RetryPolicy(
        attempts=max_retries + 1,
        initial_delay=delay,
        max_delay=delay * backoff**max_retries,
        multiplier=backoff,
    )

    def wrap(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> T:
            for attempt in range(1, policy.attempts + 1):
                try:
                    return await fn(*args, **kwargs)
                except httpx.HTTPError:
                    if attempt == policy.attempts:
                        raise
                    await asyncio.sleep(policy.delay(attempt))
            raise AssertionError("unreachable")

        return run

    return wrap


class X402Client:
    def __init__(self, api_key: str | None = None) -> None:
        settings = get_settings()
        secret = settings.x402_api_key.get_secret_value() if settings.x402_api_key else None
        self.api_key = api_key or secret
        self.base_url = settings.x402_api_url or ""
        if not self.api_key:
            raise ValueError("X402_API_KEY is required for X402Client")
        if not self.base_url or self.base_url.rstrip("/") == PLACEHOLDER_URL:
            raise ValueError("X402_API_URL must be set to your x402 platform (not the placeholder)")
        base = self.base_url.rstrip("/") + "/"
        # no redirect is followed (the key goes to X402_API_URL only): a 3xx is RedirectRefused at once,
        # not an httpx.HTTPError, so it is not retried either (saferun.outbound)
        self.client = httpx.AsyncClient(
            base_url=base,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30.0,
            follow_redirects=False,
            event_hooks={"response": [refuse_redirects_async("x402 platform")]},
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.client.request(method, path.lstrip("/"), **kwargs)
        response.raise_for_status()
        return response.json() if response.content else {}

    @retry_on_failure(3, 1.0)
    async def create_job(
        self, job_type: str, job_data: dict[str, Any], escrow_amount: float, executor_id: str
    ) -> Any:
        escrow = {"amount": escrow_amount, "executor_id": executor_id}
        body = {"type": job_type, "data": job_data, "escrow": escrow}
        return await self._json("POST", "jobs", json=body)

    @retry_on_failure(2, 0.5)
    async def get_job(self, job_id: str) -> Any:
        return await self._json("GET", f"jobs/{job_id}")

    @retry_on_failure(2, 0.5)
    async def update_job_status(
        self, job_id: str, status: str, metadata: dict[str, Any] | None = None
    ) -> bool:
        await self._json("PATCH", f"jobs/{job_id}", json={"status": status, "metadata": metadata or {}})
        return True

    @retry_on_failure(2, 0.5)
    async def create_approval_subjob(
        self, parent_job_id: str, checkpoint_id: str, supervisor_id: str, approval_data: dict[str, Any]
    ) -> Any:
        body = {
            "parent_job_id": parent_job_id,
            "checkpoint_id": checkpoint_id,
            "supervisor_id": supervisor_id,
            "type": "approval_request",
            "data": approval_data,
        }
        return await self._json("POST", "jobs/subjobs", json=body)

    @retry_on_failure(3, 1.0)
    async def lock_escrow(self, workflow_id: str, amount: float, poster_id: str, executor_id: str) -> Any:
        body = {"workflow_id": workflow_id, "amount": amount, "poster_id": poster_id}
        body["executor_id"] = executor_id
        return await self._json("POST", "escrow/lock", json=body)

    async def release_escrow(self, escrow_id: str, amount: float, recipient_id: str, reason: str) -> bool:
        # not retried, as in the original: a release is money
        body = {"escrow_id": escrow_id, "amount": amount, "recipient_id": recipient_id, "reason": reason}
        await self._json("POST", "escrow/release", json=body)
        return True

    @retry_on_failure(3, 1.0)
    async def split_payment(self, escrow_id: str, splits: list[dict[str, Any]]) -> bool:
        for split in splits:
            _ = split["amount"]  # the original's KeyError before sending
        await self._json("POST", "escrow/split", json={"escrow_id": escrow_id, "splits": splits})
        return True

    async def calculate_settlement(
        self, workflow_id: str, completion_percentage: float, escrow_amount: float
    ) -> dict[str, Any]:
        from saferun.api.x402.client import calculate_settlement

        return calculate_settlement(workflow_id, completion_percentage, escrow_amount)

    @retry_on_failure(3, 1.0)
    async def create_artifact(self, artifact_type: str, content: str, metadata: dict[str, Any]) -> Any:
        digest = hashlib.sha256(content.encode("utf-8")).hexdigest()
        body = {"type": artifact_type, "content": content, "content_hash": digest, "metadata": metadata}
        return await self._json("POST", "artifacts", json=body)

    @retry_on_failure(2, 0.5)
    async def get_artifact(self, artifact_uri: str) -> Any:
        return await self._json("GET", f"artifacts/{artifact_uri.rsplit('/', 1)[-1]}")

    @retry_on_failure(2, 0.5)
    async def verify_identity(self, user_id: str, role: str) -> bool:
        data = await self._json("POST", "identity/verify", json={"user_id": user_id, "role": role})
        return bool(data.get("verified", False))

    @retry_on_failure(2, 0.5)
    async def get_user_profile(self, user_id: str) -> Any:
        return await self._json("GET", f"identity/users/{user_id}")

    @retry_on_failure(2, 0.5)
    async def find_supervisors(self, workflow_type: str, min_reputation: float = 0.8) -> list[Any]:
        params = {"workflow_type": workflow_type, "min_reputation": min_reputation}
        data = await self._json("GET", "marketplace/supervisors", params=params)
        return list(data.get("supervisors", []))

    @retry_on_failure(2, 0.5)
    async def request_supervisor(self, supervisor_id: str, workflow_id: str) -> bool:
        body = {"supervisor_id": supervisor_id, "workflow_id": workflow_id}
        await self._json("POST", "marketplace/supervisors/request", json=body)
        return True
