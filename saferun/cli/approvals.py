"""``saferun approvals``: see what waits for a human and decide it from a terminal.

Decisions go through ``WorkflowOrchestrator.submit_approval`` exactly like the API's, so the CLI gets
the same guarantees: each request is decided once (a second decision is a conflict), a modification is
checked against the parameters the agent proposed, and state, ledger and audit change together.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from saferun.cli.common import cell, console, duration, echo_json, orchestrator, state_cell
from saferun.core.state_machine.models import ApprovalDecision, ApprovalRequest, ApprovalResponse
from saferun.domain import parameter_schema, review_digest
from saferun.domain.canonical import MAX_DEPTH, json_depth
from saferun.domain.quorum import QuorumRule, votes_line
from saferun.errors import ApprovalRequestNotFound, SafeRunError
from saferun.storage.approvals import level_of
from saferun.storage.queue import QueueFilter
from saferun.storage.schema import utcnow

app = typer.Typer(help="List pending approval requests and decide them.", no_args_is_help=True)

RequestId = Annotated[str, typer.Argument(help="The approval request's id (req_...).")]
By = Annotated[str, typer.Option("--by", help="Who decides (recorded with the decision and in the audit).")]
Digest = Annotated[
    str | None,
    typer.Option(
        "--digest",
        help="The review digest 'approvals show' printed: the decision is refused (stale_review, nothing "
        "decided) if the request changed since. One request only.",
        show_default=False,
    ),
]


def _advice(req: ApprovalRequest) -> str:
    if req.recommendation is None and req.confidence is None:
        return "-"
    conf = f" ({req.confidence:.0%})" if req.confidence is not None else ""
    return f"{req.recommendation or '?'}{conf}"


def _seconds(text: str | None, option: str) -> int | None:
    """``600``, ``10m``, ``2h`` or ``1d`` as seconds (the API's filters take seconds)."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    scale = units.get(raw[-1:], 0)
    number = raw[:-1] if scale else raw
    if not number.isdigit():
        raise typer.BadParameter(
            f"expected seconds or a duration like 10m, 2h, 1d; got {text!r}", param_hint=option
        )
    return int(number) * (scale or 1)


@app.command("list")
def list_pending(
    ctx: typer.Context,
    workflow: Annotated[str | None, typer.Option("--workflow", help="Only this workflow's requests.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Requests per page (1-500).")] = 50,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="The next-page cursor a previous list printed.")
    ] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Only requests assigned to --by.")] = False,
    by: Annotated[str | None, typer.Option("--by", help="Who you are (for --mine).")] = None,
    assigned_to: Annotated[
        str | None, typer.Option("--assigned-to", help="Only requests assigned to this supervisor.")
    ] = None,
    risk: Annotated[
        str | None, typer.Option("--risk", help="low, medium, high, critical, or none (not assessed).")
    ] = None,
    expiring_within: Annotated[
        str | None, typer.Option("--expiring-within", help="Expiring within this long (600, 10m, 2h, 1d).")
    ] = None,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Waiting at least this long.")
    ] = None,
    newer_than: Annotated[
        str | None, typer.Option("--newer-than", help="Opened at most this long ago.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only request ids, one a line (REQ=$(... | head -1)).")
    ] = False,
) -> None:
    """List pending requests, soonest expiry first, one page at a time (the API's filters and cursors).
    Requests already past their timeout are resolved first."""
    if mine and not by:
        raise typer.BadParameter("say who you are with --by", param_hint="--mine")
    if mine and assigned_to and assigned_to != by:
        raise typer.BadParameter("contradicts --mine --by", param_hint="--assigned-to")
    orch = orchestrator(ctx)
    if workflow is not None:
        orch.get_workflow(workflow)  # an unknown id is an error, not an empty list
    flt = QueueFilter(
        workflow_id=workflow,
        assigned_to=by if mine else assigned_to,
        risk=risk,
        expiring_within=_seconds(expiring_within, "--expiring-within"),
        older_than=_seconds(older_than, "--older-than"),
        newer_than=_seconds(newer_than, "--newer-than"),
    )
    page = orch.pending_page(flt, limit=limit, cursor=cursor)
    if quiet:
        for item in page.items:
            typer.echo(item.request.request_id)
        return
    if as_json:
        echo_json(
            {
                "pending_approvals": [
                    {**i.request.model_dump(mode="json"), "workflow_name": i.workflow_name}
                    for i in page.items
                ],
                "total": page.total,
                "limit": page.limit,
                "has_more": page.has_more,
                "next_cursor": page.next_cursor,
            }
        )
        return
    if not page.items:
        console().print(
            "No pending approval requests." if not flt.as_dict() else "No pending request matches."
        )
        return
    now = utcnow()
    table = Table(
        "Request",
        "Workflow",
        "Checkpoint",
        "Summary",
        "Risk",
        "Recommendation",
        "Assigned to",
        "Expires in",
        title=f"Pending approvals ({len(page.items)} of {page.total}, soonest expiry first)",
    )
    for item in page.items:
        req = item.request
        left = (req.expires_at - now).total_seconds()
        table.add_row(
            cell(req.request_id),
            cell(f"{item.workflow_name} ({req.workflow_id})"),
            cell(req.checkpoint_name),
            cell(req.summary),
            cell(level_of(req.risk)),
            cell(_advice(req)),
            cell(req.supervisor_id),
            cell(duration(left) if left > 0 else "expired"),
        )
    console().print(table)
    if page.next_cursor:
        console().print(Text(f"More: add --cursor {page.next_cursor}"))


