"""Wake-ups the moment a decision or a state change commits, in this process or any other.

A writer calls ``publish(conn, topic, key)`` inside its transaction; a waiter registers a ``Watch`` (or a
``Subscription`` for a stream) on the process's ``Notifier`` for its database and is woken once that
transaction commits. Nothing is delivered for a transaction that rolls back. A notice is only a hint
("re-read now"): a waiter always re-reads the store, so a spurious or duplicated notice is harmless and a
lost one costs latency, never correctness (waiters keep polling as the fallback).

- **PostgreSQL**: ``publish`` runs ``SELECT pg_notify('saferun', '<topic>:<key>')``, which the server
  delivers only if the transaction commits, to every listener in every process. A notice reaches every
  session of the *database*, whatever its schema, so the channel is the deployment's: ``saferun`` in the
  ``public`` schema, ``saferun:<schema>`` in any other (``channel_for``). Two deployments sharing a
  database in two schemas then never wake each other, and neither learns the other's workflow ids from
  an event stream's hints. One daemon thread per
  Notifier holds a dedicated psycopg 3 connection with ``LISTEN`` on it and hands notices to waiters on
  their own event loops (``call_soon_threadsafe``). The thread starts lazily with the first watch (or with
  ``start()``), reconnects with backoff when its connection drops, and after every (re)connect wakes every
  waiter once (topic ``resync``), because notices sent while it was not listening are lost.
- **SQLite** has no notification of its own: ``publish`` records the notice on the connection and it is
  delivered to this process's waiters after the commit (engine ``commit``/``rollback`` events and the pool's
  ``checkin``), and to other processes waiting on the same file as a datagram (``core.notify_peers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, event

from saferun.core import notify_peers
from saferun.storage.database import PG_SCHEMA, pg_notice

if TYPE_CHECKING:
    from saferun.storage.database import Database

log = logging.getLogger(__name__)

CHANNEL = "saferun"  # the channel of a deployment in the ``public`` schema (and of every version before 0.2)
RESYNC = "resync"  # topic of the wake-up every waiter gets after the listener (re)connects or closes
ANY = "*"  # a watch on key ANY matches every key of its topic

_MAX_CHANNEL = 63  # PostgreSQL's identifier limit, which LISTEN's channel name obeys


def channel_for(schema: str | None) -> str:
    """The notification channel of the deployment whose tables live in ``schema``.

    ``public`` (and an unknown schema) keeps the historic ``saferun``, so a single deployment upgraded in
    place keeps waking replicas still on the previous version. A long schema name is hashed so the
    channel stays within PostgreSQL's 63 bytes."""
    if not schema or schema == "public":
        return CHANNEL
    channel = f"{CHANNEL}:{schema}"
    if len(channel.encode()) > _MAX_CHANNEL:
        channel = f"{CHANNEL}:{hashlib.sha256(schema.encode()).hexdigest()[:32]}"
    return channel


_PENDING = "saferun_notices_pending"  # conn.info: notices of the open transaction
_COMMITTED = "saferun_notices_committed"  # conn.info: notices whose transaction committed, not yet delivered


def publish(conn: Connection, topic: str, key: str) -> None:
    """Announce, inside the writing transaction, that ``topic``/``key`` changed; delivered on commit only."""
    if ":" in topic:
        raise ValueError(f"a topic may not contain ':' ({topic!r})")
    if conn.dialect.name == "postgresql":
        # queued and sent with the transaction's last statement (the audit chain's INSERT when it has
        # one: storage.database.pg_notice); the server still delivers them only if the commit succeeds
        pg_notice(conn, channel_for(conn.info.get(PG_SCHEMA)), f"{topic}:{key}")
        return
    url = _local_url(conn.engine) or _peer_url(conn.engine)
    if url is not None:
        conn.info.setdefault(_PENDING, []).append((url, topic, key))


@dataclass
class NotifierStats:
    received: int = 0  # notices that reached this Notifier (from the listener or a local commit)
    connects: int = 0  # successful LISTENs (1 + reconnects)
    failures: int = 0  # connection attempts or connections that failed


