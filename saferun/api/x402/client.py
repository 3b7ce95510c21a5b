"""``X402Integration``: the seed's client for the five x402 primitives.

With no ``X402_API_URL`` it is the *embedded* platform: jobs, escrow and artifacts live in SafeRun's own
database (the default, needing no service or key). This build implements the Artifacts primitive's
calls directly; the orchestrator drives Jobs and Escrow inside its own transactions (so a state change
and its money movement commit together). A remote platform over HTTP is not part of this build: setting
``X402_API_URL`` is refused at construction, loudly, instead of being silently ignored.
"""

from __future__ import annotations

import logging
from typing import Any

from saferun.config import get_settings
from saferun.errors import SafeRunError
from saferun.storage.database import Database, get_database

log = logging.getLogger(__name__)
_announced = False


class X402Integration:
    def __init__(
        self, api_key: str | None = None, api_url: str | None = None, *, database: Database | None = None
    ) -> None:
        global _announced
        settings = get_settings()
        self.api_url = api_url or settings.x402_api_url
        self.api_key = api_key or settings.x402_api_key
        if self.api_url:
            raise SafeRunError(
                f"X402_API_URL is set ({self.api_url}), but this SafeRun build has only the embedded x402 "
                "platform; unset X402_API_URL to use it",
                api_url=self.api_url,
            )
        self.database = database or get_database()
        self.artifacts = self.database.artifacts
        if not _announced:
            log.info(
                "x402: using the embedded platform in %s (set X402_API_URL for a remote one)",
                self.database.engine.url.render_as_string(hide_password=True),
            )
            _announced = True

    @property
    def mode(self) -> str:
        return "embedded"

    async def create_artifact(
        self, artifact_type: str, content: str | bytes, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        with self.database.transaction() as conn:
            stored = self.artifacts.put_bytes(
                conn, data, artifact_type=artifact_type, metadata=metadata or {}
            )
        return {
            "artifact_id": stored.sha256,
            "uri": stored.uri,
            "size_bytes": stored.raw_size,
            "compressed_size_bytes": stored.compressed_size,
        }

    async def get_artifact(self, artifact_uri: str) -> dict[str, Any]:
        with self.database.read() as conn:
            data = self.artifacts.get_bytes(conn, artifact_uri)
            info = self.artifacts.info(conn, artifact_uri) or {}
        return {
            "uri": artifact_uri,
            "content": data.decode("utf-8"),
            "artifact_type": info.get("artifact_type"),
            "metadata": info.get("metadata", {}),
        }

    async def close(self) -> None:
        """Nothing to release for the embedded platform: the database handle is shared per process."""
