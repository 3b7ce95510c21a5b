"""Sending one message: a webhook POST (httpx) or an e-mail (stdlib ``smtplib``, run in a thread).

Each sender returns normally when the message got through and raises ``SendFailed`` otherwise, saying
whether trying again can help (``permanent``). A webhook answering 4xx (except 408, 425 and 429) or a
redirect, or an SMTP server refusing a sender, recipient or message with a 5xx code, would refuse the
same message again, so the delivery is marked failed at once. A timeout, a refused connection, a 5xx
answer, an SMTP 4xx or a refused SMTP login (a configuration problem an operator fixes) is retried with
backoff. Redirects are not followed: a POST should not be re-sent to wherever a receiver points
(configure the final URL instead).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

import httpx

from saferun import outbound
from saferun.notifications.settings import SmtpSettings

_RETRYABLE_4XX = frozenset({408, 425, 429})


class SendFailed(Exception):
    """A message did not get through; ``permanent`` when retrying the same message cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


async def post_webhook(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> None:
    """POST ``body`` to ``url``; any 2xx is delivered."""
    try:
        response = await client.post(
            url, content=body, headers={"Content-Type": "application/json", **headers}, follow_redirects=False
        )
    except httpx.HTTPError as exc:
        raise SendFailed(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
    status = response.status_code
    if 200 <= status < 300:
        return
    snippet = response.text[:200].strip()
    message = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    if 300 <= status < 400:
        refused = outbound.refusal("webhook receiver", response)  # logged, credentials masked
        raise SendFailed(
            f"HTTP {status} redirect to {refused.fields['location']}; redirects are not followed, "
            "configure the final URL",
            permanent=True,
        )
    raise SendFailed(message, permanent=400 <= status < 500 and status not in _RETRYABLE_4XX)


def send_email(settings: SmtpSettings, message: EmailMessage) -> None:
    """Hand ``message`` to the SMTP server (blocking: the dispatcher calls it in a thread)."""
    try:
        client: smtplib.SMTP
        if settings.ssl:
            client = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        with client:
            if settings.starttls:
                client.starttls(context=ssl.create_default_context())
            if settings.user and settings.password:
                client.login(settings.user, settings.password)
            refused = client.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise SendFailed(
            f"recipient refused: {exc.recipients}", permanent=all(c >= 500 for c in codes)
        ) from None
    except smtplib.SMTPAuthenticationError as exc:  # a configuration problem: retried until it is fixed
        raise SendFailed(f"SMTP login refused ({exc.smtp_code}); check SAFERUN_SMTP_USER/PASSWORD") from None
    except smtplib.SMTPResponseException as exc:
        text = (
            exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        )
        raise SendFailed(f"SMTP {exc.smtp_code}: {text}", permanent=exc.smtp_code >= 500) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise SendFailed(f"{type(exc).__name__}: {exc}") from None
    if refused:
        raise SendFailed(f"recipient refused: {refused}", permanent=True)
