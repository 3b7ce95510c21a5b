"""The database handle: one engine, one way to open a transaction, migrations on first use.

The caller owns the transaction: every storage function takes a ``Connection`` and never commits.
``Database.transaction()`` opens one unit of work so a state change, its ledger postings and its audit
events commit together or not at all.

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` transactions: a writer takes the write lock when it
starts instead of upgrading a read lock later, which is what makes SQLite's writers queue politely
(``busy_timeout``) instead of failing with "database is locked" when two processes decide at once.
PostgreSQL gets row locks (``lock_workflow``) for the same effect per workflow.

How long a writer waits for the lock depends on who is waiting (``lock_wait``): the library, the CLI and
the sweeper wait up to ``BUSY_TIMEOUT_MS`` (30 s), so ordinary concurrent writers queue rather than fail;
an HTTP request waits ``SAFERUN_SQLITE_REQUEST_BUSY_MS`` (3 s), because a lock held that long means
another process is stuck, and a client is better served by a prompt 503 with ``Retry-After`` than by a
connection that hangs for 30 s and then fails anyway (issue 10, item 9).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import QueuePool

from saferun.config import get_settings, normalize_database_url
from saferun.errors import SchemaMismatch, StoreUnavailable
from saferun.storage import faults
from saferun.storage.json_columns import json_dumps, json_loads

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# the patient default: a queue of ordinary writers (each a few ms) always gets through
BUSY_TIMEOUT_MS = 30_000
# the wait of the code running in this context (a thread started by asyncio.to_thread or Starlette's
# threadpool copies it); None is the default above
_lock_wait_ms: ContextVar[int | None] = ContextVar("saferun_sqlite_lock_wait_ms", default=None)


@contextmanager
def lock_wait(milliseconds: int) -> Iterator[None]:
    """SQLite transactions begun inside this block wait at most ``milliseconds`` for the write lock before
    failing with "database is locked" (``StoreUnavailable`` 503); PostgreSQL is unaffected."""
    token = _lock_wait_ms.set(milliseconds)
    try:
        yield
    finally:
        _lock_wait_ms.reset(token)


class Database:
    """An engine plus SafeRun's transaction discipline. Cheap to share; one per process is plenty."""

    def __init__(self, url: str | None = None, *, migrate: bool = True, echo: bool = False) -> None:
        self.url = normalize_database_url(url) if url else get_settings().resolved_database_url()
        self.engine = _make_engine(self.url, echo=echo)
        self._migrated = False
        self._lock = threading.Lock()
        # one artifact store per database, so its cache of verified parts is shared by every orchestrator
        # of the process and never serves one database's blobs for another's
        from saferun.storage.artifacts import ArtifactStore

        self.artifacts = ArtifactStore()
        if migrate:
            self.ensure_schema()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One unit of work; commits on success, rolls back (writing nothing) on any exception. A passing
        fault (disk full, read-only, locked) is ``StoreUnavailable``, and the pool is renewed.

        On SQLite the writers of this process queue on one lock first (``writer_turn``), so only one of
        them at a time waits in ``BEGIN IMMEDIATE`` for SQLite's own lock. The turn passes on as soon as
        the transaction has committed or rolled back, before the connection goes back to the pool: the
        pool's check-in runs what waits for a commit (the event log's lines, the wake-ups of long-polls
        and of other processes), which needs no lock and was a third of the time a turn was held under
        load (bench_server, 8 agents)."""
        with self.fault_guard(), ExitStack() as turn:
            turn.enter_context(writer_turn(self))  # before the checkout: waiting writers hold no connection
            with self.engine.connect() as conn:
                with conn.begin():
                    yield conn
                    run_before_commit(conn)
                turn.close()  # committed: the next writer may begin while this one checks in

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """One pooled connection for several transactions (``with conn.begin(): ...`` each, the same
        ``BEGIN IMMEDIATE`` as :meth:`transaction`), for a loader that tunes its connection once
        (``core.bulk``); faults as in :meth:`transaction`."""
        with self.fault_guard(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A consistent read. On SQLite it takes no write lock (plain deferred BEGIN), so readers such as
        a polling agent never hold up writers in other processes. On PostgreSQL it is one REPEATABLE READ
        snapshot: under the default READ COMMITTED each statement saw its own, so a read that checks a
        workflow row against its audit chain could see the row before and the chain after another
        process's commit and call it tampered (seen in tests/test_rollback_race.py). A read-only
        transaction never fails serialization, so nothing has to retry."""
        options: dict[str, Any] = {"saferun_read": True}
        if self.engine.dialect.name == "postgresql":
            options["isolation_level"] = "REPEATABLE READ"
        with self.fault_guard(), self.engine.connect().execution_options(**options) as conn:
            yield conn

    @contextmanager
    def fault_guard(self) -> Iterator[None]:
        """A passing fault (disk full, read-only, locked, connection lost) raised in the block becomes
        ``StoreUnavailable`` and renews the pool; every transaction of this module and
        ``bare_writes.bare_transaction`` run inside it."""
        try:
            yield
        except Exception as exc:
            reason = faults.classify(exc)
            if reason is None:
                raise
            self.engine.dispose()  # connections that saw the fault may keep failing after it clears
            raise StoreUnavailable(reason, str(getattr(exc, "orig", exc)).splitlines()[0]) from exc

    def ensure_schema(self) -> None:
        """Bring the schema to the newest revision once per process (idempotent, safe across replicas)."""
        with self._lock:
            if self._migrated:
                return
            # a process opening an up-to-date database (every one but the first) pays one SELECT, not
            # Alembic's full environment
            rev = current_revision(self.engine)
            if rev != head_revision():
                check_revision(rev, migrate=get_settings().migrate)
                upgrade(self.engine)
            self._migrated = True

    def dispose(self) -> None:
        self.engine.dispose()