class Notifier:
    """One per process per database (``notifier_for(db)``); thread-safe, usable from any event loop."""

    def __init__(self, url: str, dialect: str, peer_directory: Path | None = None) -> None:
        self.url = url
        self.is_postgres = dialect == "postgresql"
        # SQLite: where this process's socket goes while it has waiters (``core.notify_peers``)
        self.peer_directory = peer_directory
        self._peers: notify_peers.PeerListener | None = None
        self.stats = NotifierStats()
        self.closed = False
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._watches: dict[tuple[str, str], set[Watch]] = {}
        self._subscriptions: set[Subscription] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._listening = threading.Event()
        self.backend_pid: int | None = None  # the listener connection's server process (PostgreSQL)
        self.channel: str | None = None  # what it listens on (``channel_for`` its schema), once connected

    # ------------------------------------------------------------------ lifecycle
    @property
    def listening(self) -> bool:
        """True while notices from other processes arrive (PostgreSQL with its listener connected; SQLite
        with this process's peer socket bound)."""
        if not self.is_postgres:
            return self._peers is not None
        return self._listening.is_set()

    def start(self) -> None:
        """Start listening for other processes' notices if not already (idempotent, returns at once): the
        PostgreSQL listener thread, or on SQLite this process's peer socket."""
        if not self.is_postgres:
            self._start_peers()
            return
        with self._lock:
            if self.closed or (self._thread is not None and self._thread.is_alive()):
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="saferun-notify", daemon=True)
            self._thread.start()

    @property
    def peer_path(self) -> Path | None:
        """This process's socket for the file (SQLite, while it has waiters): senders here skip it."""
        peers = self._peers
        return None if peers is None else peers.path

    def _start_peers(self) -> None:
        with self._lock:
            if self.closed or self._peers is not None or self.peer_directory is None:
                return
            try:
                self._peers = notify_peers.PeerListener(self.peer_directory, self.deliver)
            except OSError as exc:  # e.g. a path too long for a Unix socket: waiters poll, as before
                log.warning("no cross-process wake-ups for %s (%s): waiters poll", self.url, exc)
                self.peer_directory = None
                return
        notify_peers.refresh(self.peer_directory)

    async def astart(self, timeout: float = 10.0) -> bool:
        """``start()`` and wait until the listener is connected; True when it is (always True on SQLite,
        where in-process delivery needs no connection)."""
        if not self.is_postgres:
            self.start()
            return True
        self.start()
        return await asyncio.to_thread(self._listening.wait, timeout)

    def close(self, wait: bool = True) -> None:
        """Stop the listener (within ~0.25 s) and wake every waiter once so it falls back to polling."""
        with self._lock:
            self.closed = True
            thread = self._thread
            peers, self._peers = self._peers, None
        if peers is not None:
            peers.close()
            notify_peers.refresh(peers.directory)
        self._stop.set()
        self._wake_all()
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with _registry_lock:
            if _registry.get(self.url) is self:
                del _registry[self.url]

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # ------------------------------------------------------------------ publishing and waiting
    def publish(self, conn: Connection, topic: str, key: str) -> None:
        publish(conn, topic, key)

    def watch(self, topic: str, key: str = ANY) -> Watch:
        """Register interest now (before reading the store, so nothing committed after the read is missed);
        use as a context manager, ``clear()`` before each read and ``await wait(t)`` after it."""
        w = Watch(self, topic, key)
        with self._lock:
            self._watches.setdefault((topic, key), set()).add(w)
        self.start()
        return w

    async def wait(self, topic: str, key: str = ANY, timeout: float | None = None) -> bool:
        """True as soon as a matching notice arrives, False at ``timeout``. Only notices that arrive after
        the call are seen: to check-then-wait without a gap, hold a ``watch()`` across the check."""
        with self.watch(topic, key) as w:
            return await w.wait(timeout)

    def subscribe(self, topics: Iterable[str] | None = None, maxsize: int = 10_000) -> Subscription:
        """Every notice (``(topic, key)``) from now on, for streams such as server-sent events; ``topics``
        filters (``resync`` always passes). Use as an (async) context manager or ``close()`` it."""
        sub = Subscription(self, frozenset(topics) if topics is not None else None, maxsize)
        with self._lock:
            self._subscriptions.add(sub)
        self.start()
        return sub

    def deliver(self, topic: str, key: str) -> None:
        """Hand a notice to every matching waiter (thread-safe; the listener and local commits call it)."""
        self.stats.received += 1
        with self._lock:
            watches = [*self._watches.get((topic, key), ()), *self._watches.get((topic, ANY), ())]
            subs = [s for s in self._subscriptions if s.topics is None or topic in s.topics]
        for w in watches:
            w._schedule()
        for s in subs:
            s._schedule((topic, key))

    def _wake_all(self) -> None:
        with self._lock:
            watches = [w for ws in self._watches.values() for w in ws]
            subs = list(self._subscriptions)
        for w in watches:
            w._schedule()
        for s in subs:
            s._schedule((RESYNC, ""))

    def _forget(self, item: Watch | Subscription) -> None:
        with self._lock:
            if isinstance(item, Subscription):
                self._subscriptions.discard(item)
                return
            ws = self._watches.get((item.topic, item.key))
            if ws is not None:
                ws.discard(item)
                if not ws:
                    del self._watches[(item.topic, item.key)]

    # ------------------------------------------------------------------ the PostgreSQL listener
    def _conninfo(self) -> str:
        from sqlalchemy.engine import make_url

        # the engine's URL without "+psycopg"; its query (options=-csearch_path%3D...) passes to libpq
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def _run(self) -> None:
        try:
            self._listen_forever()
        except BaseException:  # never die silently
            log.critical("saferun notify listener stopped by an unexpected error", exc_info=True)
            raise
        finally:
            self._listening.clear()

    def _listen_forever(self) -> None:
        import psycopg
        from psycopg import sql

        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._conninfo(),
                    autocommit=True,
                    connect_timeout=10,
                    keepalives=1,
                    keepalives_idle=30,
                    keepalives_interval=10,
                    keepalives_count=3,
                    application_name="saferun-notify",
                ) as pg:
                    schema = pg.execute("SELECT current_schema()").fetchone()
                    self.channel = channel_for(schema[0] if schema else None)
                    pg.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.backend_pid = pg.info.backend_pid
                    self.stats.connects += 1
                    if self.stats.connects > 1:
                        log.info("saferun notify listener reconnected")
                    backoff = 0.1
                    # anything committed while we were not listening was announced to nobody
                    self._wake_all()
                    self._listening.set()
                    checked = time.monotonic()
                    while not self._stop.is_set():
                        for n in pg.notifies(timeout=0.25):
                            topic, _, key = n.payload.partition(":")
                            self.deliver(topic, key)
                        if time.monotonic() - checked > 30:  # notice a dead connection while idle
                            pg.execute("SELECT 1")
                            checked = time.monotonic()
            except Exception as exc:
                self._listening.clear()
                if self._stop.is_set():
                    break
                self.stats.failures += 1
                log.warning(
                    "saferun notify listener lost its connection (%s: %s); retrying in %.1f s",
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                    backoff,
                )
                self._wake_all()  # waiters poll until we are back
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._listening.clear()


