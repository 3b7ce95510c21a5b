"""HTTP clients for the SafeRun REST API: ``SafeRunClient`` (sync) and ``AsyncSafeRunClient`` (async).

Both share one base that knows everything but I/O (httpx's own layout): how each endpoint's request is
built (``Endpoints``), when a failed call may be retried, and how an answer is read. The two clients only
send.

    with SafeRunClient("http://127.0.0.1:8000", api_key="sr_key_...") as c:
        c.submit_decision(request_id, "MODIFIED", modifications={"pizza_count": 10})

Every method returns the endpoint's JSON answer as documented in the OpenAPI schema (``artifact`` returns
bytes). Errors come back as the ``saferun.errors`` class the server raised (``WorkflowNotFound``,
``DecisionConflict``, ``InvalidInput`` with ``field``, ``Forbidden`` with ``rule``, ...), carrying the
server's message and fields, chained from the ``httpx.HTTPStatusError``. Failures to reach the server are
``ServerUnreachable`` (``RequestTimedOut`` for timeouts). Only idempotent GETs are retried, on connection
failures and 5xx answers, with exponential backoff and full jitter; a POST is sent exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, cast
from urllib.parse import quote

import httpx

from saferun import errors
from saferun.core.rollback.reconciliation import RetryPolicy
from saferun.core.state_machine.models import ApprovalDecision, ExecutionState, WorkflowConfig
from saferun.errors import SafeRunError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
DEFAULT_HTTP_RETRY = RetryPolicy(attempts=4, initial_delay=0.1, max_delay=2.0)
USER_AGENT = "saferun-client/0.1"
PENDING_PARAMS = frozenset(
    {"limit", "cursor", "mine", "assigned_to", "risk", "expiring_within", "older_than", "newer_than"}
)


# ---------------------------------------------------------------------------------------------- errors
class ServerUnreachable(SafeRunError):
    """The server could not be reached (connection refused or dropped) after the retries allowed.

    For a POST the server may or may not have applied the request; read the resource to find out."""

    http_status = 503


class RequestTimedOut(ServerUnreachable):
    """The server did not answer within the client's timeout."""

    http_status = 504


class ServerError(SafeRunError):
    """A 5xx answer that is not one of SafeRun's own errors (a proxy, or a bug in the server)."""

    http_status = 500


class UnexpectedResponse(SafeRunError):
    """An answer the client cannot read: a status SafeRun does not use, or a body that is not JSON."""


def _error_classes() -> dict[str, type[SafeRunError]]:
    found: dict[str, type[SafeRunError]] = {}
    for module_vars in (vars(errors), globals()):
        for name, value in module_vars.items():
            if isinstance(value, type) and issubclass(value, SafeRunError):
                found[name] = value
    found["stale_review"] = errors.StaleReview  # the one error answered by a code, not a class name
    return found


ERROR_CLASSES = _error_classes()
_BY_STATUS: dict[int, type[SafeRunError]] = {
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    422: errors.InvalidInput,
}


def error_from_answer(status: int, body: Any, text: str = "") -> SafeRunError:
    """The ``saferun.errors`` instance an error answer stands for, with the server's message and fields.

    SafeRun answers ``{"detail": {"error": "WorkflowNotFound", "message": ..., "workflow_id": ...}}``;
    the class is found by ``error``, and every other key becomes an attribute (``exc.workflow_id``,
    ``exc.field``, ``exc.rule``) and an entry of ``exc.fields``. Anything else is mapped by status.
    """
    detail = body.get("detail") if isinstance(body, dict) else None
    fields: dict[str, Any] = {}
    cls: type[SafeRunError] | None = None
    if isinstance(detail, dict) and isinstance(detail.get("error"), str):
        cls = ERROR_CLASSES.get(detail["error"])
        message = str(detail.get("message") or detail["error"])
        fields = {k: v for k, v in detail.items() if k not in ("error", "message")}
    else:
        message = str(detail) if detail is not None else (text[:500] or f"HTTP {status}")
    if cls is None:
        cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else UnexpectedResponse)
    fields.setdefault("status_code", status)
    if issubclass(cls, errors.InvalidInput):
        fields.setdefault("field", "")
    if issubclass(cls, errors.Forbidden):
        fields.setdefault("rule", "")
    return _instantiate(cls, message, fields)


