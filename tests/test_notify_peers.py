"""Wake-ups across processes on one SQLite file (``core/notify_peers``): a commit in another process wakes a
waiter here at once, through a datagram, instead of at its next poll.

No wall-clock limits: a ``Watch`` only wakes on a notice (it never polls), so a wake-up proves the datagram
arrived; ``wait_for_decision`` logs what woke it. The timeouts only stop a broken run from hanging.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from saferun.core import notify, notify_peers
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.helpers import pause, started

GENEROUS = 60.0
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix datagram sockets here")


@pytest.fixture(autouse=True)
def _peers_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the caller's environment says (SAFERUN_PEER_WAKEUPS=0 turns the feature off)."""
    monkeypatch.setenv("SAFERUN_PEER_WAKEUPS", "1")


def _in_another_process(db: Database, body: str) -> None:
    """Run ``body`` in a new Python process, with ``db`` open there as ``db`` (orchestrator: ``orch``)."""
    script = textwrap.dedent(
        f"""
        from saferun.core import notify
        from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
        from saferun.storage.database import Database
        db = Database({db.url!r}, migrate=False)
        orch = WorkflowOrchestrator(database=db)
        """
    ) + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=GENEROUS
    )
    assert done.returncode == 0, done.stderr


async def test_a_commit_in_another_process_wakes_a_waiter_here(sqlite_db: Database) -> None:
    notifier = notify.notifier_for(sqlite_db)
    with notifier.watch("decision", "from-elsewhere") as watch:
        assert notifier.listening  # this process's socket is bound while it has a waiter
        _in_another_process(
            sqlite_db,
            """
            with db.transaction() as conn:
                notify.publish(conn, "decision", "from-elsewhere")
            """,
        )
        assert await watch.wait(GENEROUS)  # a Watch never polls: only the datagram can have woken it
    notifier.close()


async def test_a_rolled_back_transaction_in_another_process_wakes_nobody(sqlite_db: Database) -> None:
    notifier = notify.notifier_for(sqlite_db)
    with (
        notifier.watch("decision", "rolled-back") as rolled_back,
        notifier.watch("decision", "marker") as marker,
    ):
        _in_another_process(
            sqlite_db,
            """
            try:
                with db.transaction() as conn:
                    notify.publish(conn, "decision", "rolled-back")
                    raise RuntimeError("no commit")
            except RuntimeError:
                pass
            with db.transaction() as conn:
                notify.publish(conn, "decision", "marker")
            """,
        )
        assert await marker.wait(GENEROUS)  # the later commit arrived, so the earlier one would have
        assert rolled_back.notices == 0
    notifier.close()


async def test_wait_for_decision_here_is_woken_by_a_decision_made_in_another_process(
    sqlite_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The seed's own set-up: an agent waits in its process, the reviewer decides through another (the
    dashboard's server, the CLI). The wait ends on the notice, not on a poll."""
    orch = WorkflowOrchestrator(database=sqlite_db)
    wf = started(orch)
    req = await pause(orch, wf)
    caplog.set_level(logging.DEBUG, logger="saferun.core.state_machine.orchestrator")
    waiter = asyncio.create_task(orch.wait_for_decision(req, timeout=GENEROUS, poll_interval=GENEROUS))
    for _ in range(int(GENEROUS / 0.001)):
        if any(r.getMessage().startswith("waiting") for r in caplog.records):
            break
        await asyncio.sleep(0.001)
    await asyncio.to_thread(
        _in_another_process,
        sqlite_db,
        f"""
        from saferun.core.state_machine.models import ApprovalDecision, ApprovalResponse
        orch.submit_approval(None, ApprovalResponse(
            request_id={req!r}, decision=ApprovalDecision.APPROVED, rationale="ok", approved_by="reviewer"))
        """,
    )
    response = await waiter
    assert response.decision.value == "APPROVED"
    woken = [getattr(r, "woken_by", None) for r in caplog.records if hasattr(r, "woken_by")]
    assert woken[-1] == "notice"  # poll_interval is a minute: a poll could not have found it in time


def test_a_socket_whose_process_is_gone_is_removed_by_the_next_sender(tmp_path: Path) -> None:
    directory = tmp_path / "peers"
    directory.mkdir()
    gone = directory / f"12345-dead{notify_peers._SUFFIX}"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(gone))
    stale.close()  # bound, never unlinked: what a killed process leaves behind
    received: list[tuple[str, str]] = []
    alive = notify_peers.PeerListener(directory, lambda topic, key: received.append((topic, key)))
    try:
        notify_peers.refresh(directory)
        assert notify_peers.send(directory, [("decision", "r1")]) == 1  # the live one; the dead one refused
        assert not gone.exists()
    finally:
        alive.close()
    assert not directory.exists()  # the last listener takes the directory with it


def test_a_base_directory_others_can_write_disables_peers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_db: Database
) -> None:
    """Another user able to write the base directory could plant sockets or read hints: then this process
    does not use peers at all, and its waiters poll as before."""
    base = tmp_path / "tmp"
    shared = base / f"saferun-{os.getuid()}"
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    monkeypatch.setattr(notify_peers.tempfile, "gettempdir", lambda: str(base))
    monkeypatch.setattr(notify_peers, "_checked", {})
    assert notify_peers.peer_dir(sqlite_db.engine) is None


def test_no_peers_for_memory_databases_or_postgres() -> None:
    from sqlalchemy import create_engine

    assert notify_peers.peer_dir(create_engine("sqlite://")) is None
    assert notify_peers.peer_dir(create_engine("postgresql+psycopg://u@127.0.0.1/x")) is None
