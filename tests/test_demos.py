"""The seed's demos, run as a user runs them: unattended (scripted supervisor) and with a person deciding
in the dashboard. Assertions are on what the runs did: the demo's world files, SafeRun's store and
ledger, and the ROI report they compute from both."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from saferun import WorkflowOrchestrator, WorkflowState
from saferun.storage.database import Database
from tests.serving import free_port

ENV = {"PATH": "/usr/bin:/bin"}


def run_demo(script: str, workdir: Path, *args: str) -> tuple[str, dict[str, Any]]:
    report = workdir / "report.json"
    out = subprocess.run(
        [sys.executable, script, "--workdir", str(workdir), "--report", str(report), *args],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout, json.loads(report.read_text())


def store(report: dict[str, Any]) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=Database(report["database"]))


def world(workdir: Path, name: str) -> dict[str, Any]:
    return json.loads((workdir / f"{name}.json").read_text())  # type: ignore[no-any-return]


def assert_audited(orch: WorkflowOrchestrator, workflow_id: str) -> None:
    events, broken = orch.verify_audit(workflow_id)
    assert events > 0 and broken is None
    assert orch.escrow_position(workflow_id).held == 0  # every unit of escrow went somewhere


def test_demo_scenario_runs_unattended(tmp_path: Path) -> None:
    out, report = run_demo("demo_scenario.py", tmp_path)
    assert report["database"] == f"sqlite:///{tmp_path.resolve() / 'saferun.db'}"  # its own store
    assert "Without SafeRun: ordered 100 pizzas for 10 people, $1,200.00 charged" in out
    assert "Supervisor decides: MODIFIED (pizza_count -> 10): 10 people need 10 pizzas, not 100" in out
    assert (
        "Rejected: the meeting moved to next week; compensations run: cancel_pizza_order, release_room" in out
    )

    alone = world(tmp_path, "shop_without_saferun")
    assert [o["pizzas"] for o in alone["orders"]] == [100] and alone["charged_cents"] == 120_000
    caught = world(tmp_path, "shop_with_saferun")
    assert [(o["pizzas"], o["status"]) for o in caught["orders"]] == [(10, "delivered")]
    moved = world(tmp_path, "events_with_saferun")
    assert [o["status"] for o in moved["orders"]] == ["cancelled"]
    assert [r["status"] for r in moved["rooms"]] == ["released"]
    assert moved["charged_cents"] == moved["refunded_cents"] == 16_000

    orch = store(report)
    catch, rollback = report["catch"], report["rollback"]
    assert orch.get_workflow(catch["workflow_id"]).current_state == WorkflowState.COMPLETED
    assert orch.get_workflow(rollback["workflow_id"]).current_state == WorkflowState.FAILED
    assert catch["escrow"] == {
        "locked": "15.00",
        "released": "15.00",
        "refunded": "0.00",
        "executor": "13.50",
        "supervisor": "1.50",
    }
    # the plan was approved (its milestone paid), the confirmation rejected (its half refunded)
    assert rollback["escrow"] == {
        "locked": "15.00",
        "released": "7.50",
        "refunded": "7.50",
        "executor": "6.75",
        "supervisor": "0.75",
    }
    steps = orch.saga_steps(rollback["workflow_id"])
    assert sorted((s["compensation"], s["status"]) for s in steps) == [
        ("cancel_pizza_order", "compensated"),
        ("release_room", "compensated"),
    ]
    for wf in (catch["workflow_id"], rollback["workflow_id"]):
        assert_audited(orch, wf)

    roi = report["roi"]
    assert [r["scenario"] for r in roi["rows"]] == [
        "Pizza order (modified)",
        "Moved meeting (approved, rejected)",
    ]
    assert [(r["without_usd"], r["with_usd"], r["saved_usd"]) for r in roi["rows"]] == [
        ("1200.00", "120.00", "1080.00"),
        ("160.00", "0.00", "160.00"),
    ]
    assert (roi["saved_usd"], roi["supervisor_paid_usd"]) == ("1240.00", "2.25")
    assert "Return on oversight: $1,240.00 saved for $2.25 paid to the supervisor = 551x" in out


def test_demo_impressive_runs_unattended_on_the_configured_store(
    database_env: Database, tmp_path: Path
) -> None:
    url = database_env.engine.url.render_as_string(hide_password=False)
    out, report = run_demo("demo_impressive.py", tmp_path, "--database-url", url)
    assert report["database"] == url
    orch = WorkflowOrchestrator(database=database_env)

    trading = report["trading"]
    assert (trading["quantity_without"], trading["quantity_with"]) == (1000, 500)
    assert (trading["loss_without_usd"], trading["loss_with_usd"]) == ("10000.00", "5000.00")
    exchange = world(tmp_path, "exchange_with_saferun")
    assert exchange["positions"] == {"ACME": 500} and exchange["prices"] == {"ACME": 4000}

    deployment = report["deployment"]
    assert deployment["compensated"] == ["unstage_release"]  # the rejected plan's staged release
    assert deployment["live"] == {"version": "v2", "healthy": True} and deployment["schema"] == 42
    assert (deployment["incidents_without"], deployment["incidents_with"]) == (1, 0)
    decided = [
        (r.checkpoint_name, resp.decision.value)
        for r, resp in orch.approval_history(deployment["workflow_id"])
        if resp
    ]
    assert decided == [
        ("Review deployment plan", "REJECTED"),
        ("Review deployment plan", "APPROVED"),
        ("Verify production health", "APPROVED"),
    ]
    assert world(tmp_path, "production_without_saferun")["incidents"][0]["cost_cents"] == 5_000_000

    legal = report["legal"]
    assert legal["terms"]["liability_cap_cents"] == 3_000_000 and legal["terms"]["auto_renew_years"] == 1
    assert (legal["claim_paid_without_usd"], legal["claim_paid_with_usd"]) == ("250000.00", "30000.00")
    [signed] = world(tmp_path, "contracts_with_saferun")["contracts"]
    assert signed["status"] == "signed" and signed["liability_cap_cents"] == 3_000_000

    for scenario in (trading, deployment, legal):
        assert orch.get_workflow(scenario["workflow_id"]).current_state == WorkflowState.COMPLETED
        assert_audited(orch, scenario["workflow_id"])
    roi = report["roi"]
    assert [r["scenario"] for r in roi["rows"]] == [
        "Trading (modified)",
        "Deployment (rejected, approved)",
        "Legal (modified)",
    ]
    assert [r["saved_usd"] for r in roi["rows"]] == ["5000.00", "50000.00", "220000.00"]
    assert (roi["saved_usd"], roi["supervisor_paid_usd"]) == ("275000.00", "100.00")
    supervisor_paid = sum(float(r["escrow"]["supervisor"]) for r in roi["rows"])
    assert supervisor_paid == 100.0  # 10 % of 200 + 500 + 300, read back from the ledger
    assert "Return on oversight: $275,000.00 saved for $100.00 paid to the supervisor = 2,750x" in out


def decide_in_dashboard(client: httpx.Client, request_id: str, fields: dict[str, str]) -> None:
    """What a person does: open the request's page, fill the form, submit (CSRF token from the page)."""
    page = client.get(f"/approvals/{request_id}")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    res = client.post(
        f"/ui/approvals/{request_id}/decision",
        data={"csrf_token": token.group(1), "acting_as": "human_789", **fields},
        follow_redirects=False,
    )
    assert res.status_code == 303, res.text


