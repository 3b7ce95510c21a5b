"""``saferun identities``: who may use the server, with which roles, and their API keys.

A key's plaintext is printed once, when it is created; SafeRun keeps only its hash, so a lost key cannot
be shown again, only revoked and replaced. Lists show key ids (public, used to revoke) and never keys.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from saferun.cli.common import CliState, cell, console, echo_json, when
from saferun.core.identity import Identity, IdentityService, NewApiKey
from saferun.domain.policy import Role
from saferun.storage.database import get_database

app = typer.Typer(help="Manage identities, their roles and their API keys.", no_args_is_help=True)

IdentityId = Annotated[str, typer.Argument(help="The identity's id (e.g. human_789).")]
Roles = Annotated[
    list[Role] | None,
    typer.Option("--role", help="A role to grant; repeat for several.", case_sensitive=False),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

NOT_SHOWN_AGAIN = "Save this key now: it will not be shown again (SafeRun stores only its hash)."


def _service(ctx: typer.Context) -> IdentityService:
    """The invocation's service on the configured database; its connections close when the command ends."""
    state = ctx.ensure_object(CliState)
    database = get_database(state.database_url)
    ctx.find_root().call_on_close(database.dispose)
    return IdentityService(database)


def _roles_text(roles: frozenset[Role]) -> str:
    return ", ".join(sorted(r.value for r in roles)) or "-"


def _print_new_key(key: NewApiKey) -> None:
    con = console()
    con.print(Text(f"API key {key.key_id} for {key.identity_id}:"))
    con.print(Text(key.api_key, style="bold"), soft_wrap=True)
    con.print(Text(NOT_SHOWN_AGAIN, style="yellow"), soft_wrap=True)


def _key_json(identity: Identity, key: NewApiKey) -> dict[str, object]:
    return {
        "identity_id": identity.identity_id,
        "display_name": identity.display_name,
        "roles": sorted(r.value for r in identity.roles),
        "key_id": key.key_id,
        "api_key": key.api_key,
        "warning": NOT_SHOWN_AGAIN,
    }


@app.command("create")
def create(
    ctx: typer.Context,
    identity_id: Annotated[
        str | None, typer.Argument(help="The new identity's id; omitted, one is generated (id_...).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Display name (default: the id).")] = "",
    roles: Roles = None,
    label: Annotated[str, typer.Option("--label", help="Label of the first API key.")] = "initial",
    as_json: AsJson = False,
    key_only: Annotated[
        bool, typer.Option("--key-only", "-q", help="Print only the API key, for KEY=$(saferun ...).")
    ] = False,
) -> None:
    """Create an identity with its roles and a first API key (printed once)."""
    identity, key = _service(ctx).create_identity_with_key(identity_id, name, roles or [], key_label=label)
    if key_only:
        typer.echo(key.api_key)
        return
    if as_json:
        echo_json(_key_json(identity, key))
        return
    console().print(
        Text(
            f"Created identity {identity.identity_id} ({identity.display_name}) "
            f"with roles: {_roles_text(identity.roles)}"
        ),
        soft_wrap=True,
    )
    _print_new_key(key)


