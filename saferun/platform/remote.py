"""``RemotePlatform``: the x402 platform of another server, over HTTP (what ``X402_API_URL`` selects).

    platform = RemotePlatform("https://platform.example/x402", api_key="sr_key_...")
    escrow = await platform.lock_escrow("wf_1", "100.00", "poster_1", "exec_1")
    await platform.release_escrow(escrow["escrow_id"], "90.00", "exec_1", "checkpoint_approved")

It speaks the API a SafeRun server serves under ``/x402`` (``saferun.api.platform``), so one SafeRun can
be the platform of another: point ``X402_API_URL`` at ``http(s)://<that server>/x402`` and give it the API
key of an identity with the ``platform`` role there. Same calls, arguments and answers as
``EmbeddedPlatform`` (``saferun.platform.base.Platform``); errors come back as the ``saferun.errors`` class
the platform raised, with its message and fields (``InvalidAmount`` with ``field``, ``Forbidden`` with
``rule``, ...), through the SafeRun HTTP client's mapping (``saferun.client.errors.error_from_answer``).

**Exactly once.** Every mutating call sends an ``Idempotency-Key`` header: the caller's
``idempotency_key``, or a fresh one made once per call and reused by each of its retries. The platform
stores the answer under the key in the transaction that moved the money, so a retry after a lost answer
gets the first answer back and moves nothing again.

**Retries** (``retry``, a ``RetryPolicy``: 5 attempts by default, exponential backoff with full jitter):
after a timeout or a connection failure (refused, reset, or closed after the request was sent), and after a
5xx answer other than SafeRun's own deterministic 500 errors (a corrupted artifact). Never after any other
answer: a 4xx is the platform's verdict on the request, and sending it again would change nothing. When
the attempts run out the call raises ``RequestTimedOut`` / ``ServerUnreachable`` (the last 5xx: its mapped
error) naming the ``idempotency_key``: repeating the call with that key is always safe.

**No redirects.** A 3xx is ``RedirectRefused`` (502), logged without the key or URL credentials: the
key and the money call go to ``X402_API_URL`` and nowhere a platform points (``saferun.outbound``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx

from saferun import __version__, outbound
from saferun.client.calls import seg as _seg
from saferun.client.errors import RequestTimedOut, ServerUnreachable, UnexpectedResponse
from saferun.client.transport import is_transient, mapped_error, next_delay, timed_out
from saferun.core.rollback.reconciliation import RetryPolicy
from saferun.errors import InvalidAmount, InvalidInput, SafeRunError
from saferun.storage.platform_requests import validate_key

DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRY = RetryPolicy(attempts=5, initial_delay=0.2, max_delay=5.0)
IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = f"saferun-x402-client/{__version__}"

# what may have happened after the request left: retrying with the same key is safe either way
_RETRYABLE_TRANSPORT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def _amount(value: Any, field: str) -> Any:
    """An amount for the JSON body: a Decimal as its exact string, a float as itself (JSON keeps its repr)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidAmount(field, f"{value!r} is not a finite amount")
    return value


def _body(fields: dict[str, Any]) -> bytes:
    """The JSON body; a value JSON cannot carry is ``InvalidInput`` naming its field, before sending."""
    for name, value in fields.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(name, f"must be plain JSON: {exc}") from None
    return json.dumps(fields, allow_nan=False, separators=(",", ":")).encode("utf-8")


