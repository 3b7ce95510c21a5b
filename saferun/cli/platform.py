"""``saferun platform``: the embedded x402 platform from a terminal.

Jobs, escrow balances and ledger entries of a workflow; the supervisor marketplace (register, find,
rate); and the outbox of calls owed to a remote platform. Everything reads and writes the configured
database through the same code the API uses (``EmbeddedPlatform``, the orchestrator), so a rating given
here moves a reputation exactly as one given over HTTP does.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from saferun.cli.common import cell, compact_json, console, echo_json, orchestrator, when
from saferun.domain.money import format_micro
from saferun.platform.embedded import EmbeddedPlatform
from saferun.storage import jobs as job_store
from saferun.storage import ledger as book
from saferun.storage import outbox

app = typer.Typer(
    help="The x402 platform: jobs, balances, ledger entries, supervisors and the outbox.",
    no_args_is_help=True,
)

WorkflowId = Annotated[str, typer.Argument(help="The workflow's id.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _platform(ctx: typer.Context) -> EmbeddedPlatform:
    return EmbeddedPlatform(orchestrator(ctx).db)


@app.command("jobs")
def jobs(ctx: typer.Context, workflow_id: WorkflowId, as_json: AsJson = False) -> None:
    """The workflow's main job, its approval sub-jobs and its settlement job, with status history."""
    orch = orchestrator(ctx)
    orch.get_workflow(workflow_id)  # NotFound for an unknown workflow, not an empty table
    platform = EmbeddedPlatform(orch.db)
    with orch.db.read() as conn:
        ids = [row["job_id"] for row in job_store.for_workflow(conn, workflow_id)]
    found = [asyncio.run(platform.get_job(job_id)) for job_id in ids]
    if as_json:
        echo_json(found)
        return
    table = Table(title=f"Jobs of {workflow_id}")
    for column in ("job", "type", "parent", "status", "history", "data"):
        table.add_column(column)
    for job in found:
        history = " > ".join(
            f"{h['status']}" + (f" ({h['reason']})" if h["reason"] else "") for h in job["history"]
        )
        table.add_row(
            cell(job["job_id"]),
            cell(job["job_type"]),
            cell(job["parent_job_id"]),
            cell(job["status"]),
            cell(history),
            cell(compact_json(job["data"])),
        )
    console().print(table)


@app.command("balances")
def balances(ctx: typer.Context, workflow_id: WorkflowId, as_json: AsJson = False) -> None:
    """Where the workflow's escrow is (locked, released, refunded, held) and what each party received."""
    orch = orchestrator(ctx)
    wf = orch.get_workflow(workflow_id)
    position = orch.escrow_position(workflow_id)  # checked against the chain (Tampered, never a forgery)
    with orch.db.read() as conn:
        received = book.payments(conn, workflow_id)
        wallets = {
            account: book.balance(conn, account)
            for account in sorted({*received, *(f"wallet:{p}" for p in _parties(wf))})
        }
    data = {
        "workflow_id": workflow_id,
        "escrow": {
            "locked": format_micro(position.locked),
            "released": format_micro(position.released),
            "refunded": format_micro(position.refunded),
            "held": format_micro(position.held),
            "invariant_holds": position.invariant_holds(),
        },
        "received_from_this_workflow": {k: format_micro(v) for k, v in received.items()},
        "balances": {k: format_micro(v) for k, v in wallets.items()},
    }
    if as_json:
        echo_json(data)
        return
    table = Table(title=f"Escrow of {workflow_id}")
    table.add_column("")
    table.add_column("amount", justify="right")
    for key, value in data["escrow"].items():
        table.add_row(key, cell(value))
    console().print(table)
    accounts = Table(title="Accounts")
    for column in ("account", "from this workflow", "balance now"):
        accounts.add_column(column, justify="right" if column != "account" else "left")
    for account in sorted({*received, *wallets}):
        accounts.add_row(
            cell(account),
            cell(data["received_from_this_workflow"].get(account)),
            cell(data["balances"].get(account)),
        )
    console().print(accounts)


def _parties(wf: Any) -> list[str]:
    return [p for p in (wf.config.poster_id, wf.config.executor_id, wf.supervisor_id) if p]


@app.command("ledger")
def ledger(ctx: typer.Context, workflow_id: WorkflowId, as_json: AsJson = False) -> None:
    """Every double-entry posting of the workflow, in order, with its legs (amounts are exact)."""
    orch = orchestrator(ctx)
    orch.get_workflow(workflow_id)
    entries = orch.ledger_entries(workflow_id)
    if as_json:
        echo_json(
            [
                {**e, "legs": [{**leg, "amount": format_micro(leg["amount_micro"])} for leg in e["legs"]]}
                for e in entries
            ]
        )
        return
    table = Table(title=f"Ledger of {workflow_id}")
    for column in ("at", "kind", "key", "account", "amount"):
        table.add_column(column, justify="right" if column == "amount" else "left")
    for entry in entries:
        for i, leg in enumerate(entry["legs"]):
            first = i == 0
            table.add_row(
                when(entry["created_at"]) if first else "",
                cell(entry["kind"]) if first else Text(""),
                cell(entry["idempotency_key"]) if first else Text(""),
                cell(leg["account"]),
                cell(format_micro(leg["amount_micro"]), "green" if leg["amount_micro"] > 0 else "red"),
            )
    console().print(table)


