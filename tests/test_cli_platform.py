"""``saferun platform``: jobs, balances, ledger entries, the marketplace and the outbox from a terminal."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from typer.testing import CliRunner

from saferun.cli.main import app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage import identities as id_store
from saferun.storage import outbox
from saferun.storage.database import Database
from tests.helpers import decide, make_config, pause, started

runner = CliRunner()


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


async def finished(db: Database) -> str:
    """A workflow that paid one milestone of two and then failed (sync tests: the CLI runs its own loop)."""
    with db.transaction() as conn:
        id_store.create_identity(conn, "reviewer", roles=["supervisor"])
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch, make_config(n=2))
    decide(orch, await pause(orch, wf, "cp1"), "APPROVED")
    orch.fail_workflow(wf, "gave up after the first milestone")
    return wf


def test_jobs_balances_and_ledger(database_env: Database) -> None:
    wf = asyncio.run(finished(database_env))
    jobs = json.loads(cli("platform", "jobs", wf, "--json").stdout)
    assert [j["job_type"] for j in jobs] == ["supervised_workflow", "approval", "settlement"]
    assert [h["status"] for h in jobs[0]["history"]] == ["open", "running", "failed"]
    assert jobs[0]["subjobs"] == [jobs[1]["job_id"], jobs[2]["job_id"]]
    text = cli("platform", "jobs", wf)
    assert text.exit_code == 0 and "settlement" in text.stdout

    balances = json.loads(cli("platform", "balances", wf, "--json").stdout)
    assert balances["escrow"] == {
        "locked": "100.00",
        "released": "50.00",
        "refunded": "50.00",
        "held": "0.00",
        "invariant_holds": True,
    }
    assert balances["received_from_this_workflow"] == {
        "funding:poster": "50.00",
        "wallet:agent": "45.00",
        "wallet:reviewer": "5.00",
    }
    assert "refunded" in cli("platform", "balances", wf).stdout

    entries = json.loads(cli("platform", "ledger", wf, "--json").stdout)
    assert [e["kind"] for e in entries] == ["lock", "release", "refund"]
    assert all(sum(leg["amount_micro"] for leg in e["legs"]) == 0 for e in entries)
    assert f"lock:{wf}" in cli("platform", "ledger", wf).stdout

    missing = cli("platform", "jobs", "wf_nope")
    assert missing.exit_code == 1 and "wf_nope" in missing.stderr


def test_register_find_and_rate_supervisors(database_env: Database) -> None:
    wf = asyncio.run(finished(database_env))
    out = cli("platform", "register-supervisor", "reviewer", "--specialty", "data", "--price", "2.50")
    assert out.exit_code == 0 and "2.50 per approval" in out.stdout
    found = json.loads(cli("platform", "supervisors", "--type", "data", "--json").stdout)
    assert [s["supervisor_id"] for s in found] == ["reviewer"]
    assert cli("platform", "supervisors", "--type", "painting", "--json").stdout.strip() == "[]"

    rated = json.loads(cli("platform", "rate", wf, "--rating", "5", "--review", "sharp", "--json").stdout)
    assert rated["supervisor_id"] == "reviewer" and rated["reputation"] > 0.5
    assert cli("platform", "rate", wf, "--rating", "6").exit_code == 2  # usage error: out of range
    again = cli("platform", "rate", wf, "--rating", "1")
    assert again.exit_code == 1 and "IdempotencyConflict" in again.stderr

    bad = cli("platform", "register-supervisor", "agent", "--specialty", "x")
    assert bad.exit_code == 1 and "agent" in bad.stderr
    negative = cli("platform", "register-supervisor", "reviewer", "--specialty", "x", "--price", "-1")
    assert negative.exit_code == 1 and "price_per_approval" in negative.stderr


def test_outbox_lists_and_requeues(database_env: Database) -> None:
    with database_env.transaction() as conn:
        outbox.enqueue(conn, "wf_x", "lock_escrow", {"workflow_id": "wf_x"}, "lock:wf_x")
        row = outbox.by_key(conn, "lock:wf_x")
        assert row is not None
        outbox.mark_failed(conn, row["id"], "poster_id: identity 'p' does not exist")
    listed = json.loads(cli("platform", "outbox", "--json").stdout)
    assert [(r["idempotency_key"], r["status"]) for r in listed] == [("lock:wf_x", "failed")]
    assert "does not exist" in cli("platform", "outbox").stdout
    requeued = cli("platform", "outbox", "--retry", "--workflow", "wf_x")
    assert requeued.exit_code == 0 and "1 failed call(s) queued again" in requeued.stdout
    assert json.loads(cli("platform", "outbox", "--json").stdout)[0]["status"] == "pending"


def token_balance(address: str) -> int:
    return int(json.loads(cli("platform", "token-balance", address, "--json").stdout)["balance_micro"])


def test_mint_and_token_balance(database_env: Database) -> None:
    address = "0x" + "ab" * 20
    out = cli("platform", "mint", address, "25.50")
    assert out.exit_code == 0 and "balance 25.50" in out.stdout
    assert token_balance(address) == 25_500_000
    bad = cli("platform", "mint", "not-an-address", "1")
    assert bad.exit_code == 1 and "address" in bad.stderr
    zero = cli("platform", "mint", address, "0")
    assert zero.exit_code == 1 and "amount" in zero.stderr
    assert token_balance(address) == 25_500_000
