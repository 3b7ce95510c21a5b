"""The ``saferun`` command: operate SafeRun from a terminal against the same store the agents use.

Every command is a thin layer over ``WorkflowOrchestrator`` (or the migration helpers), so what the CLI
does is exactly what the API and the agents do, with the same one-transaction guarantees. Errors
SafeRun raises on purpose are expected outcomes for an operator (an unknown id, a request someone else
already decided), so they are printed as one red line with exit code 1, never as a traceback.
"""

from __future__ import annotations

from typing import Annotated, Any

import click
import pydantic
import typer
from rich.text import Text
from sqlalchemy.exc import ArgumentError, OperationalError
from typer.core import TyperGroup

from saferun import config, logs
from saferun.cli import (
    approvals,
    config_cmd,
    gc,
    identities,
    notifications,
    platform,
    policy,
    records,
    workflows,
)
from saferun.cli.common import CliState, console, orchestrator
from saferun.errors import SafeRunError
from saferun.storage.database import Database, alembic_config, check_revision, current_revision, upgrade

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
EXIT_ERROR = 1  # any SafeRunError (not found, conflict, invalid input), a broken chain, a failed rollback


def _validation_message(exc: pydantic.ValidationError) -> str:
    """``field: problem`` for each error, so the operator knows which flag to fix."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc and not msg.startswith(f"{loc}:") else msg)
    return f"invalid {exc.title}: " + "; ".join(parts)


def _fail(message: str) -> typer.Exit:
    first_line = message.strip().splitlines()[0] if message.strip() else "unknown error"
    console(stderr=True).print(Text(f"error: {first_line}", style="red"), soft_wrap=True)
    return typer.Exit(EXIT_ERROR)


class SafeRunGroup(TyperGroup):
    """The root group: turns expected errors from any sub-command into one clean line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SafeRunError as exc:
            raise _fail(f"{type(exc).__name__}: {exc.message}") from None
        except pydantic.ValidationError as exc:
            raise _fail(_validation_message(exc)) from None
        except (OperationalError, ArgumentError) as exc:  # unreachable server, malformed URL
            cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise _fail(f"database: {cause} (check DATABASE_URL or --database-url)") from None