@app.command("register-supervisor")
def register_supervisor(
    ctx: typer.Context,
    supervisor_id: Annotated[str, typer.Argument(help="A registered identity with the supervisor role.")],
    specialty: Annotated[
        list[str], typer.Option("--specialty", help="A workflow type they review; repeat for several.")
    ],
    price: Annotated[str, typer.Option("--price", help="Price per approval, e.g. 2.50.")] = "0",
    unavailable: Annotated[bool, typer.Option("--unavailable", help="Listed, but not taking work.")] = False,
    as_json: AsJson = False,
) -> None:
    """Create or replace a supervisor's marketplace profile."""
    profile = asyncio.run(
        _platform(ctx).register_supervisor(supervisor_id, specialty, price, not unavailable)
    )
    if as_json:
        echo_json(profile)
        return
    console().print(
        Text(
            f"{profile['supervisor_id']}: {', '.join(profile['specialties'])} at "
            f"{profile['price_per_approval']} per approval, reputation {profile['reputation']}, "
            f"{'available' if profile['available'] else 'unavailable'}"
        )
    )


@app.command("supervisors")
def supervisors(
    ctx: typer.Context,
    workflow_type: Annotated[str, typer.Option("--type", help="The workflow type to match.")],
    min_reputation: Annotated[float, typer.Option("--min-reputation", help="0..1")] = 0.0,
    as_json: AsJson = False,
) -> None:
    """Available supervisors for a workflow type, best reputation first (the seed's find_supervisors)."""
    found = asyncio.run(_platform(ctx).find_supervisors(workflow_type, min_reputation))
    if as_json:
        echo_json(found)
        return
    table = Table(title=f"Supervisors for {workflow_type}")
    for column in ("supervisor", "reputation", "price", "specialties"):
        table.add_column(column)
    for s in found:
        table.add_row(
            cell(s["supervisor_id"]),
            cell(s["reputation"]),
            cell(s["price_per_approval"]),
            cell(", ".join(s["specialties"])),
        )
    console().print(table)


@app.command("rate")
def rate(
    ctx: typer.Context,
    workflow_id: WorkflowId,
    rating: Annotated[int, typer.Option("--rating", min=1, max=5, help="1 (poor) to 5 (excellent).")],
    review: Annotated[str, typer.Option("--review", help="A few words for the supervisor.")] = "",
    as_json: AsJson = False,
) -> None:
    """Rate the supervisor of an ended workflow (once per workflow); it moves their reputation."""
    result = asyncio.run(
        orchestrator(ctx).rate_supervisor(workflow_id, rating, review, rated_by="saferun:cli")
    )
    if as_json:
        echo_json(result)
        return
    console().print(
        Text(f"rated {result['supervisor_id']} {rating}/5; reputation now {result['reputation']}")
    )


@app.command("outbox")
def outbox_command(
    ctx: typer.Context,
    workflow_id: Annotated[str | None, typer.Option("--workflow", help="Only this workflow.")] = None,
    retry: Annotated[bool, typer.Option("--retry", help="Queue failed calls again.")] = False,
    as_json: AsJson = False,
) -> None:
    """Calls owed to a remote x402 platform (X402_API_URL), and whether each was delivered."""
    db = orchestrator(ctx).db
    if retry:
        with db.transaction() as conn:
            count = outbox.retry_failed(conn, workflow_id)
        console().print(Text(f"{count} failed call(s) queued again"))
    with db.read() as conn:
        rows = outbox.for_workflow(conn, workflow_id)
    if as_json:
        echo_json([dict(r) for r in rows])
        return
    table = Table(title="Platform outbox")
    for column in ("key", "call", "status", "attempts", "last error", "delivered"):
        table.add_column(column)
    styles = {"delivered": "green", "pending": "yellow", "failed": "red"}
    for r in rows:
        table.add_row(
            cell(r["idempotency_key"]),
            cell(r["operation"]),
            cell(r["status"], styles.get(r["status"], "")),
            cell(r["attempts"]),
            cell(r["last_error"]),
            when(r["delivered_at"]),
        )
    console().print(table)


@app.command("mint")
def mint_tokens(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="A 0x address (the poster's x402 wallet).")],
    amount: Annotated[str, typer.Argument(help="Token amount, e.g. 25.00 (USDC has 6 decimals).")],
) -> None:
    """Give a wallet test tokens on the local facilitator's ledger (local facilitator only)."""
    from saferun.domain.money import to_micro
    from saferun.payments import balance_of, mint

    db = orchestrator(ctx).db
    tx = mint(db, address, to_micro(amount, "amount", allow_zero=False))
    console().print(
        Text(f"minted {amount} to {address} ({tx}); balance {format_micro(balance_of(db, address))}")
    )


@app.command("token-balance")
def token_balance(
    ctx: typer.Context, address: Annotated[str, typer.Argument(help="A 0x address.")], as_json: AsJson = False
) -> None:
    """What a wallet holds on the local facilitator's token ledger."""
    from saferun.payments import balance_of

    amount = balance_of(orchestrator(ctx).db, address)
    if as_json:
        echo_json({"address": address, "balance": format_micro(amount), "balance_micro": amount})
        return
    console().print(Text(f"{address}: {format_micro(amount)}"))
