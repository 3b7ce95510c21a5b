"""Store faults degrade clearly and recover by themselves: a full disk and a read-only file system answer
503 with a reason and Retry-After, write nothing partial, and the same server recovers once the fault clears.

Runs on a small tmpfs mounted for the test (needs root / CAP_SYS_ADMIN; skips with the reason elsewhere).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
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
