"""Delivering notices: fan each one out to the configured channels, then send, retry, give up.

Two steps, each safe to run in every replica at once:

1. **Fan-out** (``fan_out``): a notice not yet dispatched is claimed with a conditional UPDATE (one process
   wins) and, in that same transaction, becomes one delivery per destination: every generic webhook URL,
   the assigned supervisor's own webhook (``SAFERUN_SUPERVISOR_WEBHOOKS``) and e-mail address (stored
   with ``saferun identities email``, else from ``SAFERUN_NOTIFY_EMAILS``). Destinations are resolved
   here, in the server, not where the notice was written (often an agent process without this
   configuration). A ``waiting`` notice whose request was already decided when it is fanned out is
   dropped: its link could decide nothing, and the ``decided`` notice says what happened. A quorum
   request's notices go to every member who may still vote (docs/quorum.md), never with a decision link.
2. **Delivery** (``deliver_due``): a due delivery is claimed for a lease (``next_attempt_at`` moves to
   the lease's end), a fresh decision link is minted for a ``waiting`` notice *sent to the assigned
   supervisor's own channel* (``_own_channel``), and the message is sent. A generic webhook is a shared
   channel (whoever reads it, perhaps the executor's operator, would decide as the supervisor), so it
   only ever gets the review page's link, which needs sign-in.
   Success marks it ``delivered``. A failure that retrying can help is retried after an exponential
   backoff with jitter (``backoff``) until ``max_attempts``, then marked ``failed``; a permanent refusal
   (a 4xx, an SMTP 5xx) is marked ``failed`` at once. The link minted for an attempt that did not get
   through is deleted, so each message that arrived holds the one live link for its delivery.

Delivery is at least once: a process that dies after sending but before recording it lets its lease run
out and the message goes again, with the same ``X-SafeRun-Delivery`` id (receivers deduplicate on it).
Clock and randomness are injected (``clock``, ``rng``) so tests never wait on the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from sqlalchemy import Connection, RowMapping

from saferun.core import notify, quorum
from saferun.core.parties import IdentityChecks
from saferun.domain.backoff import exponential_bound
from saferun.notifications import channels, links, messages
from saferun.notifications.settings import NotificationSettings
from saferun.outbound import mask_url
from saferun.storage import approvals
from saferun.storage import notifications as store
from saferun.storage import workflows as wf_store
from saferun.storage.database import Database
from saferun.storage.schema import utcnow

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # the longest a due retry waits; a new notice wakes the loop at once
WEBHOOK = "webhook"  # a generic webhook: every notice, never a decision link
OWN_WEBHOOK = "own_webhook"  # the assigned supervisor's own webhook (SAFERUN_SUPERVISOR_WEBHOOKS)
EMAIL = "email"  # the assigned supervisor's address


@dataclass
class DispatchReport:
    fanned_out: int = 0
    delivered: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Attempt:
    delivery: RowMapping
    view: messages.NoticeView | None  # None: nothing to send any more (skipped)


class Dispatcher:
    """Fans out and delivers notices for one database; ``run_once`` is safe from every process."""

    def __init__(
        self,
        db: Database,
        settings: NotificationSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
        lease: timedelta = timedelta(seconds=120),
        batch: int = 32,  # at most 4 rounds of ``concurrency`` sends: well inside the lease
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.rng = rng
        self.lease = lease
        self.batch = batch
        self.concurrency = concurrency
        self.transport = transport

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        """Deliver forever (the server's lifespan task); a failed pass is logged and retried."""
        notifier = notify.notifier_for(self.db)
        while True:
            # every opened or closed request is a workflow transition: watch before the pass, so one
            # committed during it still wakes the next
            with notifier.watch("workflow") as changed:
                changed.clear()
                try:
                    await self.run_once()
                except Exception:
                    log.exception("notification pass failed")
                await changed.wait(POLL_SECONDS)

    async def run_once(self, now: datetime | None = None) -> DispatchReport:
        """One pass: fan out new notices, then send every due delivery."""
        report = DispatchReport()
        if not self.settings.enabled:
            return report  # nothing can be delivered: no transaction at all
        now = now or self.clock()
        report.fanned_out = await asyncio.to_thread(self.fan_out, now)
        await self.deliver_due(now, report)
        return report

    # ------------------------------------------------------------------ step 1: fan-out
    def fan_out(self, now: datetime) -> int:
        """Turn undispatched notices into deliveries; how many notices this process fanned out.

        With no channel configured it does nothing (no read, no write: the hot path pays no fsync'd
        commit for notices nobody would receive; they wait for a channel). Otherwise one batch is
        claimed with a single conditional UPDATE and its deliveries written in that same transaction.
        """
        if not self.settings.enabled:
            return 0
        with self.db.transaction() as conn:
            notices = store.undispatched(conn, self.batch)
            claimed = store.claim_notices(conn, [n["id"] for n in notices], now)
            for notice in notices:
                if notice["id"] not in claimed:
                    continue  # another process has it
                request = approvals.get(conn, notice["request_id"])
                if store.awaits_decision(notice["kind"]) and request["status"] != "pending":
                    continue
                for channel, target, fmt in self._destinations(conn, request):
                    store.add_delivery(conn, notice["id"], channel, target, fmt, now)
        return len(claimed)

    def _destinations(self, conn: Connection, request: RowMapping) -> list[tuple[str, str, str]]:
        fmt = self.settings.webhook_format
        out = [(WEBHOOK, url, fmt) for url in self.settings.webhook_urls]
        people = [request["supervisor_id"]] if request["supervisor_id"] else []
        if request["quorum"] is not None:  # every member who may still vote (docs/quorum.md)
            people = self._voters(conn, request)
        for person in people:
            own = self.settings.supervisor_webhooks.get(person)
            if own:
                out.append((OWN_WEBHOOK, own, fmt))
            if self.settings.smtp is not None:
                address = self._address_of(conn, person)
                if address:
                    out.append((EMAIL, address, "text"))
        return list(dict.fromkeys(out))  # two members sharing one address get one message

    @staticmethod
    def _voters(conn: Connection, request: RowMapping) -> list[str]:
        """Who may still vote on a quorum request, as its review page lists them."""
        wf = wf_store.get(conn, request["workflow_id"])
        progress = quorum.progress(conn, request, wf, IdentityChecks.REGISTERED)
        return list(progress["may_still_vote"]) if progress is not None else []

    def _address_of(self, conn: Connection, identity_id: str) -> str | None:
        return store.email_of(conn, identity_id) or self.settings.emails.get(identity_id)

    def _own_channel(self, conn: Connection, delivery: RowMapping, request: RowMapping) -> bool:
        """Whether ``delivery`` goes to the request's assigned supervisor alone, checked again when it is
        sent (settings or a stored address may have changed since fan-out): only then may it carry a link
        that decides as that supervisor."""
        supervisor = request["supervisor_id"]
        if not supervisor or request["quorum"] is not None:  # a quorum's notice carries no decision link
            return False
        if delivery["channel"] == OWN_WEBHOOK:
            return self.settings.supervisor_webhooks.get(supervisor) == delivery["target"]
        if delivery["channel"] == EMAIL:
            return self._address_of(conn, supervisor) == delivery["target"]
        return False

    # ------------------------------------------------------------------ step 2: delivery
    async def deliver_due(self, now: datetime, report: DispatchReport | None = None) -> DispatchReport:
        report = report or DispatchReport()
        attempts = await asyncio.to_thread(self._claim_due, now)
        if not attempts:
            return report
        limit = asyncio.Semaphore(self.concurrency)
        timeout = httpx.Timeout(self.settings.webhook_timeout)
        async with httpx.AsyncClient(timeout=timeout, transport=self.transport) as client:

            async def one(attempt: _Attempt) -> None:
                async with limit:
                    await self._attempt(client, attempt, now, report)

            await asyncio.gather(*(one(a) for a in attempts))
        return report

    def _claim_due(self, now: datetime) -> list[_Attempt]:
        with self.db.read() as conn:
            due = store.due_deliveries(conn, now, self.batch)
        claimed = []
        for row in due:
            with self.db.transaction() as conn:
                if not store.claim_delivery(conn, row, self.lease, now):
                    continue
                claimed.append(_Attempt(row, self._view(conn, row, now)))
        return claimed

    def _view(self, conn: Connection, delivery: RowMapping, now: datetime) -> messages.NoticeView | None:
        """Read the notice as it is now; mint this attempt's link (after revoking the last attempt's)."""
        notice = store.get_notice(conn, delivery["notification_id"])
        request = approvals.get(conn, notice["request_id"])
        waiting = store.awaits_decision(notice["kind"])
        if waiting and (request["status"] != "pending" or request["expires_at"] <= now):
            return None
        store.revoke_unused_links(conn, delivery["id"])
        own = waiting and self._own_channel(conn, delivery, request)
        token = links.mint(conn, request, delivery["id"], now) if own else None
        public = self.settings.public_url
        response = approvals.response_for(conn, request["request_id"])
        return messages.NoticeView(
            delivery_id=delivery["id"],
            notice_id=notice["id"],
            kind=notice["kind"],
            occurred_at=notice["created_at"],
            request=dict(request),
            workflow_name=wf_store.get(conn, request["workflow_id"])["name"],
            decision=dict(response) if response is not None else None,
            decide_url=links.url(public, token) if token else None,
            review_url=f"{public}/approvals/{request['request_id']}",
        )

    async def _attempt(
        self, client: httpx.AsyncClient, attempt: _Attempt, now: datetime, report: DispatchReport
    ) -> None:
        delivery = attempt.delivery
        if attempt.view is None:
            await asyncio.to_thread(
                self._finish,
                delivery["id"],
                store.SKIPPED,
                "the request was decided or expired before it could be sent",
            )
            report.skipped.append(delivery["id"])
            return
        try:
            try:
                await self._send(client, delivery, attempt.view, now)
            except channels.SendFailed:
                raise
            except Exception as exc:  # a bug or a surprise must count as an attempt, not loop forever
                log.exception("notification %s could not be sent", delivery["id"])
                raise channels.SendFailed(f"{type(exc).__name__}: {exc}") from exc
        except channels.SendFailed as exc:
            number = delivery["attempts"] + 1
            if exc.permanent or number >= self.settings.max_attempts:
                why = exc.message if exc.permanent else f"gave up after {number} attempts: {exc.message}"
                await asyncio.to_thread(self._finish, delivery["id"], store.FAILED, why, revoke=True)
                report.failed.append(delivery["id"])
                log.error(
                    "notification %s to %s failed: %s", delivery["id"], mask_url(delivery["target"]), why
                )
                return
            retry_at = now + self.backoff(number)
            await asyncio.to_thread(
                self._finish, delivery["id"], store.PENDING, exc.message, revoke=True, retry_at=retry_at
            )
            report.retrying.append(delivery["id"])
            log.warning(
                "notification %s to %s will be retried: %s",
                delivery["id"],
                mask_url(delivery["target"]),
                exc.message,
            )
            return
        await asyncio.to_thread(self._finish, delivery["id"], store.DELIVERED, None)
        report.delivered.append(delivery["id"])

    async def _send(
        self, client: httpx.AsyncClient, delivery: RowMapping, view: messages.NoticeView, now: datetime
    ) -> None:
        if delivery["channel"] == EMAIL:
            smtp = self.settings.smtp
            if smtp is None:
                raise channels.SendFailed("e-mail is no longer configured (SAFERUN_SMTP_HOST)")
            message = messages.email(view, smtp.sender, delivery["target"], now)
            await asyncio.to_thread(channels.send_email, smtp, message)
            return
        body = messages.slack_body(view) if delivery["format"] == "slack" else messages.json_body(view)
        headers = {messages.EVENT_HEADER: view.event, messages.DELIVERY_HEADER: str(view.delivery_id)}
        if self.settings.webhook_secret:
            timestamp = int(self.clock().timestamp())
            headers[messages.TIMESTAMP_HEADER] = str(timestamp)
            headers[messages.SIGNATURE_HEADER] = messages.sign(self.settings.webhook_secret, timestamp, body)
        await channels.post_webhook(client, delivery["target"], body, headers)

    def _finish(
        self,
        delivery_id: int,
        status: str,
        error: str | None,
        *,
        revoke: bool = False,
        retry_at: datetime | None = None,
    ) -> None:
        with self.db.transaction() as conn:
            if revoke:
                store.revoke_unused_links(conn, delivery_id)
            store.finish_delivery(
                conn, delivery_id, status, error=error, next_attempt_at=retry_at, now=self.clock()
            )

    def backoff(self, attempts: int) -> timedelta:
        """Exponential with jitter: half the doubled delay plus a random share of the other half."""
        ceiling = exponential_bound(attempts, self.settings.backoff_base, self.settings.backoff_cap)
        return timedelta(seconds=ceiling / 2 + self.rng() * ceiling / 2)
