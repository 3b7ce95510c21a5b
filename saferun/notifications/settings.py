"""Where notices go, from the environment (or ``.env``), checked when the server starts.

==================================  ===================================================================
``SAFERUN_WEBHOOK_URLS``            comma-separated http(s) URLs; each gets every notice (POST), with a
                                    link to the review page (sign-in) but never a decision link.
``SAFERUN_SUPERVISOR_WEBHOOKS``     ``identity=url,...``: a supervisor's own webhook; it gets the notices of
                                    requests assigned to that supervisor, decision links included.
``SAFERUN_WEBHOOK_SECRET``          HMAC-SHA256 key for ``X-SafeRun-Signature``; required (16+ chars)
                                    with ``json``, optional with ``slack`` (Slack ignores signatures).
``SAFERUN_WEBHOOK_FORMAT``          ``json`` (default) or ``slack`` (``{"text", "blocks"}``).
``SAFERUN_WEBHOOK_TIMEOUT``         seconds per attempt (default 10).
``SAFERUN_SMTP_HOST``               e-mail on when set; ``SAFERUN_SMTP_PORT`` (default 587).
``SAFERUN_SMTP_FROM``               the sender address (required with a host).
``SAFERUN_SMTP_USER`` / ``_PASSWORD``  log in when set (both or neither).
``SAFERUN_SMTP_STARTTLS``           ``true`` (default) upgrades the connection before logging in.
``SAFERUN_SMTP_SSL``                ``true``: implicit TLS from the first byte (port 465); default false.
``SAFERUN_NOTIFY_EMAILS``           ``identity=address,...``: addresses for identities that have none
                                    stored (``saferun identities email``); unregistered ids work too.
``SAFERUN_NOTIFY_MAX_ATTEMPTS``     attempts per delivery before it is marked failed (default 8).
``SAFERUN_NOTIFY_BACKOFF_SECONDS``  first retry delay (default 2), doubling, capped at 15 minutes.
``SAFERUN_PUBLIC_URL``              how reviewers reach this server, for links (default
                                    ``http://127.0.0.1:8000``).
==================================  ===================================================================

A bad value is an ``InvalidInput`` naming the setting, raised by ``load()`` (the server calls it in
``create_app``, so a misconfigured server refuses to start instead of dropping notices later).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from saferun.config import Settings, get_settings
from saferun.errors import InvalidInput

FORMATS = ("json", "slack")
MIN_SECRET = 16
MAX_URL = 2000
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
# one address, no display name: nothing that could end a header or add a recipient
_EMAIL = re.compile(r"[^@\s<>,;:\"()\[\]\\]{1,64}@[A-Za-z0-9.-]{1,253}")


def check_email(value: str, field_name: str) -> str:
    """``value`` stripped, if it is a plain ``local@domain`` address, else ``InvalidInput``."""
    value = value.strip()
    if not _EMAIL.fullmatch(value) or any(ord(ch) < 33 or ord(ch) == 127 for ch in value):
        raise InvalidInput(field_name, f"{value!r} is not a plain e-mail address (local@domain)")
    return value


def check_http_url(value: str, field_name: str) -> str:
    """``value`` without a trailing slash, if it is an absolute http(s) URL, else ``InvalidInput``."""
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(field_name, f"{value!r} is not an http(s) URL (http://host/... or https://...)")
    if len(value) > MAX_URL or any(ord(ch) < 33 for ch in value):
        raise InvalidInput(field_name, f"{value[:80]!r} is too long or contains spaces or control characters")
    return value


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    sender: str
    port: int = 587
    user: str | None = None
    password: str | None = None
    starttls: bool = True
    ssl: bool = False
    timeout: float = 10.0


@dataclass(frozen=True)
class NotificationSettings:
    """Validated notification channels; an instance with no URLs and no SMTP sends nothing."""

    webhook_urls: tuple[str, ...] = ()
    # a supervisor's own channel: the only webhooks a decision link is sent to (docs/notifications.md)
    supervisor_webhooks: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    webhook_secret: str | None = None
    webhook_format: str = "json"
    webhook_timeout: float = 10.0
    smtp: SmtpSettings | None = None
    emails: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    public_url: str = DEFAULT_PUBLIC_URL
    max_attempts: int = 8
    backoff_base: float = 2.0
    backoff_cap: float = 900.0

    def __post_init__(self) -> None:
        urls = tuple(check_http_url(u, "SAFERUN_WEBHOOK_URLS") for u in self.webhook_urls)
        object.__setattr__(self, "webhook_urls", urls)
        own = {
            identity: check_http_url(url, "SAFERUN_SUPERVISOR_WEBHOOKS")
            for identity, url in self.supervisor_webhooks.items()
        }
        object.__setattr__(self, "supervisor_webhooks", MappingProxyType(own))
        shared = [u for u in own.values() if u in urls or list(own.values()).count(u) > 1]
        if shared:  # a decision link must reach one supervisor only
            raise InvalidInput(
                "SAFERUN_SUPERVISOR_WEBHOOKS",
                f"{shared[0][:80]!r} is also a generic webhook (SAFERUN_WEBHOOK_URLS) or another "
                "supervisor's: a supervisor's webhook carries decision links, so it must be theirs alone",
            )
        object.__setattr__(
            self, "public_url", check_http_url(self.public_url, "SAFERUN_PUBLIC_URL").rstrip("/")
        )
        if self.webhook_format not in FORMATS:
            raise InvalidInput(
                "SAFERUN_WEBHOOK_FORMAT", f"must be one of {', '.join(FORMATS)}, not {self.webhook_format!r}"
            )
        if (urls or own) and self.webhook_format == "json" and not self.webhook_secret:
            raise InvalidInput(
                "SAFERUN_WEBHOOK_SECRET",
                "is required with SAFERUN_WEBHOOK_URLS or SAFERUN_SUPERVISOR_WEBHOOKS: receivers verify "
                "signatures",
            )
        if self.webhook_secret is not None and len(self.webhook_secret) < MIN_SECRET:
            raise InvalidInput("SAFERUN_WEBHOOK_SECRET", f"must be at least {MIN_SECRET} characters")
        if self.max_attempts < 1:
            raise InvalidInput("SAFERUN_NOTIFY_MAX_ATTEMPTS", "must be at least 1")
        if not 0 < self.backoff_base <= self.backoff_cap:
            raise InvalidInput("SAFERUN_NOTIFY_BACKOFF_SECONDS", f"must be between 0 and {self.backoff_cap}")
        if self.webhook_timeout <= 0:
            raise InvalidInput("SAFERUN_WEBHOOK_TIMEOUT", "must be a positive number of seconds")
        emails = {k: check_email(v, "SAFERUN_NOTIFY_EMAILS") for k, v in self.emails.items()}
        object.__setattr__(self, "emails", MappingProxyType(emails))

    @property
    def enabled(self) -> bool:
        """Whether any channel is configured."""
        return bool(self.webhook_urls) or bool(self.supervisor_webhooks) or self.smtp is not None


def _number(value: str, name: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(value.strip())
    except ValueError:
        raise InvalidInput(name, f"must be a number, not {value!r}") from None


def _flag(value: str, name: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise InvalidInput(name, f"must be true or false, not {value!r}")


def _pairs(value: str, name: str = "SAFERUN_NOTIFY_EMAILS", what: str = "address") -> dict[str, str]:
    """``identity=value,...`` as a dict (split at the first ``=``, so a URL's query may hold more)."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        identity, sep, target = item.partition("=")
        if not sep or not identity.strip() or not target.strip():
            raise InvalidInput(name, f"{item!r} is not identity={what}")
        if identity.strip() in out:
            raise InvalidInput(name, f"{identity.strip()!r} is named twice")
        out[identity.strip()] = target.strip()
    return out


def _smtp(env: Settings) -> SmtpSettings | None:
    if not env.smtp_host.strip():
        return None
    if not env.smtp_from.strip():
        raise InvalidInput("SAFERUN_SMTP_FROM", "is required with SAFERUN_SMTP_HOST (the sender address)")
    if bool(env.smtp_user) != bool(env.smtp_password.get_secret_value()):
        raise InvalidInput(
            "SAFERUN_SMTP_USER", "set both SAFERUN_SMTP_USER and SAFERUN_SMTP_PASSWORD, or neither"
        )
    ssl = _flag(env.smtp_ssl, "SAFERUN_SMTP_SSL")
    port = int(_number(env.smtp_port or ("465" if ssl else "587"), "SAFERUN_SMTP_PORT", int))
    if not 0 < port < 65536:
        raise InvalidInput("SAFERUN_SMTP_PORT", f"must be a TCP port (1-65535), not {port}")
    return SmtpSettings(
        host=env.smtp_host.strip(),
        port=port,
        sender=check_email(env.smtp_from, "SAFERUN_SMTP_FROM"),
        user=env.smtp_user or None,
        password=env.smtp_password.get_secret_value() or None,
        starttls=_flag(env.smtp_starttls, "SAFERUN_SMTP_STARTTLS") and not ssl,
        ssl=ssl,
    )


def load(settings: Settings | None = None) -> NotificationSettings:
    """The notification settings of this process's environment; ``InvalidInput`` names a bad setting."""
    env = settings or get_settings()
    return NotificationSettings(
        webhook_urls=tuple(u for u in (p.strip() for p in env.webhook_urls.split(",")) if u),
        supervisor_webhooks=_pairs(env.supervisor_webhooks, "SAFERUN_SUPERVISOR_WEBHOOKS", "url"),
        webhook_secret=env.webhook_secret.get_secret_value() or None,
        webhook_format=env.webhook_format.strip().lower(),
        webhook_timeout=_number(env.webhook_timeout, "SAFERUN_WEBHOOK_TIMEOUT", float),
        smtp=_smtp(env),
        emails=_pairs(env.notify_emails),
        public_url=env.public_url,
        max_attempts=int(_number(env.notify_max_attempts, "SAFERUN_NOTIFY_MAX_ATTEMPTS", int)),
        backoff_base=_number(env.notify_backoff, "SAFERUN_NOTIFY_BACKOFF_SECONDS", float),
    )