# SQLite's writers in this process, per database file: see ``writer_turn``
_writer_locks: dict[str, threading.RLock] = {}
_writer_locks_guard = threading.Lock()
# when the waiting transaction must give up (``time.monotonic()``); BEGIN IMMEDIATE waits only what is left
_lock_deadline: ContextVar[float | None] = ContextVar("saferun_sqlite_lock_deadline", default=None)


@contextmanager
def writer_turn(db: Database) -> Iterator[None]:
    """Queue this thread behind the process's other SQLite writers of the same file, then let it begin.

    Why: SQLite's busy handler does not queue waiters, it sleeps them for 1, 2, 5, 10, 15, 20, 25, 25, 25,
    50, 50, 100 ms between tries. With several writers in one server (eight agents' checkpoints and the
    reviewers' decisions, each a few ms under the lock) most of them slept through the moment the lock came
    free: the measured throughput stayed flat from 1 to 8 agents while the CPU idled, and the decision to
    resume p99 was hundreds of ms. A Python lock hands the turn over the moment the holder commits. Other
    processes on the same file still meet in SQLite's lock and its busy timeout, as before.

    The wait counts against the same budget as SQLite's (``lock_wait``: 3 s in an HTTP request, 30 s
    elsewhere): past it the transaction fails as "database is locked" would (``StoreUnavailable`` 503
    ``locked``), and what is left of it after the turn came is all ``BEGIN IMMEDIATE`` may wait. Re-entrant,
    so a thread that (wrongly) nests writers meets SQLite's own lock as before instead of a deadlock here.
    """
    if not db.is_sqlite:
        yield
        return
    with _writer_locks_guard:
        lock = _writer_locks.setdefault(db.url, threading.RLock())
    budget = (_lock_wait_ms.get() or BUSY_TIMEOUT_MS) / 1000.0
    deadline = time.monotonic() + budget
    if not lock.acquire(timeout=budget):
        raise StoreUnavailable("locked", f"another writer of this process held the database for {budget:g} s")
    token = _lock_deadline.set(deadline)
    try:
        yield
    finally:
        _lock_deadline.reset(token)
        lock.release()


_BEFORE_COMMIT = "saferun_before_commit"