@app.command("list")
def list_identities(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List identities, their roles and how many active keys each has (never the keys)."""
    service = _service(ctx)
    people = service.list_identities()
    active: dict[str, int] = {}
    for key in service.list_api_keys():
        if key.active:
            active[key.identity_id] = active.get(key.identity_id, 0) + 1
    if as_json:
        echo_json(
            [
                {
                    "identity_id": p.identity_id,
                    "display_name": p.display_name,
                    "roles": sorted(r.value for r in p.roles),
                    "groups": list(p.groups),
                    "team": p.team,
                    "disabled": p.disabled,
                    "active_keys": active.get(p.identity_id, 0),
                    "created_at": p.created_at.isoformat(),
                }
                for p in people
            ]
        )
        return
    if not people:
        console().print("No identities yet. Create one with `saferun identities create ID --role ROLE`.")
        return
    table = Table(
        "Identity", "Name", "Roles", "Groups", "Team", "Status", "Active keys", "Created", title="Identities"
    )
    for p in people:
        table.add_row(
            cell(p.identity_id),
            cell(p.display_name),
            cell(_roles_text(p.roles)),
            cell(", ".join(p.groups) or "-"),
            cell(p.team or "-"),
            cell("disabled", "red") if p.disabled else cell("active", "green"),
            cell(active.get(p.identity_id, 0)),
            cell(when(p.created_at)),
        )
    console().print(table)


@app.command("key")
def new_key(
    ctx: typer.Context,
    identity_id: IdentityId,
    label: Annotated[str, typer.Option("--label", help="What the key is for (e.g. 'ci agent').")] = "",
    as_json: AsJson = False,
) -> None:
    """Create another API key for an identity (printed once)."""
    service = _service(ctx)
    key = service.create_api_key(identity_id, label)
    if as_json:
        echo_json(_key_json(service.get_identity(identity_id), key))
        return
    _print_new_key(key)


@app.command("keys")
def list_keys(ctx: typer.Context, identity_id: IdentityId, as_json: AsJson = False) -> None:
    """List an identity's key ids, labels and use (never the keys themselves)."""
    keys = _service(ctx).list_api_keys(identity_id)
    if as_json:
        echo_json(
            [
                {
                    "key_id": k.key_id,
                    "label": k.label,
                    "created_at": k.created_at.isoformat(),
                    "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
                    "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                }
                for k in keys
            ]
        )
        return
    if not keys:
        console().print(f"{identity_id} has no API keys.")
        return
    table = Table("Key id", "Label", "Created", "Last used", "Status", title=f"API keys of {identity_id}")
    for k in keys:
        status = cell("active", "green") if k.active else cell(f"revoked {when(k.revoked_at)}", "red")
        table.add_row(
            cell(k.key_id), cell(k.label), cell(when(k.created_at)), cell(when(k.last_used_at)), status
        )
    console().print(table)


@app.command("revoke")
def revoke(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")]
) -> None:
    """Revoke an API key for good; dashboard sessions signed in with it end too."""
    key = _service(ctx).revoke_api_key(key_id)
    console().print(Text(f"Revoked {key.key_id} of {key.identity_id} ({when(key.revoked_at)})"))


@app.command("roles")
def set_roles(ctx: typer.Context, identity_id: IdentityId, roles: Roles = None) -> None:
    """Replace an identity's roles (no --role leaves it with none)."""
    identity = _service(ctx).set_roles(identity_id, roles or [])
    console().print(Text(f"{identity.identity_id} now has roles: {_roles_text(identity.roles)}"))


@app.command("groups")
def set_groups(
    ctx: typer.Context,
    identity_id: IdentityId,
    groups: Annotated[
        list[str] | None,
        typer.Option("--group", help="A quorum group to be in; repeat for several (replaces the list)."),
    ] = None,
    no_groups: Annotated[bool, typer.Option("--no-groups", help="Leave every group.")] = False,
    team: Annotated[str | None, typer.Option("--team", help="The identity's team (distinct_teams).")] = None,
    no_team: Annotated[bool, typer.Option("--no-team", help="Clear the identity's team.")] = False,
) -> None:
    """Set the groups whose quorum votes an identity may cast, and its team (docs/quorum.md)."""
    if groups and no_groups:
        raise typer.BadParameter("give --group or --no-groups, not both", param_hint="--no-groups")
    if team is not None and no_team:
        raise typer.BadParameter("give --team or --no-team, not both", param_hint="--no-team")
    identity = _service(ctx).set_membership(
        identity_id,
        groups=[] if no_groups else groups,
        team=team,
        set_team=team is not None or no_team,
    )
    console().print(
        Text(
            f"{identity.identity_id}: groups {', '.join(identity.groups) or '-'}; team {identity.team or '-'}"
        )
    )


@app.command("disable")
def disable(ctx: typer.Context, identity_id: IdentityId) -> None:
    """Disable an identity: none of its keys or sessions is accepted until it is enabled again."""
    _service(ctx).set_disabled(identity_id, True)
    console().print(Text(f"Disabled {identity_id}"))


@app.command("enable")
def enable(ctx: typer.Context, identity_id: IdentityId) -> None:
    """Enable a disabled identity again (revoked keys stay revoked)."""
    _service(ctx).set_disabled(identity_id, False)
    console().print(Text(f"Enabled {identity_id}"))


@app.command("email")
def email(
    ctx: typer.Context,
    identity_id: IdentityId,
    address: Annotated[
        str | None, typer.Argument(help="The new address; omitted, the current one is shown.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the stored address.")] = False,
) -> None:
    """Show, set or clear the e-mail address an identity's notices (and decision links) go to."""
    from saferun.notifications.settings import check_email
    from saferun.storage import identities as id_store
    from saferun.storage import notifications as notices

    with _service(ctx).db.transaction() as conn:
        id_store.get_identity(conn, identity_id)  # NotFound for an unknown identity
        if clear:
            notices.set_email(conn, identity_id, None)
        elif address is not None:
            notices.set_email(conn, identity_id, check_email(address, "address"))
        current = notices.email_of(conn, identity_id)
    console().print(
        Text(f"{identity_id}: {current or 'no e-mail address (SAFERUN_NOTIFY_EMAILS may name one)'}")
    )
