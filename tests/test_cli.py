"""The ``saferun`` command, driven through Typer's test runner on both stores.

Workflows are built through the orchestrator (as an agent would), then operated through the CLI (as a
person would); ``database_env`` points ``DATABASE_URL`` at the test's database so the CLI finds it.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from saferun.cli.approvals import parse_modifications
from saferun.core.rollback.reconciliation import registry
from saferun.core.state_machine.models import (
    ApprovalDecision,
)
from saferun.storage.database import Database, current_revision
from saferun.storage.schema import audit_events
from tests.cli_support import cli, pending_workflow

cancelled: list[str] = []
registry.register("cli_test_cancel_order", lambda order_id: cancelled.append(order_id))


def test_list_and_show_contain_ids_and_states(database_env: Database) -> None:
    p = pending_workflow(database_env)
    listed = cli("workflows", "list")
    assert listed.exit_code == 0, listed.output
    assert p.workflow_id in listed.output and "awaiting_approval" in listed.output
    assert "0/2" in listed.output and "100.00" in listed.output

    assert p.workflow_id in cli("workflows", "list", "--state", "awaiting_approval").output
    assert p.workflow_id not in cli("workflows", "list", "--state", "completed").output
    assert cli("workflows", "list", "--state", "bogus").exit_code == 2

    shown = cli("workflows", "show", p.workflow_id)
    assert shown.exit_code == 0, shown.output
    for text in (
        p.workflow_id,
        p.request_id,
        "executing -> awaiting_approval",
        "x402://artifacts/sha256:",
        "Order pizza",
        "locked 100.00",
        "held 100.00",
        "-100.00",
    ):
        assert text in shown.output, text

    pending = cli("approvals", "list")
    assert pending.exit_code == 0, pending.output
    assert p.request_id in pending.output and "Order 100 pizzas?" in pending.output
    assert "approve (80%)" in pending.output and "4m" in pending.output
    assert cli("approvals", "list", "--workflow", p.workflow_id, "--json").output.count(p.request_id) == 1


def test_json_output_parses(database_env: Database) -> None:
    import json

    p = pending_workflow(database_env)
    rows = json.loads(cli("workflows", "list", "--json").output)
    assert [r["workflow_id"] for r in rows] == [p.workflow_id]
    detail = json.loads(cli("workflows", "show", p.workflow_id, "--json").output)
    assert detail["workflow"]["current_state"] == "awaiting_approval"
    assert detail["approvals"][0]["request_id"] == p.request_id and detail["approvals"][0]["response"] is None
    assert detail["escrow"] == {"locked": 100_000_000, "released": 0, "refunded": 0, "held": 100_000_000}


def test_approve_once_then_conflict(database_env: Database) -> None:
    p = pending_workflow(database_env)
    first = cli("approvals", "approve", p.request_id, "--by", "alice", "--rationale", "fine")
    assert first.exit_code == 0, first.output
    assert "executing" in first.output
    assert p.orch.get_workflow(p.workflow_id).status == "executing"

    second = cli("approvals", "approve", p.request_id, "--by", "bob")
    assert second.exit_code == 1
    assert "DecisionConflict" in second.output and "already decided" in second.output
    assert "Traceback" not in second.output

    shown = cli("workflows", "show", p.workflow_id).output
    assert "APPROVED" in shown and "alice" in shown and "release" in shown


def test_modify_merges_into_the_approved_state(database_env: Database) -> None:
    p = pending_workflow(database_env)
    bad_key = cli("approvals", "modify", p.request_id, "--by", "alice", "--set", "topping=ham")
    assert bad_key.exit_code == 1 and "modifications.topping" in bad_key.output
    wrong_kind = cli("approvals", "modify", p.request_id, "--by", "alice", "--set", "pizza_count=ten")
    assert wrong_kind.exit_code == 1 and "expected a whole number" in wrong_kind.output
    half = cli("approvals", "modify", p.request_id, "--by", "alice", "--set", "pizza_count=10.5")
    # the server's check, the dashboard's and the CLI's are one: 10.5 pizzas is not a whole number
    assert half.exit_code == 1
    assert "modifications.pizza_count: expected a whole number, got 10.5" in half.output
    nothing = cli("approvals", "modify", p.request_id, "--by", "alice")
    assert nothing.exit_code == 1 and "modifications" in nothing.output and "Traceback" not in nothing.output
    assert p.orch.get_workflow(p.workflow_id).status == "awaiting_approval"  # refusals changed nothing

    done = cli(
        "approvals",
        "modify",
        p.request_id,
        "--by",
        "alice",
        "--json-mods",
        '{"pizza_count": 50}',
        "--set",
        "pizza_count=10",
        "--rationale",
        "too many",
    )
    assert done.exit_code == 0, done.output
    assert "MODIFIED" in done.output and "executing" in done.output
    approved = p.orch.latest_approved_state(p.workflow_id)
    assert approved is not None and approved.parameters == {"pizza_count": 10}


def test_reject_rolls_back_then_rollback_resumes(database_env: Database) -> None:
    cancelled.clear()
    p = pending_workflow(database_env, step="cli_test_cancel_order")
    assert cli("approvals", "reject", p.request_id, "--by", "alice").exit_code == 2  # rationale required
    rejected = cli("approvals", "reject", p.request_id, "--by", "alice", "--rationale", "not now")
    assert rejected.exit_code == 0, rejected.output
    assert "rolling_back" in rejected.output
    assert p.orch.get_workflow(p.workflow_id).status == "rolling_back"

    rolled = cli("workflows", "rollback", p.workflow_id)
    assert rolled.exit_code == 0, rolled.output
    assert "Compensated 1 step(s): place_order" in rolled.output and "executing" in rolled.output
    assert cancelled == ["o-1"]
    assert p.orch.get_workflow(p.workflow_id).status == "executing"

    again = cli("workflows", "rollback", p.workflow_id)
    assert again.exit_code == 1 and "InvalidTransition" in again.output


def test_rollback_with_unregistered_compensation_is_a_clean_error(database_env: Database) -> None:
    p = pending_workflow(database_env, step="cli_test_not_registered_anywhere")
    cli("approvals", "reject", p.request_id, "--by", "alice", "--rationale", "no")
    out = cli("workflows", "rollback", p.workflow_id)
    assert out.exit_code == 1
    assert "CompensationError" in out.output and "cli_test_not_registered_anywhere" in out.output
    assert p.orch.get_workflow(p.workflow_id).status == "rolling_back"


def test_reject_without_rollback_fails_the_workflow(database_env: Database) -> None:
    p = pending_workflow(database_env, can_rollback=False)
    out = cli("approvals", "reject", p.request_id, "--by", "alice", "--rationale", "no")
    assert out.exit_code == 0, out.output
    assert "failed" in out.output and "cannot roll back" in out.output


def test_audit_verify_detects_tampering(database_env: Database) -> None:
    p = pending_workflow(database_env)
    count = len(p.orch.audit_events(p.workflow_id))
    ok = cli("audit", "verify", p.workflow_id)
    assert ok.exit_code == 0, ok.output
    assert f"OK: {count} events, chain intact" in ok.output

    with database_env.transaction() as conn:
        conn.execute(
            update(audit_events)
            .where(audit_events.c.workflow_id == p.workflow_id, audit_events.c.seq == 2)
            .values(payload='{"forged":true}')
        )
    broken = cli("audit", "verify", p.workflow_id)
    assert broken.exit_code == 1
    assert "seq 2" in broken.output and "altered" in broken.output


def test_unknown_ids_give_clean_errors(database_env: Database) -> None:
    for args in (
        ("workflows", "show", "wf_nope"),
        ("workflows", "rollback", "wf_nope"),
        ("audit", "verify", "wf_nope"),
        ("approvals", "list", "--workflow", "wf_nope"),
        ("approvals", "approve", "req_nope", "--by", "alice"),
    ):
        out = cli(*args)
        assert out.exit_code == 1, args
        assert "does not exist" in out.output and "nope" in out.output, args
        assert "Traceback" not in out.output and isinstance(out.exception, SystemExit), args


def test_validation_errors_name_the_field(database_env: Database) -> None:
    p = pending_workflow(database_env)
    out = cli("approvals", "approve", p.request_id, "--by", "")
    assert out.exit_code == 1 and "approved_by" in out.output and "Traceback" not in out.output
    assert cli("approvals", "modify", p.request_id, "--by", "a", "--set", "novalue").exit_code == 2
    assert cli("approvals", "modify", p.request_id, "--by", "a", "--json-mods", "[1]").exit_code == 2


def test_parse_modifications() -> None:
    assert parse_modifications(["a=1", "b=x", 'c="1"', "d=null", 'e={"f": [1]}', "g=a=b"], None) == {
        "a": 1,
        "b": "x",
        "c": "1",
        "d": None,
        "e": {"f": [1]},
        "g": "a=b",
    }
    assert parse_modifications(["a=2"], '{"a": 1, "b": true}') == {"a": 2, "b": True}


def test_sweep_and_db_commands(database_env: Database) -> None:
    assert "Nothing to do" in cli("sweep").output
    upgraded = cli("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    rev = current_revision(database_env.engine)
    assert rev and f"revision {rev}" in upgraded.output
    current = cli("db", "current")
    assert current.exit_code == 0 and "up to date" in current.output


def test_database_url_option_overrides_environment(
    database_env: Database, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = pending_workflow(database_env)
    url = database_env.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    assert p.workflow_id not in cli("workflows", "list").output
    assert p.workflow_id in cli("--database-url", url, "workflows", "list").output

    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert "none (empty database)" in cli("--database-url", fresh, "db", "current").output
    assert "upgraded from empty" in cli("--database-url", fresh, "db", "upgrade").output


def test_approve_several_requests_at_once_and_a_whole_workflow(database_env: Database) -> None:
    """``approvals approve R1 R2 ...``: each decided once; one already decided is reported, the rest go
    on, and the exit code says not everything was decided. ``--workflow`` takes all its pending ones."""
    one, two, three = (pending_workflow(database_env) for _ in range(3))
    assert cli("approvals", "approve", one.request_id, "--by", "alice").exit_code == 0
    both = cli("approvals", "approve", one.request_id, two.request_id, "--by", "alice")
    assert both.exit_code == 1, both.output
    assert "already" in both.output and "1 of 2 approved" in both.output
    assert two.orch.get_approval_request(two.request_id).status == "decided"
    twice = cli("approvals", "approve", three.request_id, three.request_id, "--by", "alice")
    assert twice.exit_code != 0 and "at most once" in twice.output
    neither = cli("approvals", "approve", "--by", "alice")
    assert neither.exit_code != 0 and "--workflow" in neither.output
    whole = cli("approvals", "reject", "--workflow", three.workflow_id, "--by", "alice", "--rationale", "no")
    assert whole.exit_code == 0, whole.output
    assert three.orch.get_approval_response(three.request_id).decision == ApprovalDecision.REJECTED
