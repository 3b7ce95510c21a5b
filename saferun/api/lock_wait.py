"""A request waits briefly for SQLite's write lock, then answers 503 with ``Retry-After``.

The library's writers wait up to 30 s for the lock (``storage/database.py``), so a queue of ordinary
writers always gets through. Over HTTP that patience is wrong when another process holds the lock for a
long time (a stuck ``BEGIN IMMEDIATE``, a backup): every request would hang 30 s and then fail anyway.
Inside a request the wait is ``SAFERUN_SQLITE_REQUEST_BUSY_MS`` (3 s by default), still far longer than
any SafeRun transaction holds the lock, so concurrent decisions queue as before, while a lock held by a
stuck process is a prompt ``StoreUnavailable`` (503, reason ``locked``, ``Retry-After``).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from saferun.storage.database import lock_wait


class LockWait:
    """Runs every HTTP request under ``lock_wait(milliseconds)``; the context variable it sets follows the
    request into the threadpool (sync routes) and ``asyncio.to_thread`` calls."""

    def __init__(self, app: ASGIApp, milliseconds: int) -> None:
        self.app, self.milliseconds = app, milliseconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with lock_wait(self.milliseconds):
            await self.app(scope, receive, send)
