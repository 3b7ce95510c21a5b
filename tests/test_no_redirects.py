"""Outbound clients follow no redirect (issue 9, item 7): the x402 facilitator client, the remote platform
client (``RemotePlatform`` and the seed's ``X402Integration`` on it) and webhooks, each against a real HTTP
server on loopback answering 302 to a second server. The second server is never reached, the caller gets a
clear refusal (``RedirectRefused`` / a failed delivery), and neither the refusal nor any log line carries
the configured URL's password, the API key or the redirect target's credentials."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from x402.http import FacilitatorConfig

from saferun import logs
from saferun.api.x402.client import X402Integration
from saferun.api.x402.original_client import X402Client
from saferun.core.rollback.reconciliation import RetryPolicy
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import RedirectRefused
from saferun.notifications.dispatcher import Dispatcher
from saferun.notifications.settings import NotificationSettings
from saferun.payments.facilitator import NoRedirectFacilitatorClient, build_facilitator
from saferun.payments.funding import FundingService
from saferun.payments.settings import LOCAL_PAY_TO, X402Settings
from saferun.platform.remote import RemotePlatform
from saferun.storage import notifications as store
from saferun.storage.database import Database
from tests.test_notifications import open_request
from tests.test_x402_funding import Env, fund_url

PASSWORD = "s3cret-pw-9f2c"
KEY = "sr_key_redirect_test_0123456789abcdef"
TARGET_PASSWORD = "stolen-pw-77aa"
TARGET_TOKEN = "tok-5e5e5e5e"


@dataclass
class Peer:
    url: str
    hits: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)


@contextmanager
def http_peer(status: int, location: str | None = None) -> Iterator[Peer]:
    """A real HTTP server on loopback answering ``status`` (with ``Location``) to every request."""
    peer = Peer(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            peer.hits.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            body = b'{"ok": true}'
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    peer.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def redirecting() -> Iterator[tuple[Peer, Peer]]:
    """(the peer answering 302, the server it points at); the Location carries credentials and a token."""
    with http_peer(200) as elsewhere:
        target = elsewhere.url.replace("http://", f"http://thief:{TARGET_PASSWORD}@")
        with http_peer(302, f"{target}/stolen?token={TARGET_TOKEN}") as peer:
            yield peer, elsewhere


def with_password(url: str) -> str:
    return url.replace("http://", f"http://facuser:{PASSWORD}@")


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in (PASSWORD, KEY, TARGET_PASSWORD, TARGET_TOKEN, "facuser", "thief"):
            assert secret not in text, (secret, text)


def redirect_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """SafeRun's own records carry no secret as written; every record (httpx and httpcore print the URL
    and the Location at DEBUG) carries none once through the handler's ``RedactFilter``. SafeRun's refusal
    lines are returned."""
    own = [r.getMessage() for r in caplog.records if r.name.startswith("saferun")]
    assert_no_secrets(*own)
    for record in caplog.records:
        shown = logging.makeLogRecord(vars(record))
        logs.RedactFilter().filter(shown)
        assert_no_secrets(shown.getMessage())
    return [line for line in own if "redirect" in line and "refused" in line]


async def test_the_facilitator_client_refuses_a_redirect(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with redirecting() as (peer, elsewhere):
        client = NoRedirectFacilitatorClient(FacilitatorConfig(url=with_password(peer.url)))
        with pytest.raises(RedirectRefused) as supported:
            client.get_supported()  # the sync path (the SDK's initialisation)
        payload = b'{"x402Version": 2, "payload": {}, "accepted": {}}'
        with pytest.raises(RedirectRefused) as verified:
            await client.verify_from_bytes(payload, b"{}")  # the async path (verify and settle)
        await client.aclose()
        assert [(method, path) for method, path, _ in peer.hits] == [
            ("GET", "/supported"),
            ("POST", "/verify"),
        ]
        assert peer.hits[0][2]["authorization"].startswith("Basic ")  # the credentials went to the peer only
        assert elsewhere.hits == []
    for caught in (supported.value, verified.value):
        assert caught.http_status == 502 and caught.fields["status_code"] == 302
        assert "redirect" in caught.message and "configure the final URL" in caught.message
        assert caught.fields["url"].startswith("http://***@127.0.0.1:")
        assert caught.fields["location"].endswith("/stolen?token=***")
        assert_no_secrets(caught.message, str(caught.fields))
    assert len(redirect_lines(caplog)) == 2


async def test_a_redirecting_facilitator_funds_nothing_and_its_password_stays_hidden(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with redirecting() as (peer, elsewhere):
        settings = X402Settings(
            facilitator="remote", facilitator_url=with_password(peer.url), pay_to=LOCAL_PAY_TO
        )
        assert isinstance(build_facilitator(db, settings), NoRedirectFacilitatorClient)
        env = Env(db)
        env.app.state.x402_funding = FundingService(db, settings)
        wf = env.workflow()
        async with env.plain() as http:
            answer = await http.post(fund_url(wf))
        assert elsewhere.hits == []
    assert answer.status_code == 503, answer.text
    detail = answer.json()["detail"]
    assert detail["error"] == "FacilitatorUnavailable" and "RedirectRefused" in detail["message"]
    assert "redirect" in detail["message"]
    assert_no_secrets(answer.text)
    assert env.orch.escrow_position(wf).locked == 0
    assert redirect_lines(caplog)


async def test_the_remote_platform_refuses_a_redirect_and_does_not_retry(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    with redirecting() as (peer, elsewhere):
        monkeypatch.setenv("X402_API_URL", f"{peer.url}/x402")
        retry = RetryPolicy(attempts=3, initial_delay=0.0, max_delay=0.0)
        platform = RemotePlatform(f"{peer.url}/x402", KEY, retry=retry)
        with pytest.raises(RedirectRefused) as read:
            await platform.get_job("job_1")
        with pytest.raises(RedirectRefused) as moved:  # a money call: sent once, never re-sent elsewhere
            await platform.lock_escrow("wf_1", "10.00", "poster", "executor", idempotency_key="lock-wf_1-1")
        await platform.close()
        seed = X402Integration(api_key=KEY, api_url=f"{peer.url}/x402", retry=retry)
        with pytest.raises(RedirectRefused) as through_seed:
            await seed.get_escrow("esc_1")
        await seed.close()
        original = X402Client(api_key=KEY)  # the original's client, X402_API_URL from the environment
        with pytest.raises(RedirectRefused) as through_original:
            await original.get_job("job_1")  # refused at once: the original retries httpx errors only
        await original.close()
        assert [(m, p) for m, p, _ in peer.hits] == [
            ("GET", "/x402/jobs/job_1"),
            ("POST", "/x402/escrow/lock"),
            ("GET", "/x402/escrow/esc_1"),
            ("GET", "/x402/jobs/job_1"),
        ]
        assert peer.hits[1][2]["authorization"] == f"Bearer {KEY}"
        assert elsewhere.hits == []
    for caught in (read.value, moved.value, through_seed.value, through_original.value):
        assert caught.fields["peer"] == "x402 platform" and caught.fields["status_code"] == 302
        assert_no_secrets(caught.message, str(caught.fields))
    assert len(redirect_lines(caplog)) == 4


async def test_a_webhook_redirect_fails_the_delivery_at_once(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    request_id = await open_request(WorkflowOrchestrator(database=db))
    with redirecting() as (peer, elsewhere):
        hook = with_password(peer.url) + "/hooks/saferun"
        config = NotificationSettings(webhook_urls=(hook,), webhook_secret="redirect-test-secret-0123")
        report = await Dispatcher(db, config).run_once()
        assert report.failed and not report.retrying and not report.delivered
        assert [(m, p) for m, p, _ in peer.hits] == [("POST", "/hooks/saferun")]
        assert elsewhere.hits == []
    with db.read() as conn:
        [delivery] = store.deliveries(conn, request_id)
    assert delivery["status"] == "failed" and delivery["attempts"] == 1
    assert "HTTP 302 redirect" in delivery["last_error"] and "not followed" in delivery["last_error"]
    assert_no_secrets(delivery["last_error"])
    assert len(redirect_lines(caplog)) >= 1


def test_urls_are_masked_for_errors_and_logs() -> None:
    from saferun.outbound import mask_url

    assert mask_url(f"http://facuser:{PASSWORD}@127.0.0.1:9/v?token=abc&x=1") == (
        "http://***@127.0.0.1:9/v?token=***&x=***"
    )
    assert mask_url("https://hooks.example/a") == "https://hooks.example/a"
    assert mask_url(None) == "" and mask_url("/relative?key=abc") == "/relative?key=***"
    with httpx.Client() as c:  # the mask keeps a URL httpx still reads (no credentials left in it)
        assert c.build_request("GET", mask_url(f"http://u:{PASSWORD}@h.example/p")).url.host == "h.example"
