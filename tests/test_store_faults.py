"""Store faults degrade clearly and recover by themselves: a full disk and a read-only file system answer
503 with a reason and Retry-After, write nothing partial, and the same server recovers once the fault clears.

Disk full and read-only run on a small tmpfs mounted for the test (needs root / CAP_SYS_ADMIN; skips with
the reason elsewhere). A lock held by another process (a real second process in ``BEGIN IMMEDIATE``) is a
prompt 503 for a request, while the library keeps waiting patiently.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import BUSY_TIMEOUT_MS, Database, lock_wait
from tests.test_api import SEED_CREATE, client_for


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "fs"
    where.mkdir()
    done = _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _remount(where: Path, options: str) -> None:
    done = _mount("-o", f"remount,{options}", str(where))
    assert done.returncode == 0, done.stderr


async def test_disk_full_is_503_writes_nothing_partial_and_recovers(small_fs: Path) -> None:
    db = Database(f"sqlite:///{small_fs / 'saferun.db'}")
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    created, refused = 0, None
    async with client_for(app) as api:
        big = {**SEED_CREATE, "description": "x" * 19_000, "metadata": {"pad": "y" * 200_000}}
        for _ in range(400):
            res = await api.post("/api/workflows", json=big)
            if res.status_code == 201:
                created += 1
                continue
            refused = res
            break
        assert refused is not None, "the 4 MiB file system never filled"
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"].isdigit()
        assert refused.json()["detail"]["reason"] == "disk full"
        _remount(small_fs, "size=64m")
        listed = await api.get("/api/workflows")
        assert listed.status_code == 200 and listed.json()["total"] == created  # nothing half-written
        again = await api.post("/api/workflows", json=big)
        assert again.status_code == 201, again.text


async def test_read_only_file_system_is_503_and_the_same_server_recovers(small_fs: Path) -> None:
    db = Database(f"sqlite:///{small_fs / 'saferun.db'}")
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    async with client_for(app) as api:
        assert (await api.post("/api/workflows", json=SEED_CREATE)).status_code == 201
        # the kernel refuses an ro remount while a file is open for writing; the connections opened next
        # open the file read-only, and (before the fix) stayed read-only after it was writable again
        db.engine.dispose()
        _remount(small_fs, "ro")
        try:
            for _ in range(3):
                res = await api.post("/api/workflows", json=SEED_CREATE)
                assert res.status_code == 503, res.text
                assert res.headers["Retry-After"].isdigit()
                assert res.json()["detail"]["reason"] in ("read-only", "i/o error")
        finally:
            _remount(small_fs, "rw")
        res = await api.post("/api/workflows", json=SEED_CREATE)
        assert res.status_code == 201, res.text
        assert (await api.get("/api/workflows")).json()["total"] == 2


# A second process that takes SQLite's write lock and keeps it until told to let go (or for HOLD_SECONDS,
# so a request that waited the library's full 30 s would get the lock and answer 201, failing the test).
HOLD_SECONDS = 20
_HOLDER = """
import select, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
select.select([sys.stdin], [], [], float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    path = tmp_path / "saferun.db"
    Database(f"sqlite:///{path}").dispose()  # migrated first: the holder only takes the lock
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(HOLD_SECONDS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield path, holder
    finally:
        holder.kill()
        holder.wait()


def _release(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    assert holder.wait() == 0


async def test_a_lock_held_by_another_process_is_a_prompt_503_and_the_server_recovers(
    lock_holder: tuple[Path, subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, holder = lock_holder
    monkeypatch.setenv("SAFERUN_SQLITE_REQUEST_BUSY_MS", "300")
    db = Database(f"sqlite:///{path}")
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    async with client_for(app) as api:
        refused = await api.post("/api/workflows", json=SEED_CREATE)
        assert holder.poll() is None, "the holder let go first: the request waited like the library"
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"].isdigit()
        assert refused.json()["detail"]["reason"] == "locked"
        listed = await api.get("/api/workflows")  # WAL readers are not blocked by the held write lock
        assert listed.status_code == 200 and listed.json()["total"] == 0
        _release(holder)
        created = await api.post("/api/workflows", json=SEED_CREATE)
        assert created.status_code == 201, created.text
        assert (await api.get("/api/workflows")).json()["total"] == 1  # the refused one wrote nothing


def test_only_requests_wait_briefly_the_library_keeps_the_patient_default(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'saferun.db'}")

    def busy_timeout() -> int:
        with db.transaction() as conn:
            return int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one())

    assert busy_timeout() == BUSY_TIMEOUT_MS == 30_000
    with lock_wait(250):
        assert busy_timeout() == 250
    assert busy_timeout() == BUSY_TIMEOUT_MS  # the pooled connection is set back for the next caller


async def test_concurrent_requests_still_queue_for_the_lock_rather_than_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAFERUN_SQLITE_REQUEST_BUSY_MS", "3000")
    db = Database(f"sqlite:///{tmp_path / 'saferun.db'}")
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    async with client_for(app) as api:
        answers = await asyncio.gather(*(api.post("/api/workflows", json=SEED_CREATE) for _ in range(24)))
        assert [a.status_code for a in answers] == [201] * 24
        assert (await api.get("/api/workflows")).json()["total"] == 24
