"""No secret in any log line, audit event, error body or ``/metrics`` after a full run (issue 9, findings 5
and 7).

A real ``saferun serve`` process in keys mode, logging at DEBUG in the JSON and in the text format, with
every channel a secret can travel on switched on: a generic webhook whose URL carries a password, the
supervisor's own webhook (decision links), e-mail through an SMTP server that requires a login (a real
aiosmtpd server on loopback), and a remote x402 facilitator whose URL carries a password and which answers
every request with a redirect to a URL with more credentials in it. A workflow is created, started and
paused at two checkpoints; the first is decided through its decision link (the page, then the form), the
second through the API with the supervisor's key; the escrow is funded through the failing facilitator;
a used link, a bad key and a forged token are tried, and the generic webhook fails once (its URL is logged
with the retry). Then every byte the process wrote, every audit event
in the database, every error body and ``/metrics`` are searched for each decision token, each ``sr_key_``
key and each password.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select

from saferun.core.identity import IdentityService
from saferun.payments.settings import LOCAL_PAY_TO
from saferun.storage.database import Database
from saferun.storage.schema import audit_events
from tests.test_no_redirects import http_peer
from tests.test_notifications import SECRET, free_port, token_of, webhook_receiver

FACILITATOR_PASSWORD = "fac-pw-Zq81x"
SMTP_PASSWORD = "smtp-pw-Kd02p"
HOOK_PASSWORD = "hook-pw-Mm55t"
LOCATION_PASSWORD = "loc-pw-Yy12w"
PASSWORDS = (FACILITATOR_PASSWORD, SMTP_PASSWORD, HOOK_PASSWORD, LOCATION_PASSWORD, SECRET)


@dataclass
class Mailbox:
    """An SMTP server's received messages; it accepts only the configured login."""

    messages: list[email.message.EmailMessage] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 Message accepted"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"saferun",
            SMTP_PASSWORD.encode(),
        )
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok)


@contextmanager
def smtp_with_login() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        auth_require_tls=False,  # loopback only: smtplib logs in over the plain connection
    )
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


