"""The README's runnable example runs to completion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from saferun.storage.database import Database


def test_pizza_example_catches_the_order(database_env: Database, tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": database_env.engine.url.render_as_string(hide_password=False),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "examples/pizza_order.py", "--auto-review"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "MODIFIED by human_789: ordered 10 pizzas ($120)" in out.stdout
    assert "Workflow completed; escrow locked 120.00, released 120.00, refunded 0.00" in out.stdout
