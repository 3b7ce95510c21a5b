"""Issue 13: stuck work is visible (list, CLI, metric, one WARNING per period) and resolvable with clear
consequences (retry here, marked compensated by hand with an audited reason, failed naming what was not
undone), over the library, the API (poster or admin only) and the CLI."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import httpx
import pytest
from typer.testing import CliRunner

from saferun.api.server import create_app
from saferun.cli.main import app as cli
from saferun.core.identity import IdentityService
from saferun.core.rollback.reconciliation import CompensationRegistry, RetryPolicy
from saferun.core.state_machine.models import ExecutionState
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import InvalidInput, InvalidTransition
from saferun.storage.database import Database
from saferun.storage.schema import utcnow
from tests.helpers import decide, make_config, pause, started

FAST = RetryPolicy(attempts=1, initial_delay=0.001, max_delay=0.001)


def later(orch: WorkflowOrchestrator, extra: float = 1.0) -> datetime:
    return utcnow() + orch.rollback_grace + timedelta(seconds=extra)


async def rejected(orch: WorkflowOrchestrator, poster: str = "poster") -> str:
    """A workflow rejected after one approved milestone and two side effects nobody here can undo."""
    config = make_config()
    wf = started(orch, config.model_copy(update={"poster_id": poster}))
    decide(orch, await pause(orch, wf, "cp1", parameters={"n": 1}), "APPROVED")
    orch.register_step(wf, "place order", "cancel_order", {"order_id": "o-1"})
    orch.register_step(wf, "send mail", "unsend_mail", {"to": "shop@example.com"})
    decide(orch, await pause(orch, wf, "cp2"), "REJECTED")
    assert orch.get_workflow(wf).current_state.value == "rolling_back"
    return wf


def bare(db: Database) -> WorkflowOrchestrator:
    return WorkflowOrchestrator(database=db, registry=CompensationRegistry(), retry=FAST)


async def test_an_unknown_compensation_is_listed_and_warned_once_per_period(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    orch = bare(db)
    wf = await rejected(orch)
    assert orch.stuck_workflows() == []  # inside the grace the agent may still be rolling back
    t0 = later(orch)
    with caplog.at_level(logging.DEBUG, logger="saferun"):
        reports = [await asyncio.to_thread(orch.sweep, t0 + timedelta(seconds=i)) for i in range(3)]
    assert [r.stuck for r in reports] == [[wf]] * 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("saferun")]
    assert len(warnings) == 1 and warnings[0].workflow_id == wf  # one per period, not one per sweep
    assert (
        "cancel_order" in warnings[0].getMessage() and "saferun workflows resolve" in warnings[0].getMessage()
    )
    assert not [r for r in caplog.records if r.levelno == logging.INFO and "rolling back" in r.getMessage()]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="saferun"):
        await asyncio.to_thread(orch.sweep, t0 + orch.stuck_warner.interval + timedelta(seconds=1))
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # the next period

    (item,) = orch.stuck_workflows(t0)
    assert item.state == "rolling_back" and item.missing == ["cancel_order", "unsend_mail"]
    assert [s["name"] for s in item.steps] == ["send mail", "place order"]  # newest first
    assert "not registered" in item.reason


async def test_mark_compensated_by_hand_resumes_and_audits_the_reason(db: Database) -> None:
    orch = bare(db)
    wf = await rejected(orch)
    held = orch.escrow_position(wf).held
    with pytest.raises(InvalidInput) as info:
        await orch.resolve_stuck(wf, "mark_compensated", "  ", actor="ops_ann")
    assert info.value.fields["field"] == "reason"
    assert orch.get_workflow(wf).current_state.value == "rolling_back"  # nothing written

    done = await orch.resolve_stuck(
        wf, "mark_compensated", "called the shop; order o-1 cancelled", actor="ops_ann"
    )
    assert done.state == "executing" and done.compensated == ["send mail", "place order"]
    assert orch.get_workflow(wf).current_state.value == "executing"
    assert orch.latest_approved_state(wf).parameters == {"n": 1}  # resumes from the approved checkpoint
    assert {s["name"]: s["status"] for s in orch.saga_steps(wf)} == {
        "place order": "compensated",
        "send mail": "compensated",
    }
    marked = [e for e in orch.audit_events(wf) if e["kind"] == "compensation_marked_by_hand"]
    assert len(marked) == 2 and all(e["actor"] == "ops_ann" for e in marked)
    assert marked[0]["payload"]["reason"] == "called the shop; order o-1 cancelled"
    assert orch.escrow_position(wf).held == held  # the workflow goes on; its escrow stays for it
    assert orch.verify_audit(wf)[1] is None
    assert orch.stuck_workflows(later(orch)) == []


async def test_fail_names_every_side_effect_not_undone(db: Database) -> None:
    orch = bare(db)
    wf = await rejected(orch)
    done = await orch.resolve_stuck(wf, "fail", "shop unreachable for a week", actor="ops_ann")
    assert done.state == "failed" and "NOT undone" in done.outcome
    row = orch.get_workflow(wf)
    assert row.current_state.value == "failed"
    error = row.error_message or ""
    assert "shop unreachable" in error and "NOT undone" in error
    assert "place order" in error and "cancel_order" in error and "o-1" in error and "send mail" in error
    pos = orch.escrow_position(wf)
    assert pos.held == 0 and pos.released + pos.refunded == pos.locked
    abandoned = [e for e in orch.audit_events(wf) if e["kind"] == "rollback_abandoned"]
    assert [s["name"] for s in abandoned[0]["payload"]["not_undone"]] == ["send mail", "place order"]
    assert {s["status"] for s in orch.saga_steps(wf) if s["name"] != "book"} >= {"failed"}
    with pytest.raises(InvalidTransition):
        await orch.resolve_stuck(wf, "fail", "again", actor="ops_ann")


async def test_retry_here_needs_the_compensations_and_then_rolls_back(db: Database) -> None:
    orch = bare(db)
    wf = await rejected(orch)
    with pytest.raises(InvalidTransition) as info:
        await orch.resolve_stuck(wf, "retry", "", actor="ops_ann")
    assert "cancel_order" in info.value.message and info.value.http_status == 409
    undone: list[str] = []
    orch.registry.register("cancel_order", lambda order_id: undone.append(order_id))
    orch.registry.register("unsend_mail", lambda to: undone.append(to))
    done = await orch.resolve_stuck(wf, "retry", "", actor="ops_ann")
    assert done.state == "executing" and undone == ["shop@example.com", "o-1"]


async def test_a_fresh_claim_is_in_progress_not_stuck(db: Database) -> None:
    orch = bare(db)
    wf = await rejected(orch)
    step = orch.steps_to_undo(wf)[0]["step_id"]
    assert orch.claim_compensation(wf, step, "live-agent")
    assert orch.stuck_workflows(later(orch)) == []
    with pytest.raises(InvalidTransition) as info:
        await orch.resolve_stuck(wf, "mark_compensated", "by hand", actor="ops_ann")
    assert "live-agent" in info.value.message
    # once the claim is stale, it is stuck again and names the abandoned claim
    stale = later(orch) + orch.stale_claim
    (item,) = orch.stuck_workflows(stale)
    assert item.workflow_id == wf


async def test_a_settling_workflow_past_the_grace_is_stuck_and_retry_completes_it(db: Database) -> None:
    orch = bare(db)
    wf = started(orch)
    snap = await orch.create_checkpoint(wf, ExecutionState(checkpoint_id="cp1"))
    decide(orch, orch.request_approval(wf, snap.snapshot_id, "m1").request_id, "APPROVED")
    orch.settle_workflow(wf, {"ok": True})
    (item,) = orch.stuck_workflows(later(orch))
    assert item.state == "settling" and "never completed" in item.reason
    done = await orch.resolve_stuck(wf, "retry", "", actor="ops_ann")
    assert done.state == "completed" and orch.escrow_position(wf).held == 0


async def test_api_lists_stuck_work_and_only_the_poster_or_an_admin_resolves(db: Database) -> None:
    ids = IdentityService(db)
    keys = {}
    for name, roles in (("poster_1", ["poster"]), ("agent", ["executor"]), ("ops", ["admin"])):
        keys[name] = {"Authorization": f"Bearer {ids.create_identity_with_key(name, roles=roles)[1].api_key}"}
    orch = bare(db)
    orch.rollback_grace = timedelta(0)
    wf = await rejected(orch, poster="poster_1")
    app = create_app(orch, auth="keys", sweep=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        listed = (await c.get("/api/workflows/stuck", headers=keys["poster_1"])).json()
        assert [i["workflow_id"] for i in listed["stuck"]] == [wf]
        assert listed["stuck"][0]["missing_compensations"] == ["cancel_order", "unsend_mail"]
        metrics = (await c.get("/metrics", headers=keys["ops"])).text
        assert 'saferun_stuck_workflows{state="rolling_back"} 1.0' in metrics

        res = await c.post(
            f"/api/workflows/{wf}/resolve", json={"action": "fail", "reason": "x"}, headers=keys["agent"]
        )
        assert res.status_code == 403 and res.json()["detail"]["rule"] == "poster_resolves"
        res = await c.post(f"/api/workflows/{wf}/resolve", json={"action": "fail"}, headers=keys["poster_1"])
        assert res.status_code == 422 and res.json()["detail"]["field"] == "reason"
        res = await c.post(f"/api/workflows/{wf}/resolve", json={"action": "retry"}, headers=keys["ops"])
        assert res.status_code == 409 and "cancel_order" in res.json()["detail"]["message"]
        res = await c.post(f"/api/workflows/{wf}/resolve", json={"action": "undo"}, headers=keys["ops"])
        assert res.status_code == 422 and res.json()["detail"]["field"] == "action"
        res = await c.post(
            f"/api/workflows/{wf}/resolve",
            json={"action": "fail", "reason": "shop gone"},
            headers=keys["poster_1"],
        )
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["status"] == "failed" and [s["name"] for s in body["not_undone"]] == [
            "send mail",
            "place order",
        ]
        assert (await c.get("/api/workflows/stuck", headers=keys["ops"])).json()["total"] == 0
        metrics = (await c.get("/metrics", headers=keys["ops"])).text
        assert 'saferun_stuck_workflows{state="rolling_back"} 0.0' in metrics


async def test_cli_lists_and_resolves(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFERUN_ROLLBACK_GRACE_SECONDS", "0")
    orch = bare(db)
    wf = await rejected(orch)
    url = ["--database-url", db.engine.url.render_as_string(hide_password=False)]
    runner = CliRunner()
    out = await asyncio.to_thread(runner.invoke, cli, [*url, "workflows", "stuck"])
    assert out.exit_code == 0, out.output
    assert wf in out.output and "cancel_order" in out.output and "Needs attention" in out.output
    out = await asyncio.to_thread(runner.invoke, cli, [*url, "workflows", "resolve", wf, "mark-compensated"])
    assert out.exit_code != 0 and "reason" in out.output
    out = await asyncio.to_thread(
        runner.invoke,
        cli,
        [
            *url,
            "workflows",
            "resolve",
            wf,
            "mark-compensated",
            "--reason",
            "undone by hand",
            "--by",
            "ops_ann",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "executing" in out.output
    assert orch.get_workflow(wf).current_state.value == "executing"
    assert (
        await asyncio.to_thread(runner.invoke, cli, [*url, "workflows", "stuck"])
    ).output.strip() == "Nothing is stuck."


async def test_dashboard_lists_stuck_work_and_resolves_it_with_a_reason(db: Database) -> None:
    import re

    orch = bare(db)
    orch.rollback_grace = timedelta(0)
    wf = await rejected(orch)
    app = create_app(orch, auth="open", sweep=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        queue = (await c.get("/approvals")).text
        assert "Needs attention" in queue and f"/workflows/{wf}#resolve" in queue and "cancel_order" in queue
        page = (await c.get(f"/workflows/{wf}")).text
        assert (
            'action="/ui/workflows/' in page and "Mark compensated by hand" in page and "NOT undone" in page
        )
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        url = f"/ui/workflows/{wf}/resolve"
        no_reason = await c.post(url, data={"csrf_token": token, "action": "fail", "reason": ""})
        assert no_reason.status_code == 422 and "reason" in no_reason.text
        assert orch.get_workflow(wf).current_state.value == "rolling_back"  # nothing written
        no_csrf = await c.post(url, data={"action": "fail", "reason": "gone"})
        assert no_csrf.status_code == 403
        done = await c.post(url, data={"csrf_token": token, "action": "fail", "reason": "shop gone"})
        assert done.status_code == 303 and done.headers["location"] == f"/workflows/{wf}?resolved=fail"
        after = (await c.get(done.headers["location"])).text
        assert "Resolved (fail)" in after and "NOT undone" in after and 'id="resolve"' not in after
        assert "Needs attention" not in (await c.get("/approvals")).text
    assert orch.get_workflow(wf).current_state.value == "failed"
