"""Wake-ups between processes that share one SQLite file: a datagram per commit to every other process
waiting on that file.

Why: SQLite has no LISTEN/NOTIFY, so a process waiting on a decision (an agent's ``wait_for_decision``
in library mode, the server's long-polls and event stream) learned of a commit made by another process
(the dashboard server, the CLI, a second server) only by polling, 5 ms backing off to 250 ms. The seed's
own set-up is exactly that: an agent process and the dashboard's server on one file.

How: each process whose Notifier has a waiter binds a Unix datagram socket in a directory private to this
user and this database file (``peer_dir``); a commit's notices go, after the commit, to every other
socket there as one datagram of ``topic:key`` lines. A socket whose process is gone answers "connection
refused" and is removed by the first sender that finds it.

What a datagram is worth: exactly what a PostgreSQL notice is, a hint to re-read the store. A lost one
costs a poll (waiters keep polling as the fallback), a forged one a re-read; nothing is ever taken from
its content. The directory is created mode 0700 under a per-user base that must be owned by this user
and closed to others, or peers are not used at all (waiters poll, as before). Platforms without Unix
datagram sockets poll too, and so does every process started with ``SAFERUN_PEER_WAKEUPS=0``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import socket
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy.engine import Engine

from saferun.config import get_settings

log = logging.getLogger(__name__)

MAX_DATAGRAM = 60_000  # bytes per datagram; a commit with more notices sends several
_DIRS_TTL = 1.0  # seconds a directory's listing is reused by a sender before it looks again
_SUFFIX = ".sock"


def peer_dir(engine: Engine) -> Path | None:
    """The directory of ``engine``'s SQLite file's listening processes (created by the first listener,
    removed by the last); None when peers cannot be used (not a file-backed SQLite database, no Unix
    datagram sockets, or an unsafe base directory)."""
    if engine.dialect.name != "sqlite" or not hasattr(socket, "AF_UNIX") or not hasattr(os, "getuid"):
        return None  # (Windows has neither Unix datagram sockets nor a uid to make the directory private)
    if not get_settings().peer_wakeups:
        return None  # SAFERUN_PEER_WAKEUPS=0 (an operator's choice, or a benchmark's): waiters poll
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    key = hashlib.sha256(os.path.realpath(database).encode()).hexdigest()[:16]
    return _private_dir(key)


_checked: dict[str, Path | None] = {}
_checked_lock = threading.Lock()


def _private_dir(key: str) -> Path | None:
    with _checked_lock:
        if key in _checked:
            return _checked[key]
        found: Path | None = None
        try:
            base = Path(tempfile.gettempdir()) / f"saferun-{os.getuid()}"
            base.mkdir(mode=0o700, exist_ok=True)
            info = base.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
                log.warning("%s is not a private directory of this user: waiters poll instead", base)
            else:
                found = base / key
        except OSError as exc:
            log.warning("no directory for cross-process wake-ups (%s): waiters poll instead", exc)
            found = None
        _checked[key] = found
        return found


class PeerListener:
    """This process's socket in a peer directory, and the thread that hands what arrives to ``deliver``."""

    def __init__(self, directory: Path, deliver: Callable[[str, str], None]) -> None:
        self.directory = directory
        self.path = directory / f"{os.getpid()}-{os.urandom(4).hex()}{_SUFFIX}"
        self._deliver = deliver
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            for attempt in range(3):
                directory.mkdir(mode=0o700, exist_ok=True)
                try:
                    self._sock.bind(str(self.path))
                    break
                except FileNotFoundError:  # the last listener removed the directory meanwhile
                    if attempt == 2:
                        raise
        except OSError:
            self._sock.close()
            raise
        self._sock.settimeout(0.25)  # how soon ``close`` is noticed
        self._thread = threading.Thread(target=self._run, name="saferun-notify-peers", daemon=True)
        self._thread.start()
        _live.add(self)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(MAX_DATAGRAM + 1024)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)
                continue
            for line in data.decode("utf-8", "replace").splitlines():
                topic, sep, key = line.partition(":")
                if sep:
                    self._deliver(topic, key)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.directory.rmdir()  # only if no other listener is left in it
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._sock.close()


_live: weakref.WeakSet[PeerListener] = weakref.WeakSet()


@atexit.register
def _unlink_at_exit() -> None:
    """A process that exits without closing its Notifier takes its socket with it (one killed leaves it,
    and the next sender removes it)."""
    for listener in list(_live):
        with contextlib.suppress(OSError):
            listener.path.unlink()
        with contextlib.suppress(OSError):
            listener.directory.rmdir()


class _Listing:
    """A sender's view of a directory: the sockets there, re-listed at most every ``_DIRS_TTL`` s (a
    process that starts waiting meanwhile is found by its own polls until then)."""

    def __init__(self) -> None:
        self.at = 0.0
        self.paths: list[str] = []


_listings: dict[Path, _Listing] = {}
_listings_lock = threading.Lock()
_sender = threading.local()


def has_peers(directory: Path) -> bool:
    """Whether any process listens on ``directory`` (cheap: a cached listing). Asked by a process with no
    waiter of its own on the file, so every socket there is another process's."""
    return bool(_targets(directory))


def send(directory: Path, notices: Iterable[tuple[str, str]], own: Path | None = None) -> int:
    """Send ``notices`` to every other listener in ``directory``; the number of sockets reached."""
    lines = [f"{topic}:{key}".encode() for topic, key in dict.fromkeys(notices)]
    if not lines:
        return 0
    datagrams = _pack(lines)
    sock = getattr(_sender, "sock", None)
    if sock is None:
        sock = _sender.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)  # a full receiver drops the hint instead of stalling the committer
    reached = 0
    for path in _targets(directory):
        if path == str(own):
            continue
        try:
            for datagram in datagrams:
                sock.sendto(datagram, path)
            reached += 1
        except (ConnectionRefusedError, FileNotFoundError):
            _forget(directory, path)  # its process is gone (or closed without cleaning up)
        except (BlockingIOError, OSError):
            pass  # a hint lost: that waiter polls
    return reached


def _pack(lines: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) + 1 > MAX_DATAGRAM:
            out.append(b"\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        out.append(b"\n".join(current))
    return out


def _targets(directory: Path) -> list[str]:
    now = time.monotonic()
    with _listings_lock:
        listing = _listings.setdefault(directory, _Listing())
        if now - listing.at < _DIRS_TTL:
            return listing.paths
    try:
        with os.scandir(directory) as entries:
            paths = [e.path for e in entries if e.name.endswith(_SUFFIX)]
    except OSError:
        paths = []
    with _listings_lock:
        listing.at, listing.paths = now, paths
    return paths


def _forget(directory: Path, path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
    with _listings_lock:
        listing = _listings.get(directory)
        if listing is not None and path in listing.paths:
            listing.paths = [p for p in listing.paths if p != path]


def refresh(directory: Path) -> None:
    """Forget the cached listing (a listener just started or stopped in this process)."""
    with _listings_lock:
        _listings.pop(directory, None)
