"""Configuration from the environment (and a ``.env`` file), under the seed's variable names.

``DATABASE_URL`` picks the store: unset means the embedded SQLite file under ``SAFERUN_HOME``
(``~/.saferun`` by default), which needs no setup; ``postgresql://...`` switches to PostgreSQL through
psycopg 3. Settings are read when asked for, not at import, so a process (or a test) can change the
environment first.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    home: Path = Field(default=Path("~/.saferun"), alias="SAFERUN_HOME")
    # modules imported at start so compensation names resolve in every process (like Celery's imports)
    compensation_modules: str = Field(default="", alias="SAFERUN_COMPENSATIONS")
    # an agent that saw its rejection gets this long to roll back itself before any process's sweep does
    rollback_grace_seconds: float = Field(default=30.0, alias="SAFERUN_ROLLBACK_GRACE_SECONDS")
    # role checks at each step: registered (default) | strict | off (saferun/core/parties.py)
    identity_checks: str = Field(default="registered", alias="SAFERUN_IDENTITY_CHECKS")
    x402_api_url: str | None = Field(default=None, alias="X402_API_URL")
    x402_api_key: str | None = Field(default=None, alias="X402_API_KEY")
    # escrow funding through x402 payments (saferun/payments, docs/x402-funding.md)
    x402_facilitator: str = Field(default="local", alias="SAFERUN_X402_FACILITATOR")  # local | remote
    x402_facilitator_url: str | None = Field(default=None, alias="SAFERUN_X402_FACILITATOR_URL")
    x402_network: str = Field(default="eip155:84532", alias="SAFERUN_X402_NETWORK")
    x402_asset: str = Field(default="0x036CbD53842c5426634e7929541eC2318f3dCF7e", alias="SAFERUN_X402_ASSET")
    x402_asset_name: str = Field(default="USDC", alias="SAFERUN_X402_ASSET_NAME")  # EIP-712 domain name
    x402_asset_version: str = Field(default="2", alias="SAFERUN_X402_ASSET_VERSION")  # EIP-712 version
    x402_pay_to: str | None = Field(default=None, alias="SAFERUN_X402_PAY_TO")
    x402_max_timeout_seconds: int = Field(default=300, alias="SAFERUN_X402_MAX_TIMEOUT_SECONDS")
    # the ExecutorAgent's model (saferun/agents/executor, docs/agents.md): offline (default) | anthropic
    executor_provider: str = Field(default="offline", alias="SAFERUN_EXECUTOR_PROVIDER")
    executor_model: str | None = Field(default=None, alias="SAFERUN_EXECUTOR_MODEL")
    anthropic_api_key: SecretStr | None = Field(default=None, alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(default=None, alias="ANTHROPIC_BASE_URL")
    debug: bool = Field(default=False, alias="DEBUG")

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


def get_settings() -> Settings:
    return Settings()
