"""Passing store faults, recognised: a full disk, a read-only file, a lock held too long.

Each is turned into ``StoreUnavailable`` (503 with ``Retry-After`` over HTTP) instead of a bare driver
error, and the engine's pooled connections are dropped, because a SQLite connection that saw
SQLITE_READONLY or SQLITE_FULL can keep failing after the file is writable again; fresh connections
pick the recovered file up, so the same process recovers as soon as the fault clears.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

# (reason, substrings of the driver's message) - SQLite's and PostgreSQL's wording
_FAULTS = (
    ("disk full", ("database or disk is full", "no space left on device", "could not extend file")),
    ("read-only", ("attempt to write a readonly database", "readonly database", "read-only file system")),
    ("locked", ("database is locked", "database table is locked", "lock timeout")),
    ("i/o error", ("disk i/o error", "unable to open database file")),
)


def classify(exc: BaseException) -> str | None:
    """The passing fault behind ``exc``, or ``None`` when it is something else (a bug, a constraint)."""
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:  # the server went away (a restart, a failover); the pool is renewed
        return "connection lost"
    text = str(exc.orig if exc.orig is not None else exc).lower()
    for reason, needles in _FAULTS:
        if any(n in text for n in needles):
            return reason
    return None