PERSON = {
    "Review food order": {"decision": "APPROVED", "rationale": "they are hungry"},
    "Approve plan": {"decision": "MODIFIED", "param.pizza_count": "12", "rationale": "guests"},
    "Confirm before delivery": {"decision": "REJECTED", "rationale": "moved to next week"},
}


def act_as_person(port: int, demo: subprocess.Popen[bytes], ready: Callable[[], bool]) -> list[str]:
    """Decide every request the demo opens, in the dashboard, until it has had all three decisions."""
    decided: list[str] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        while demo.poll() is None and len(decided) < len(PERSON):
            time.sleep(0.05)  # a person's pace; the loop ends when the demo does
            if not ready():
                continue
            for item in client.get("/api/approvals/pending").json()["pending_approvals"]:
                decide_in_dashboard(client, item["request_id"], PERSON[item["checkpoint_name"]])
                decided.append(item["checkpoint_name"])
    return decided


def assert_person_outcome(out: str, report: dict[str, Any], workdir: Path) -> None:
    """The person decided differently from the script (kept the 100 pizzas), and the ROI says so."""
    assert "Waiting for your decision at http://127.0.0.1:" in out and "(decide as human_789)" in out
    assert "Decided in the dashboard by human_789: APPROVED: they are hungry" in out
    assert report["catch"]["pizzas_ordered"] == 100
    assert report["rollback"]["compensated"] == ["cancel_pizza_order", "release_room"]
    assert world(workdir, "events_with_saferun")["orders"][0]["pizzas"] == 12
    rows = report["roi"]["rows"]
    assert [r["scenario"] for r in rows] == ["Pizza order (approved)", "Moved meeting (modified, rejected)"]
    assert [(r["without_usd"], r["with_usd"], r["saved_usd"]) for r in rows] == [
        ("1200.00", "1200.00", "0.00"),
        ("160.00", "0.00", "160.00"),
    ]


def start_demo(workdir: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = workdir / "stdout.txt"
    with log.open("w") as sink:
        cmd = [sys.executable, "demo_scenario.py", "--interactive", "--workdir", str(workdir), *args]
        demo = subprocess.Popen(
            [*cmd, "--report", str(workdir / "report.json")], env=ENV, stdout=sink, stderr=subprocess.STDOUT
        )
    return demo, log


def finish(demo: subprocess.Popen[bytes], log: Path) -> tuple[str, dict[str, Any]]:
    try:
        assert demo.wait() == 0, log.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
    return log.read_text(), json.loads((log.parent / "report.json").read_text())


def test_demo_scenario_interactive_waits_for_a_person_in_its_own_dashboard(tmp_path: Path) -> None:
    port = free_port()
    demo, log = start_demo(tmp_path, "--port", str(port))
    try:
        decided = act_as_person(port, demo, lambda: "Dashboard: http://" in log.read_text())
    finally:
        out, report = finish(demo, log)
    assert decided == list(PERSON)
    assert_person_outcome(out, report, tmp_path)


def test_demo_scenario_interactive_with_saferun_serve_in_another_terminal(tmp_path: Path) -> None:
    """The two-terminal flow: ``saferun serve`` on the demo's database, the demo with ``--no-server``."""
    port = free_port()
    url = f"sqlite:///{tmp_path / 'saferun.db'}"
    serve_cmd = [
        sys.executable,
        "-m",
        "saferun.cli.main",
        "--database-url",
        url,
        "serve",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(serve_cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            while server.poll() is None:
                try:
                    if client.get("/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
        demo, log = start_demo(tmp_path, "--no-server", "--database-url", url, "--port", str(port))
        try:
            decided = act_as_person(port, demo, lambda: True)
        finally:
            out, report = finish(demo, log)
    finally:
        server.terminate()
        server.wait()
    assert decided == list(PERSON)
    assert f"In another terminal run: saferun --database-url {url} serve --port {port}" in out
    assert_person_outcome(out, report, tmp_path)
