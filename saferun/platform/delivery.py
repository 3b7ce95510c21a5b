"""Delivering ``platform_outbox`` to a remote x402 platform: at least once, acted on exactly once.

Each due row is claimed with a lease (so two SafeRun processes do not send it at the same moment, and a
crashed one's row comes back when its lease runs out), sent with its own idempotency key, and marked
delivered with the platform's answer. A lost answer or a 5xx leaves the row pending with exponential
backoff and full jitter; the next send carries the same key, and the platform answers the first result
instead of acting again. A 4xx is the platform refusing the call itself (unknown identity, a release
above what it holds, ...): retrying cannot help, so the row is marked ``failed`` with the platform's
message and shown by ``saferun platform outbox`` for an operator; the workflow's later calls wait
behind it (a workflow's calls reach the platform in the order they happened) until
``saferun platform outbox --retry`` puts it back in the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from saferun.core.checkpoints.capture import CheckpointCapture
from saferun.errors import SafeRunError
from saferun.platform.base import MUTATING_CALLS, Platform
from saferun.storage import leased, outbox
from saferun.storage.database import Database
from saferun.storage.schema import utcnow

log = logging.getLogger(__name__)

# 408 and 429 say "later", not "never"
_RETRYABLE_4XX = frozenset({408, 429})


@dataclass
class DeliveryReport:
    delivered: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # behind an earlier call not delivered yet


def permanent(exc: BaseException) -> bool:
    """Whether the platform refused the call itself (4xx), as opposed to not answering (retry)."""
    status = getattr(exc, "http_status", 500)
    return isinstance(exc, SafeRunError) and 400 <= status < 500 and status not in _RETRYABLE_4XX


def _resolve(value: Any, results: dict[str, Any], load_state: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$result", "field"}:
            return results[value["$result"]][value["field"]]
        if set(value) == {"$state"}:
            return load_state(value["$state"])
        return {k: _resolve(v, results, load_state) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, results, load_state) for v in value]
    return value


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        if set(value) == {"$result", "field"}:
            return {value["$result"]}
        return set().union(*(_refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_refs(v) for v in value)) if value else set()
    return set()


class OutboxDelivery:
    """Sends what the engine owes ``platform``; ``deliver_due`` is safe to run from every process."""

    def __init__(
        self,
        db: Database,
        platform: Platform,
        *,
        lease: timedelta = timedelta(seconds=60),
        batch: int = 100,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
    ) -> None:
        self.db = db
        self.capture = CheckpointCapture(db.artifacts)
        self.platform = platform
        self.lease = lease
        self.batch = batch
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap

    def _state_json(self, artifact_uri: str) -> str:
        """A stored checkpoint state as the JSON text the platform's Artifacts primitive keeps."""
        with self.db.read() as conn:
            return self.capture.load_state(conn, artifact_uri).model_dump_json()

    def _backoff(self, attempts: int) -> timedelta:
        return leased.backoff(attempts, self.backoff_base, self.backoff_cap)

    async def deliver_due(self, now: datetime | None = None) -> DeliveryReport:
        """Send every due call. The database work runs in worker threads: the server's sweeper calls this
        every second on its event loop, which must never wait for a transaction."""
        report = DeliveryReport()
        now = now or utcnow()
        due = await asyncio.to_thread(self._due, now)
        for row in due:
            earlier = await asyncio.to_thread(self._claim, row, now, report)
            if earlier is None:
                continue
            results = {k: r["result"] for k, r in earlier.items() if r is not None}
            await self._send(row, results, report)
        return report

    def _due(self, now: datetime) -> list[Any]:
        with self.db.read() as conn:
            return list(outbox.due(conn, now, self.batch))

    def _claim(self, row: Any, now: datetime, report: DeliveryReport) -> dict[str, Any] | None:
        """The calls ``row`` refers to, once this process holds its lease; None to skip it for now."""
        key = row["idempotency_key"]
        with self.db.transaction() as conn:
            # a workflow's calls go in order, so the calls this one refers to were delivered first
            if outbox.earlier_undelivered(conn, row):
                report.waiting.append(key)
                return None
            earlier = {k: outbox.by_key(conn, k) for k in _refs(row["arguments"])}
            missing = sorted(k for k, r in earlier.items() if r is None)
            if missing:  # cannot happen for what core/mirror enqueues; never send half a call
                outbox.mark_failed(conn, row["id"], f"refers to calls never enqueued: {missing}")
                report.failed.append(key)
                return None
            if not outbox.claim(conn, row, self.lease, now):
                return None  # another process has it
            return earlier

    def _mark(self, mark: Any, *args: Any) -> None:
        with self.db.transaction() as conn:
            mark(conn, *args)

    async def _send(self, row: Any, results: dict[str, Any], report: DeliveryReport) -> None:
        key = row["idempotency_key"]
        operation = row["operation"]
        if operation not in MUTATING_CALLS:
            await asyncio.to_thread(
                self._mark, outbox.mark_failed, row["id"], f"unknown platform call {operation!r}"
            )
            report.failed.append(key)
            return
        try:
            arguments = await asyncio.to_thread(_resolve, row["arguments"], results, self._state_json)
            result = await getattr(self.platform, operation)(**arguments, idempotency_key=key)
        except Exception as exc:  # every failure is recorded on the row; none may stop the others
            message = exc.message if isinstance(exc, SafeRunError) else f"{type(exc).__name__}: {exc}"
            if permanent(exc):
                await asyncio.to_thread(self._mark, outbox.mark_failed, row["id"], message)
                report.failed.append(key)
                log.error("platform refused %s (%s): %s", operation, key, message)
            else:
                attempts = row["attempts"] + 1
                retry_at = utcnow() + self._backoff(attempts)
                await asyncio.to_thread(self._mark, outbox.mark_retry, row["id"], message, retry_at)
                report.retrying.append(key)
                log.warning("platform call %s (%s) will be retried: %s", operation, key, message)
            return
        answer = result if isinstance(result, dict) else {"result": result}
        await asyncio.to_thread(self._mark, outbox.mark_delivered, row["id"], answer)
        report.delivered.append(key)
