"""Shared fixtures: every test gets its own, freshly migrated database.

``db`` runs a test twice, once on a new SQLite file and once on a new PostgreSQL schema. The PostgreSQL
server is named by ``SAFERUN_TEST_POSTGRES_URL`` (default: the local trust-auth server, database
``test``). Where it cannot be reached the PostgreSQL half skips with the reason, except under CI
(``CI=true``), where a skipped PostgreSQL test is a failure: CI must prove both stores.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text

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
    """A database handle whose ``search_path`` is a brand-new, fully migrated schema; returns it and the
    schema name. The schema is built from the session's template (``_pg_template``) when there is one."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    template = _pg_template()
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        if template is None:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        else:
            conn.connection.driver_connection.execute(template.replace(_TEMPLATE_TOKEN, schema))
    admin.dispose()
    return Database(_schema_url(schema)), schema


def _schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


_TEMPLATE_TOKEN = f"saferun_template_{uuid.uuid4().hex[:12]}"
_template_guard = threading.Lock()
_template_state: dict[str, str | None] = {}


def _pg_template() -> str | None:
    """The migrated schema as SQL (``pg_dump`` of a schema Alembic migrated once per session), with its
    name as a placeholder; None where ``pg_dump`` is missing or cannot dump this server.

    Why: migrating a new schema from revision 0001 costs 0.5-0.9 s, and the suite makes one per
    PostgreSQL test (~700); replaying the dump is one round trip. Each test's database is still a
    separate schema at the head revision, which ``Database`` checks on open (one SELECT, nothing to do);
    the migrations themselves still run for the template, and ``test_fixture_templates`` compares.
    """
    with _template_guard:
        if "sql" in _template_state:
            return _template_state["sql"]
        _template_state["sql"] = None
        if shutil.which("pg_dump") is None or os.environ.get("SAFERUN_TEST_NO_TEMPLATE"):
            return None
        admin = create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{_TEMPLATE_TOKEN}"'))
        admin.dispose()
        try:
            Database(_schema_url(_TEMPLATE_TOKEN)).dispose()
            dumped = pg_dump_lines(_TEMPLATE_TOKEN)
        except (OSError, subprocess.SubprocessError):
            return None
        finally:
            drop_pg_schema(_TEMPLATE_TOKEN)
        _template_state["sql"] = "\n".join(dumped)
        return _template_state["sql"]


def pg_dump_lines(schema: str) -> list[str]:
    """``pg_dump`` of one schema (definitions and rows as INSERTs, no owners or grants), as SQL lines: the
    psql meta-commands it may add (``\\restrict``) are left out; its session settings are harmless."""
    libpq = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    out = subprocess.run(
        ["pg_dump", "--schema", schema, "--no-owner", "--no-privileges", "--inserts", libpq],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [line for line in out.splitlines() if not line.startswith("\\")]


_sqlite_template: dict[str, Path] = {}


def new_sqlite_database(path: Path) -> Database:
    """A migrated SQLite database at ``path``: a copy of one migrated once per session (migrating a new
    file costs ~0.2 s; copying it, a millisecond). ``SAFERUN_TEST_NO_TEMPLATE=1`` migrates each one."""
    if os.environ.get("SAFERUN_TEST_NO_TEMPLATE"):
        return Database(f"sqlite:///{path}")
    with _template_guard:
        template = _sqlite_template.get("path")
        if template is None:
            folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"saferun-template-{uuid.uuid4().hex[:12]}"
            folder.mkdir(parents=True)
            template = folder / "template.db"
            Database(f"sqlite:///{template}").dispose()
            atexit.register(shutil.rmtree, folder, True)
            _sqlite_template["path"] = template
    shutil.copyfile(template, path)
    return Database(f"sqlite:///{path}")


def drop_pg_schema(schema: str) -> None:
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = new_sqlite_database(tmp_path / "saferun.db")
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
    database = new_sqlite_database(tmp_path / "saferun.db")
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


_LOGGERS = ("", "saferun", "uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test starts with the logging setup the session had: a test that runs a ``saferun`` command
    in-process configures logging (level, handlers) for the whole process, and every later test's records
    (a bulk load writes one per workflow) went through it."""
    import logging

    saved = []
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, list(logger.handlers), logger.propagate, logger.disabled))
    yield
    for logger, level, handlers, propagate, disabled in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.disabled = disabled


@pytest.fixture(autouse=True)
def _unfreeze_heap() -> Iterator[None]:
    """A test that runs ``saferun serve`` in-process freezes the heap, as the server does at startup
    (``saferun/api/heap.py``); the suite's process is not a server, so the next test starts unfrozen and
    the garbage of the tests after it stays collectable."""
    import gc

    yield
    if gc.get_freeze_count():
        gc.unfreeze()


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