class Watch:
    """Interest in one ``(topic, key)``, woken on the event loop that created it."""

    def __init__(self, notifier: Notifier, topic: str, key: str) -> None:
        self.notifier = notifier
        self.topic = topic
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.notices = 0  # how many notices (including resync wake-ups) reached this watch
        self._event = asyncio.Event()

    def _schedule(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        self.notices += 1
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float | None = None) -> bool:
        """True when a notice arrived (since the last ``clear()``), False at ``timeout``."""
        if not self._event.is_set():
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # arrives as the event is set, and the cancelled waiter then waits forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._event.wait()
        return self._event.is_set()

    def close(self) -> None:
        self.notifier._forget(self)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscription:
    """A queue of ``(topic, key)`` notices on the event loop that created it."""

    def __init__(self, notifier: Notifier, topics: frozenset[str] | None, maxsize: int) -> None:
        self.notifier = notifier
        self.topics = topics if topics is None else topics | {RESYNC}
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize)
        self.dropped = 0  # notices lost to a full queue (the consumer should re-read everything)

    def _schedule(self, item: tuple[str, str]) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._put, item)

    def _put(self, item: tuple[str, str]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def get(self, timeout: float | None = None) -> tuple[str, str] | None:
        """The next notice, or None at ``timeout``."""
        try:
            async with asyncio.timeout(timeout):  # not wait_for: see Watch.wait
                return await self.queue.get()
        except TimeoutError:
            return None

    def drain(self) -> list[tuple[str, str]]:
        """Every notice already queued, without waiting."""
        items = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items

    def __aiter__(self) -> AsyncIterator[tuple[str, str]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[tuple[str, str]]:
        while True:
            yield await self.queue.get()

    def close(self) -> None:
        self.notifier._forget(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ---------------------------------------------------------------------- one Notifier per database
_registry: dict[str, Notifier] = {}
_registry_lock = threading.Lock()
_generation = 0  # bumped whenever a Notifier is created, so engines re-check after a miss
_hooked: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
_missed: weakref.WeakKeyDictionary[Engine, int] = weakref.WeakKeyDictionary()


def _url_key(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def notifier_for(db: Database) -> Notifier:
    """The process's Notifier for ``db``'s database (created on first use; PostgreSQL listens lazily)."""
    global _generation
    url = _url_key(db.engine)
    with _registry_lock:
        notifier = _registry.get(url)
        if notifier is None or notifier.closed:
            notifier = _registry[url] = Notifier(url, db.dialect, _peer_directory(db.engine))
            _generation += 1
        _hook(db.engine, url)
    return notifier


def close_all() -> None:
    """Close every Notifier of the process (for server shutdown and tests)."""
    with _registry_lock:
        notifiers = list(_registry.values())
    for n in notifiers:
        n.close()


def _local_url(engine: Engine) -> str | None:
    """For a SQLite engine: its URL when a Notifier of this process may want its notices, else None."""
    url = _hooked.get(engine)
    if url is not None:
        return url
    if _missed.get(engine) == _generation:
        return None
    key = _url_key(engine)
    with _registry_lock:
        if key in _registry:  # a second engine on a database someone is waiting on
            _hook(engine, key)
            return key
        _missed[engine] = _generation
    return None


_peer_dirs: weakref.WeakKeyDictionary[Engine, Path | None] = weakref.WeakKeyDictionary()
_peer_dir_of: dict[str, Path] = {}  # url -> its peer directory, for the senders


def _peer_directory(engine: Engine) -> Path | None:
    if engine not in _peer_dirs:
        _peer_dirs[engine] = directory = notify_peers.peer_dir(engine)
        if directory is not None:
            _peer_dir_of[_url_key(engine)] = directory
    return _peer_dirs[engine]


def _peer_url(engine: Engine) -> str | None:
    """For a SQLite engine with no waiter in this process: its URL when another process waits on the same
    file (so this commit's notices are worth gathering and sending), else None."""
    if engine.dialect.name == "postgresql":
        return None
    directory = _peer_directory(engine)
    if directory is None or not notify_peers.has_peers(directory):
        return None
    key = _url_key(engine)
    with _registry_lock:
        _hook(engine, key)
    return key


def _hook(engine: Engine, url: str) -> None:
    """Install the per-engine events once (caller holds ``_registry_lock``)."""
    if engine in _hooked:
        return
    _hooked[engine] = url
    event.listen(engine, "engine_disposed", _on_disposed)
    if engine.dialect.name != "postgresql":
        event.listen(engine, "commit", _on_commit)
        event.listen(engine, "rollback", _on_rollback)
        event.listen(engine, "checkin", _on_checkin)


def _on_commit(conn: Connection) -> None:
    # fires just before the COMMIT: move the notices aside; they go out once the connection is checked in
    pending = conn.info.pop(_PENDING, None)
    if pending:
        conn.info.setdefault(_COMMITTED, []).extend(pending)


def _on_rollback(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)


def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
    if record is None:
        return
    done = record.info.pop(_COMMITTED, None)
    record.info.pop(_PENDING, None)  # a transaction never committed leaves nothing behind
    if not done:
        return
    by_url: dict[str, list[tuple[str, str]]] = {}
    for url, topic, key in done:
        by_url.setdefault(url, []).append((topic, key))
    for url, notices in by_url.items():
        notifier = _registry.get(url)
        if notifier is not None:
            for topic, key in notices:
                notifier.deliver(topic, key)
        directory = _peer_dir_of.get(url)
        if directory is not None:  # other processes waiting on this file: after the commit, as here
            notify_peers.send(directory, notices, own=notifier.peer_path if notifier is not None else None)


def _on_disposed(engine: Engine) -> None:
    """``Database.dispose()`` (or a fork) ends the database's Notifier; the next use starts a fresh one."""
    notifier = _registry.get(_hooked.get(engine) or "")
    if notifier is not None and notifier.pid == os.getpid():  # a forked child just forgets its parent's
        notifier.close(wait=False)


def _after_fork() -> None:
    # the listener thread does not exist in a forked child; start afresh there
    global _registry_lock
    _registry_lock = threading.Lock()
    _registry.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
