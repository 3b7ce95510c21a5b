"""Sending a ``Call``: configuration, the one retry rule, reading answers; sync and async loops.

The retry rule is shared with ``saferun.platform.remote`` (the x402 platform client), and its waits come
from SafeRun's one backoff policy, ``RetryPolicy`` (exponential, full jitter):

* a call is sent again only when sending it twice is harmless — a GET here, a POST that carries an
  ``Idempotency-Key`` on the platform;
* after a transport failure the caller lists as transient, or after a 5xx answer that is not one of
  SafeRun's own deterministic 500 errors (a corrupted artifact, a broken audit chain say the same thing
  every time; a restarting server or a proxy does not);
* never after any other answer: a 4xx is the server's verdict on the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Any, Self

import httpx

from saferun import errors
from saferun.client.calls import Call
from saferun.client.errors import RequestTimedOut, ServerUnreachable, UnexpectedResponse, error_from_answer
from saferun.core.rollback.reconciliation import RetryPolicy
from saferun.errors import SafeRunError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
DEFAULT_HTTP_RETRY = RetryPolicy(attempts=4, initial_delay=0.1, max_delay=2.0)
USER_AGENT = "saferun-client/0.1"

# a GET may be sent again after these (a read timeout is not among them: the server may still be working)
_RETRYABLE_TRANSPORT = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


def is_transient(response: httpx.Response) -> bool:
    """A 5xx that may pass (a restarting server, a proxy, a lost database connection); not a 500 that
    carries one of SafeRun's own errors, which says the same thing every time."""
    if response.status_code < 500:
        return False
    if response.status_code != 500:
        return True
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return True
    return not (isinstance(detail, dict) and isinstance(detail.get("error"), str))


def next_delay(policy: RetryPolicy, attempt: int, label: str, what: str) -> float | None:
    """Seconds to wait before attempt ``attempt + 1`` of ``label`` (logged with ``what`` went wrong), or
    None when ``policy`` allows no more attempts."""
    if attempt >= policy.attempts:
        return None
    delay = policy.delay(attempt)
    log.warning("%s: %s, retry %d/%d in %.2fs", label, what, attempt, policy.attempts - 1, delay)
    return delay


def timed_out(exc: httpx.TransportError) -> bool:
    """Whether the request may have reached the server and the answer did not come back in time."""
    return isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout)


def mapped_error(response: httpx.Response) -> SafeRunError:
    """The ``saferun.errors`` exception an error answer stands for."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return error_from_answer(response.status_code, body, response.text)


class BaseSafeRunClient:
    """Configuration, retry decisions and answer parsing: everything the two clients share but I/O.

    ``transport``: an httpx transport for the pool (``httpx.MockTransport`` in a test, a proxy's)."""

    _http_class: Any = httpx.Client

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise errors.InvalidInput("base_url", f"expected an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retry = retry or DEFAULT_HTTP_RETRY
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._http = self._http_class(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    def _request_args(self, call: Call) -> dict[str, Any]:
        args: dict[str, Any] = {"method": call.method, "url": call.path, "params": call.params}
        if call.has_body:
            args["json"] = call.body
        if call.wait:
            args["timeout"] = self.timeout + call.wait
        return args

    def _outcome(
        self, call: Call, attempt: int, outcome: httpx.Response | httpx.TransportError
    ) -> float | None:
        """Seconds to wait before sending ``call`` again, or None when ``outcome`` is final (then ``_read``
        it, or raise what a transport failure means). A POST is sent exactly once."""
        label = f"{call.method} {call.path}"
        if isinstance(outcome, httpx.TransportError):
            if call.idempotent and isinstance(outcome, _RETRYABLE_TRANSPORT):
                delay = next_delay(self.retry, attempt, label, type(outcome).__name__)
                if delay is not None:
                    return delay
            raise self._transport_failure(call, outcome) from outcome
        if call.idempotent and is_transient(outcome):
            return next_delay(self.retry, attempt, label, f"HTTP {outcome.status_code}")
        return None

    def _read(self, call: Call, response: httpx.Response) -> Any:
        """The answer's content, or the mapped SafeRun error raised from the httpx status error."""
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            raise mapped_error(response) from exc
        if call.expect == "bytes":
            return response.content
        try:
            return response.json()
        except ValueError as exc:
            raise UnexpectedResponse(
                f"{call.method} {call.path} answered {response.status_code} with a non-JSON body",
                status_code=response.status_code,
            ) from exc

    def _transport_failure(self, call: Call, exc: httpx.TransportError) -> SafeRunError:
        where = f"{call.method} {self.base_url}{call.path}"
        if timed_out(exc):
            outcome = "" if call.idempotent else " (the server may or may not have applied it)"
            return RequestTimedOut(f"{where} timed out{outcome}: {type(exc).__name__}", url=where)
        return ServerUnreachable(
            f"could not reach the SafeRun server: {where}: {type(exc).__name__}: {exc}", url=where
        )


class SyncTransport(BaseSafeRunClient):
    """Blocking I/O: one pooled ``httpx.Client``; thread-safe."""

    _http_class = httpx.Client
    _http: httpx.Client

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def send(self, call: Call) -> Any:
        """Send one described request (retrying an idempotent one as allowed) and read the answer."""
        attempt = 1
        while True:
            try:
                outcome: httpx.Response | httpx.TransportError = self._http.request(
                    **self._request_args(call)
                )
            except httpx.TransportError as exc:
                outcome = exc
            delay = self._outcome(call, attempt, outcome)
            if delay is None:
                return self._read(call, outcome)  # type: ignore[arg-type]  # _outcome raised for errors
            time.sleep(delay)
            attempt += 1

    def _json(self, call: Call) -> dict[str, Any]:
        return self.send(call)  # type: ignore[no-any-return]

    def _bytes(self, call: Call) -> bytes:
        return self.send(call)  # type: ignore[no-any-return]


class AsyncTransport(BaseSafeRunClient):
    """Non-blocking I/O: one pooled ``httpx.AsyncClient``, bound to one event loop."""

    _http_class = httpx.AsyncClient
    _http: httpx.AsyncClient

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def send(self, call: Call) -> Any:
        """Send one described request (retrying an idempotent one as allowed) and read the answer."""
        attempt = 1
        while True:
            try:
                outcome: httpx.Response | httpx.TransportError = await self._http.request(
                    **self._request_args(call)
                )
            except httpx.TransportError as exc:
                outcome = exc
            delay = self._outcome(call, attempt, outcome)
            if delay is None:
                return self._read(call, outcome)  # type: ignore[arg-type]  # _outcome raised for errors
            await asyncio.sleep(delay)
            attempt += 1

    async def _json(self, call: Call) -> dict[str, Any]:
        return await self.send(call)  # type: ignore[no-any-return]

    async def _bytes(self, call: Call) -> bytes:
        return await self.send(call)  # type: ignore[no-any-return]
