"""Configuration: one ``Settings`` for every ``SAFERUN_*`` and seed variable, from the environment and .env.

Precedence, highest first: a command-line flag (``saferun serve --auth``, ``--log-level``,
``--database-url``), the process environment, then ``.env`` in the working directory. Settings are read
when asked for, not at import, so a process (or a test) can change the environment first.

``DATABASE_URL`` picks the store: unset means the embedded SQLite file under ``SAFERUN_HOME``
(``~/.saferun`` by default), which needs no setup; ``postgresql://...`` switches to PostgreSQL through
psycopg 3.

``check()`` is what every entry point (``saferun ...``, ``create_app``) calls first: a malformed value or
a ``SAFERUN_*`` name this code does not know (a typo such as ``SAFERUN_AUTHH=keys`` would otherwise start
the server in open mode, silently) becomes one ``ConfigError`` naming the variable, before anything
connects or writes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from saferun.errors import InvalidInput

ENV_FILE = ".env"
PREFIX = "SAFERUN_"
# variables of the test and benchmark tooling, not of SafeRun itself: never "unknown"
TOOLING_PREFIXES = ("SAFERUN_TEST_", "SAFERUN_BENCH_")
TOOLING_NAMES = frozenset({"SAFERUN_CHROMIUM"})
# values shown as "***" by `saferun config show`
SECRET_WORDS = ("KEY", "SECRET", "PASSWORD", "TOKEN")


class ConfigError(InvalidInput):
    """A setting that cannot be used; ``field`` is the variable's name."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=ENV_FILE, extra="ignore")

    # --- the seed's variables ---
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    debug: bool = Field(default=False, alias="DEBUG")
    x402_api_url: str | None = Field(default=None, alias="X402_API_URL")
    x402_api_key: SecretStr | None = Field(default=None, alias="X402_API_KEY")
    anthropic_api_key: SecretStr | None = Field(default=None, alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(default=None, alias="ANTHROPIC_BASE_URL")
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")

    # --- the store ---
    home: Path = Field(default=Path("~/.saferun"), alias="SAFERUN_HOME")
    # true: a process opening an older schema migrates it (the embedded default: no setup); false: it
    # refuses, naming `saferun db upgrade` (replicas: one migration Job, not a race on every start)
    migrate: bool = Field(default=True, alias="SAFERUN_MIGRATE")
    # FULL: a committed decision survives power loss; NORMAL trades the last commits on power loss for speed
    sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = Field(
        default="FULL", alias="SAFERUN_SQLITE_SYNCHRONOUS"
    )
    # how long an HTTP request waits for SQLite's write lock before answering 503 + Retry-After (ms);
    # library callers, the sweeper and the CLI keep the patient 30 s (storage/database.py)
    sqlite_request_busy_ms: int = Field(
        default=3000, ge=100, le=30000, alias="SAFERUN_SQLITE_REQUEST_BUSY_MS"
    )
    # true: processes waiting on one SQLite file are woken by a datagram when another commits
    # (core/notify_peers); false: they find other processes' commits by polling, 5 ms backing off to 250 ms
    peer_wakeups: bool = Field(default=True, alias="SAFERUN_PEER_WAKEUPS")

    # --- the server ---
    # open | keys | auto (open on loopback, keys elsewhere): saferun/api/deps.py
    auth: Literal["auto", "open", "keys"] = Field(default="auto", alias="SAFERUN_AUTH")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0, alias="SAFERUN_MAX_BODY_BYTES")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", alias="SAFERUN_LOG_LEVEL"
    )
    log_format: Literal["text", "json"] = Field(default="text", alias="SAFERUN_LOG_FORMAT")
    # open mode serves only loopback Host names for its own port, plus these (comma-separated; issue 9)
    allowed_hosts: str = Field(default="", alias="SAFERUN_ALLOWED_HOSTS")
    # peers whose Forwarded/X-Forwarded-* headers are believed (comma-separated IPs); none by default
    trusted_proxies: str = Field(default="", alias="SAFERUN_TRUSTED_PROXIES")
    # keys mode: /docs, /redoc, /openapi.json and /metrics need a key unless this is true (issue 9)
    public_docs: bool = Field(default=False, alias="SAFERUN_PUBLIC_DOCS")
    # approval policy as code (docs/policy.md): a YAML file deciding which checkpoints need a person
    approval_policy: Path | None = Field(default=None, alias="SAFERUN_APPROVAL_POLICY")
    # exported decision records are signed with this Ed25519 PEM key; unset: a key kept in the database
    signing_key_file: Path | None = Field(default=None, alias="SAFERUN_SIGNING_KEY_FILE")
    # a saga claim older than this is abandoned and may be re-taken; the server's, never a caller's choice
    stale_claim_seconds: float = Field(default=300.0, gt=0, le=86_400, alias="SAFERUN_STALE_CLAIM_SECONDS")
    # workflows whose verified audit-chain prefix a process remembers, so a checked read hashes only the
    # events appended since (saferun/storage/chain_cache.py); 0 re-hashes the whole chain on every read
    chain_cache_entries: int = Field(default=2048, ge=0, le=1_000_000, alias="SAFERUN_CHAIN_CACHE_ENTRIES")
    # PostgreSQL connections one process keeps (opened as needed, never more, kept until recycled): a
    # pool that closed what it opened above a smaller size reconnected every few cycles under load
    db_pool_size: int = Field(default=15, ge=1, le=1000, alias="SAFERUN_DB_POOL_SIZE")

    # --- workflows ---
    # modules imported at start so compensation names resolve in every process (like Celery's imports)
    compensation_modules: str = Field(default="", alias="SAFERUN_COMPENSATIONS")
    # an agent that saw its rejection gets this long to roll back itself before any process's sweep does
    rollback_grace_seconds: float = Field(default=30.0, ge=0, alias="SAFERUN_ROLLBACK_GRACE_SECONDS")
    # a workflow stuck past the grace (rolling_back/settling, nobody finishing it) is logged at WARNING
    # at most once per this many seconds per workflow and process (saferun/core/rollback/stuck.py)
    stuck_warn_seconds: float = Field(default=900.0, gt=0, le=7 * 86_400, alias="SAFERUN_STUCK_WARN_SECONDS")
    # role checks at each step: registered (default) | strict | off (saferun/core/parties.py)
    identity_checks: Literal["registered", "strict", "off"] = Field(
        default="registered", alias="SAFERUN_IDENTITY_CHECKS"
    )

    # --- escrow funding through x402 payments (saferun/payments, docs/x402-funding.md) ---
    x402_facilitator: str = Field(default="local", alias="SAFERUN_X402_FACILITATOR")  # local | remote
    x402_facilitator_url: str | None = Field(default=None, alias="SAFERUN_X402_FACILITATOR_URL")
    x402_network: str = Field(default="eip155:84532", alias="SAFERUN_X402_NETWORK")
    x402_asset: str = Field(default="0x036CbD53842c5426634e7929541eC2318f3dCF7e", alias="SAFERUN_X402_ASSET")
    x402_asset_name: str = Field(default="USDC", alias="SAFERUN_X402_ASSET_NAME")  # EIP-712 domain name
    x402_asset_version: str = Field(default="2", alias="SAFERUN_X402_ASSET_VERSION")  # EIP-712 version
    x402_pay_to: str | None = Field(default=None, alias="SAFERUN_X402_PAY_TO")
    x402_max_timeout_seconds: int = Field(default=300, alias="SAFERUN_X402_MAX_TIMEOUT_SECONDS")

    # --- the ExecutorAgent's model (saferun/agents/executor, docs/agents.md): offline | anthropic ---
    executor_provider: str = Field(default="offline", alias="SAFERUN_EXECUTOR_PROVIDER")
    executor_model: str | None = Field(default=None, alias="SAFERUN_EXECUTOR_MODEL")

    # --- notifications: raw text here, checked field by field in saferun/notifications/settings.py ---
    webhook_urls: str = Field(default="", alias="SAFERUN_WEBHOOK_URLS")
    supervisor_webhooks: str = Field(default="", alias="SAFERUN_SUPERVISOR_WEBHOOKS")
    webhook_secret: SecretStr = Field(default=SecretStr(""), alias="SAFERUN_WEBHOOK_SECRET")
    webhook_format: str = Field(default="json", alias="SAFERUN_WEBHOOK_FORMAT")
    webhook_timeout: str = Field(default="10", alias="SAFERUN_WEBHOOK_TIMEOUT")
    smtp_host: str = Field(default="", alias="SAFERUN_SMTP_HOST")
    smtp_port: str = Field(default="", alias="SAFERUN_SMTP_PORT")
    smtp_user: str = Field(default="", alias="SAFERUN_SMTP_USER")
    smtp_password: SecretStr = Field(default=SecretStr(""), alias="SAFERUN_SMTP_PASSWORD")
    smtp_from: str = Field(default="", alias="SAFERUN_SMTP_FROM")
    smtp_starttls: str = Field(default="true", alias="SAFERUN_SMTP_STARTTLS")
    smtp_ssl: str = Field(default="false", alias="SAFERUN_SMTP_SSL")
    notify_emails: str = Field(default="", alias="SAFERUN_NOTIFY_EMAILS")
    notify_max_attempts: str = Field(default="8", alias="SAFERUN_NOTIFY_MAX_ATTEMPTS")
    notify_backoff: str = Field(default="2", alias="SAFERUN_NOTIFY_BACKOFF_SECONDS")
    public_url: str = Field(default="http://127.0.0.1:8000", alias="SAFERUN_PUBLIC_URL")

    # --- the original SafeRun-X402's remaining fields (docs/original-api.md), for code written for it ---
    app_name: str = Field(default="SafeRun X402", alias="APP_NAME")
    default_checkpoint_timeout: int = Field(default=300, alias="DEFAULT_CHECKPOINT_TIMEOUT")
    max_rollback_depth: int = Field(default=10, alias="MAX_ROLLBACK_DEPTH")
    enable_auto_reconciliation: bool = Field(default=True, alias="ENABLE_AUTO_RECONCILIATION")

    @field_validator("log_level", "sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("auth", "log_format", "identity_checks", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalize_database_url(self.database_url)
        home = self.home.expanduser()
        return f"sqlite:///{home / 'saferun.db'}"


def normalize_database_url(url: str) -> str:
    """Accept the common spellings and route PostgreSQL to psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def known_names() -> frozenset[str]:
    """Every variable name ``Settings`` reads."""
    return frozenset(f.alias or name.upper() for name, f in Settings.model_fields.items())


def _is_known(name: str) -> bool:
    return name in known_names() or name in TOOLING_NAMES or name.startswith(TOOLING_PREFIXES)


def _env_file_names(path: Path) -> dict[str, str | None]:
    """The ``.env`` file's assignments (empty when there is none); a line that is not ``NAME=value`` is an
    error naming the file and the line, since python-dotenv would skip it with only a warning."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            if binding.error:
                raise ConfigError(
                    ENV_FILE,
                    f"{path}: line {binding.original.line} is not NAME=value: "
                    f"{binding.original.string.strip()[:60]!r}",
                )
    return dict(dotenv_values(path))


def check(env_file: Path | None = None) -> Settings:
    """The settings, or one ``ConfigError`` naming the first unknown or malformed variable and the fix."""
    path = env_file or Path(ENV_FILE)
    names = set(os.environ) | set(_env_file_names(path))
    unknown = sorted(n for n in names if n.upper().startswith(PREFIX) and not _is_known(n.upper()))
    if unknown:
        where = "the environment or " + str(path)
        raise ConfigError(
            unknown[0], f"is not a SafeRun setting (in {where}); see `saferun config show` for the names"
        )
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "settings"
        given = err.get("input")
        shown = "***" if _is_secret(name) else repr(given)
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(name, f"{msg} (got {shown})") from None


def _is_secret(name: str) -> bool:
    return any(word in name.upper() for word in SECRET_WORDS)


def effective(settings: Settings) -> list[tuple[str, str, str]]:
    """``(variable, value, source)`` for every setting, secrets masked: what ``saferun config show`` prints.

    ``source`` is ``env``, ``.env`` or ``default``."""
    file_values = _env_file_names(Path(ENV_FILE))
    rows = []
    for name, f in Settings.model_fields.items():
        var = f.alias or name.upper()
        value: Any = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if var in os.environ:
            source = "env"
        elif var in file_values:
            source = ".env"
        else:
            source = "default"
        text = "" if value is None else str(value)
        if text and _is_secret(var):
            text = "***"
        elif var == "DATABASE_URL" and text:
            text = _mask_url(text)
        elif "://" in text and "@" in text:  # a facilitator's or webhook's URL with user:password@
            text = _URL_CREDENTIALS.sub(r"\1***@", text)
        rows.append((var, text, source))
    return rows


_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@,]+:[^/\s@,]*@")


def _mask_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads; show nothing that could be a password
        return url.split("@", 1)[-1] if "@" in url else url


def get_settings() -> Settings:
    """The settings as the environment and ``.env`` give them now.

    Building them costs ~1 ms (pydantic-settings reads and validates every variable and the file), and
    hot paths ask (a new pooled connection, a cold read's chain cache): the last answer is kept and given
    again while the environment, the working directory and the ``.env`` file are unchanged, so a change to
    any of them (a test's ``monkeypatch.setenv``, an operator's edit) is still seen by the next call."""
    global _last
    key = _settings_key()
    last = _last
    if last is not None and last[0] == key:
        return last[1]
    value = Settings()
    _last = (key, value)
    return value


_last: tuple[Any, Settings] | None = None


def _settings_key() -> Any:
    try:
        st = os.stat(ENV_FILE)
        env_file: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
    except OSError:
        env_file = None
    return os.getcwd(), env_file, frozenset(os.environ.items())


def __getattr__(name: str) -> Settings:
    # The original's ``from saferun.config import settings``: built when first imported (not at this
    # module's import, so a process can set its environment first), like the original's singleton.
    if name == "settings":
        value = Settings()
        globals()["settings"] = value
        return value
    raise AttributeError(name)
