"""``saferun config show``: the effective configuration, where each value came from, secrets masked."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from saferun import config
from saferun.cli.common import cell, console, echo_json

app = typer.Typer(help="The effective configuration (environment, .env, defaults).", no_args_is_help=True)


@app.command("show")
def show(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: name -> value, source.")] = False,
    changed: Annotated[bool, typer.Option("--changed", help="Only settings not at their default.")] = False,
) -> None:
    """Every setting SafeRun reads, its value (keys, secrets and passwords as ***) and its source."""
    rows = config.effective(config.check())
    if as_json:
        echo_json({name: {"value": value, "source": source} for name, value, source in rows})
        return
    table = Table("setting", "value", "source", box=None, pad_edge=False)
    for name, value, source in rows:
        if not changed or source != "default":
            table.add_row(cell(name), cell(value), cell(source, "dim" if source == "default" else ""))
    console().print(table)