def before_commit(
    conn: Connection, key: str, hook: Callable[[Connection], None], *, last: bool = False
) -> None:
    """Run ``hook(conn)`` once, just before this transaction commits (``Database.transaction``).

    Lets a storage module gather the rows a transaction writes and send them as one statement at the end
    (the audit chain: every event of a checkpoint or a decision in one INSERT). Hooks are kept per
    transaction, so one registered by a transaction that rolled back never runs for the next. A ``last``
    hook runs after the others (the PostgreSQL wake-ups: another hook may send them with its own
    statement, ``take_pg_notices``, and the last one sends what is left).
    """
    txn = conn.get_transaction()
    stash = conn.info.get(_BEFORE_COMMIT)
    if stash is None or stash[0] is not txn:
        stash = conn.info[_BEFORE_COMMIT] = (txn, {})
    stash[1].setdefault(key, (hook, last))


def run_before_commit(conn: Connection) -> None:
    """Run the hooks registered for this transaction (in registration order, ``last`` ones after the
    others); each runs once."""
    stash = conn.info.get(_BEFORE_COMMIT)
    if stash is None or stash[0] is not conn.get_transaction():
        return
    hooks = stash[1]
    while hooks:
        key = next((k for k, (_, last) in hooks.items() if not last), None) or next(iter(hooks))
        hooks.pop(key)[0](conn)


# --- PostgreSQL wake-ups (core.notify) sent with the transaction's last statement ---------------------

_PG_NOTICES = "saferun_pg_notices"  # conn.info: (transaction, channel, payloads) not yet sent
# one pg_notify per payload, in one statement; ``audit.flush`` sends it with the chain's INSERT as a CTE
NOTIFY_SELECT = "SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) AS p"
_NOTIFY_MANY = text(NOTIFY_SELECT)


def pg_notice(conn: Connection, channel: str, payload: str) -> None:
    """Queue ``pg_notify(channel, payload)`` for this transaction (once per payload). PostgreSQL delivers
    a notification only when its transaction commits, so queued ones go out just before the commit: with
    the audit chain's INSERT when there is one (``audit.flush`` takes them), else on their own."""
    stash = conn.info.get(_PG_NOTICES)
    if stash is None or stash[0] is not conn.get_transaction():
        stash = conn.info[_PG_NOTICES] = (conn.get_transaction(), channel, [])
    if payload not in stash[2]:
        stash[2].append(payload)
    before_commit(conn, "pg_notices", _send_pg_notices, last=True)


def take_pg_notices(conn: Connection) -> tuple[str, list[str]] | None:
    """The wake-ups queued in this transaction and not yet sent (channel, payloads), now the caller's to
    send in a statement it runs anyway; None when there are none."""
    stash = conn.info.pop(_PG_NOTICES, None)
    if stash is None or stash[0] is not conn.get_transaction() or not stash[2]:
        return None
    return stash[1], stash[2]


def _send_pg_notices(conn: Connection) -> None:
    taken = take_pg_notices(conn)
    if taken is not None:
        conn.execute(_NOTIFY_MANY, {"channel": taken[0], "payloads": taken[1]})


def _hooks_left(conn: Connection) -> bool:
    stash = conn.info.get(_BEFORE_COMMIT)
    return stash is not None and stash[0] is conn.get_transaction() and bool(stash[1])


_instances: dict[str, Database] = {}
_instances_lock = threading.Lock()


def get_database(url: str | None = None) -> Database:
    """The process's shared handle for ``url`` (default: the configured one), created on first use."""
    resolved = normalize_database_url(url) if url else get_settings().resolved_database_url()
    with _instances_lock:
        db = _instances.get(resolved)
        if db is None:
            db = _instances[resolved] = Database(resolved)
        return db