def _instantiate(cls: type[SafeRunError], message: str, fields: dict[str, Any]) -> SafeRunError:
    # The leaves' constructors take their own arguments (WorkflowNotFound(workflow_id), ...) and build the
    # message themselves; here the server already built it, so keep its words and set the fields directly.
    err = cls.__new__(cls)
    SafeRunError.__init__(err, message, **fields)
    for name, value in fields.items():
        if name not in ("message", "fields", "args"):
            setattr(err, name, value)
    return err


# ---------------------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Call:
    """One request, described without sending it."""

    method: Literal["GET", "POST"]
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    has_body: bool = False
    wait: float = 0.0  # a long poll's seconds, added to the client's timeout for this call
    expect: Literal["json", "bytes"] = "json"

    @property
    def idempotent(self) -> bool:
        return self.method == "GET"


def _seg(value: str) -> str:
    """A path segment, quoted: ids are the caller's strings and may hold ``/`` or ``?``."""
    if not isinstance(value, str) or not value:
        raise errors.InvalidInput("id", f"expected a non-empty string id, got {value!r}")
    return quote(value, safe="")


def _get(path: str, params: dict[str, Any] | None = None, **kw: Any) -> Call:
    return Call("GET", path, params={k: v for k, v in (params or {}).items() if v is not None} or None, **kw)


def _post(path: str, body: Any = None, *, has_body: bool = True) -> Call:
    return Call("POST", path, body=body, has_body=has_body and body is not None)


def workflow_body(config: WorkflowConfig) -> dict[str, Any]:
    """``POST /api/workflows`` for a full ``WorkflowConfig`` (checkpoint ids, weights and policies kept)."""
    body: dict[str, Any] = {
        "name": config.name,
        "description": config.description,
        "checkpoints": [cp.model_dump(mode="json") for cp in config.checkpoints],
        "escrow_amount": str(config.escrow_amount),
        "poster_id": config.poster_id,
        "executor_id": config.executor_id,
        "supervisor_id": config.supervisor_id,
        "workflow_id": config.workflow_id,
        "executor_share": str(config.executor_share),
    }
    if config.metadata:  # not part of the API's body today: refused (422) rather than silently dropped
        body["metadata"] = config.metadata
    return body


def artifact_sha(ref: str) -> str:
    """The sha256 of an artifact given as its hex digest or its ``x402://artifacts/sha256:...`` uri."""
    return ref.rsplit(":", 1)[1] if ref.startswith("x402://") else ref


