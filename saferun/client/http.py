"""HTTP clients for the SafeRun REST API: ``SafeRunClient`` (sync) and ``AsyncSafeRunClient`` (async).

Each endpoint group is written once (``workflows``, ``approvals``, ``records``, ``saga``: how the request is
built, and the method that sends it); the two clients differ only in how they send (``transport``), as in
httpx's own layout.

    with SafeRunClient("http://127.0.0.1:8000", api_key="sr_key_...") as c:
        c.submit_decision(request_id, "MODIFIED", modifications={"pizza_count": 10})

Every method returns the endpoint's JSON answer as documented in the OpenAPI schema (``artifact`` and
``export_bundle`` return bytes); on ``AsyncSafeRunClient`` the same methods are awaited. Errors come back as
the ``saferun.errors`` class the server raised (``WorkflowNotFound``, ``DecisionConflict``, ``InvalidInput``
with ``field``, ``Forbidden`` with ``rule``, ...), carrying the server's message and fields, chained from
the ``httpx.HTTPStatusError``. Failures to reach the server are ``ServerUnreachable`` (``RequestTimedOut``
for timeouts). Only idempotent GETs are retried, on connection failures and 5xx answers, with exponential
backoff and full jitter; a POST is sent exactly once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

from saferun.client.approvals import PENDING_PARAMS, ApprovalEndpoints, ApprovalMethods
from saferun.client.calls import Call
from saferun.client.errors import (
    ERROR_CLASSES,
    RequestTimedOut,
    ServerError,
    ServerUnreachable,
    UnexpectedResponse,
    error_from_answer,
)
from saferun.client.records import RecordEndpoints, RecordMethods, artifact_sha
from saferun.client.saga import SagaEndpoints, SagaMethods
from saferun.client.transport import (
    DEFAULT_HTTP_RETRY,
    DEFAULT_TIMEOUT,
    USER_AGENT,
    AsyncTransport,
    BaseSafeRunClient,
    SyncTransport,
)
from saferun.client.workflows import WorkflowEndpoints, WorkflowMethods, workflow_body

__all__ = [
    "DEFAULT_HTTP_RETRY",
    "DEFAULT_TIMEOUT",
    "ERROR_CLASSES",
    "PENDING_PARAMS",
    "USER_AGENT",
    "AsyncSafeRunClient",
    "BaseSafeRunClient",
    "Call",
    "Endpoints",
    "RequestTimedOut",
    "SafeRunClient",
    "ServerError",
    "ServerUnreachable",
    "UnexpectedResponse",
    "artifact_sha",
    "error_from_answer",
    "workflow_body",
]

Answer = dict[str, Any]


class Endpoints(WorkflowEndpoints, ApprovalEndpoints, RecordEndpoints, SagaEndpoints):
    """How each endpoint's request is built: pure functions, shared by the sync and async clients."""


class SafeRunClient(
    SyncTransport,
    WorkflowMethods[Answer, bytes],
    ApprovalMethods[Answer, bytes],
    RecordMethods[Answer, bytes],
    SagaMethods[Answer, bytes],
):
    """Blocking client. Thread-safe; reuse one per process (it pools connections)."""

    def iter_pending(self, workflow_id: str | None = None, **filters: Any) -> Iterator[Answer]:
        """Every pending request matching the filters, page by page (one request per ``limit`` rows)."""
        cursor = None
        while True:
            page = self.pending(workflow_id, **filters, **({"cursor": cursor} if cursor else {}))
            yield from page["pending_approvals"]
            cursor = page.get("next_cursor")
            if not cursor:
                return


class AsyncSafeRunClient(
    AsyncTransport,
    WorkflowMethods[Awaitable[Answer], Awaitable[bytes]],
    ApprovalMethods[Awaitable[Answer], Awaitable[bytes]],
    RecordMethods[Awaitable[Answer], Awaitable[bytes]],
    SagaMethods[Awaitable[Answer], Awaitable[bytes]],
):
    """Non-blocking client; the same methods as ``SafeRunClient``, awaited. Bound to one event loop."""

    async def iter_pending(self, workflow_id: str | None = None, **filters: Any) -> AsyncIterator[Answer]:
        """Every pending request matching the filters, page by page."""
        cursor = None
        while True:
            page = await self.pending(workflow_id, **filters, **({"cursor": cursor} if cursor else {}))
            for item in page["pending_approvals"]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return
