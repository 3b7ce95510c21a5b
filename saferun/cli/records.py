"""``saferun export`` / ``saferun verify`` / ``saferun keys``: signed decision records from a terminal.

``verify`` is the offline check a third party runs: it needs the bundle and the keys it trusts (the
answer of ``GET /api/signing-keys`` saved to a file, or this deployment's own keys when run where the
database is), never the server that made the bundle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from saferun.cli.common import CliState, console, orchestrator
from saferun.core.bundles import BundleError, export_bundle, verify_bundle
from saferun.core.signing import KeyRing, PublicKey, public_keys_from
from saferun.errors import InvalidInput

keys_app = typer.Typer(help="The Ed25519 keys that sign exported decision records.", no_args_is_help=True)


def _ring(ctx: typer.Context) -> KeyRing:
    state = ctx.ensure_object(CliState)
    key_file = state.settings.signing_key_file if state.settings else None
    return KeyRing(orchestrator(ctx).db, key_file=key_file)


def export(
    ctx: typer.Context,
    workflow_id: Annotated[str, typer.Argument(help="The workflow to export.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: saferun-<id>.bundle.json).")
    ] = None,
) -> None:
    """Write a workflow's signed, self-contained decision record (audit chain, decisions, ledger,
    artifacts); refused when its audit chain does not verify."""
    bundle = export_bundle(orchestrator(ctx).db, _ring(ctx), workflow_id)
    path = output or Path(f"saferun-{workflow_id}.bundle.json")
    path.write_bytes(bundle)
    console().print(Text(f"wrote {path} ({len(bundle):,} bytes), signed by key {_ring(ctx).signer().key_id}"))


def verify(
    ctx: typer.Context,
    bundle: Annotated[
        Path, typer.Argument(help="A bundle written by 'saferun export'.", exists=True, dir_okay=False)
    ],
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys", help="Trusted keys: GET /api/signing-keys saved to a file (default: this database's)."
        ),
    ] = None,
) -> None:
    """Check a bundle offline: signature by a trusted key, audit chain, every decision and posting, every
    artifact byte. Exit 1 naming the first problem."""
    trusted: dict[str, PublicKey]
    if keys is not None:
        try:
            trusted = public_keys_from(json.loads(keys.read_text()))
        except (OSError, ValueError) as exc:
            raise InvalidInput("--keys", f"cannot read trusted keys from {keys}: {exc}") from None
    else:
        trusted = {k.key_id: k for k in _ring(ctx).public_keys()}
    try:
        report = verify_bundle(bundle.read_bytes(), trusted)
    except BundleError as exc:
        console().print(Text(f"INVALID: {bundle}: {exc.message}", style="red"), soft_wrap=True)
        raise typer.Exit(1) from None
    s = report.summary
    console().print(
        Text(
            f"OK: {bundle} is workflow {report.workflow_id} ({s['workflow']['state']}), signed by key "
            f"{report.key_id}; {report.events} audit events, {report.decisions} decision(s), "
            f"{report.postings} ledger posting(s), {report.artifacts} artifact(s) verified",
            style="green",
        ),
        soft_wrap=True,
    )
    for d in s["decisions"]:
        console().print(
            Text(f"  {d['decided_at']}  {d['decision']:<8} by {d['approved_by']}  request {d['request_id']}")
        )


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """Every signing key's id and public half; the active one is the newest unretired."""
    for key in _ring(ctx).public_keys():
        status = f"retired {key.retired_at:%Y-%m-%d %H:%M}" if key.retired_at else "active"
        console().print(Text(f"{key.key_id}  Ed25519  {key.public_key.hex()}  {status}"))


@keys_app.command("rotate")
def keys_rotate(ctx: typer.Context) -> None:
    """Sign with a new key from now on; older keys stay published so their bundles still verify."""
    key = _ring(ctx).rotate()
    console().print(Text(f"new signing key {key.key_id}; earlier keys retired (still published)"))