class RemotePlatform:
    """The platform API at ``api_url`` (for a SafeRun server: ``http(s)://host:port/x402``).

    Bound to no event loop: the connection pool is made in the loop of the first call, remade when called
    from another loop (a script that runs ``asyncio.run`` twice), and closed by ``close()`` or else when
    its loop shuts down.
    """

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not isinstance(api_url, str) or not api_url.startswith(("http://", "https://")):
            raise InvalidInput("X402_API_URL", f"expected an http(s) URL, got {api_url!r}")
        if not isinstance(api_key, str) or not api_key.strip():
            raise InvalidInput("X402_API_KEY", "an API key is required for a remote x402 platform")
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise InvalidInput("timeout", f"must be a positive number of seconds, got {timeout!r}")
        self.api_url = api_url.rstrip("/")
        self.timeout = float(timeout)
        self.retry = retry or DEFAULT_RETRY
        if self.retry.attempts < 1:
            raise InvalidInput("retry", "needs at least one attempt")
        self._headers = {
            "Authorization": f"Bearer {api_key.strip()}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard: AsyncIterator[None] | None = None

    def __repr__(self) -> str:  # never the key
        return f"RemotePlatform({self.api_url!r})"

    # --- plumbing ---------------------------------------------------------------------------------------

    async def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            # a pool made in another loop cannot be used in this one: make one for this loop
            http = httpx.AsyncClient(
                base_url=self.api_url,
                headers=self._headers,
                timeout=self.timeout,
                transport=self._transport,
                follow_redirects=False,  # the key goes to the configured URL only (saferun.outbound)
            )
            self._http, self._loop = http, loop
            # closed with the loop even if nobody calls close(): the loop's shutdown (asyncio.run's end)
            # finalizes its async generators, and this one's ``finally`` closes the pool while it still can
            self._guard = self._closed_with_loop(http)
            await self._guard.__anext__()
        return self._http

    async def _closed_with_loop(self, http: httpx.AsyncClient) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self._http is http:
                self._http, self._loop = None, None
            await http.aclose()

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None and self._loop is asyncio.get_running_loop():
            await http.aclose()
        self._loop = None

    async def __aenter__(self) -> RemotePlatform:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return await self._send("GET", path, params=params)

    async def _post(self, path: str, body: dict[str, Any], idempotency_key: str | None) -> Any:
        # the key is fixed before the first attempt: every retry of this call is the same request
        if idempotency_key is None:
            idempotency_key = f"x402c_{uuid.uuid4().hex}"
        else:  # the platform's own rule, checked before anything is sent
            idempotency_key = validate_key(idempotency_key)
        return await self._send("POST", path, content=_body(body), idempotency_key=idempotency_key)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        headers = {}
        if content is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        key_note = f" (Idempotency-Key {idempotency_key})" if idempotency_key else ""
        attempt = 1
        while True:
            try:
                response = await (await self._client()).request(
                    method, path, params=params, content=content, headers=headers
                )
            except _RETRYABLE_TRANSPORT as exc:
                delay = next_delay(
                    self.retry, attempt, f"x402 {method} {path}", type(exc).__name__ + key_note
                )
                if delay is None:
                    raise self._gave_up(method, path, exc, attempt, idempotency_key) from exc
            except httpx.TransportError as exc:  # a bad URL or proxy setting: the same on every attempt
                raise ServerUnreachable(
                    f"could not reach the x402 platform: {method} {self.api_url}{path}: "
                    f"{type(exc).__name__}: {exc}",
                    url=f"{self.api_url}{path}",
                ) from exc
            else:
                what = f"HTTP {response.status_code}{key_note}"
                delay = (
                    next_delay(self.retry, attempt, f"x402 {method} {path}", what)
                    if is_transient(response)
                    else None
                )
                if delay is None:
                    return self._read(method, path, response)
            await asyncio.sleep(delay)
            attempt += 1

    def _gave_up(
        self, method: str, path: str, exc: httpx.TransportError, attempts: int, key: str | None
    ) -> SafeRunError:
        where = f"{method} {self.api_url}{path}"
        fields: dict[str, Any] = {"url": f"{self.api_url}{path}", "attempts": attempts}
        outcome = ""
        if key is not None:
            fields["idempotency_key"] = key
            outcome = (
                f"; the platform may or may not have applied it: repeat the call with "
                f"idempotency_key={key!r} to find out without applying it twice"
            )
        cls = RequestTimedOut if timed_out(exc) else ServerUnreachable
        return cls(
            f"x402 platform {where}: {type(exc).__name__} after {attempts} attempts{outcome}", **fields
        )

    @staticmethod
    def _read(method: str, path: str, response: httpx.Response) -> Any:
        if 300 <= response.status_code < 400:
            raise outbound.refusal("x402 platform", response)
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            raise mapped_error(response) from exc
        try:
            return response.json()
        except ValueError as exc:
            raise UnexpectedResponse(
                f"x402 {method} {path} answered {response.status_code} with a non-JSON body",
                status_code=response.status_code,
            ) from exc

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
        body = {
            "job_type": job_type,
            "job_data": job_data,
            "escrow_amount": _amount(escrow_amount, "escrow_amount"),
            "executor_id": executor_id,
        }
        result: dict[str, Any] = await self._post("/jobs", body, idempotency_key)
        return result

    async def create_approval_subjob(
        self,
        parent_job_id: str,
        checkpoint_id: str,
        supervisor_id: str,
        approval_data: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        path = f"/jobs/{_seg(parent_job_id, 'parent_job_id')}/approval-subjobs"
        body = {
            "checkpoint_id": checkpoint_id,
            "supervisor_id": supervisor_id,
            "approval_data": approval_data,
        }
        result: dict[str, Any] = await self._post(path, body, idempotency_key)
        return result

    async def get_job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._get(f"/jobs/{_seg(job_id, 'job_id')}")
        return result

    async def update_job_status(
        self, job_id: str, status: str, reason: str = "", *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        body = {"status": status, "reason": reason}
        result: dict[str, Any] = await self._post(
            f"/jobs/{_seg(job_id, 'job_id')}/status", body, idempotency_key
        )
        return result

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
        body = {
            "workflow_id": workflow_id,
            "amount": _amount(amount, "amount"),
            "poster_id": poster_id,
            "executor_id": executor_id,
        }
        result: dict[str, Any] = await self._post("/escrow/lock", body, idempotency_key)
        return result

    async def release_escrow(
        self,
        escrow_id: str,
        amount: Any,
        recipient_id: str,
        reason: str,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body = {"amount": _amount(amount, "amount"), "recipient_id": recipient_id, "reason": reason}
        path = f"/escrow/{_seg(escrow_id, 'escrow_id')}/release"
        result: dict[str, Any] = await self._post(path, body, idempotency_key)
        return result

    async def split_payment(
        self,
        escrow_id: str,
        splits: list[dict[str, Any]],
        *,
        total: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        if isinstance(splits, list | tuple):
            splits = [
                {**s, "amount": _amount(s["amount"], f"splits[{i}].amount")}
                if isinstance(s, dict) and "amount" in s
                else s
                for i, s in enumerate(splits)
            ]
        body = {"splits": splits, "total": None if total is None else _amount(total, "total")}
        path = f"/escrow/{_seg(escrow_id, 'escrow_id')}/split"
        result: dict[str, Any] = await self._post(path, body, idempotency_key)
        return result

    async def get_escrow(self, escrow_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._get(f"/escrow/{_seg(escrow_id, 'escrow_id')}")
        return result

    # --- Artifacts --------------------------------------------------------------------------------------

    async def create_artifact(
        self,
        artifact_type: str,
        content: str | bytes,
        metadata: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        if isinstance(content, str):
            text, encoding = content, "utf-8"
        elif isinstance(content, bytes | bytearray | memoryview):
            text, encoding = base64.b64encode(bytes(content)).decode("ascii"), "base64"
        else:
            raise InvalidInput("content", f"must be text or bytes, got {type(content).__name__}")
        body = {
            "artifact_type": artifact_type,
            "content": text,
            "content_encoding": encoding,
            "metadata": metadata,
        }
        result: dict[str, Any] = await self._post("/artifacts", body, idempotency_key)
        return result

    async def get_artifact(self, artifact_uri: str) -> dict[str, Any]:
        if not isinstance(artifact_uri, str):
            raise InvalidInput("artifact_uri", f"must be a string, got {type(artifact_uri).__name__}")
        result: dict[str, Any] = await self._get("/artifacts", {"uri": artifact_uri})
        return result

    # --- Identity ---------------------------------------------------------------------------------------

    async def verify_identity(self, user_id: str, role: str) -> bool:
        if not isinstance(role, str):
            raise InvalidInput("role", f"must be a role name, got {type(role).__name__}")
        answer = await self._get(f"/identities/{_seg(user_id, 'user_id')}/verify", {"role": role})
        verified = answer.get("verified") if isinstance(answer, dict) else None
        if not isinstance(verified, bool):
            raise UnexpectedResponse(f"x402 verify_identity answered {answer!r}, not {{'verified': bool}}")
        return verified

    async def get_user_profile(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._get(f"/identities/{_seg(user_id, 'user_id')}")
        return result

    async def record_approval_quality(
        self, supervisor_id: str, workflow_id: str, quality_score: Any, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        if isinstance(quality_score, Decimal):
            quality_score = float(quality_score)
        body = {"workflow_id": workflow_id, "quality_score": quality_score}
        path = f"/supervisors/{_seg(supervisor_id, 'supervisor_id')}/approval-quality"
        result: dict[str, Any] = await self._post(path, body, idempotency_key)
        return result

    # --- Marketplace ------------------------------------------------------------------------------------

    async def register_supervisor(
        self,
        supervisor_id: str,
        specialties: list[str],
        price_per_approval: Any,
        available: bool = True,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body = {
            "supervisor_id": supervisor_id,
            "specialties": list(specialties) if isinstance(specialties, tuple) else specialties,
            "price_per_approval": _amount(price_per_approval, "price_per_approval"),
            "available": available,
        }
        result: dict[str, Any] = await self._post("/supervisors", body, idempotency_key)
        return result

    async def find_supervisors(self, workflow_type: str, min_reputation: float = 0.0) -> list[dict[str, Any]]:
        if isinstance(min_reputation, bool) or not isinstance(min_reputation, int | float | Decimal):
            raise InvalidInput("min_reputation", f"must be a number between 0 and 1, got {min_reputation!r}")
        params = {"workflow_type": workflow_type, "min_reputation": float(min_reputation)}
        answer = await self._get("/supervisors", params)
        found = answer.get("supervisors") if isinstance(answer, dict) else None
        if not isinstance(found, list):
            raise UnexpectedResponse(
                f"x402 find_supervisors answered {answer!r}, not {{'supervisors': [...]}}"
            )
        return found

    async def request_supervisor(
        self, supervisor_id: str, workflow_id: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        path = f"/supervisors/{_seg(supervisor_id, 'supervisor_id')}/requests"
        result: dict[str, Any] = await self._post(path, {"workflow_id": workflow_id}, idempotency_key)
        return result

    async def assign_supervisor(
        self,
        workflow_id: str,
        workflow_type: str,
        min_reputation: float = 0.0,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        if isinstance(min_reputation, Decimal):
            min_reputation = float(min_reputation)
        body = {"workflow_id": workflow_id, "workflow_type": workflow_type, "min_reputation": min_reputation}
        result: dict[str, Any] = await self._post("/supervisors/assignments", body, idempotency_key)
        return result

    async def rate_supervisor(
        self,
        supervisor_id: str,
        workflow_id: str,
        rating: int,
        review: str = "",
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body = {"workflow_id": workflow_id, "rating": rating, "review": review}
        path = f"/supervisors/{_seg(supervisor_id, 'supervisor_id')}/ratings"
        result: dict[str, Any] = await self._post(path, body, idempotency_key)
        return result