def _decide(
    ctx: typer.Context,
    request_id: str,
    decision: ApprovalDecision,
    by: str,
    rationale: str,
    modifications: dict[str, Any] | None = None,
    digest: str | None = None,
) -> None:
    """Build the response (Pydantic checks it), submit it, and say where the workflow went."""
    if digest is not None and not review_digest.well_formed(digest):
        raise typer.BadParameter("expected 'sha256:' and 64 lowercase hex digits", param_hint="--digest")
    response = ApprovalResponse(
        request_id=request_id,
        decision=decision,
        rationale=rationale,
        approved_by=by,
        modifications=modifications,
        review_digest=digest,
    )
    orch = orchestrator(ctx)
    wf = orch.submit_approval(None, response)
    req = orch.get_approval_request(request_id) if wf.status == "awaiting_approval" else None
    asked = req if req is not None else orch.get_approval_request(request_id)
    # an item of a checkpoint that asked several things at once: say which, and what still waits
    item = f" (item {asked.item_key!r} of {asked.checkpoint_name!r})" if asked.item_key else ""
    waiting = 0
    if req is not None and req.group_id is not None:
        waiting = sum(1 for r, _ in orch.checkpoint_items(request_id) if r.status == "pending")
    if waiting:
        others = f"{waiting} other item{'s' if waiting != 1 else ''} of this checkpoint"
        console().print(
            Text(
                f"{decision.value} {request_id}{item} by {by}: recorded; {others} still wait, "
                "the workflow resumes when all are decided"
            )
        )
        return
    if req is not None and req.quorum is not None and req.status == "pending" and req.tally is not None:
        # a vote on a quorum request (docs/quorum.md) that did not decide it: say how far it got
        console().print(Text(f"Vote {decision.value} on {request_id} by {by} recorded; still pending."))
        console().print(Text(votes_line(req.tally, req.votes)))
        return
    line = Text(f"{decision.value} {request_id}{item} by {by}: workflow {wf.workflow_id} is now ")
    line.append_text(state_cell(wf.status))
    line.append(f" (checkpoints {wf.current_checkpoint}/{wf.total_checkpoints})")
    console().print(line)
    if wf.error_message:
        console().print(Text(wf.error_message, style="red"))