app = typer.Typer(
    cls=SafeRunGroup,
    name="saferun",
    help=(
        "SafeRun: supervised autonomy for AI agents. Inspect workflows, decide approvals, verify audit "
        "chains, run maintenance.\n\nExit codes: 0 success; 1 a SafeRun error (unknown id, conflict, "
        "invalid input), a broken audit chain or a failed rollback; 2 a usage error (bad option)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(workflows.app, name="workflows")
app.add_typer(approvals.app, name="approvals")
app.add_typer(identities.app, name="identities")
app.add_typer(platform.app, name="platform")
app.add_typer(notifications.app, name="notifications")
app.add_typer(config_cmd.app, name="config")
app.add_typer(records.keys_app, name="keys")
app.add_typer(policy.app, name="policy")
app.command("export")(records.export)
app.command("verify")(records.verify)
app.command("gc")(gc.gc)
audit_app = typer.Typer(help="Check the tamper-evident audit chain.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Database to use (overrides DATABASE_URL; default: SQLite under SAFERUN_HOME).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            help="DEBUG | INFO | WARNING | ERROR (overrides SAFERUN_LOG_LEVEL; default INFO).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check the configuration and set up logging; nothing connects until a command needs it.

    An unknown ``SAFERUN_*`` variable or a malformed value (environment or ``.env``) ends every command
    here with one line naming it, before anything is read or written."""
    try:
        settings = config.check()
    except config.ConfigError as exc:
        raise _fail(f"configuration: {exc.message}") from None
    level = (log_level or settings.log_level).upper()
    if level not in LOG_LEVELS:
        raise _fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    logs.configure(level, settings.log_format)
    ctx.obj = CliState(database_url=database_url, log_level=level, settings=settings)


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context, workflow_id: Annotated[str, typer.Argument(help="The workflow's id.")]
) -> None:
    """Recompute every event's hash and link; exit 1 naming the first broken event."""
    count, broken = orchestrator(ctx).verify_audit(workflow_id)
    if broken is None:
        console().print(Text(f"OK: {count} events, chain intact", style="green"))
        return
    console().print(
        Text(
            f"BROKEN: audit chain of {workflow_id} breaks at seq {broken.seq}: {broken.reason}", style="red"
        ),
        soft_wrap=True,
    )
    raise typer.Exit(EXIT_ERROR)


def _schema_db(ctx: typer.Context) -> Database:
    """A handle that does not migrate on open, so ``db current`` reports the schema as it really is."""
    state = ctx.ensure_object(CliState)
    database = Database(state.database_url, migrate=False)
    ctx.call_on_close(database.dispose)
    return database


def _head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _where(database: Database) -> str:
    return database.engine.url.render_as_string(hide_password=True)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Migrate the configured database to the newest schema (safe to repeat, safe across replicas)."""
    database = _schema_db(ctx)
    before = current_revision(database.engine)
    check_revision(before, migrate=True)  # a schema newer than this code: refuse, do not guess
    upgrade(database.engine)
    after = current_revision(database.engine)
    change = "already at" if before == after else f"upgraded from {before or 'empty'} to"
    console().print(Text(f"{_where(database)}: {change} revision {after}"))


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the database's schema revision and whether it is the newest."""
    database = _schema_db(ctx)
    rev, head = current_revision(database.engine), _head()
    status = "up to date" if rev == head else f"behind head {head}; run 'saferun db upgrade'"
    console().print(Text(f"{_where(database)}: revision {rev or 'none (empty database)'} ({status})"))


@app.command("sweep")
def sweep(ctx: typer.Context) -> None:
    """One maintenance pass: resolve requests past their timeout, finish abandoned rollbacks."""
    report = orchestrator(ctx).sweep()
    con = console()
    if not report.expired and not report.rolled_back and not report.completed:
        con.print("Nothing to do.")
        return
    con.print(Text(f"Expired {len(report.expired)} request(s): {', '.join(report.expired) or '-'}"))
    con.print(
        Text(f"Rolled back {len(report.rolled_back)} workflow(s): {', '.join(report.rolled_back) or '-'}")
    )
    con.print(
        Text(f"Completed {len(report.completed)} settling workflow(s): {', '.join(report.completed) or '-'}")
    )


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address to bind. Open mode is only allowed on loopback.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    auth: Annotated[
        str | None,
        typer.Option(help="open | keys | auto (default, or SAFERUN_AUTH): open on loopback, keys elsewhere."),
    ] = None,
    demo: Annotated[
        bool | None,
        typer.Option(
            "--demo/--no-demo",
            help="On an empty database, create demo identities (admin included) and print their keys. "
            "Default: on in open mode, off in keys mode, where printed keys would be real credentials.",
        ),
    ] = None,
) -> None:
    """Run the SafeRun server: REST API, reviewer dashboard (/approvals) and the background sweep."""
    import uvicorn

    from saferun.api.deps import auth_mode, is_loopback
    from saferun.api.heap import freeze_startup_heap
    from saferun.api.server import create_app
    from saferun.core.identity import ensure_demo_identities

    mode = (auth or auth_mode()).lower()
    if mode not in ("auto", "open", "keys"):
        raise _fail(f"--auth must be open, keys or auto, not {mode!r}")
    loopback = is_loopback(host)
    effective = ("open" if loopback else "keys") if mode == "auto" else mode
    if effective == "open" and not loopback:
        raise _fail(
            f"refusing to listen on {host} in open mode: open mode has no authentication and serves "
            "loopback only (127.0.0.1, localhost, ::1); use --auth keys"
        )
    orch = orchestrator(ctx)
    con = console()
    base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    con.print(Text(f"SafeRun {base}  dashboard {base}/approvals  API docs {base}/docs"))
    con.print(Text(f"Database: {_where(orch.db)}"))
    if effective == "open":
        con.print(
            Text(
                "Open mode: no authentication, loopback only. Anyone on this machine can decide.",
                style="yellow",
            )
        )
    else:
        con.print(Text("Keys mode: every request needs an API key (saferun identities create ...)."))
    if demo is None:
        demo = effective == "open"
    if demo:
        created = ensure_demo_identities(orch.db)
        if created:
            con.print(Text("Demo identities (keys are shown once):", style="bold"))
            for ident in created:
                con.print(
                    Text(f"  {ident.identity_id:<16} {','.join(sorted(ident.roles)):<11} {ident.api_key}")
                )
    state = ctx.ensure_object(CliState)
    log_config = logs.config_dict(state.log_level, state.settings.log_format if state.settings else "text")
    server_app = create_app(orch, auth=effective)
    freeze_startup_heap()  # full GC passes then skip the ~160k startup objects (saferun/api/heap.py)
    # proxy_headers off: forwarding headers are believed only from SAFERUN_TRUSTED_PROXIES (local_guard.py)
    uvicorn.run(server_app, host=host, port=port, log_config=log_config, proxy_headers=False)


if __name__ == "__main__":  # pragma: no cover
    app()
