"""One ``Settings`` for every variable: ``.env`` honoured, unknown or malformed values refused at start,
``saferun config show`` masking secrets, and the database's schema revision checked before serving."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from saferun import config, logs
from saferun.api.server import create_app
from saferun.cli.main import app
from saferun.errors import SchemaMismatch
from saferun.storage.database import Database, current_revision

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # .env is read from the working directory
    monkeypatch.setenv("SAFERUN_HOME", str(tmp_path / "home"))
    return tmp_path


def test_dotenv_asks_for_keys_mode_and_the_server_honours_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SAFERUN_AUTH=keys\nSAFERUN_MAX_BODY_BYTES=2048\n")
    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    server = create_app(WorkflowOrchestrator(database=db), sweep=False)
    assert server.state.auth_mode == "keys"
    with TestClient(server) as client:
        assert client.get("/api/workflows").status_code == 401  # keys mode, no key
        assert client.post("/api/workflows", content=b"x" * 4096).status_code == 413
    db.dispose()


def test_an_unknown_saferun_variable_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFERUN_AUTHH", "keys")  # a typo that would otherwise start in open mode
    result = runner.invoke(app, ["workflows", "list"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == [lines[0]] and "SAFERUN_AUTHH" in lines[0] and "not a SafeRun setting" in lines[0]
    with pytest.raises(config.ConfigError, match="SAFERUN_AUTHH"):
        create_app(sweep=False)


def test_an_unknown_variable_in_dotenv_and_a_malformed_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SAFERUN_LOGLEVEL=debug\n")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 1 and "SAFERUN_LOGLEVEL" in result.output
    (tmp_path / ".env").write_text("SAFERUN_AUTH=keys\nthis line is not an assignment\n")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 1 and "line 2 is not NAME=value" in result.output


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SAFERUN_MAX_BODY_BYTES", "lots"),
        ("SAFERUN_AUTH", "maybe"),
        ("SAFERUN_LOG_FORMAT", "xml"),
        ("SAFERUN_SQLITE_SYNCHRONOUS", "OFF"),
        ("SAFERUN_MIGRATE", "perhaps"),
    ],
)
def test_a_malformed_value_names_its_variable(
    name: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    result = runner.invoke(app, ["workflows", "list"])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: configuration: {name}:")
    assert not (tmp_path / "home").exists()  # nothing was created or written


def test_config_show_masks_secrets_and_names_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("SAFERUN_WEBHOOK_SECRET=abcdefghijklmnopqrstuvwxyz\n")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-very-secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://bob:hunter2@db.example:5432/saferun")
    monkeypatch.setenv("SAFERUN_X402_FACILITATOR_URL", "https://fac:fac-pw-1@facilitator.example/x402")
    monkeypatch.setenv("SAFERUN_WEBHOOK_URLS", "https://a.example/h,https://u:hook-pw-2@b.example/h")
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["SAFERUN_WEBHOOK_SECRET"] == {"value": "***", "source": ".env"}
    assert shown["ANTHROPIC_API_KEY"] == {"value": "***", "source": "env"}
    assert "hunter2" not in result.output and "bob:***@db.example" in shown["DATABASE_URL"]["value"]
    assert "fac-pw-1" not in result.output and "hook-pw-2" not in result.output
    assert shown["SAFERUN_X402_FACILITATOR_URL"]["value"] == "https://***@facilitator.example/x402"
    assert shown["SAFERUN_WEBHOOK_URLS"]["value"] == "https://a.example/h,https://***@b.example/h"
    assert shown["SAFERUN_AUTH"] == {"value": "auto", "source": "default"}
    assert set(shown) == config.known_names()


def test_an_unreachable_database_is_one_line() -> None:
    result = runner.invoke(
        app, ["--database-url", "postgresql://nobody@127.0.0.1:1/none", "db", "current"]
    )
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "check DATABASE_URL" in result.output


def test_an_unmigrated_database_is_refused_when_migrating_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("SAFERUN_MIGRATE", "false")
    result = runner.invoke(app, ["--database-url", url, "workflows", "list"])
    assert result.exit_code == 1 and "saferun db upgrade" in result.output
    probe = Database(url, migrate=False)
    assert current_revision(probe.engine) is None  # nothing written
    assert runner.invoke(app, ["--database-url", url, "db", "upgrade"]).exit_code == 0
    assert runner.invoke(app, ["--database-url", url, "workflows", "list"]).exit_code == 0
    probe.dispose()


def test_a_database_newer_than_the_code_refuses_to_serve(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    Database(url).dispose()
    probe = Database(url, migrate=False)
    with probe.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    with pytest.raises(SchemaMismatch, match="newer than this SafeRun"):
        Database(url)
    result = runner.invoke(app, ["--database-url", url, "serve", "--no-demo"])
    assert result.exit_code == 1 and "newer than this SafeRun" in result.output
    result = runner.invoke(app, ["--database-url", url, "db", "upgrade"])
    assert result.exit_code == 1 and "newer than this SafeRun" in result.output
    probe.dispose()


def test_logs_redact_decision_tokens_and_keys() -> None:
    line = '127.0.0.1:5 - "GET /decide/dl_abc123.sig?x=1 HTTP/1.1" 200 Bearer sr_key_ABCdef /login?token=zz'
    out = logs.redact(line)
    assert "dl_abc123" not in out and "ABCdef" not in out and "zz" not in out
    assert "/decide/[redacted]" in out


def test_json_log_lines_carry_request_and_workflow_ids(tmp_path: Path) -> None:
    record = logging.makeLogRecord(
        {"name": "saferun.x", "levelname": "INFO", "msg": "link %s", "args": ("/decide/tok_1",)}
    )
    token = logs.REQUEST_ID.set("req-1")
    try:
        logs.RedactFilter().filter(record)
        logs.ContextFilter().filter(record)
    finally:
        logs.REQUEST_ID.reset(token)
    record.workflow_id = "wf_1"
    shown = json.loads(logs.JsonFormatter().format(record))
    assert shown["request_id"] == "req-1" and shown["workflow_id"] == "wf_1"
    assert shown["message"] == "link /decide/[redacted]"


def test_every_response_has_a_request_id(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    with TestClient(create_app(WorkflowOrchestrator(database=db), sweep=False)) as client:
        assert client.get("/api/health", headers={"X-Request-ID": "abc-1"}).headers["x-request-id"] == "abc-1"
        assert len(client.get("/api/health").headers["x-request-id"]) == 16
    db.dispose()


def test_health_is_503_when_the_database_does_not_answer(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'h.db'}")
    from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

    with TestClient(create_app(WorkflowOrchestrator(database=db), sweep=False)) as client:
        assert client.get("/api/health").json()["status"] == "healthy"
        (tmp_path / "h.db").unlink()
        (tmp_path / "h.db").mkdir()  # the file is gone and cannot be recreated: no database to read
        db.dispose()
        answer = client.get("/api/health")
        assert answer.status_code == 503 and answer.json()["status"] == "unhealthy"


def _serve_without_listening(monkeypatch: pytest.MonkeyPatch, url: str, *args: str) -> str:
    """Run ``saferun serve`` up to the point where uvicorn would listen, and return what it printed."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    result = runner.invoke(app, ["--database-url", url, "serve", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_keys_mode_creates_no_demo_identities_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    out = _serve_without_listening(monkeypatch, url, "--auth", "keys")
    assert "demo_admin" not in out and "sr_key_" not in out
    db = Database(url)
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM identities")).scalar_one() == 0
    db.dispose()
    out = _serve_without_listening(monkeypatch, url, "--auth", "keys", "--demo")
    assert "demo_admin" in out  # asked for: created once and shown


def test_serve_freezes_the_startup_heap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Full garbage collections of a serving process skip what existed when it started (why: the
    docstring of ``saferun/api/heap.py``): ``saferun serve`` freezes once the app is built."""
    import gc

    frozen: list[int] = []
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: frozen.append(gc.get_freeze_count()))
    result = runner.invoke(app, ["--database-url", f"sqlite:///{tmp_path / 'gc.db'}", "serve"])
    assert result.exit_code == 0, result.output
    assert frozen and frozen[0] > 10_000  # the app, its routes and every imported module's objects


def test_open_mode_keeps_the_demo_identities_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _serve_without_listening(monkeypatch, f"sqlite:///{tmp_path / 'open.db'}", "--auth", "open")
    assert "demo_supervisor" in out
