"""What every ``saferun`` sub-command shares: the orchestrator for this invocation and output helpers.

The orchestrator is built lazily from the root ``--database-url`` (falling back to ``DATABASE_URL`` /
``SAFERUN_HOME``), so ``saferun --help`` and usage errors never touch a database. Rich is used for
people; ``--json`` output goes through plain ``typer.echo`` so pipes get exactly one JSON document,
never wrapped or colored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from saferun.config import Settings
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import get_database

STATE_STYLES = {
    "initialized": "cyan",
    "executing": "blue",
    "awaiting_approval": "yellow",
    "rolling_back": "magenta",
    "settling": "cyan",
    "completed": "green",
    "failed": "red",
}


@dataclass
class CliState:
    """Per-invocation settings from the root callback, kept on the Click context (``ctx.obj``)."""

    database_url: str | None = None
    log_level: str = "INFO"
    settings: Settings | None = None
    _orchestrator: WorkflowOrchestrator | None = None


def orchestrator(ctx: typer.Context) -> WorkflowOrchestrator:
    """The invocation's orchestrator; its pooled connections are closed when the command ends."""
    state = ctx.ensure_object(CliState)  # a sub-app run on its own gets the configured database
    if state._orchestrator is None:
        database = get_database(state.database_url)
        state._orchestrator = WorkflowOrchestrator(database=database, actor="saferun:cli")
        # A CLI run is one short process; don't leave PostgreSQL connections idling in the shared pool.
        ctx.find_root().call_on_close(database.dispose)
    return state._orchestrator


def console(*, stderr: bool = False) -> Console:
    """A Rich console; when output is not a terminal it is wide, so ids in tables never wrap or get cut."""
    con = Console(stderr=stderr, highlight=False, emoji=False)
    if not con.is_terminal and not os.environ.get("COLUMNS"):
        con = Console(stderr=stderr, highlight=False, emoji=False, width=220)
    return con


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str, sort_keys=False))


def cell(value: Any, style: str = "") -> Text:
    """A table cell as literal text: user content like ``[bold]`` must not be read as Rich markup."""
    return Text("-" if value is None or value == "" else str(value), style=style)


def state_cell(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def duration(seconds: float) -> str:
    """Compact time left: ``45s``, ``4m 05s``, ``2h 10m``, ``3d 4h``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def compact_json(value: Any) -> str:
    return "-" if value in (None, {}, []) else json.dumps(value, separators=(",", ":"), default=str)
