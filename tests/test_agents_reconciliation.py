"""ReconciliationAgent: real compensations and cleanup hooks on real files, a failing one reported (not
raised), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from saferun.agents.reconciliation.agent import NOT_ATTEMPTED, ReconciliationAgent
from saferun.agents.reconciliation.cleanup import CleanupRegistry
from saferun.core.rollback.reconciliation import CompensationRegistry, RetryPolicy
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.errors import ApprovalRejected, InvalidInput
from saferun.storage.database import Database
from saferun.supervised import supervised
from tests.helpers import decide, make_config, pause, started

FAST = RetryPolicy(attempts=2, initial_delay=0.001, max_delay=0.002)


def delete_file(path: str) -> None:
    Path(path).unlink()  # a file already gone is a real failure here: nothing left to undo


def remove_line(path: str, line: str) -> None:
    p = Path(path)
    p.write_text("".join(x for x in p.read_text().splitlines(keepends=True) if x.rstrip("\n") != line))


def orchestrator(db: Database) -> WorkflowOrchestrator:
    reg = CompensationRegistry()
    reg.register("delete_file", delete_file)
    reg.register("remove_line", remove_line)
    return WorkflowOrchestrator(database=db, registry=reg, retry=FAST)


def hooks(tmp_path: Path, *, broken: bool = False) -> CleanupRegistry:
    """Cancel the workflow's scheduled jobs (a JSON schedule) and remove its scratch directory."""
    schedule = tmp_path / "schedule.json"
    scratch = tmp_path / "scratch"
    reg = CleanupRegistry()

    @reg.register("cancel_scheduled_work")
    def cancel(workflow_id: str) -> list[str]:
        jobs = json.loads(schedule.read_text())
        mine = [j["id"] for j in jobs if j["workflow_id"] == workflow_id]
        schedule.write_text(json.dumps([j for j in jobs if j["workflow_id"] != workflow_id]))
        return mine

    @reg.register("remove_temporary_data")
    async def remove(workflow_id: str) -> str | None:
        target = scratch / workflow_id
        if not target.exists():
            return None
        await asyncio.to_thread(shutil.rmtree, target)
        return str(target)

    if broken:

        @reg.register("purge_cdn_cache")
        def purge(workflow_id: str) -> None:
            raise ConnectionError(f"CDN API unreachable while purging {workflow_id}")

    return reg


def prepare(tmp_path: Path, workflow_id: str) -> None:
    jobs = [
        {"id": "job-1", "workflow_id": workflow_id, "run_at": "2026-02-01T09:00:00Z"},
        {"id": "job-2", "workflow_id": "someone-else", "run_at": "2026-02-01T09:00:00Z"},
        {"id": "job-3", "workflow_id": workflow_id, "run_at": "2026-02-02T09:00:00Z"},
    ]
    (tmp_path / "schedule.json").write_text(json.dumps(jobs))
    scratch = tmp_path / "scratch" / workflow_id
    scratch.mkdir(parents=True)
    (scratch / "draft.csv").write_text("a,b\n1,2\n")


async def test_rejection_is_undone_newest_first_and_cleaned_up(db: Database, tmp_path: Path) -> None:
    orch = orchestrator(db)
    wf = started(orch)
    prepare(tmp_path, wf)
    ledger = tmp_path / "ledger.txt"
    kept = tmp_path / "kept.txt"

    kept.write_text("approved work")
    orch.register_step(wf, "write kept.txt", "delete_file", {"path": str(kept)})
    decide(orch, await pause(orch, wf, "cp1", parameters={"n": 1}), "APPROVED")
    report_file = tmp_path / "report.md"
    report_file.write_text("draft")
    orch.register_step(wf, "write report.md", "delete_file", {"path": str(report_file)})
    ledger.write_text("opening\ncharge 40\n")
    orch.register_step(wf, "append charge", "remove_line", {"path": str(ledger), "line": "charge 40"})
    decide(orch, await pause(orch, wf, "cp2"), "REJECTED")

    agent = ReconciliationAgent("reconciler_1", orch, cleanup=hooks(tmp_path))
    report = await agent.reconcile_workflow(wf, target_checkpoint="cp1")

    assert [u["step"] for u in report.undone] == ["append charge", "write report.md"]
    assert report.not_undone == [] and report.not_cleaned == [] and report.complete
    assert report.cleaned == [
        {"name": "cancel_scheduled_work", "result": ["job-1", "job-3"]},
        {"name": "remove_temporary_data", "result": str(tmp_path / "scratch" / wf)},
    ]
    assert (report.state, report.restored_checkpoint) == ("executing", "cp1")
    # the files say the same
    assert not report_file.exists() and ledger.read_text() == "opening\n"
    assert kept.read_text() == "approved work"  # before the approval: not undone
    assert [j["id"] for j in json.loads((tmp_path / "schedule.json").read_text())] == ["job-2"]
    assert not (tmp_path / "scratch" / wf).exists()
    # and so does the audit chain
    (event,) = [e for e in orch.audit_events(wf) if e["kind"] == "reconciliation_report"]
    assert event["actor"] == "reconciler_1" and event["payload"]["complete"] is True
    assert orch.verify_audit(wf)[1] is None


