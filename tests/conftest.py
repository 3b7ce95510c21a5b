"""Shared fixtures: every test gets its own, freshly migrated database.

``db`` runs a test twice, once on a new SQLite file and once on a new PostgreSQL schema. The PostgreSQL
server is named by ``SAFERUN_TEST_POSTGRES_URL`` (default: the local trust-auth server, database
``test``). Where it cannot be reached the PostgreSQL half skips with the reason, except under CI
(``CI=true``), where a skipped PostgreSQL test is a failure: CI must prove both stores.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from saferun.storage.database import Database

PG_URL = os.environ.get("SAFERUN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

_pg_reason: str | None = None
_pg_checked = False


def postgres_unavailable() -> str | None:
    """Why PostgreSQL can't be used here, or None when it can (checked once per session)."""
    global _pg_checked, _pg_reason
    if not _pg_checked:
        _pg_checked = True
        try:
            eng = create_engine(PG_URL)
            with eng.connect() as conn:
                conn.execute(text("select 1"))
            eng.dispose()
        except Exception as exc:  # any driver/connection failure means "not here"
            _pg_reason = f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}: {exc}".splitlines()[0]
    return _pg_reason


def require_postgres() -> None:
    reason = postgres_unavailable()
    if reason:
        if IN_CI:
            pytest.fail(f"CI must run the PostgreSQL tests, but {reason}")
        pytest.skip(reason + " (set SAFERUN_TEST_POSTGRES_URL to run these tests)")


def make_pg_database() -> tuple[Database, str]:
    """A database handle whose ``search_path`` is a brand-new schema; returns it and the schema name."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    sep = "&" if "?" in PG_URL else "?"
    return Database(f"{PG_URL}{sep}options=-csearch_path%3D{schema}"), schema


def drop_pg_schema(schema: str) -> None:
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'saferun.db'}")
        yield database
        database.dispose()
        return
    yield from fresh_pg_database()


@pytest.fixture
def pg_db() -> Iterator[Database]:
    """A fresh PostgreSQL schema, for tests of PostgreSQL-only behaviour (no SQLite half to skip)."""
    yield from fresh_pg_database()


def fresh_pg_database() -> Iterator[Database]:
    """Yield a database on a brand-new PostgreSQL schema, dropped afterwards (skip, or fail in CI, when
    PostgreSQL is absent)."""
    require_postgres()
    database, schema = make_pg_database()
    try:
        yield database
    finally:
        database.dispose()
        drop_pg_schema(schema)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'saferun.db'}")
    yield database
    database.dispose()


@pytest.fixture
def database_env(db: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    """Point ``DATABASE_URL`` at the test's database, for code that reads the configuration itself."""
    monkeypatch.setenv("DATABASE_URL", db.engine.url.render_as_string(hide_password=False))
    return db


@pytest.fixture(autouse=True)
def _release_apps() -> Iterator[None]:
    """Let each test's apps (and the orchestrator, database and caches they hold) be freed after it.

    FastAPI keeps bounded LRU caches (4,096 entries) keyed by endpoint and dependency callables; SafeRun's
    per-app closures land there, so ~40 finished tests' apps stayed reachable at any time, with their
    databases, pools and verified-data caches: the suite's process grew past 5 GB and slowed as Python's
    collector walked it. A running server builds one app, so this is only a test-suite concern.
    """
    yield
    from fastapi.dependencies import models

    for cached in (
        models._is_gen_callable_cached,
        models._is_async_gen_callable_cached,
        models._is_coroutine_callable_cached,
    ):
        cached.cache_clear()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any) -> Iterator[None]:
    """One line for every test skipped because PostgreSQL is absent, instead of one line per test in
    ``-ra``'s summary (a machine without PostgreSQL skipped ~290 of them); the count stays in the totals."""
    skipped = terminalreporter.stats.get("skipped", [])
    absent = [r for r in skipped if "PostgreSQL not reachable" in str(getattr(r, "longrepr", ""))]
    if absent:
        terminalreporter.stats["skipped"] = [r for r in skipped if r not in absent]
        terminalreporter.write_line(
            f"SKIPPED {len(absent)} PostgreSQL tests: {postgres_unavailable()} "
            "(set SAFERUN_TEST_POSTGRES_URL to run them)",
            yellow=True,
        )
    yield
    if absent:
        terminalreporter.stats["skipped"] = skipped