@contextmanager
def saferun_serve(env: dict[str, str], port: int, out: Path) -> Iterator[str]:
    """``saferun serve --auth keys`` as a child process, stdout and stderr into ``out``."""
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "saferun.cli.main", "serve", "--auth", "keys", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):  # starting takes about a second; give a loaded machine a minute
                assert proc.poll() is None, out.read_text()
                try:
                    if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                raise AssertionError(f"saferun serve did not start:\n{out.read_text()}")
            yield base
        finally:
            proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown: its last lines are captured too
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(check: Any, what: str) -> Any:
    """Poll the server's background delivery (a separate process) until ``check()`` is truthy."""
    for _ in range(600):
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_full_run_leaves_no_secret_in_logs_audit_errors_or_metrics(
    db: Database, tmp_path: Path, log_format: str
) -> None:
    identities = IdentityService(db)
    keys: dict[str, str] = {}
    for name, roles in (("poster", ["poster"]), ("agent", ["executor"]), ("rita", ["supervisor"])):
        _, key = identities.create_identity_with_key(name, roles=roles)
        keys[name] = key.api_key
    auth = {name: {"Authorization": f"Bearer {key}"} for name, key in keys.items()}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    location = f"http://thief:{LOCATION_PASSWORD}@127.0.0.1:9/steal?token=loc-token-0x"
    tokens: set[str] = set()
    error_bodies: list[str] = []

    def record(response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            error_bodies.append(response.text)
        return response

    with (
        webhook_receiver(500) as shared,  # the generic webhook fails once: the retry is logged with its URL
        webhook_receiver() as own,
        smtp_with_login() as (mailbox, smtp_port),
        http_peer(302, location) as facilitator,
    ):
        shared_url = shared.url.replace("http://", f"http://hooks:{HOOK_PASSWORD}@")
        env = {
            **os.environ,
            "PYTHONPATH": str(Path.cwd()),
            "DATABASE_URL": db.engine.url.render_as_string(hide_password=False),
            "SAFERUN_LOG_LEVEL": "DEBUG",
            "SAFERUN_LOG_FORMAT": log_format,
            "SAFERUN_PUBLIC_URL": base,
            "SAFERUN_WEBHOOK_URLS": shared_url,
            "SAFERUN_SUPERVISOR_WEBHOOKS": f"rita={own.url}",
            "SAFERUN_WEBHOOK_SECRET": SECRET,
            "SAFERUN_SMTP_HOST": "127.0.0.1",
            "SAFERUN_SMTP_PORT": str(smtp_port),
            "SAFERUN_SMTP_FROM": "saferun@example.com",
            "SAFERUN_SMTP_USER": "saferun",
            "SAFERUN_SMTP_PASSWORD": SMTP_PASSWORD,
            "SAFERUN_SMTP_STARTTLS": "false",
            "SAFERUN_NOTIFY_EMAILS": "rita=rita@example.com",
            "SAFERUN_NOTIFY_BACKOFF_SECONDS": "0.1",
            "SAFERUN_X402_FACILITATOR": "remote",
            "SAFERUN_X402_PAY_TO": LOCAL_PAY_TO,
            "SAFERUN_X402_FACILITATOR_URL": facilitator.url.replace(
                "http://", f"http://fac:{FACILITATOR_PASSWORD}@"
            ),
        }
        for name in ("SAFERUN_AUTH", "SAFERUN_PUBLIC_DOCS", "SAFERUN_TRUSTED_PROXIES"):
            env.pop(name, None)
        output = tmp_path / f"serve-{log_format}.log"
        with saferun_serve(env, port, output), httpx.Client(base_url=base, timeout=30) as http:
            created = record(
                http.post(
                    "/api/workflows",
                    json={
                        "name": "log capture",
                        "checkpoint_names": ["Review 1", "Review 2"],
                        "escrow_amount": "10.00",
                        "poster_id": "poster",
                        "executor_id": "agent",
                        "supervisor_id": "rita",
                    },
                    headers=auth["poster"],
                )
            )
            assert created.status_code == 201, created.text
            wf = created.json()["workflow_id"]
            assert record(http.post(f"/api/workflows/{wf}/start", headers=auth["agent"])).status_code == 200

            def checkpoint(n: int) -> str:
                answer = record(
                    http.post(
                        f"/api/workflows/{wf}/checkpoints",
                        json={"state": {"checkpoint_id": f"cp{n}"}},
                        headers=auth["agent"],
                    )
                )
                assert answer.status_code == 201, answer.text
                return str(answer.json()["approval_request_id"])

            # checkpoint 1: decided through the link on the supervisor's own webhook
            first = checkpoint(1)
            waiting = wait_for(lambda: own.bodies("approval.waiting"), "the supervisor's webhook")
            link = waiting[0]["links"]["decide"]
            tokens.add(token_of(link))
            mail = wait_for(lambda: mailbox.messages, "the supervisor's e-mail")
            mailed = re.findall(r"/decide/([A-Za-z0-9_-]{43})", mail[0].get_content())
            assert mailed, mail[0].get_content()
            tokens.update(mailed)
            shared_waiting = wait_for(lambda: shared.bodies("approval.waiting"), "the generic webhook")
            assert shared_waiting[0]["links"]["decide"] is None  # a shared channel never gets a link
            page = http.get(f"/decide/{token_of(link)}")
            assert page.status_code == 200 and "Approve" in page.text
            done = http.post(
                f"/decide/{token_of(link)}",
                data={"token": token_of(link), "decision": "APPROVED", "rationale": "by link"},
            )
            assert done.status_code == 200, done.text
            again = record(
                http.post(f"/decide/{token_of(link)}", data={"token": token_of(link), "decision": "APPROVED"})
            )
            assert again.status_code == 409
            forged = token_of(link)[:-2] + ("AA" if not token_of(link).endswith("AA") else "BB")
            assert record(http.get(f"/decide/{forged}")).status_code == 404

            # checkpoint 2: decided through the API with the supervisor's key
            second = checkpoint(2)
            # its link is sent and never used: it must not leak either
            later = wait_for(lambda: own.bodies("approval.waiting")[1:], "the second link")
            tokens.add(token_of(later[0]["links"]["decide"]))
            decided = record(
                http.post(
                    "/api/approvals/submit",
                    json={"request_id": second, "decision": "APPROVED", "rationale": "by API"},
                    headers=auth["rita"],
                )
            )
            assert decided.status_code == 200, decided.text

            # a bad key, and a key-shaped one that is not valid: neither is echoed
            assert (
                record(http.get("/api/workflows", headers={"Authorization": "Bearer nonsense"})).status_code
                == 401
            )
            fake = "sr_key_" + "f" * 40
            assert (
                record(http.get("/api/workflows", headers={"Authorization": f"Bearer {fake}"})).status_code
                == 401
            )
            assert record(http.get(f"/api/workflows?api_key={keys['poster']}")).status_code == 401

            # the x402 escrow funded through a facilitator that redirects: 503, nothing moves
            paid = record(
                http.post(
                    "/api/workflows",
                    json={
                        "name": "x402 funded",
                        "checkpoint_names": ["Only"],
                        "escrow_amount": "5.00",
                        "poster_id": "poster",
                        "executor_id": "agent",
                        "supervisor_id": "rita",
                        "funding": "x402",
                    },
                    headers=auth["poster"],
                )
            )
            assert paid.status_code == 201, paid.text
            funded = record(
                http.post(f"/api/workflows/{paid.json()['workflow_id']}/escrow/fund", headers=auth["poster"])
            )
            assert funded.status_code == 503, funded.text
            assert "redirect" in funded.text and facilitator.hits and facilitator.hits[0][1] == "/supported"

            metrics = http.get("/metrics", headers=auth["rita"])
            assert metrics.status_code == 200 and "# TYPE" in metrics.text
            audit = http.get(f"/api/workflows/{wf}/audit", headers=auth["poster"])
            assert audit.status_code == 200

            wait_for(lambda: len(own.bodies("approval.decided")) == 2, "both decisions announced")
        assert [r["request"]["request_id"] for r in own.bodies("approval.waiting")] == [first, second]
        assert mailbox.logins  # the server logged in with the password it must never print
        assert shared.received[0].status == 500 and shared.received[1].status == 200
        assert shared.received[0].headers["authorization"].startswith("Basic ")

    text = output.read_text()
    lines = text.splitlines()
    with db.read() as conn:
        events = [json.dumps(dict(row._mapping), default=str) for row in conn.execute(select(audit_events))]
    surfaces = {
        "log": lines,
        "audit event": events,
        "audit export": [audit.text],
        "error body": error_bodies,
        "metrics": [metrics.text],
    }
    secrets = {*tokens, *keys.values(), fake, *PASSWORDS, "loc-token-0x"}
    assert len(tokens) >= 2  # the webhook's and the e-mail's
    for surface, texts in surfaces.items():
        for line in texts:
            for secret in secrets:
                assert secret not in line, f"{secret[:12]}... leaked into a {surface}: {line[:300]}"

    # the run really logged what could have leaked: DEBUG lines, the link's access lines, the refusal
    if log_format == "json":
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert records and all("message" in r for r in records)
        assert {"DEBUG", "INFO", "WARNING", "ERROR"} <= {r["level"] for r in records}
    assert any("/decide/[redacted]" in line for line in lines), text[-3000:]
    assert any("redirect" in line and "facilitator" in line for line in lines), text[-3000:]
    assert any("will be retried" in line and "http://***@127.0.0.1" in line for line in lines), text
    assert any(e for e in events if "decision_link_used" in e)


def test_redaction_skips_only_lines_that_cannot_hold_a_secret() -> None:
    """``redact`` first asks one regex whether any secret pattern could match; the answer must be exactly
    the five substitutions' on every line, secret or not (random lines seeded with each trigger)."""
    import random
    import string

    from saferun import logs

    def every_substitution(text: str) -> str:
        for pattern, replacement in logs._SECRETS:
            text = pattern.sub(replacement, text)
        return text

    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "/:?&=@._- \"'\t"
    triggers = [
        "/decide/",
        "sr_key_",
        "://",
        "?token=",
        "&KEY=",
        "?api_key=",
        "&session=",
        "bearer ",
        "Bearer\t",
    ]
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for trigger in rng.sample(triggers, 3):
            if rng.random() < 0.4:
                at = rng.randint(0, len(text))
                text = text[:at] + trigger + text[at:]
        assert logs.redact(text) == every_substitution(text), text