def _make_engine(url: str, *, echo: bool) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # A small pool: opening a SQLite connection costs PRAGMAs, and closing the last one folds the WAL
        # back into the file (~1 ms each), which dominated short transactions before pooling.
        engine = create_engine(
            url,
            echo=echo,
            poolclass=QueuePool,
            pool_size=4,
            max_overflow=16,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_serializer=json_dumps,
            json_deserializer=json_loads,
        )
        _sqlite_discipline(engine)
    else:
        # No ping per checkout (a round trip before every request): connections are recycled after
        # PG_RECYCLE_SECONDS, one idle longer than IDLE_PING_SECONDS is checked before use (a restart or
        # failover while the process was quiet goes unseen), and one that dies while busy fails its
        # transaction as StoreUnavailable (503, nothing written) and renews the pool (faults.classify).
        # No overflow: the pool opens connections as concurrency needs them, up to SAFERUN_DB_POOL_SIZE,
        # and keeps them. With 5 kept and 10 more opened and closed around them, a replica serving 8 agents
        # opened a new connection every 4 cycles (a backend started, authenticated and its catalog cache
        # warmed each time): 108 per 400 cycles, now none after the first few (bench_server, issue 12).
        engine = create_engine(
            url,
            echo=echo,
            pool_size=get_settings().db_pool_size,
            max_overflow=0,
            pool_recycle=PG_RECYCLE_SECONDS,
            json_serializer=json_dumps,
            json_deserializer=json_loads,
        )
        _ping_when_idle(engine)
        _remember_schema(engine)
    _fork_safe(engine)
    _no_lost_writes(engine)
    return engine


def _no_lost_writes(engine: Engine) -> None:
    """Send a transaction's gathered writes when it commits some other way than ``Database.transaction``
    (``Database.connection()`` and ``conn.begin()``, as the bulk loader does): the engine's ``commit``
    event runs before the driver's COMMIT, inside the transaction, so the writes commit with it (and a
    failing one stops the commit: nothing half-written)."""

    @event.listens_for(engine, "commit")
    def _on_commit(conn: Connection) -> None:
        if _hooks_left(conn):
            run_before_commit(conn)


PG_SCHEMA = "saferun_schema"  # a pooled PostgreSQL connection's info: its current_schema(), read at connect


