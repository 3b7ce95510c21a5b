"""``saferun policy``: check an approval policy file and test it before it goes live.

``test`` answers the question a risk owner asks before shipping a new version: "what would this policy
have done?" — against cases written by hand (with the expected verdict, so it can run in CI) or against
the checkpoints this deployment really recorded, beside what people actually decided.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table
from rich.text import Text
from sqlalchemy import select

from saferun.cli.common import console, orchestrator
from saferun.core.policy_gate import case_for
from saferun.domain import approval_policy
from saferun.domain.approval_policy import Case, Policy
from saferun.errors import InvalidInput
from saferun.storage import ledger as book
from saferun.storage.schema import approval_requests, approval_responses, workflows

app = typer.Typer(
    help="Approval policy as code: check a policy file, test it on cases or recorded checkpoints."
)

PolicyFile = Annotated[Path, typer.Argument(help="The policy (YAML).", exists=True, dir_okay=False)]


def _load(path: Path) -> Policy:
    return approval_policy.load(path.read_text(), str(path))


@app.command("check")
def check(path: PolicyFile) -> None:
    """Load the policy and list its rules; exit 1 naming the first rule that is wrong."""
    policy = _load(path)
    console().print(Text(f"OK: policy {policy.label}, {len(policy.rules)} rule(s), default {policy.default}"))
    for rule in policy.rules:
        who = f" [quorum: {rule.quorum.text}]" if rule.quorum is not None else ""
        console().print(Text(f"  {rule.id:<12} {rule.then:<17} {rule.description}{who}".rstrip()))


def _says(verdict: approval_policy.Verdict) -> str:
    """The action, and for a quorum who decides: ``require_approval (2 of risk_officers)``."""
    if verdict.quorum is None:
        return verdict.action
    return f"{verdict.action} ({verdict.quorum.approvals} of {verdict.quorum.of})"


@app.command("test")
def test(
    ctx: typer.Context,
    path: PolicyFile,
    cases: Annotated[
        Path | None,
        typer.Argument(
            help="YAML/JSON list of cases (checkpoint, parameters, confidence, ..., expect).", dir_okay=False
        ),
    ] = None,
    recorded: Annotated[
        int | None,
        typer.Option("--recorded", min=1, max=100_000, help="Replay the last N recorded checkpoints."),
    ] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", help="Only this workflow's checkpoints.")
    ] = None,
) -> None:
    """What the policy decides for each case. With ``expect`` in the cases, exit 1 when any differs;
    with ``--recorded N``, the last N checkpoints this store holds, beside what people decided."""
    policy = _load(path)
    if (cases is None) == (recorded is None):
        raise InvalidInput("cases", "give a cases file or --recorded N (one of them)")
    table = Table("case", "checkpoint", "policy says", "rule", "expected" if cases else "people decided")
    mismatches = 0
    if cases is not None:
        for i, item in enumerate(_cases(cases)):
            case, expect = approval_policy.case_from_dict(item, f"cases[{i}]")
            verdict = policy.evaluate(case)
            ok = expect is None or verdict.action == expect
            mismatches += not ok
            table.add_row(
                str(item.get("name", i)),
                case.checkpoint_id,
                _says(verdict),
                verdict.rule or "(default)",
                Text(expect or "-", style="green" if ok else "red"),
            )
    else:
        for name, case, decided in _recorded(ctx, recorded or 0, workflow):
            verdict = policy.evaluate(case)
            table.add_row(name, case.checkpoint_id, _says(verdict), verdict.rule or "(default)", decided)
    console().print(table)
    if mismatches:
        console().print(
            Text(f"{mismatches} case(s) not decided as expected by policy {policy.label}", style="red")
        )
        raise typer.Exit(1)
    console().print(
        Text(f"policy {policy.label}: {table.row_count} case(s)" + (", all as expected" if cases else ""))
    )


def _cases(path: Path) -> list[dict[str, Any]]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput("cases", f"cannot read {path}: {exc}") from None
    items = doc.get("cases") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not all(isinstance(c, dict) for c in items):
        raise InvalidInput("cases", "expected a list of cases (or {cases: [...]})")
    return items


def _recorded(ctx: typer.Context, limit: int, workflow: str | None) -> list[tuple[str, Case, str]]:
    """The last ``limit`` requests (oldest first), each as the policy would have seen it when it opened."""
    db = orchestrator(ctx).db
    out: list[tuple[str, Case, str]] = []
    with db.read() as conn:
        query = (
            select(approval_requests, approval_responses.c.decision, approval_responses.c.approved_by)
            .outerjoin(approval_responses, approval_responses.c.request_id == approval_requests.c.request_id)
            .order_by(approval_requests.c.created_at.desc(), approval_requests.c.request_id)
            .limit(limit)
        )
        if workflow is not None:
            query = query.where(approval_requests.c.workflow_id == workflow)
        rows = list(conn.execute(query).mappings())
        for r in reversed(rows):
            wf = (
                conn.execute(select(workflows).where(workflows.c.workflow_id == r["workflow_id"]))
                .mappings()
                .one()
            )
            case = case_for(conn, wf, r["checkpoint_name"], dict(r))
            released = book.escrow_position(conn, r["workflow_id"], before=r["created_at"]).released
            case = Case(**{**case.__dict__, "spend": Decimal(released) / 1_000_000})
            decided = f"{r['decision']} by {r['approved_by']}" if r["decision"] else r["status"]
            out.append((r["request_id"], case, decided))
    return out
