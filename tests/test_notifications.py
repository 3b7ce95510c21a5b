"""Notifications on both stores: signed webhooks to a real HTTP receiver, e-mail through a real SMTP server
(aiosmtpd on loopback), and decision links followed through a real SafeRun server.

The dispatcher is driven by hand (``run_once``) with an injected clock, so retries and backoff are
tested by moving that clock, never by waiting. The receiver checks every signature the way
docs/notifications.md tells integrators to, and refuses (401) what does not verify.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update
from typer.testing import CliRunner

from saferun.api.server import create_app
from saferun.cli.main import app as cli_app
from saferun.core.identity import IdentityService
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import InvalidInput
from saferun.notifications import messages
from saferun.notifications import settings as notification_settings
from saferun.notifications.dispatcher import Dispatcher
from saferun.notifications.settings import NotificationSettings, SmtpSettings
from saferun.storage import approvals
from saferun.storage import notifications as store
from saferun.storage.database import Database
from saferun.storage.schema import approval_requests, decision_links, notification_deliveries, utcnow
from tests.helpers import decide, make_config, pause, started
from tests.serving import free_port
from tests.test_client import serving

SECRET = "test-webhook-secret-0123456789"
PUBLIC = "http://127.0.0.1:1"  # replaced by the real server's URL where a test follows links


# ---------------------------------------------------------------------------------------------- fixtures
@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    secret: str | None
    script: list[int]
    received: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def bodies(self, event: str | None = None) -> list[Any]:
        return [r.json() for r in self.received if event is None or r.json().get("event") == event]


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, exactly as docs/notifications.md shows it."""
    timestamp = headers.get("x-saferun-timestamp", "")
    signature = headers.get("x-saferun-signature", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return False
    expected = (
        "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )
    return hmac.compare_digest(expected, signature)


@contextmanager
def webhook_receiver(*statuses: int, secret: str | None = SECRET) -> Iterator[Receiver]:
    """A real HTTP server on loopback: verifies signatures (401 if bad), then answers the scripted statuses
    in order (200 once they run out) and records every request."""
    receiver = Receiver(url="", secret=secret, script=list(statuses))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            if secret is not None and not verify_signature(secret, headers, body):
                status = 401
            else:
                status = receiver.script.pop(0) if receiver.script else 200
            receiver.received.append(Received(headers, body, status))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            receiver.arrived.set()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/saferun"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


class Mailbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 Message accepted"


@contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


class Clock:
    """The dispatcher's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def settings(**overrides: Any) -> NotificationSettings:
    values: dict[str, Any] = {"webhook_secret": SECRET, "public_url": PUBLIC, "backoff_base": 1.0}
    return NotificationSettings(**{**values, **overrides})


def own(url: str, supervisor: str = "reviewer") -> dict[str, str]:
    """``SAFERUN_SUPERVISOR_WEBHOOKS`` naming ``url`` as ``supervisor``'s own webhook (the only kind of
    webhook a decision link is sent to)."""
    return {supervisor: url}


def dispatcher(db: Database, config: NotificationSettings, clock: Clock | None = None) -> Dispatcher:
    return Dispatcher(db, config, clock=clock or Clock(), rng=lambda: 1.0)


async def open_request(orch: WorkflowOrchestrator, **config: Any) -> str:
    """A workflow paused at its first checkpoint (supervisor ``reviewer`` unless given); its request id."""
    wf = started(orch, make_config(**config))
    return await pause(orch, wf, parameters={"pizza_count": 100})


def token_of(link: str) -> str:
    return link.rsplit("/", 1)[1]


def decide_by_link(base: str, token: str, decision: str, rationale: str = "", **form: str) -> httpx.Response:
    data = {"token": token, "decision": decision, "rationale": rationale, **form}
    return httpx.post(f"{base}/decide/{token}", data=data, timeout=10)


def response_count(db: Database, request_id: str) -> int:
    with db.read() as conn:
        return 0 if approvals.response_for(conn, request_id) is None else 1


def deliveries(db: Database, request_id: str | None = None) -> list[Any]:
    with db.read() as conn:
        return store.deliveries(conn, request_id)


# ------------------------------------------------------------------------------------------------ tests
async def test_signed_webhook_link_decides_once_then_the_decision_is_announced(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    request_id = await open_request(orch)
    with webhook_receiver() as hook, serving(db, auth="keys", sweep=False) as base:
        notices = dispatcher(db, settings(supervisor_webhooks=own(hook.url), public_url=base))
        report = await notices.run_once()
        assert report.delivered and not report.retrying

        [waiting] = hook.received
        body = waiting.json()
        assert waiting.status == 200 and verify_signature(SECRET, waiting.headers, waiting.body)
        assert waiting.headers["x-saferun-event"] == "approval.waiting"
        assert body["event"] == "approval.waiting" and body["request"]["request_id"] == request_id
        assert body["request"]["supervisor_id"] == "reviewer" and body["decision"] is None
        assert body["request"]["parameters"] == {"pizza_count": 100}
        link = body["links"]["decide"]
        assert link.startswith(f"{base}/decide/")
        token = token_of(link)

        # the API needs a key here (keys mode); the link does not
        assert httpx.get(f"{base}/api/approvals/pending").status_code == 401
        page = httpx.get(link)
        assert page.status_code == 200 and "review cp1" in page.text and "reviewer" in page.text
        assert response_count(db, request_id) == 0  # looking decides nothing

        done = decide_by_link(base, token, "APPROVED", "looks right")
        assert done.status_code == 200, done.text
        with db.read() as conn:
            response = approvals.response_for(conn, request_id)
            assert response is not None
            assert (response["decision"], response["approved_by"]) == ("APPROVED", "reviewer")
            [used] = store.links_for(conn, request_id)
            assert used["used_at"] is not None and used["decision"] == "APPROVED"

        again = decide_by_link(base, token, "REJECTED", "changed my mind")
        assert again.status_code == 409 and "already used" in again.text
        assert httpx.get(link).status_code == 409
        with db.read() as conn:
            assert approvals.response_for(conn, request_id)["decision"] == "APPROVED"
            assert approvals.get(conn, request_id)["status"] == "decided"

        await notices.run_once()
        [decided] = hook.bodies("approval.decided")
        assert (
            decided["decision"]["decision"] == "APPROVED" and decided["decision"]["approved_by"] == "reviewer"
        )
        assert decided["links"]["decide"] is None  # nothing left to decide
        assert decided["links"]["review"] == f"{base}/approvals/{request_id}"


async def test_decision_links_go_only_to_the_supervisors_own_channels(db: Database) -> None:
    """Issue 9, finding 5: a generic webhook is a shared channel (the executor's operator may read it), so it
    gets the review page, which needs sign-in; the assigned supervisor's own webhook and e-mail get the
    link. In both formats, no ``/decide/`` reaches the generic channel."""
    orch = WorkflowOrchestrator(database=db)
    request_id = await open_request(orch)
    with (
        webhook_receiver() as shared,
        webhook_receiver() as mine,
        webhook_receiver(secret=None) as shared_slack,
        smtp_server() as (mailbox, port),
        serving(db, auth="keys", sweep=False) as base,
    ):
        smtp = SmtpSettings(host="127.0.0.1", port=port, sender="saferun@example.com", starttls=False)
        config = settings(
            webhook_urls=(shared.url,),
            supervisor_webhooks=own(mine.url),
            smtp=smtp,
            emails={"reviewer": "reviewer@example.com"},
            public_url=base,
        )
        report = await dispatcher(db, config).run_once()
        assert len(report.delivered) == 3
        slack = settings(webhook_urls=(shared_slack.url,), webhook_format="slack", public_url=base)
        with db.transaction() as conn:  # the same notice, fanned out again to a Slack channel
            conn.execute(update(store.notifications).values(dispatched_at=None))
        await dispatcher(db, slack).run_once()

        [generic] = shared.received
        assert b"/decide/" not in generic.body
        body = generic.json()
        assert body["links"] == {"decide": None, "review": f"{base}/approvals/{request_id}"}
        [slack_message] = shared_slack.received
        assert b"/decide/" not in slack_message.body
        [button] = next(b for b in slack_message.json()["blocks"] if b["type"] == "actions")["elements"]
        assert button["url"] == f"{base}/approvals/{request_id}" and "Open in SafeRun" in str(button)
        review = httpx.get(body["links"]["review"], follow_redirects=False)
        assert review.status_code in (303, 401) and "review cp1" not in review.text  # sign in first

        mine_link = mine.bodies()[0]["links"]["decide"]
        [(_, message)] = mailbox.messages
        mail_link = next(x for x in message.get_content().splitlines() if x.startswith(f"{base}/decide/"))
        with db.read() as conn:
            minted = {row["token_hash"] for row in store.links_for(conn, request_id)}
        assert minted == {store.hash_token(token_of(mine_link)), store.hash_token(token_of(mail_link))}
        assert decide_by_link(base, token_of(mine_link), "APPROVED", "mine").status_code == 200


async def test_a_channel_that_is_no_longer_the_supervisors_gets_no_link(db: Database) -> None:
    """Fanned out to the supervisor's webhook, then the setting names another URL before it is sent: the
    old URL is no longer theirs, so the message goes without a link (checked at send time)."""
    orch = WorkflowOrchestrator(database=db)
    request_id = await open_request(orch)
    with webhook_receiver() as old, webhook_receiver() as new:
        await asyncio.to_thread(dispatcher(db, settings(supervisor_webhooks=own(old.url))).fan_out, utcnow())
        changed = dispatcher(db, settings(supervisor_webhooks=own(new.url)))
        report = await changed.deliver_due(utcnow())
        assert len(report.delivered) == 1
    [body] = old.bodies()
    assert body["links"]["decide"] is None and new.received == []
    with db.read() as conn:
        assert store.links_for(conn, request_id) == []


async def test_a_failed_delivery_is_retried_after_backoff_with_a_fresh_link(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    request_id = await open_request(orch)
    clock = Clock()
    with webhook_receiver(500) as hook, serving(db, auth="open", sweep=False) as base:
        notices = dispatcher(db, settings(supervisor_webhooks=own(hook.url), public_url=base), clock)
        first = await notices.run_once()
        assert first.retrying and not first.delivered
        [row] = deliveries(db, request_id)
        assert row["status"] == "pending" and row["attempts"] == 1 and "HTTP 500" in row["last_error"]
        assert (
            clock.now + timedelta(seconds=0.5) <= row["next_attempt_at"] <= clock.now + timedelta(seconds=1)
        )

        assert not (await notices.run_once()).delivered  # not due yet: nothing sent
        assert len(hook.received) == 1

        clock.advance(1.0)
        second = await notices.run_once()
        assert second.delivered == [row["id"]]
        failed, ok = hook.received
        assert (failed.status, ok.status) == (500, 200)
        assert failed.headers["x-saferun-delivery"] == ok.headers["x-saferun-delivery"]  # receivers dedupe
        [row] = deliveries(db, request_id)
        assert row["status"] == "delivered" and row["attempts"] == 2 and row["last_error"] is None

        # the link of the attempt that failed was revoked; the one that arrived works
        stale, fresh = token_of(failed.json()["links"]["decide"]), token_of(ok.json()["links"]["decide"])
        assert stale != fresh
        assert decide_by_link(base, stale, "APPROVED").status_code == 404
        assert response_count(db, request_id) == 0
        assert decide_by_link(base, fresh, "APPROVED").status_code == 200
        assert response_count(db, request_id) == 1


async def test_delivery_gives_up_after_max_attempts_and_a_refusal_fails_at_once(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    request_id = await open_request(orch)
    clock = Clock()
    with webhook_receiver(503, 503, 503, 503) as flaky, webhook_receiver(410) as gone:
        config = settings(webhook_urls=(gone.url,), supervisor_webhooks=own(flaky.url), max_attempts=3)
        notices = dispatcher(db, config, clock)
        for _ in range(3):
            await notices.run_once()
            clock.advance(10)
        await notices.run_once()
        rows = {r["target"]: r for r in deliveries(db, request_id)}
        assert rows[flaky.url]["status"] == "failed" and rows[flaky.url]["attempts"] == 3
        assert "gave up after 3 attempts" in rows[flaky.url]["last_error"]
        assert len(flaky.received) == 3
        assert rows[gone.url]["status"] == "failed" and rows[gone.url]["attempts"] == 1
        assert "HTTP 410" in rows[gone.url]["last_error"] and len(gone.received) == 1
    with db.read() as conn:  # no live link is left behind by deliveries that never got through
        assert store.links_for(conn, request_id) == []


async def test_slack_format_carries_the_link_as_a_button(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    request_id = await open_request(orch)
    with webhook_receiver(secret=None) as slack:
        config = settings(supervisor_webhooks=own(slack.url), webhook_format="slack", webhook_secret=None)
        await dispatcher(db, config).run_once()
    [message] = slack.received
    body = message.json()
    assert set(body) == {"text", "blocks"} and "x-saferun-signature" not in message.headers
    [button] = next(b for b in body["blocks"] if b["type"] == "actions")["elements"]
    assert button["type"] == "button" and button["url"].startswith(f"{PUBLIC}/decide/")
    assert button["url"] in body["text"] and "Decision needed" in body["text"]
    section = body["blocks"][0]["text"]["text"]
    assert "review cp1" in section
    with db.read() as conn:
        [link] = store.links_for(conn, request_id)
    assert link["token_hash"] == store.hash_token(token_of(button["url"]))


async def test_email_reaches_the_assigned_supervisor_and_its_link_decides(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    orch = WorkflowOrchestrator(database=db)
    request_id = await open_request(orch)
    with smtp_server() as (mailbox, port), serving(db, auth="open", sweep=False) as base:
        smtp = SmtpSettings(host="127.0.0.1", port=port, sender="saferun@example.com", starttls=False)
        config = settings(smtp=smtp, emails={"reviewer": "reviewer@example.com"}, public_url=base)
        report = await dispatcher(db, config).run_once()
        assert len(report.delivered) == 1
        [(recipients, message)] = mailbox.messages
        assert recipients == ["reviewer@example.com"]
        assert message["To"] == "reviewer@example.com" and message["From"] == "saferun@example.com"
        assert message["Subject"].startswith("[SafeRun] Decision needed: Review 1")
        text = message.get_content()
        link = next(line for line in text.splitlines() if line.startswith(f"{base}/decide/"))
        assert "review cp1" in text and '"pizza_count": 100' in text

        refused = decide_by_link(base, token_of(link), "REJECTED", "")  # a rejection needs a reason
        assert refused.status_code == 422 and "rationale" in refused.text
        assert response_count(db, request_id) == 0
        done = decide_by_link(base, token_of(link), "REJECTED", "too many pizzas")
        assert done.status_code == 200, done.text
        with db.read() as conn:
            response = approvals.response_for(conn, request_id)
        assert (response["decision"], response["approved_by"]) == ("REJECTED", "reviewer")

        await dispatcher(db, config).run_once()
        assert mailbox.messages[-1][1]["Subject"].startswith("[SafeRun] Rejected by reviewer")


def test_the_stored_address_of_an_identity_wins_and_is_set_by_the_cli(database_env: Database) -> None:
    db = database_env
    IdentityService(db).create_identity("ann", "Ann", ["supervisor"])
    runner = CliRunner()
    bad = runner.invoke(cli_app, ["identities", "email", "ann", "not an address"])
    assert bad.exit_code != 0 and "not a plain e-mail address" in bad.output
    assert runner.invoke(cli_app, ["identities", "email", "nobody", "x@example.com"]).exit_code != 0
    ok = runner.invoke(cli_app, ["identities", "email", "ann", "ann@example.com"])
    assert ok.exit_code == 0 and "ann@example.com" in ok.output

    orch = WorkflowOrchestrator(database=db)
    request_id = asyncio.run(open_request(orch, supervisor_id="ann"))
    with smtp_server() as (mailbox, port):
        smtp = SmtpSettings(host="127.0.0.1", port=port, sender="saferun@example.com", starttls=False)
        config = settings(smtp=smtp, emails={"ann": "fallback@example.com"})
        asyncio.run(dispatcher(db, config).run_once())
    assert [rcpt for rcpt, _ in mailbox.messages] == [["ann@example.com"]]
    assert [r["target"] for r in deliveries(db, request_id)] == ["ann@example.com"]

    cleared = runner.invoke(cli_app, ["identities", "email", "ann", "--clear"])
    assert cleared.exit_code == 0 and "no e-mail address" in cleared.output


async def test_tampered_tokenless_or_odd_requests_decide_nothing(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    request_id = await open_request(orch)
    with webhook_receiver() as hook, serving(db, auth="open", sweep=False) as base:
        await dispatcher(db, settings(supervisor_webhooks=own(hook.url), public_url=base)).run_once()
        token = token_of(hook.bodies("approval.waiting")[0]["links"]["decide"])

        tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
        assert httpx.get(f"{base}/decide/{tampered}").status_code == 404
        assert decide_by_link(base, tampered, "APPROVED").status_code == 404
        assert httpx.get(f"{base}/decide/short").status_code == 404
        missing = httpx.post(f"{base}/decide/{token}", data={"decision": "APPROVED"})
        assert missing.status_code == 403 and "token" in missing.text  # the form must carry the token
        odd = decide_by_link(base, token, "MODIFIED")
        assert odd.status_code == 422 and "approves or rejects" in odd.text
        assert response_count(db, request_id) == 0
        assert httpx.get(f"{base}/decide/{token}").status_code == 200  # none of that spent the link


async def test_a_link_posted_from_another_site_is_refused(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    request_id = await open_request(orch)
    with webhook_receiver() as hook, serving(db, auth="open", sweep=False) as base:
        await dispatcher(db, settings(supervisor_webhooks=own(hook.url), public_url=base)).run_once()
        token = token_of(hook.bodies()[0]["links"]["decide"])
        forged = httpx.post(
            f"{base}/decide/{token}",
            data={"token": token, "decision": "APPROVED"},
            headers={"Origin": "https://evil.example"},
        )
        assert forged.status_code == 403 and "another site" in forged.text
        assert response_count(db, request_id) == 0
        assert httpx.get(f"{base}/decide/{token}").status_code == 200  # still unused


async def test_an_expired_link_is_refused_and_decides_nothing(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    request_id = await open_request(orch)
    with webhook_receiver() as hook, serving(db, auth="open", sweep=False) as base:
        await dispatcher(db, settings(supervisor_webhooks=own(hook.url), public_url=base)).run_once()
        token = token_of(hook.bodies()[0]["links"]["decide"])
        with db.read() as conn:
            [link] = store.links_for(conn, request_id)
            assert link["expires_at"] == approvals.get(conn, request_id)["expires_at"]  # with the request
        # the request's deadline passes (moved in the data, not waited for); the sweep has not run yet
        past = utcnow() - timedelta(minutes=1)
        with db.transaction() as conn:
            conn.execute(
                update(approval_requests)
                .where(approval_requests.c.request_id == request_id)
                .values(expires_at=past)
            )
            conn.execute(
                update(decision_links)
                .where(decision_links.c.request_id == request_id)
                .values(expires_at=past)
            )
        page = httpx.get(f"{base}/decide/{token}")
        assert page.status_code == 409 and "expired" in page.text
        refused = decide_by_link(base, token, "APPROVED")
        assert refused.status_code == 409 and "expired" in refused.text
        with db.read() as conn:
            assert approvals.response_for(conn, request_id) is None
            assert approvals.get(conn, request_id)["status"] == "pending"
            assert conn.execute(select(decision_links.c.used_at)).scalar() is None


async def test_no_link_without_an_assigned_supervisor(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    request_id = await open_request(orch, supervisor_id=None)
    with db.read() as conn:
        assert approvals.get(conn, request_id)["supervisor_id"] is None  # nobody eligible to assign
    with webhook_receiver() as hook, webhook_receiver() as mine, smtp_server() as (mailbox, port):
        smtp = SmtpSettings(host="127.0.0.1", port=port, sender="saferun@example.com", starttls=False)
        config = settings(
            webhook_urls=(hook.url,),
            supervisor_webhooks=own(mine.url),
            smtp=smtp,
            emails={"reviewer": "reviewer@example.com"},
        )
        await dispatcher(db, config).run_once()
    assert mine.received == []  # not reviewer's request: their own channel hears nothing of it
    [body] = hook.bodies()
    assert body["links"]["decide"] is None and body["links"]["review"].endswith(f"/approvals/{request_id}")
    assert mailbox.messages == []  # no assigned supervisor: nobody to e-mail
    with db.read() as conn:
        assert store.links_for(conn, request_id) == []


async def test_notices_survive_the_writer_and_each_is_fanned_out_once(db: Database) -> None:
    """The agent process writes notices with no channel configured; a server started later delivers them,
    and two replicas dispatching at once send each notice once. Expiry is announced too."""
    orch = WorkflowOrchestrator(database=db)
    first = await open_request(orch)
    second = await open_request(orch)
    decide(orch, first, "APPROVED")
    with db.read() as conn:
        kinds = [(n["kind"], n["dispatched_at"]) for n in store.notices_for(conn, first)]
    assert kinds == [("waiting", None), ("decided", None)]

    with webhook_receiver() as hook:
        config = settings(webhook_urls=(hook.url,))
        replicas = [dispatcher(db, config), dispatcher(db, config)]
        reports = await asyncio.gather(*(r.run_once() for r in replicas))
        assert sum(r.fanned_out for r in reports) == 3
        # the first request's waiting notice was dropped: it was decided before anyone could be told
        assert sorted(b["event"] for b in hook.bodies()) == ["approval.decided", "approval.waiting"]
        assert {b["request"]["request_id"] for b in hook.bodies("approval.waiting")} == {second}

        orch.sweep_expired(utcnow() + timedelta(hours=1))  # the second request times out (on_timeout=reject)
        await replicas[1].run_once()
        [expired] = hook.bodies("approval.expired")
        assert expired["request"]["request_id"] == second
        assert expired["decision"]["automatic"] is True and expired["decision"]["decision"] == "REJECTED"
        assert len(hook.received) == 3


async def test_a_configured_server_delivers_in_the_background(db: Database) -> None:
    with (
        webhook_receiver() as hook,
        serving(db, auth="open", notifications=settings(webhook_urls=(hook.url,))),
    ):
        request_id = await open_request(WorkflowOrchestrator(database=db))
        assert await asyncio.to_thread(hook.arrived.wait, 30)
    [body] = hook.bodies()
    assert body["event"] == "approval.waiting" and body["request"]["request_id"] == request_id
    with db.read() as conn:
        status = conn.execute(select(notification_deliveries.c.status)).scalar()
    assert status == "delivered"


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"SAFERUN_WEBHOOK_URLS": "ftp://hooks.example/x"}, "SAFERUN_WEBHOOK_URLS"),
        ({"SAFERUN_WEBHOOK_URLS": "https://ok.example/a, javascript:alert(1)"}, "SAFERUN_WEBHOOK_URLS"),
        ({"SAFERUN_WEBHOOK_URLS": "hooks.example/no-scheme"}, "SAFERUN_WEBHOOK_URLS"),
        ({"SAFERUN_WEBHOOK_URLS": "https://ok.example/a"}, "SAFERUN_WEBHOOK_SECRET"),
        ({"SAFERUN_WEBHOOK_FORMAT": "xml"}, "SAFERUN_WEBHOOK_FORMAT"),
        ({"SAFERUN_SMTP_HOST": "mail.example"}, "SAFERUN_SMTP_FROM"),
        ({"SAFERUN_NOTIFY_EMAILS": "ann"}, "SAFERUN_NOTIFY_EMAILS"),
        ({"SAFERUN_NOTIFY_EMAILS": "ann=a@b.c\nBcc: x@y.z"}, "SAFERUN_NOTIFY_EMAILS"),
        ({"SAFERUN_PUBLIC_URL": "file:///etc"}, "SAFERUN_PUBLIC_URL"),
        ({"SAFERUN_SUPERVISOR_WEBHOOKS": "https://own.example/ann"}, "SAFERUN_SUPERVISOR_WEBHOOKS"),
        ({"SAFERUN_SUPERVISOR_WEBHOOKS": "ann=ftp://own.example/ann"}, "SAFERUN_SUPERVISOR_WEBHOOKS"),
        ({"SAFERUN_SUPERVISOR_WEBHOOKS": "ann=https://a.example/x"}, "SAFERUN_WEBHOOK_SECRET"),
        (
            {
                "SAFERUN_SUPERVISOR_WEBHOOKS": "ann=https://a.example/x, bob=https://a.example/x",
                "SAFERUN_WEBHOOK_SECRET": SECRET,
            },
            "SAFERUN_SUPERVISOR_WEBHOOKS",
        ),
        (
            {
                "SAFERUN_SUPERVISOR_WEBHOOKS": "ann=https://a.example/x",
                "SAFERUN_WEBHOOK_URLS": "https://a.example/x",
                "SAFERUN_WEBHOOK_SECRET": SECRET,
            },
            "SAFERUN_SUPERVISOR_WEBHOOKS",
        ),
    ],
)
def test_bad_settings_stop_the_server_naming_the_setting(
    env: dict[str, str], setting: str, monkeypatch: pytest.MonkeyPatch, sqlite_db: Database
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInput) as caught:
        create_app(WorkflowOrchestrator(database=sqlite_db))
    assert caught.value.field == setting and setting in caught.value.message


def test_good_settings_load_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFERUN_WEBHOOK_URLS", " https://a.example/h , http://127.0.0.1:9/x ")
    monkeypatch.setenv("SAFERUN_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("SAFERUN_SMTP_HOST", "mail.example")
    monkeypatch.setenv("SAFERUN_SMTP_FROM", "saferun@example.com")
    monkeypatch.setenv("SAFERUN_NOTIFY_EMAILS", "ann=ann@example.com, bob=bob@example.com")
    monkeypatch.setenv("SAFERUN_PUBLIC_URL", "https://saferun.example/")
    monkeypatch.setenv(
        "SAFERUN_SUPERVISOR_WEBHOOKS", "ann=https://hooks.example/ann?k=v&x=1, bob=http://127.0.0.1:9/b"
    )
    loaded = notification_settings.load()
    assert dict(loaded.supervisor_webhooks) == {
        "ann": "https://hooks.example/ann?k=v&x=1",
        "bob": "http://127.0.0.1:9/b",
    }
    assert loaded.webhook_urls == ("https://a.example/h", "http://127.0.0.1:9/x")
    assert loaded.smtp is not None and (loaded.smtp.port, loaded.smtp.starttls) == (587, True)
    assert dict(loaded.emails) == {"ann": "ann@example.com", "bob": "bob@example.com"}
    assert loaded.public_url == "https://saferun.example" and loaded.enabled


async def test_a_link_refused_by_the_engine_stays_unspent_and_decides_nothing(db: Database) -> None:
    """Decided elsewhere first (409), or its supervisor disabled (403): the link's transaction rolls back."""
    identities = IdentityService(db)
    identities.create_identity("ann", "Ann", ["supervisor"])
    orch = WorkflowOrchestrator(database=db)
    elsewhere = await open_request(orch)
    disabled = await open_request(orch, supervisor_id="ann")
    with (
        webhook_receiver() as reviewer_hook,
        webhook_receiver() as ann_hook,
        serving(db, auth="open", sweep=False) as base,
    ):
        hooks = {"reviewer": reviewer_hook.url, "ann": ann_hook.url}
        await dispatcher(db, settings(supervisor_webhooks=hooks, public_url=base)).run_once()
        bodies = reviewer_hook.bodies() + ann_hook.bodies()
        tokens = {b["request"]["request_id"]: token_of(b["links"]["decide"]) for b in bodies}
        assert [b["request"]["supervisor_id"] for b in ann_hook.bodies()] == ["ann"]

        decide(orch, elsewhere, "REJECTED")  # on the dashboard, before the link is clicked
        late = decide_by_link(base, tokens[elsewhere], "APPROVED")
        assert late.status_code == 409 and "already decided" in late.text

        identities.set_disabled("ann", True)
        refused = decide_by_link(base, tokens[disabled], "APPROVED")
        assert refused.status_code == 403 and "disabled" in refused.text
        with db.read() as conn:
            assert approvals.response_for(conn, elsewhere)["decision"] == "REJECTED"
            assert approvals.response_for(conn, disabled) is None
            assert conn.execute(select(decision_links.c.used_at)).scalars().all() == [None, None]


def test_the_verify_helper_accepts_only_fresh_untouched_bodies() -> None:
    body = b'{"event":"approval.waiting"}'
    now = int(time.time())
    signature = messages.sign(SECRET, now, body)
    assert (
        signature
        == "sha256=" + hmac.new(SECRET.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    )
    assert messages.verify(SECRET, str(now), body, signature, now=now)
    assert not messages.verify(SECRET, str(now), body + b" ", signature, now=now)  # body changed
    assert not messages.verify(SECRET, str(now + 1), body, signature, now=now)  # timestamp changed
    assert not messages.verify("another-secret-0123456789", str(now), body, signature, now=now)
    assert not messages.verify(SECRET, str(now), body, signature, now=now + 301)  # a replay, too late


def test_the_cli_lists_failed_deliveries_and_sends_them_again(database_env: Database) -> None:
    db = database_env
    orch = WorkflowOrchestrator(database=db)
    request_id = asyncio.run(open_request(orch))
    runner = CliRunner()
    with webhook_receiver(410, 200) as receiver:
        config = settings(webhook_urls=(receiver.url.replace("http://", "http://hooks:cli-pw-31@"),))
        asyncio.run(dispatcher(db, config).run_once())  # 410: refused, failed at once
        failed = runner.invoke(cli_app, ["notifications", "list", "--status", "failed", "--json"])
        assert failed.exit_code == 0, failed.output
        assert "cli-pw-31" not in failed.stdout  # the target's password is masked
        [row] = json.loads(failed.stdout)
        assert row["target"] == receiver.url.replace("http://", "http://***@")
        assert (
            row["request_id"] == request_id and row["kind"] == "waiting" and "HTTP 410" in row["last_error"]
        )
        # no terminal: the table gets a width wide enough for the error column
        table = runner.invoke(cli_app, ["notifications", "list"], env={"COLUMNS": "200"})
        assert "HTTP 410" in table.stdout

        again = runner.invoke(cli_app, ["notifications", "list", "--retry", "--request", request_id])
        assert again.exit_code == 0 and "1 failed deliveries queued again" in again.stdout
        asyncio.run(dispatcher(db, config).run_once())  # the receiver takes it now
        assert len(receiver.received) == 2
    [delivery] = deliveries(db, request_id)
    assert delivery["status"] == "delivered" and delivery["attempts"] == 1
    none = runner.invoke(cli_app, ["notifications", "list", "--retry", "--request", "req_unknown"])
    assert "0 failed deliveries queued again" in none.stdout