RequestIds = Annotated[
    list[str] | None, typer.Argument(help="One or more approval request ids (req_...).", show_default=False)
]
WorkflowOpt = Annotated[
    str | None, typer.Option("--workflow", help="Every pending request of this workflow.", show_default=False)
]


def _selected(ctx: typer.Context, request_ids: list[str] | None, workflow: str | None) -> list[str]:
    if bool(request_ids) == (workflow is not None):
        raise typer.BadParameter("give request ids or --workflow (one of the two)", param_hint="REQUEST_IDS")
    if workflow is not None:
        orch = orchestrator(ctx)
        orch.get_workflow(workflow)  # an unknown id is an error, not an empty batch
        return [r.request_id for r in orch.pending_approvals(workflow)]
    ids = list(request_ids or [])
    if len(set(ids)) != len(ids):
        raise typer.BadParameter("each request at most once", param_hint="REQUEST_IDS")
    return ids


def _decide_all(
    ctx: typer.Context,
    ids: list[str],
    decision: ApprovalDecision,
    by: str,
    rationale: str,
    digest: str | None = None,
) -> None:
    """One id: decided (an error exits 1). Several: each decided exactly once in turn; an item that is
    unknown, refused or already decided is reported and the rest go on; exit 1 if any was not decided."""
    if digest is not None and len(ids) != 1:
        raise typer.BadParameter("a review digest belongs to one request: give one id", param_hint="--digest")
    if len(ids) == 1:
        _decide(ctx, ids[0], decision, by, rationale, digest=digest)
        return
    if not ids:
        console().print("No pending approval requests.")
        return
    failed = 0
    for request_id in ids:
        try:
            _decide(ctx, request_id, decision, by, rationale)
        except SafeRunError as exc:
            failed += 1
            console().print(Text(f"{request_id}: not decided: {exc}", style="red"))
    console().print(f"{len(ids) - failed} of {len(ids)} {decision.value.lower()}")
    if failed:
        raise typer.Exit(1)


@app.command("approve")
def approve(
    ctx: typer.Context,
    by: By,
    request_ids: RequestIds = None,
    workflow: WorkflowOpt = None,
    rationale: Annotated[str, typer.Option("--rationale", help="Why (optional).")] = "",
    digest: Digest = None,
) -> None:
    """Approve one or more requests (ids, or --workflow for all its pending ones): each milestone is paid
    and each agent continues with the state it proposed."""
    ids = _selected(ctx, request_ids, workflow)
    _decide_all(ctx, ids, ApprovalDecision.APPROVED, by, rationale, digest)


def _loads_bounded(text: str, hint: str) -> Any:
    """``json.loads`` after a depth check that never recurses: a 100,000-deep argument is a clean error,
    not a RecursionError (or a crash, where the x402 stack raised the recursion limit)."""
    depth = json_depth(text.encode("utf-8", "surrogatepass"))
    if depth > MAX_DEPTH:
        raise typer.BadParameter(f"JSON nests {depth} levels deep; the limit is {MAX_DEPTH}", param_hint=hint)
    return json.loads(text)