def _remember_schema(engine: Engine) -> None:
    """Read each new PostgreSQL connection's ``current_schema()`` once, into its ``info``.

    Why: a notice (``core.notify``) reaches every session of the database, so its channel names the
    deployment's schema; a writer must know it without a statement inside its transaction. Read on the
    raw connection at connect, so no transaction or statement count sees it."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            cur.execute("SELECT current_schema()")
            row = cur.fetchone()
        finally:
            cur.close()
        if not dbapi_conn.autocommit:
            dbapi_conn.rollback()  # the SELECT opened a transaction; the pool hands out idle connections
        record.info[PG_SCHEMA] = row[0] if row else None


PG_RECYCLE_SECONDS = 1800
IDLE_PING_SECONDS = 30.0
_IDLE_SINCE = "saferun_idle_since"


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only when it sat idle past ``IDLE_PING_SECONDS``.

    Under load every checkout finds a connection used a moment ago: no extra round trip. A dead one
    raises ``DisconnectionError`` here, which makes the pool discard it and try another (SQLAlchemy's
    documented custom pessimistic check)."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("SELECT 1")
            finally:
                cur.close()
            dbapi_conn.rollback()  # the driver opened a transaction for the ping
        except Exception as exc:
            raise DisconnectionError(
                f"pooled connection idle for {time.monotonic() - since:.0f} s is gone"
            ) from exc


def _fork_safe(engine: Engine) -> None:
    """A forked child must not reuse its parent's pooled connections (SQLAlchemy's documented recipe).

    The hook holds the engine weakly: fork hooks can never be unregistered, and a strong reference kept
    every engine a process ever made (with its pool) alive for good."""
    if hasattr(os, "register_at_fork"):
        ref = weakref.ref(engine)

        def _after_fork() -> None:
            alive = ref()
            if alive is not None:
                alive.dispose(close=False)

        os.register_at_fork(after_in_child=_after_fork)


def _sqlite_discipline(engine: Engine) -> None:
    synchronous = _synchronous()  # read once per engine, not on every new pooled connection

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed decision survives power loss, not only a crash (NORMAL would lose the last
        # commits on power loss); SAFERUN_SQLITE_SYNCHRONOUS=NORMAL trades that for speed.
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get("saferun_read", False)
        _apply_lock_wait(conn)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _apply_lock_wait(conn: Connection) -> None:
    apply_lock_wait(conn.connection.info, conn.connection.dbapi_connection)


def apply_lock_wait(info: dict[Any, Any], dbapi_conn: Any) -> None:
    """Set the pooled connection's busy timeout to this context's wait (less what ``writer_turn`` already
    waited), only when it differs (one PRAGMA through the bare driver cursor, so statement counts and SQL
    logs see no extra statement). ``info`` is the pooled connection's own dict, where the current value is
    remembered."""
    wanted = _lock_wait_ms.get() or BUSY_TIMEOUT_MS
    deadline = _lock_deadline.get()
    if deadline is not None:
        left = int((deadline - time.monotonic()) * 1000)
        if left < wanted - 50:  # waited noticeably for the turn: BEGIN IMMEDIATE gets only the rest
            wanted = max(left, 1)
    if info.get("saferun_busy_ms", BUSY_TIMEOUT_MS) != wanted:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(wanted)}")
        cur.close()
        info["saferun_busy_ms"] = wanted


def _synchronous() -> str:
    return get_settings().sqlite_synchronous  # FULL | NORMAL | EXTRA, checked by Settings


def raw_fetchone(engine: Engine, sql: str, params: tuple[Any, ...]) -> Any:
    """One row through the bare driver connection, for the hottest single-statement reads.

    SQLAlchemy's execution path costs ~50 us per statement, five times what SQLite needs for an indexed
    lookup; a polling agent or a resuming worker reads its latest state constantly. ``sql`` uses ``?``
    placeholders and is adapted to the driver. No transaction is opened on SQLite (autocommit); on
    PostgreSQL the pool's reset-on-return ends the implicit one.
    """
    if engine.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    conn = engine.raw_connection()
    try:
        cur = conn.cursor()
        try:
            cur.execute(sql, params)
            return cur.fetchone()
        finally:
            cur.close()
    finally:
        conn.close()


def lock_workflow(conn: Connection, workflow_id: str) -> None:
    """Serialize writers of one workflow. SQLite's BEGIN IMMEDIATE already serializes all writers."""
    if conn.dialect.name == "postgresql":
        from saferun.storage.schema import workflows

        conn.execute(
            select(workflows.c.workflow_id).where(workflows.c.workflow_id == workflow_id).with_for_update()
        )


def alembic_config(engine: Engine | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        # ConfigParser treats "%" as interpolation; URLs carry it (options=-csearch_path%3D...)
        url = engine.url.render_as_string(hide_password=False).replace("%", "%%")
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


_HEAD: str | None = None


def head_revision() -> str:
    """The newest revision in the migrations folder (read once per process)."""
    global _HEAD
    if _HEAD is None:
        from alembic.script import ScriptDirectory

        _HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head() or ""
    return _HEAD


def known_revisions() -> set[str]:
    """Every revision this code's migrations folder knows."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def check_revision(rev: str | None, *, migrate: bool) -> None:
    """Refuse a schema this code cannot run on: one newer than its migrations (another replica was
    upgraded first: serving would write rows the newer code does not expect), or an older one when
    migrating on open is off (``SAFERUN_MIGRATE=false``, as in the container and Kubernetes setups)."""
    if rev is not None and rev not in known_revisions():
        raise SchemaMismatch(
            f"the database's schema (revision {rev}) is newer than this SafeRun (head {head_revision()}): "
            "upgrade SafeRun here, or point it at the database it was migrated for"
        )
    if not migrate and rev != head_revision():
        raise SchemaMismatch(
            f"the database is at revision {rev or 'none (empty)'}, this SafeRun needs {head_revision()}: "
            "run `saferun db upgrade` (SAFERUN_MIGRATE=false turns off migrating on start)"
        )


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    cfg = alembic_config(engine)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # one replica migrates, the others wait here and then find nothing to do
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4021990011)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    log.debug("schema at %s on %s", revision, engine.url.render_as_string(hide_password=True))


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision, or None for a database SafeRun has never migrated."""
    with engine.connect().execution_options(saferun_read=True) as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
