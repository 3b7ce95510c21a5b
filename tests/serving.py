"""One way for tests to run an ASGI app under a real uvicorn on a loopback port, in a thread.

Four copies of this used to live in test modules, each with its own idea of "ready": one waited 5 s for a
single health answer, and a CI run on a loaded 2-core machine timed out there (ReadTimeout at setup of a
test that never ran). Readiness is now one rule: uvicorn says it started (its lifespan ran and the socket
listens), then, for a SafeRun app, ``/api/health`` answers within a generous deadline, retried — a slow
machine waits longer; only a server that never answers fails, and the failure says which.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

START_DEADLINE = 60.0  # seconds; generous because CI shares 2 cores with PostgreSQL and Chromium


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_app(app: Any, *, health_path: str | None = None, **config: Any) -> Iterator[str]:
    """Run ``app`` on a free loopback port; yield its base URL once it serves; stop it on exit.

    ``health_path``: when given, also wait until a GET there answers 200 (a SafeRun app passes
    ``/api/health``, so a test starts against a server whose database answers).
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options: dict[str, Any] = {"log_level": "warning", "timeout_graceful_shutdown": 2, **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_DEADLINE
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the test server's thread died while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test server did not start within {START_DEADLINE:.0f} s")
            time.sleep(0.01)
        if health_path is not None:
            _wait_healthy(url + health_path, deadline)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _wait_healthy(url: str, deadline: float) -> None:
    last: str = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(url, timeout=max(1.0, deadline - time.monotonic()))
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
            continue
        if answer.status_code == 200:
            return
        last = f"{answer.status_code} {answer.text[:200]}"
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 within {START_DEADLINE:.0f} s (last: {last})")