class Endpoints:
    """How each endpoint's request is built: pure functions, shared by the sync and async clients."""

    @staticmethod
    def health() -> Call:
        return _get("/api/health")

    @staticmethod
    def stats() -> Call:
        return _get("/api/stats")

    @staticmethod
    def create_workflow(config: WorkflowConfig | None, fields: dict[str, Any]) -> Call:
        if config is not None and fields:
            raise TypeError("give a WorkflowConfig or keyword fields, not both")
        body = workflow_body(config) if config is not None else fields
        return _post("/api/workflows", body)

    @staticmethod
    def get_workflow(workflow_id: str) -> Call:
        return _get(f"/api/workflows/{_seg(workflow_id)}")

    @staticmethod
    def list_workflows(status: str | None, limit: int, offset: int, cursor: str | None = None) -> Call:
        return _get(
            "/api/workflows", {"status": status, "limit": limit, "offset": offset or None, "cursor": cursor}
        )

    @staticmethod
    def start(workflow_id: str) -> Call:
        return _post(f"/api/workflows/{_seg(workflow_id)}/start", has_body=False)

    @staticmethod
    def checkpoint(
        workflow_id: str,
        state: ExecutionState | dict[str, Any],
        request_approval: bool,
        review: dict[str, Any],
    ) -> Call:
        body: dict[str, Any] = {
            "state": state.model_dump(mode="json") if isinstance(state, ExecutionState) else state,
            "request_approval": request_approval,
        }
        body.update({k: v for k, v in review.items() if v is not None})
        return _post(f"/api/workflows/{_seg(workflow_id)}/checkpoints", body)

    @staticmethod
    def get_approval(request_id: str, wait: float) -> Call:
        if wait < 0:
            raise errors.InvalidInput("wait", f"must not be negative, got {wait}")
        return _get(f"/api/approvals/{_seg(request_id)}", {"wait": wait or None}, wait=wait)

    @staticmethod
    def submit_decision(
        request_id: str,
        decision: ApprovalDecision | str,
        approved_by: str | None,
        rationale: str,
        modifications: dict[str, Any] | None,
        review_digest: str | None = None,
    ) -> Call:
        body = {
            "request_id": request_id,
            "decision": ApprovalDecision(decision).value,
            "rationale": rationale,
            "approved_by": approved_by,
            "modifications": modifications,
            "review_digest": review_digest,
        }
        return _post("/api/approvals/submit", {k: v for k, v in body.items() if v is not None})

    @staticmethod
    def decide_batch(
        request_ids: list[str] | None,
        workflow_id: str | None,
        decision: ApprovalDecision | str,
        approved_by: str | None,
        rationale: str,
    ) -> Call:
        body = {
            "request_ids": request_ids,
            "workflow_id": workflow_id,
            "decision": ApprovalDecision(decision).value,
            "rationale": rationale,
            "approved_by": approved_by,
        }
        return _post("/api/approvals/batch", {k: v for k, v in body.items() if v is not None})

    @staticmethod
    def pending(workflow_id: str | None, **page: Any) -> Call:
        """``page``: limit, cursor and the queue's filters (mine, assigned_to, risk, expiring_within,
        older_than, newer_than), as ``GET /api/approvals/pending`` names them."""
        unknown = set(page) - PENDING_PARAMS
        if unknown:
            raise TypeError(f"unknown pending() argument(s): {', '.join(sorted(unknown))}")
        mine = page.pop("mine", None)
        return _get(
            "/api/approvals/pending", {"workflow_id": workflow_id, "mine": "true" if mine else None, **page}
        )

    @staticmethod
    def add_alerts(request_id: str, alerts: list[dict[str, Any]]) -> Call:
        return _post(f"/api/approvals/{_seg(request_id)}/alerts", {"alerts": list(alerts)})

    @staticmethod
    def register_step(workflow_id: str, name: str, compensation: str, args: dict[str, Any] | None) -> Call:
        body = {"name": name, "compensation": compensation, "args": dict(args or {})}
        return _post(f"/api/workflows/{_seg(workflow_id)}/steps", body)

    @staticmethod
    def steps(workflow_id: str) -> Call:
        return _get(f"/api/workflows/{_seg(workflow_id)}/steps")

    @staticmethod
    def steps_to_undo(workflow_id: str) -> Call:
        return _get(f"/api/workflows/{_seg(workflow_id)}/rollback/steps")

    @staticmethod
    def claim_step(workflow_id: str, step_id: str, owner: str) -> Call:
        body = {"owner": owner}  # the staleness window is the server's SAFERUN_STALE_CLAIM_SECONDS
        return _post(f"/api/workflows/{_seg(workflow_id)}/rollback/steps/{_seg(step_id)}/claim", body)

    @staticmethod
    def finish_step(
        workflow_id: str, step_id: str, ok: bool, error: str, generation: int | None = None
    ) -> Call:
        body: dict[str, Any] = {"ok": ok, "error": error}
        if generation is not None:  # the claim's fencing token: a taken-over claim's result is refused
            body["generation"] = generation
        return _post(f"/api/workflows/{_seg(workflow_id)}/rollback/steps/{_seg(step_id)}/finish", body)

    @staticmethod
    def complete_rollback(workflow_id: str, compensated: list[str] | None) -> Call:
        body = {"compensated": list(compensated or [])}
        return _post(f"/api/workflows/{_seg(workflow_id)}/rollback/complete", body)

    @staticmethod
    def settle(workflow_id: str, result: dict[str, Any] | None) -> Call:
        return _post(f"/api/workflows/{_seg(workflow_id)}/settle", {"result": dict(result or {})})

    @staticmethod
    def complete(workflow_id: str) -> Call:
        return _post(f"/api/workflows/{_seg(workflow_id)}/complete", has_body=False)

    @staticmethod
    def fail(workflow_id: str, error: str) -> Call:
        return _post(f"/api/workflows/{_seg(workflow_id)}/fail", {"error": error})

    @staticmethod
    def cancel(workflow_id: str, reason: str) -> Call:
        return _post(f"/api/workflows/{_seg(workflow_id)}/cancel", {"reason": reason})

    @staticmethod
    def snapshots(workflow_id: str) -> Call:
        return _get(f"/api/workflows/{_seg(workflow_id)}/snapshots")

    @staticmethod
    def latest_state(workflow_id: str) -> Call:
        return _get(f"/api/workflows/{_seg(workflow_id)}/state")

    @staticmethod
    def audit(workflow_id: str) -> Call:
        return _get(f"/api/workflows/{_seg(workflow_id)}/audit")

    @staticmethod
    def export_bundle(workflow_id: str) -> Call:
        return _get(f"/api/workflows/{_seg(workflow_id)}/export", expect="bytes")

    @staticmethod
    def signing_keys() -> Call:
        return _get("/api/signing-keys")

    @staticmethod
    def policy() -> Call:
        return _get("/api/policy")

    @staticmethod
    def evaluate_policy(cases: list[dict[str, Any]]) -> Call:
        return _post("/api/policy/evaluate", {"cases": cases})

    @staticmethod
    def fork(workflow_id: str, checkpoint: str, **options: Any) -> Call:
        body = {"checkpoint": checkpoint, **{k: v for k, v in options.items() if v is not None}}
        if body.get("escrow_amount") is not None:
            body["escrow_amount"] = str(body["escrow_amount"])
        return _post(f"/api/workflows/{_seg(workflow_id)}/fork", body)

    @staticmethod
    def ledger(workflow_id: str) -> Call:
        return _get(f"/api/workflows/{_seg(workflow_id)}/ledger")

    @staticmethod
    def artifact(ref: str) -> Call:
        return _get(f"/api/artifacts/{_seg(artifact_sha(ref))}", expect="bytes")


