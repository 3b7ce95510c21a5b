"""``saferun workflows``: list, inspect and roll back workflows.

``show`` is the operator's one-page answer to "what happened to this workflow and where is its money":
every section comes from the durable store (transitions, snapshots, decisions, saga steps, ledger),
never from a process's memory, so it is the same answer on every host.
"""

from __future__ import annotations

import asyncio
import getpass
from dataclasses import asdict
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Column, Table
from rich.text import Text

from saferun.cli.common import (
    cell,
    compact_json,
    console,
    duration,
    echo_json,
    orchestrator,
    state_cell,
    when,
)
from saferun.core.state_machine.models import WorkflowExecution
from saferun.domain.money import format_micro, to_micro
from saferun.domain.states import WorkflowState
from saferun.errors import InvalidTransition
from saferun.storage.schema import utcnow

app = typer.Typer(help="List, inspect and roll back workflows.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _amount(value: Any) -> str:
    """The config's exact Decimal escrow, shown the way the ledger shows micro-units."""
    return format_micro(to_micro(value, "escrow_amount"))


def _signed(micro: int) -> str:
    return ("+" if micro > 0 else "") + format_micro(micro)


@app.command("list")
def list_workflows(
    ctx: typer.Context,
    state: Annotated[
        WorkflowState | None, typer.Option("--state", help="Only workflows in this state.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 50,
    as_json: JsonFlag = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only workflow ids, one a line (WF=$(... | head -1)).")
    ] = False,
) -> None:
    """List workflows, newest first."""
    rows = orchestrator(ctx).list_workflows(state=state, limit=limit)
    if quiet:
        for wf in rows:
            typer.echo(wf.workflow_id)
        return
    if as_json:
        echo_json([wf.model_dump(mode="json") for wf in rows])
        return
    if not rows:
        console().print("No workflows" + (f" in state {state.value}." if state else "."))
        return
    table = Table(
        "ID", "Name", "State", "Checkpoints", Column("Escrow", justify="right"), "Updated", title="Workflows"
    )
    for wf in rows:
        table.add_row(
            cell(wf.workflow_id),
            cell(wf.config.name),
            state_cell(wf.status),
            cell(f"{wf.current_checkpoint}/{wf.total_checkpoints}"),
            cell(_amount(wf.config.escrow_amount)),
            cell(when(wf.updated_at)),
        )
    console().print(table)


@app.command("show")
def show_workflow(
    ctx: typer.Context,
    workflow_id: Annotated[str, typer.Argument(help="The workflow's id (wf_...).")],
    as_json: JsonFlag = False,
) -> None:
    """Show one workflow: config, state, transitions, snapshots, decisions, saga steps, ledger, escrow."""
    orch = orchestrator(ctx)
    wf = orch.get_workflow(workflow_id)  # WorkflowNotFound before anything else is read
    data: dict[str, Any] = {
        "workflow": wf.model_dump(mode="json"),
        "history": orch.history(workflow_id),
        "snapshots": [
            s.model_dump(mode="json", exclude={"execution_state"}) for s in orch.list_snapshots(workflow_id)
        ],
        "approvals": [
            {**req.model_dump(), "response": resp.model_dump() if resp else None}
            for req, resp in orch.approval_history(workflow_id)
        ],
        "saga_steps": orch.saga_steps(workflow_id),
        "ledger": orch.ledger_entries(workflow_id),
        "escrow": asdict(orch.escrow_position(workflow_id)),
    }
    if as_json:
        echo_json(data)
        return
    _render(wf, data)


def _render(wf: WorkflowExecution, data: dict[str, Any]) -> None:
    con = console()
    cfg = wf.config
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for label, value in (
        ("Workflow", Text(wf.workflow_id)),
        ("Name", cell(cfg.name)),
        ("Description", cell(cfg.description)),
        ("State", state_cell(wf.status)),
        ("Checkpoints", cell(f"{wf.current_checkpoint}/{wf.total_checkpoints} passed")),
        (
            "Parties",
            cell(
                f"poster {cfg.poster_id}, executor {cfg.executor_id}, supervisor {cfg.supervisor_id or '-'}"
            ),
        ),
        ("Escrow", cell(f"{_amount(cfg.escrow_amount)} (executor share {cfg.executor_share})")),
        ("Created / updated", cell(f"{when(wf.created_at)} / {when(wf.updated_at)}")),
        ("Result", cell(wf.result_uri)),
        ("Error", cell(wf.error_message, style="red" if wf.error_message else "")),
    ):
        head.add_row(label, value)
    con.print(head)

    cps = Table(
        "#",
        "Checkpoint",
        "Name",
        "Approval",
        "Rollback",
        "Timeout",
        "On timeout",
        "Weight",
        title="Configured checkpoints",
    )
    for i, cp in enumerate(cfg.checkpoints, 1):
        cps.add_row(
            cell(i),
            cell(cp.checkpoint_id),
            cell(cp.name),
            cell("yes" if cp.requires_approval else "no"),
            cell("yes" if cp.can_rollback else "no"),
            cell(f"{cp.timeout_seconds}s"),
            cell(cp.on_timeout),
            cell(cp.milestone_weight),
        )
    con.print(cps)

    hist = Table("Time", "Transition", "Event", "Actor", "Reason", title="Transitions")
    for h in data["history"]:
        hist.add_row(
            cell(when(h["at"])),
            cell(f"{h['from_state'] or '-'} -> {h['to_state']}"),
            cell(h["event"]),
            cell(h["actor"]),
            cell(h["reason"]),
        )
    con.print(hist)

    snaps = Table(
        "Seq", "Checkpoint", "Status", "Artifact", "Raw B", "Compressed B", "New B", title="Snapshots"
    )
    for s in data["snapshots"]:
        label = s["checkpoint_id"] + (f" ({s['label']})" if s["label"] != s["checkpoint_id"] else "")
        snaps.add_row(
            cell(s["sequence"]),
            cell(label),
            cell(s["status"]),
            cell(s["artifact_uri"]),
            cell(s["raw_size_bytes"]),
            cell(s["compressed_size_bytes"]),
            cell(s["new_bytes"]),
        )
    con.print(snaps)

    appr = Table(
        "Request",
        "Checkpoint",
        "Status",
        "Requested",
        "Decision",
        "By",
        "Rationale",
        "Modifications",
        title="Approvals",
    )
    for a in data["approvals"]:
        resp = a["response"] or {}
        by = resp.get("approved_by")
        appr.add_row(
            cell(a["request_id"]),
            cell(a["checkpoint_name"]),
            cell(a["status"]),
            cell(when(a["created_at"])),
            cell(resp.get("decision")),
            cell(f"{by} (automatic)" if resp.get("automatic") else by),
            cell(resp.get("rationale")),
            cell(compact_json(resp.get("modifications"))),
        )
    con.print(appr)

    steps = Table("Seq", "Step", "Compensation", "Status", "Attempts", "Last error", title="Saga steps")
    for st in data["saga_steps"]:
        steps.add_row(
            cell(st["seq"]),
            cell(st["name"]),
            cell(st["compensation"]),
            cell(st["status"]),
            cell(st["attempts"]),
            cell(st["last_error"]),
        )
    con.print(steps)

    ledger = Table("Time", "Kind", "Memo", "Account", Column("Amount", justify="right"), title="Ledger")
    for e in data["ledger"]:
        for i, leg in enumerate(e["legs"]):
            # a posting's legs share one time/kind/memo: print those once, on its first leg
            head = (
                (cell(when(e["created_at"])), cell(e["kind"]), cell(e["memo"])) if i == 0 else (Text(),) * 3
            )
            ledger.add_row(*head, cell(leg["account"]), cell(_signed(leg["amount_micro"])))
    con.print(ledger)

    pos = data["escrow"]
    con.print(
        Text(
            "Escrow: "
            + ", ".join(f"{k} {format_micro(pos[k])}" for k in ("locked", "released", "refunded", "held"))
        )
    )


@app.command("finish")
def finish_workflow(
    ctx: typer.Context,
    workflow_id: Annotated[str, typer.Argument(help="A workflow in state settling.")],
) -> None:
    """Complete a workflow left SETTLING (its agent died after settling): refund the unearned escrow.

    Exits 1 when the workflow is not settling; a completed workflow is reported and exits 0."""
    orch = orchestrator(ctx)
    if orch.get_workflow(workflow_id).current_state == WorkflowState.COMPLETED:
        console().print(Text(f"Workflow {workflow_id} is already completed."))
        return
    try:
        wf = orch.complete_workflow(workflow_id)
    except InvalidTransition:
        # the sweep (or a restarted agent) completed it between the read above and this call
        if orch.get_workflow(workflow_id).current_state != WorkflowState.COMPLETED:
            raise
        console().print(Text(f"Workflow {workflow_id} is already completed."))
        return
    console().print(Text(f"Workflow {workflow_id} is now {wf.current_state.value}.", style="green"))


@app.command("rollback")
def rollback_workflow(
    ctx: typer.Context,
    workflow_id: Annotated[str, typer.Argument(help="A workflow in state rolling_back.")],
) -> None:
    """Run the compensations of a rejected workflow now and resume it from its last approved checkpoint.

    Compensation names must resolve in this process (register them via SAFERUN_COMPENSATIONS); exits 1
    when one is missing or fails.
    """
    report = orchestrator(ctx).rollback(workflow_id)
    con = console()
    done = ", ".join(report.compensated) or "none"
    con.print(Text(f"Compensated {len(report.compensated)} step(s): {done}"))
    if report.failed:
        console(stderr=True).print(
            Text(f"error: rollback failed at step {report.failed!r}: {report.error}", style="red")
        )
        con.print(Text(f"Workflow {workflow_id} is now {report.final_state}."))
        raise typer.Exit(1)
    if report.final_state == WorkflowState.EXECUTING.value:
        restored = report.restored_checkpoint_id or "the start (nothing approved yet)"
        con.print(
            Text(f"Workflow {workflow_id} resumed from {restored}; it is now executing.", style="green")
        )
    else:
        con.print(
            Text(
                f"Workflow {workflow_id} is {report.final_state} (another process is finishing the "
                "rollback).",
                style="yellow",
            )
        )


@app.command("stuck")
def stuck_workflows(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List work that needs an operator: rolling back or settling past the rollback grace, nobody
    finishing it (typically a compensation no running process has registered). Oldest first."""
    orch = orchestrator(ctx)
    now = utcnow()
    items = orch.stuck_workflows(now)
    if as_json:
        echo_json([i.as_dict(now) for i in items])
        return
    if not items:
        console().print("Nothing is stuck.")
        return
    table = Table("ID", "Name", "State", "For", "Left to undo", "Why", title="Needs attention")
    for i in items:
        left = ", ".join(f"{s['name']} ({s['compensation']})" for s in i.steps) or "-"
        table.add_row(
            cell(i.workflow_id),
            cell(i.name),
            state_cell(i.state),
            cell(duration(i.age_seconds(now))),
            cell(left),
            cell(i.reason),
        )
    console().print(table)
    console().print(
        "Resolve: saferun workflows resolve WORKFLOW_ID retry | mark-compensated --reason ... | "
        "fail --reason ..."
    )


class Action(StrEnum):
    retry = "retry"
    mark_compensated = "mark-compensated"
    fail = "fail"


@app.command("resolve")
def resolve_workflow(
    ctx: typer.Context,
    workflow_id: Annotated[str, typer.Argument(help="A stuck workflow (rolling_back or settling).")],
    action: Annotated[
        Action,
        typer.Argument(
            help="retry: run the rollback (or finish settling) here; mark-compensated: you undid the side "
            "effects by hand, the workflow resumes from its last approved checkpoint; fail: it fails with "
            "each side effect named as NOT undone."
        ),
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (required for mark-compensated and fail; audited).")
    ] = "",
    by: Annotated[str, typer.Option("--by", help="Who resolves it (the audit actor).")] = "",
) -> None:
    """Resolve stuck work with a consequence you choose; the reason goes into the audit chain."""
    orch = orchestrator(ctx)
    actor = by or f"cli:{getpass.getuser()}"
    done = asyncio.run(orch.resolve_stuck(workflow_id, action.value.replace("-", "_"), reason, actor=actor))
    style = "green" if done.state != WorkflowState.FAILED.value else "yellow"
    console().print(Text(f"Workflow {workflow_id} is now {done.state}: {done.outcome}", style=style))


@app.command("fork")
def fork_workflow(
    ctx: typer.Context,
    workflow_id: Annotated[str, typer.Argument(help="The source workflow (never changed).")],
    checkpoint: Annotated[
        str, typer.Option("--from", help="An approved checkpoint of the source (its id, or a snapshot id).")
    ],
    escrow: Annotated[
        str | None, typer.Option("--escrow", help="The fork's escrow (default: the source's amount).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="The fork's name.")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="key=value: change a parameter of the forked state (repeatable)."),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who forks (recorded in the audit chain).")] = None,
) -> None:
    """Start a new workflow from an approved checkpoint's state: its own escrow and audit chain (linked
    to the source), the source's remaining checkpoints; side effects are not replayed. An agent then
    runs it with ``attach(NEW_ID)``."""
    from saferun.cli.approvals import parse_modifications

    orch = orchestrator(ctx)
    mods = parse_modifications(sets or [], None) if sets else None
    fork = orch.fork_workflow(
        workflow_id,
        checkpoint,
        actor=by or "saferun:cli",
        escrow_amount=escrow,
        name=name,
        modifications=mods,
    )
    console().print(
        Text(
            f"Forked {workflow_id} at {checkpoint} into {fork.workflow_id} ({fork.current_state.value}, "
            f"{len(fork.config.checkpoints)} checkpoint(s) to go, escrow {fork.config.escrow_amount}).",
            style="green",
        ),
        soft_wrap=True,
    )


@app.command("bulk-create")
def bulk_create(
    ctx: typer.Context,
    path: Annotated[
        str,
        typer.Argument(
            help="JSON Lines, one paused workflow a line: {config, state, summary, context?, review?} "
            "(review: decision_needed, recommendation, confidence, risk, alerts, parameter_schema)."
        ),
    ],
    per_transaction: Annotated[
        int, typer.Option("--per-transaction", min=1, max=5000, help="Workflows per commit.")
    ] = 500,
) -> None:
    """Create many workflows paused for approval at once (initialize, start and pause each), with the rows
    the engine writes, hundreds per transaction: for migrations, load tests and demos."""
    import json
    import time

    import pydantic

    from saferun.core.bulk import PausedWorkflow, create_paused
    from saferun.core.state_machine.models import ExecutionState, WorkflowConfig
    from saferun.errors import InvalidInput

    items = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                if not isinstance(raw, dict):
                    raise ValueError("expected a JSON object")
                items.append(
                    PausedWorkflow(
                        config=WorkflowConfig.model_validate(raw.get("config")),
                        state=ExecutionState.model_validate(raw.get("state")),
                        summary=str(raw.get("summary") or ""),
                        context=raw.get("context"),
                        review=dict(raw.get("review") or {}),
                    )
                )
            except (ValueError, pydantic.ValidationError) as exc:
                first = (
                    str(exc).splitlines()[0]
                    if not isinstance(exc, pydantic.ValidationError)
                    else (".".join(str(p) for p in exc.errors()[0]["loc"]) + ": " + exc.errors()[0]["msg"])
                )
                raise InvalidInput(f"line {n}", first) from None
    start = time.perf_counter()
    made = create_paused(orchestrator(ctx), items, per_transaction=per_transaction)
    took = time.perf_counter() - start
    rate = len(made) / took if took > 0 else 0.0
    console().print(f"Created {len(made)} paused workflows in {took:.1f} s ({rate:,.0f}/s).")