def parse_modifications(
    sets: list[str], json_mods: str | None, schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``--json-mods`` first, then each ``--set key=value`` on top. A value is read as the checkpoint's
    parameter schema types it (``--set note=10`` is the text "10" for a string parameter, ``count=10`` the
    whole number 10); for a parameter the schema does not type, JSON if it parses, else text."""
    mods: dict[str, Any] = {}
    if json_mods:
        try:
            loaded = _loads_bounded(json_mods, "--json-mods")
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"not valid JSON ({exc})", param_hint="--json-mods") from None
        if not isinstance(loaded, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--json-mods")
        mods.update(loaded)
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="--set")
        name = key.strip()
        if parameter_schema.is_text(parameter_schema.property_schema(schema or {}, name)):
            mods[name] = raw  # a text parameter: "10" stays the text "10"
            continue
        try:
            mods[name] = _loads_bounded(raw, "--set")
        except json.JSONDecodeError:
            mods[name] = raw
    return mods


@app.command("modify")
def modify(
    ctx: typer.Context,
    request_id: RequestId,
    by: By,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="key=value, repeatable; 10 is a number, '\"10\"' a string, null removes."),
    ] = None,
    json_mods: Annotated[
        str | None,
        typer.Option("--json-mods", help='A JSON object merged into the parameters, e.g. {"k": 1}.'),
    ] = None,
    rationale: Annotated[str, typer.Option("--rationale", help="Why (optional).")] = "",
    digest: Digest = None,
) -> None:
    """Approve with changes: the modifications are merged (JSON merge patch) into the proposed parameters.

    What may change is the checkpoint's parameter schema (declared by the agent, or inferred from what it
    proposed): values are read as its types and checked by the same rules as the server and the dashboard.
    """
    try:
        schema = orchestrator(ctx).get_approval_request(request_id).parameter_schema
    except ApprovalRequestNotFound:
        schema = None  # the arguments are still checked first; the decision then names the unknown id
    _decide(
        ctx,
        request_id,
        ApprovalDecision.MODIFIED,
        by,
        rationale,
        parse_modifications(sets or [], json_mods, schema),
        digest,
    )


@app.command("reject")
def reject(
    ctx: typer.Context,
    by: By,
    rationale: Annotated[str, typer.Option("--rationale", help="Why (required: the agent is told).")],
    request_ids: RequestIds = None,
    workflow: WorkflowOpt = None,
    digest: Digest = None,
) -> None:
    """Reject one or more requests: a checkpoint that can roll back goes to rolling_back, one that cannot
    fails the workflow."""
    if not rationale.strip():
        raise typer.BadParameter("a rejection needs a reason", param_hint="--rationale")
    ids = _selected(ctx, request_ids, workflow)
    _decide_all(ctx, ids, ApprovalDecision.REJECTED, by, rationale, digest)


@app.command("show")
def show(
    ctx: typer.Context,
    request_id: RequestId,
    as_json: Annotated[bool, typer.Option("--json", help="The request as JSON.")] = False,
) -> None:
    """One request as a reviewer sees it (summary, parameters, alerts) and its review digest: pass that
    to approve/modify/reject with --digest and a request that changed since is not decided."""
    req = orchestrator(ctx).get_approval_request(request_id)
    if as_json:
        echo_json(req.model_dump(mode="json"))
        return
    out = console()
    out.print(Text(f"{req.request_id} ({req.status}) · {req.checkpoint_name} · workflow {req.workflow_id}"))
    out.print(Text(req.summary))
    out.print(Text(f"Asks: {req.decision_needed}"))
    out.print(Text(f"Advice: {_advice(req)}"))
    out.print(Text("Parameters: " + json.dumps(req.parameters, sort_keys=True)))
    for alert in req.alerts:
        out.print(Text("Alert: " + json.dumps(alert, sort_keys=True), style="yellow"))
    if req.quorum is not None and req.tally is not None:  # an M-of-N request (docs/quorum.md)
        out.print(Text(f"Quorum: {QuorumRule.model_validate(req.quorum).text}"))
        out.print(Text(votes_line(req.tally, req.votes)))
        for vote in req.votes:
            team = vote["team"] or "no team"
            out.print(Text(f"  {vote['voter']} ({team}): {vote['vote']} {vote['rationale']}".rstrip()))
        if req.status == "pending":
            out.print(Text(f"May still vote: {', '.join(req.may_still_vote or []) or 'nobody'}"))
    if req.review_digest:
        out.print(Text(f"Review digest: {req.review_digest}"))
        out.print(
            Text(
                f"Decide on exactly this: saferun approvals approve {req.request_id} --by NAME "
                f"--digest {req.review_digest}"
            )
        )