# ---------------------------------------------------------------------------------------------- base
_RETRYABLE_TRANSPORT = (httpx.NetworkError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


class BaseSafeRunClient:
    """Configuration, retry decisions and answer parsing: everything the two clients share but I/O."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
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

    def _request_args(self, call: Call) -> dict[str, Any]:
        args: dict[str, Any] = {"method": call.method, "url": call.path, "params": call.params}
        if call.has_body:
            args["json"] = call.body
        if call.wait:
            args["timeout"] = self.timeout + call.wait
        return args

    def _retry_after_error(self, call: Call, attempt: int, exc: httpx.TransportError) -> float | None:
        """Seconds to wait before sending ``call`` again after a transport failure, or None to give up."""
        if call.idempotent and isinstance(exc, _RETRYABLE_TRANSPORT) and attempt < self.retry.attempts:
            delay = self.retry.delay(attempt)
            log.warning(
                "GET %s failed (%s), retry %d in %.2fs", call.path, type(exc).__name__, attempt, delay
            )
            return delay
        return None

    def _retry_after_answer(self, call: Call, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before sending ``call`` again after a 5xx, or None to give up.

        SafeRun's own 5xx errors (a corrupted artifact, a broken audit chain) are deterministic and not
        retried; a bare 5xx (a restarting server, a proxy) is."""
        if not (call.idempotent and response.status_code >= 500 and attempt < self.retry.attempts):
            return None
        if response.status_code == 500 and _saferun_error_name(response) is not None:
            return None
        delay = self.retry.delay(attempt)
        log.warning("GET %s answered %d, retry %d in %.2fs", call.path, response.status_code, attempt, delay)
        return delay

    def _read(self, call: Call, response: httpx.Response) -> Any:
        """The answer's content, or the mapped SafeRun error raised from the httpx status error."""
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            raise self._mapped(response) from exc
        if call.expect == "bytes":
            return response.content
        try:
            return response.json()
        except ValueError as exc:
            raise UnexpectedResponse(
                f"{call.method} {call.path} answered {response.status_code} with a non-JSON body",
                status_code=response.status_code,
            ) from exc

    @staticmethod
    def _mapped(response: httpx.Response) -> SafeRunError:
        try:
            body = response.json()
        except ValueError:
            body = None
        return error_from_answer(response.status_code, body, response.text)

    def _transport_failure(self, call: Call, exc: httpx.TransportError) -> SafeRunError:
        where = f"{call.method} {self.base_url}{call.path}"
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            outcome = "" if call.idempotent else " (the server may or may not have applied it)"
            return RequestTimedOut(f"{where} timed out{outcome}: {type(exc).__name__}", url=where)
        return ServerUnreachable(
            f"could not reach the SafeRun server: {where}: {type(exc).__name__}: {exc}", url=where
        )


def _saferun_error_name(response: httpx.Response) -> str | None:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return None
    return detail.get("error") if isinstance(detail, dict) else None


# ---------------------------------------------------------------------------------------------- sync
class SafeRunClient(BaseSafeRunClient):
    """Blocking client. Thread-safe; reuse one per process (it pools connections)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, retry=retry, headers=headers)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

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
                response = self._http.request(**self._request_args(call))
            except httpx.TransportError as exc:
                delay = self._retry_after_error(call, attempt, exc)
                if delay is None:
                    raise self._transport_failure(call, exc) from exc
            else:
                delay = self._retry_after_answer(call, attempt, response)
                if delay is None:
                    return self._read(call, response)
            time.sleep(delay)
            attempt += 1

    def _json(self, call: Call) -> dict[str, Any]:
        return cast(dict[str, Any], self.send(call))

    def _bytes(self, call: Call) -> bytes:
        return cast(bytes, self.send(call))

    # -- system
    def health(self) -> dict[str, Any]:
        return self._json(Endpoints.health())

    def stats(self) -> dict[str, Any]:
        return self._json(Endpoints.stats())

    def artifact(self, ref: str) -> bytes:
        """An artifact's verified bytes (a state artifact: its parts as one JSON object)."""
        return self._bytes(Endpoints.artifact(ref))

    # -- workflows
    def create_workflow(self, config: WorkflowConfig | None = None, **fields: Any) -> dict[str, Any]:
        """From a ``WorkflowConfig``, or from the API's fields (``name=``, ``checkpoint_names=``, ...)."""
        return self._json(Endpoints.create_workflow(config, fields))

    def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        return self._json(Endpoints.get_workflow(workflow_id))

    def list_workflows(
        self, status: str | None = None, limit: int = 100, offset: int = 0, *, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page, newest first: ``total`` counts them all; pass ``next_cursor`` back as ``cursor``."""
        return self._json(Endpoints.list_workflows(status, limit, offset, cursor))

    def start(self, workflow_id: str) -> dict[str, Any]:
        return self._json(Endpoints.start(workflow_id))

    def checkpoint(
        self,
        workflow_id: str,
        state: ExecutionState | dict[str, Any],
        *,
        request_approval: bool = True,
        summary: str | None = None,
        decision_needed: str | None = None,
        context: dict[str, Any] | None = None,
        recommendation: str | None = None,
        confidence: float | None = None,
        risk: dict[str, Any] | None = None,
        alerts: list[dict[str, Any]] | None = None,
        parameter_schema: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        review = {
            "summary": summary,
            "decision_needed": decision_needed,
            "context": context,
            "recommendation": recommendation,
            "confidence": confidence,
            "risk": risk,
            "alerts": alerts,
            "parameter_schema": parameter_schema,
        }
        call = Endpoints.checkpoint(workflow_id, state, request_approval, review)
        return self._json(call)

    def settle(self, workflow_id: str, result: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._json(Endpoints.settle(workflow_id, result))

    def complete(self, workflow_id: str) -> dict[str, Any]:
        return self._json(Endpoints.complete(workflow_id))

    def fail(self, workflow_id: str, error: str) -> dict[str, Any]:
        return self._json(Endpoints.fail(workflow_id, error))

    def cancel(self, workflow_id: str, reason: str = "") -> dict[str, Any]:
        return self._json(Endpoints.cancel(workflow_id, reason))

    def snapshots(self, workflow_id: str) -> dict[str, Any]:
        return self._json(Endpoints.snapshots(workflow_id))

    def latest_state(self, workflow_id: str) -> dict[str, Any]:
        return self._json(Endpoints.latest_state(workflow_id))

    def audit(self, workflow_id: str) -> dict[str, Any]:
        return self._json(Endpoints.audit(workflow_id))

    def export_bundle(self, workflow_id: str) -> bytes:
        """The workflow's signed decision record; check it with ``saferun.core.bundles.verify_bundle``."""
        return self._bytes(Endpoints.export_bundle(workflow_id))

    def signing_keys(self) -> dict[str, Any]:
        return self._json(Endpoints.signing_keys())

    def policy(self) -> dict[str, Any]:
        """The live approval policy (``{"active": False}`` when none is configured)."""
        return self._json(Endpoints.policy())

    def evaluate_policy(self, cases: list[dict[str, Any]]) -> dict[str, Any]:
        """What the live policy decides for each case (see ``saferun policy test``)."""
        return self._json(Endpoints.evaluate_policy(cases))

    def fork_workflow(self, workflow_id: str, checkpoint: str, **options: Any) -> dict[str, Any]:
        """A new workflow from an approved checkpoint of ``workflow_id`` (options: ``escrow_amount``,
        ``name``, ``modifications``, ``workflow_id``); the source is never changed."""
        return self._json(Endpoints.fork(workflow_id, checkpoint, **options))

    def ledger(self, workflow_id: str) -> dict[str, Any]:
        return self._json(Endpoints.ledger(workflow_id))

    # -- approvals
    def get_approval(self, request_id: str, wait: float = 0) -> dict[str, Any]:
        """The request and its decision; with ``wait`` (<= 60 s) returns as soon as the decision exists."""
        return self._json(Endpoints.get_approval(request_id, wait))

    def submit_decision(
        self,
        request_id: str,
        decision: ApprovalDecision | str,
        *,
        approved_by: str | None = None,
        rationale: str = "",
        modifications: dict[str, Any] | None = None,
        review_digest: str | None = None,
    ) -> dict[str, Any]:
        """Decide a request. ``review_digest``: the request's ``review_digest`` as fetched and shown;
        if the request changed since: ``StaleReview`` (``exc.changed``) and nothing is decided."""
        call = Endpoints.submit_decision(
            request_id, decision, approved_by, rationale, modifications, review_digest
        )
        return self._json(call)

    def decide_batch(
        self,
        request_ids: list[str] | None = None,
        decision: ApprovalDecision | str = ApprovalDecision.APPROVED,
        *,
        workflow_id: str | None = None,
        approved_by: str | None = None,
        rationale: str = "",
    ) -> dict[str, Any]:
        """Approve or reject several requests in one call; one result per request (``results``)."""
        call = Endpoints.decide_batch(request_ids, workflow_id, decision, approved_by, rationale)
        return self._json(call)

    def pending(self, workflow_id: str | None = None, **page: Any) -> dict[str, Any]:
        """One page of the queue, soonest expiry first (``limit``, ``cursor``, ``mine``, ``assigned_to``,
        ``risk``, ``expiring_within``, ``older_than``, ``newer_than``); ``next_cursor`` reads on."""
        return self._json(Endpoints.pending(workflow_id, **page))

    def iter_pending(self, workflow_id: str | None = None, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every pending request matching the filters, page by page (one request per ``limit`` rows)."""
        cursor = None
        while True:
            page = self.pending(workflow_id, **filters, **({"cursor": cursor} if cursor else {}))
            yield from page["pending_approvals"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def add_alerts(self, request_id: str, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        """Add a monitor's alerts to a pending request (409 once it is decided)."""
        return self._json(Endpoints.add_alerts(request_id, alerts))

    # -- saga
    def register_step(
        self, workflow_id: str, name: str, compensation: str, args: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return self._json(Endpoints.register_step(workflow_id, name, compensation, args))

    def steps(self, workflow_id: str) -> dict[str, Any]:
        return self._json(Endpoints.steps(workflow_id))

    def steps_to_undo(self, workflow_id: str) -> dict[str, Any]:
        return self._json(Endpoints.steps_to_undo(workflow_id))

    def claim_step(self, workflow_id: str, step_id: str, owner: str) -> dict[str, Any]:
        return self._json(Endpoints.claim_step(workflow_id, step_id, owner))

    def finish_step(
        self, workflow_id: str, step_id: str, ok: bool, error: str = "", generation: int | None = None
    ) -> dict[str, Any]:
        return self._json(Endpoints.finish_step(workflow_id, step_id, ok, error, generation))

    def complete_rollback(self, workflow_id: str, compensated: list[str] | None = None) -> dict[str, Any]:
        return self._json(Endpoints.complete_rollback(workflow_id, compensated))


# ---------------------------------------------------------------------------------------------- async
class AsyncSafeRunClient(BaseSafeRunClient):
    """Non-blocking client; the same methods as ``SafeRunClient``, awaited. Bound to one event loop."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, retry=retry, headers=headers)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

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
                response = await self._http.request(**self._request_args(call))
            except httpx.TransportError as exc:
                delay = self._retry_after_error(call, attempt, exc)
                if delay is None:
                    raise self._transport_failure(call, exc) from exc
            else:
                delay = self._retry_after_answer(call, attempt, response)
                if delay is None:
                    return self._read(call, response)
            await asyncio.sleep(delay)
            attempt += 1

    async def _json(self, call: Call) -> dict[str, Any]:
        return cast(dict[str, Any], await self.send(call))

    async def _bytes(self, call: Call) -> bytes:
        return cast(bytes, await self.send(call))

    # -- system
    async def health(self) -> dict[str, Any]:
        return await self._json(Endpoints.health())

    async def stats(self) -> dict[str, Any]:
        return await self._json(Endpoints.stats())

    async def artifact(self, ref: str) -> bytes:
        """An artifact's verified bytes (a state artifact: its parts as one JSON object)."""
        return await self._bytes(Endpoints.artifact(ref))

    # -- workflows
    async def create_workflow(self, config: WorkflowConfig | None = None, **fields: Any) -> dict[str, Any]:
        """From a ``WorkflowConfig``, or from the API's fields (``name=``, ``checkpoint_names=``, ...)."""
        return await self._json(Endpoints.create_workflow(config, fields))

    async def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        return await self._json(Endpoints.get_workflow(workflow_id))

    async def list_workflows(
        self, status: str | None = None, limit: int = 100, offset: int = 0, *, cursor: str | None = None
    ) -> dict[str, Any]:
        return await self._json(Endpoints.list_workflows(status, limit, offset, cursor))

    async def start(self, workflow_id: str) -> dict[str, Any]:
        return await self._json(Endpoints.start(workflow_id))

    async def checkpoint(
        self,
        workflow_id: str,
        state: ExecutionState | dict[str, Any],
        *,
        request_approval: bool = True,
        summary: str | None = None,
        decision_needed: str | None = None,
        context: dict[str, Any] | None = None,
        recommendation: str | None = None,
        confidence: float | None = None,
        risk: dict[str, Any] | None = None,
        alerts: list[dict[str, Any]] | None = None,
        parameter_schema: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        review = {
            "summary": summary,
            "decision_needed": decision_needed,
            "context": context,
            "recommendation": recommendation,
            "confidence": confidence,
            "risk": risk,
            "alerts": alerts,
            "parameter_schema": parameter_schema,
        }
        call = Endpoints.checkpoint(workflow_id, state, request_approval, review)
        return await self._json(call)

    async def settle(self, workflow_id: str, result: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._json(Endpoints.settle(workflow_id, result))

    async def complete(self, workflow_id: str) -> dict[str, Any]:
        return await self._json(Endpoints.complete(workflow_id))

    async def fail(self, workflow_id: str, error: str) -> dict[str, Any]:
        return await self._json(Endpoints.fail(workflow_id, error))

    async def cancel(self, workflow_id: str, reason: str = "") -> dict[str, Any]:
        return await self._json(Endpoints.cancel(workflow_id, reason))

    async def snapshots(self, workflow_id: str) -> dict[str, Any]:
        return await self._json(Endpoints.snapshots(workflow_id))

    async def latest_state(self, workflow_id: str) -> dict[str, Any]:
        return await self._json(Endpoints.latest_state(workflow_id))

    async def audit(self, workflow_id: str) -> dict[str, Any]:
        return await self._json(Endpoints.audit(workflow_id))

    async def export_bundle(self, workflow_id: str) -> bytes:
        return await self._bytes(Endpoints.export_bundle(workflow_id))

    async def signing_keys(self) -> dict[str, Any]:
        return await self._json(Endpoints.signing_keys())

    async def policy(self) -> dict[str, Any]:
        return await self._json(Endpoints.policy())

    async def evaluate_policy(self, cases: list[dict[str, Any]]) -> dict[str, Any]:
        return await self._json(Endpoints.evaluate_policy(cases))

    async def fork_workflow(self, workflow_id: str, checkpoint: str, **options: Any) -> dict[str, Any]:
        return await self._json(Endpoints.fork(workflow_id, checkpoint, **options))

    async def ledger(self, workflow_id: str) -> dict[str, Any]:
        return await self._json(Endpoints.ledger(workflow_id))

    # -- approvals
    async def get_approval(self, request_id: str, wait: float = 0) -> dict[str, Any]:
        """The request and its decision; with ``wait`` (<= 60 s) returns as soon as the decision exists."""
        return await self._json(Endpoints.get_approval(request_id, wait))

    async def submit_decision(
        self,
        request_id: str,
        decision: ApprovalDecision | str,
        *,
        approved_by: str | None = None,
        rationale: str = "",
        modifications: dict[str, Any] | None = None,
        review_digest: str | None = None,
    ) -> dict[str, Any]:
        """Decide a request. ``review_digest``: the request's ``review_digest`` as fetched and shown;
        if the request changed since: ``StaleReview`` (``exc.changed``) and nothing is decided."""
        call = Endpoints.submit_decision(
            request_id, decision, approved_by, rationale, modifications, review_digest
        )
        return await self._json(call)

    async def decide_batch(
        self,
        request_ids: list[str] | None = None,
        decision: ApprovalDecision | str = ApprovalDecision.APPROVED,
        *,
        workflow_id: str | None = None,
        approved_by: str | None = None,
        rationale: str = "",
    ) -> dict[str, Any]:
        """Approve or reject several requests in one call; one result per request (``results``)."""
        call = Endpoints.decide_batch(request_ids, workflow_id, decision, approved_by, rationale)
        return await self._json(call)

    async def pending(self, workflow_id: str | None = None, **page: Any) -> dict[str, Any]:
        return await self._json(Endpoints.pending(workflow_id, **page))

    async def iter_pending(
        self, workflow_id: str | None = None, **filters: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Every pending request matching the filters, page by page."""
        cursor = None
        while True:
            page = await self.pending(workflow_id, **filters, **({"cursor": cursor} if cursor else {}))
            for item in page["pending_approvals"]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def add_alerts(self, request_id: str, alerts: list[dict[str, Any]]) -> dict[str, Any]:
        """Add a monitor's alerts to a pending request (409 once it is decided)."""
        return await self._json(Endpoints.add_alerts(request_id, alerts))

    # -- saga
    async def register_step(
        self, workflow_id: str, name: str, compensation: str, args: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        call = Endpoints.register_step(workflow_id, name, compensation, args)
        return await self._json(call)

    async def steps(self, workflow_id: str) -> dict[str, Any]:
        return await self._json(Endpoints.steps(workflow_id))

    async def steps_to_undo(self, workflow_id: str) -> dict[str, Any]:
        return await self._json(Endpoints.steps_to_undo(workflow_id))

    async def claim_step(self, workflow_id: str, step_id: str, owner: str) -> dict[str, Any]:
        return await self._json(Endpoints.claim_step(workflow_id, step_id, owner))

    async def finish_step(
        self, workflow_id: str, step_id: str, ok: bool, error: str = "", generation: int | None = None
    ) -> dict[str, Any]:
        return await self._json(Endpoints.finish_step(workflow_id, step_id, ok, error, generation))

    async def complete_rollback(
        self, workflow_id: str, compensated: list[str] | None = None
    ) -> dict[str, Any]:
        call = Endpoints.complete_rollback(workflow_id, compensated)
        return await self._json(call)