async def test_a_failed_compensation_and_a_failed_hook_are_reported_not_raised(
    db: Database, tmp_path: Path
) -> None:
    orch = orchestrator(db)
    wf = started(orch)
    prepare(tmp_path, wf)
    a, b, c = (tmp_path / f"{n}.txt" for n in "abc")
    for path in (a, b, c):
        path.write_text(path.name)
        orch.register_step(wf, f"write {path.name}", "delete_file", {"path": str(path)})
    b.unlink()  # someone removed it already: its compensation cannot undo anything
    decide(orch, await pause(orch, wf, "cp1"), "REJECTED")

    agent = ReconciliationAgent("reconciler_1", orch, cleanup=hooks(tmp_path, broken=True))
    report = await agent.reconcile_workflow(wf)

    assert [u["step"] for u in report.undone] == ["write c.txt"]
    failed, skipped = report.not_undone
    assert failed["step"] == "write b.txt" and "FileNotFoundError" in failed["error"]
    assert skipped == {
        "step": "write a.txt",
        "compensation": "delete_file",
        "args": {"path": str(a)},
        "reason": NOT_ATTEMPTED,
    }
    assert not c.exists() and a.exists()  # a.txt was not touched after the failure
    assert report.state == "failed" and not report.complete
    assert "write b.txt" in report.message
    # every hook ran; the broken one is reported with its error, the others did their work
    assert [h["name"] for h in report.cleaned] == ["cancel_scheduled_work", "remove_temporary_data"]
    (bad,) = report.not_cleaned
    assert bad == {
        "name": "purge_cdn_cache",
        "error": f"ConnectionError: CDN API unreachable while purging {wf}",
    }
    assert not (tmp_path / "scratch" / wf).exists()
    (event,) = [e for e in orch.audit_events(wf) if e["kind"] == "reconciliation_report"]
    assert event["payload"]["not_cleaned"] == report.not_cleaned


async def test_unknown_compensations_leave_the_rollback_to_a_process_that_knows_them(
    db: Database, tmp_path: Path
) -> None:
    orch = orchestrator(db)
    wf = started(orch)
    prepare(tmp_path, wf)
    orch.register_step(wf, "launch rocket", "unlaunch_rocket", {"id": 7})
    decide(orch, await pause(orch, wf, "cp1"), "REJECTED")
    report = await ReconciliationAgent("r", orch, cleanup=hooks(tmp_path)).reconcile_workflow(wf)
    (step,) = report.not_undone
    assert step["step"] == "launch rocket" and "unlaunch_rocket" in step["reason"]
    assert report.state == "rolling_back" and report.undone == []
    assert len(report.cleaned) == 2  # cleanup still ran


async def test_a_workflow_that_is_not_rolling_back_is_only_cleaned(db: Database, tmp_path: Path) -> None:
    orch = orchestrator(db)
    wf = started(orch)
    prepare(tmp_path, wf)
    report = await ReconciliationAgent("r", orch, cleanup=hooks(tmp_path)).reconcile_workflow(wf)
    assert report.message == "nothing to compensate: the workflow is executing"
    assert report.undone == [] and report.not_undone == [] and report.complete
    assert report.cleaned[0]["result"] == ["job-1", "job-3"]
    assert report.to_dict()["complete"] is True


async def test_the_target_must_be_the_last_approved_checkpoint(db: Database, tmp_path: Path) -> None:
    orch = orchestrator(db)
    wf = started(orch)
    prepare(tmp_path, wf)
    agent = ReconciliationAgent("r", orch, cleanup=hooks(tmp_path))
    with pytest.raises(InvalidInput) as info:
        await agent.reconcile_workflow(wf, target_checkpoint="cp1")
    assert info.value.field == "target_checkpoint" and "nothing was approved yet" in info.value.message
    decide(orch, await pause(orch, wf, "cp1"), "APPROVED")
    with pytest.raises(InvalidInput) as info:
        await agent.reconcile_workflow(wf, target_checkpoint="cp2")
    assert "here checkpoint 'cp1', not 'cp2'" in info.value.message
    assert json.loads((tmp_path / "schedule.json").read_text())[0]["id"] == "job-1"  # nothing ran
    by_name = await agent.reconcile_workflow(wf, target_checkpoint="Review 1")
    assert by_name.restored_checkpoint == "cp1"


async def test_the_seeds_pattern_4(database_env: Database, tmp_path: Path) -> None:
    """The seed's "Rollback with Compensation": the agent's own compensation, then the reconciler."""
    from saferun.core.rollback.reconciliation import ReconciliationAgent as SeedImport

    orch = orchestrator(database_env)
    reconciliation = SeedImport("reconciler_1", orch, cleanup=hooks(tmp_path))
    config = make_config()
    prepare(tmp_path, config.workflow_id)
    records = tmp_path / "records.txt"

    async def async_delete_created_records() -> None:
        await asyncio.to_thread(records.unlink, True)

    async def reviewer() -> None:
        for decision in ("APPROVED", "REJECTED"):
            while not (pending := orch.pending_approvals(config.workflow_id)):
                await asyncio.sleep(0.01)
            decide(orch, pending[0].request_id, decision)

    async def workflow_with_rollback() -> str:
        compensation_actions = {"cp2": async_delete_created_records}
        async with supervised(config, orch) as run:
            await run.checkpoint("Review 1")
            records.write_text("created")
            try:
                await run.checkpoint("Review 2")
            except ApprovalRejected as e:
                await compensation_actions[e.rejected_checkpoint_id]()
                report = await reconciliation.reconcile_workflow(
                    workflow_id=config.workflow_id, target_checkpoint=e.last_approved_checkpoint
                )
                assert report.restored_checkpoint == "cp1" and report.complete
                return report.state

    state, _ = await asyncio.gather(workflow_with_rollback(), reviewer())
    assert state == "executing" and not records.exists()
    assert not (tmp_path / "scratch" / config.workflow_id).exists()
    assert orch.get_workflow(config.workflow_id).current_state.value == "completed"
