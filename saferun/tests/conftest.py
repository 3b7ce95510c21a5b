"""The seed's own test layout (``python3 -m pytest saferun/tests/ -v``): each test gets a fresh embedded
store, so the original's callers' code runs on SafeRun's durable engine with no setup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _fresh_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import os

    if not os.environ.get("SAFERUN_TEST_KEEP_DATABASE"):
        monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'saferun.db'}")
    monkeypatch.chdir(tmp_path)  # the original's relative ./saferun_artifacts stays in the test's dir
    yield
