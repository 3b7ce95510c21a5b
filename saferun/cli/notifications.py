"""``saferun notifications``: what was sent to reviewers, what failed, and sending failed ones again.

Deliveries are sent by the server (``saferun serve``); this command only reads them and, with
``--retry``, puts failed ones back in its queue with a fresh attempt budget once the cause is fixed
(a webhook receiver that was down, a wrong SMTP password).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from saferun.cli.common import cell, console, echo_json, orchestrator, when
from saferun.storage import notifications as store
from saferun.storage.schema import utcnow

app = typer.Typer(
    help="Notices sent to reviewers (webhooks, e-mail) and their deliveries.", no_args_is_help=True
)


@app.command("list")
def list_deliveries(
    ctx: typer.Context,
    request_id: Annotated[str | None, typer.Option("--request", help="Only this approval request.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="pending | delivered | failed | skipped")
    ] = None,
    retry: Annotated[bool, typer.Option("--retry", help="Send the failed ones again.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Every delivery (one notice to one webhook or address), oldest first."""
    db = orchestrator(ctx).db
    if retry:
        with db.transaction() as conn:
            count = store.requeue_failed(conn, utcnow(), request_id)
        console(stderr=as_json).print(Text(f"{count} failed deliveries queued again"))
    with db.read() as conn:
        rows = [r for r in store.deliveries(conn, request_id) if status is None or r["status"] == status]
    # a target URL's user:password (and query values, often a token) are not shown: this output is pasted
    # into tickets and chats; the id identifies the delivery
    from saferun.outbound import mask_url

    rows = [{**r, "target": mask_url(r["target"]) if r["channel"] != "email" else r["target"]} for r in rows]
    if as_json:
        echo_json(rows)
        return
    table = Table(title="Notification deliveries")
    for column in (
        "id",
        "notice",
        "request",
        "channel",
        "target",
        "status",
        "attempts",
        "last error",
        "sent",
    ):
        table.add_column(column)
    styles = {"delivered": "green", "pending": "yellow", "failed": "red", "skipped": "dim"}
    for r in rows:
        table.add_row(
            cell(r["id"]),
            cell(r["kind"]),
            cell(r["request_id"]),
            cell(r["channel"]),
            cell(r["target"]),
            cell(r["status"], styles.get(r["status"], "")),
            cell(r["attempts"]),
            cell(r["last_error"]),
            when(r["delivered_at"]),
        )
    console().print(table)
