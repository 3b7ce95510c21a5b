"""``saferun gc``: free the blobs and artifacts nothing refers to any more (``saferun.storage.gc``).

Safe to run while agents, servers and LangGraph graphs write (the sweep shuts writers out of the blob
table only for its own short transaction), on SQLite and PostgreSQL, from any replica, as often as wanted.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Annotated

import typer
from rich.text import Text

from saferun.cli.common import console, echo_json, orchestrator
from saferun.storage import gc as store_gc


def gc(
    ctx: typer.Context,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            min=0,
            help="Keep blobs and artifacts stored less than this many seconds ago (a caller may refer to "
            "an artifact in its next request).",
        ),
    ] = store_gc.DEFAULT_GRACE.total_seconds(),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be deleted; delete nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Delete blobs no snapshot, LangGraph checkpoint, workflow result or platform artifact reaches
    (a delta's base counts as reached), after 'prune' / 'delete_thread' / 'delete_for_runs'."""
    report = store_gc.collect(orchestrator(ctx).db, grace=timedelta(seconds=grace), dry_run=dry_run)
    if as_json:
        echo_json(asdict(report))
        return
    verb = "would delete" if dry_run else "deleted"
    console().print(
        Text(
            f"{report.blobs:,} blobs, {report.roots:,} referenced artifacts: {verb} {report.deleted_blobs:,} "
            f"blobs ({report.deleted_bytes:,} stored bytes) and {report.deleted_artifacts:,} artifacts"
            + (f"; kept {report.revived:,} referenced again during the run" if report.revived else "")
            + (f"; {report.dangling:,} referenced artifacts are not stored" if report.dangling else "")
        ),
        soft_wrap=True,
    )
