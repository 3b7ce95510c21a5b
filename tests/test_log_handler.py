"""The log handler writes to ``sys.stderr`` as it is when a record is emitted.

Every ``saferun`` command configures logging; a command run in-process (``CliRunner``) swaps
``sys.stderr`` for a stream it closes afterwards. A handler bound at configuration time then failed on
every later record of the process, printing a traceback each time (a bulk load after one CLI test took
2.8x as long).
"""

from __future__ import annotations

import io
import logging
import sys

import pytest
from typer.testing import CliRunner

from saferun import logs
from saferun.cli.main import app


def test_records_follow_the_current_stderr_and_never_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    logs.configure("INFO")
    handler = logging.getLogger("saferun").handlers[0]
    assert isinstance(handler, logs.StderrHandler)
    failed: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", failed.append)

    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    logging.getLogger("saferun.test").info("while swapped")
    assert "while swapped" in swapped.getvalue()
    swapped.close()

    after = io.StringIO()
    monkeypatch.setattr(sys, "stderr", after)
    logging.getLogger("saferun.test").info("after the swapped stream closed")
    assert "after the swapped stream closed" in after.getvalue()
    assert failed == []


def test_a_cli_command_run_in_process_leaves_logging_working(monkeypatch: pytest.MonkeyPatch) -> None:
    # the command configures logging while CliRunner's captured stream is sys.stderr, then closes it
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    failed: list[logging.LogRecord] = []
    for handler in logging.getLogger("saferun").handlers:
        monkeypatch.setattr(handler, "handleError", failed.append)
    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)
    logging.getLogger("saferun.test").warning("still written")
    assert "still written" in now.getvalue() and failed == []
