"""The orchestrator on the x402 platform: role checks at each step, automatic supervisor assignment,
main / approval / settlement jobs, approval quality, x402-funded workflows waiting for their money, and
the outbox that mirrors a workflow's jobs and money to a remote platform exactly once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from saferun.client.http import ServerUnreachable
from saferun.core.parties import IdentityChecks
from saferun.core.state_machine.models import CheckpointConfig, ExecutionState
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain import ledger as rules
from saferun.domain.reputation import reputation
from saferun.domain.states import WorkflowState
from saferun.errors import Conflict, Forbidden, InvalidInput
from saferun.platform.delivery import OutboxDelivery
from saferun.platform.embedded import EmbeddedPlatform
from saferun.storage import identities as id_store
from saferun.storage import jobs as job_store
from saferun.storage import ledger as book
from saferun.storage import marketplace as market
from saferun.storage import outbox
from saferun.storage.database import Database
from saferun.storage.schema import audit_events, utcnow, workflows
from tests.helpers import decide, make_config, pause, started


def register(db: Database, *identities: tuple[str, list[str]], disabled: tuple[str, ...] = ()) -> None:
    with db.transaction() as conn:
        for identity_id, roles in identities:
            id_store.create_identity(conn, identity_id, roles=roles, disabled=identity_id in disabled)


def workflow_count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(workflows)).scalar_one())


# --- role checks ----------------------------------------------------------------------------------------


def test_registered_parties_must_hold_their_roles(db: Database) -> None:
    register(db, ("poster", ["poster"]), ("agent", ["executor"]), ("reviewer", ["supervisor"]))
    register(db, ("only_exec", ["executor"]), ("off_duty", ["supervisor"]), disabled=("off_duty",))
    orch = WorkflowOrchestrator(database=db)
    for field, kwargs in (
        ("executor_id", {"executor_id": "reviewer"}),
        ("poster_id", {"poster_id": "only_exec"}),
        ("supervisor_id", {"supervisor_id": "off_duty"}),
    ):
        config = make_config()
        config = config.model_copy(update=kwargs)
        with pytest.raises(InvalidInput) as err:
            orch.initialize_workflow(config)
        assert err.value.field == field
    assert workflow_count(db) == 0  # nothing half-written

    assert started(orch)  # the registered parties in their roles


async def test_the_decider_must_be_a_supervisor(db: Database) -> None:
    register(db, ("agent", ["executor"]), ("reviewer", ["supervisor"]), ("exec2", ["executor"]))
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch, make_config(supervisor_id=None))
    request_id = await pause(orch, wf)
    with pytest.raises(Forbidden) as err:
        decide(orch, request_id, "APPROVED", by="exec2")
    assert err.value.rule == "identity_role" and "supervisor role" in err.value.message
    assert orch.get_workflow(wf).current_state == WorkflowState.AWAITING_APPROVAL
    decide(orch, request_id, "APPROVED", by="free_form_reviewer")  # unregistered names pass by default
    assert orch.get_workflow(wf).current_state == WorkflowState.EXECUTING


async def test_strict_mode_needs_registered_parties(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db, identity_checks="strict")
    assert orch.identity_checks is IdentityChecks.STRICT
    with pytest.raises(InvalidInput, match="not a registered identity") as err:
        orch.initialize_workflow(make_config())
    assert err.value.field == "poster_id"
    register(db, ("poster", ["poster"]), ("agent", ["executor"]), ("reviewer", ["supervisor"]))
    wf = started(orch)
    request_id = await pause(orch, wf)
    with pytest.raises(Forbidden):
        decide(orch, request_id, "APPROVED", by="stranger")
    decide(orch, request_id, "APPROVED", by="reviewer")
    with pytest.raises(InvalidInput, match="SAFERUN_IDENTITY_CHECKS"):
        WorkflowOrchestrator(database=db, identity_checks="sometimes")


async def test_a_disabled_executor_cannot_checkpoint(db: Database) -> None:
    register(db, ("agent", ["executor"]))
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    with db.transaction() as conn:
        id_store.set_disabled(conn, "agent", True)
    with pytest.raises(Forbidden, match="disabled"):
        await pause(orch, wf)


# --- marketplace assignment ---------------------------------------------------------------------------


def test_a_workflow_without_supervisor_gets_the_best_eligible_one(db: Database) -> None:
    register(
        db,
        ("poster", ["poster"]),
        ("agent", ["executor", "supervisor"]),
        ("sup_a", ["supervisor"]),
        ("sup_b", ["supervisor"]),
        ("sup_c", ["supervisor"]),
    )
    with db.transaction() as conn:
        for sid, price, types in (
            ("agent", 0, ["data"]),  # best price, but it executes the workflow
            ("sup_a", 2_000_000, ["data"]),
            ("sup_b", 1_000_000, ["data"]),
            ("sup_c", 500_000, ["painting"]),
        ):
            market.upsert_profile(
                conn, sid, specialties=types, available=True, price_per_approval_micro=price
            )
    orch = WorkflowOrchestrator(database=db)
    config = make_config(supervisor_id=None, workflow_type="data")
    execution = orch.initialize_workflow(config)
    assert execution.config.supervisor_id is None  # the poster's config is kept as written
    with db.read() as conn:
        row = conn.execute(select(workflows).where(workflows.c.workflow_id == config.workflow_id)).first()
        assignment = market.get_assignment(conn, config.workflow_id)
        events = [
            r.kind
            for r in conn.execute(
                select(audit_events).where(audit_events.c.workflow_id == config.workflow_id)
            )
        ]
    assert row is not None and row.supervisor_id == "sup_b"  # same reputation: the cheaper one
    assert assignment is not None and assignment["supervisor_id"] == "sup_b"
    assert "supervisor_assigned" in events

    nobody = make_config(supervisor_id=None, workflow_type="surgery")
    orch.initialize_workflow(nobody)
    with db.read() as conn:
        assert market.get_assignment(conn, nobody.workflow_id) is None


async def test_platform_assignment_reaches_the_engine(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch, make_config(supervisor_id=None))  # an empty marketplace: nobody assigned
    request_id = await pause(orch, wf)
    assert [p.supervisor_id for p in orch.pending_approvals(wf)] == [None]
    register(db, ("sup_a", ["supervisor"]))
    platform = EmbeddedPlatform(db)
    await platform.register_supervisor("sup_a", ["data"], 1)
    await platform.request_supervisor("sup_a", wf)
    assert orch.get_workflow(wf).config.supervisor_id is None
    with db.read() as conn:
        assert conn.execute(
            select(workflows.c.supervisor_id).where(workflows.c.workflow_id == wf)
        ).scalar() == ("sup_a")
    pending = orch.pending_approvals(wf)
    assert [p.supervisor_id for p in pending] == ["sup_a"]
    decide(orch, request_id, "APPROVED", by="sup_a")


# --- jobs, settlement and approval quality ------------------------------------------------------------


async def test_main_approval_and_settlement_jobs_and_quality(db: Database) -> None:
    register(db, ("reviewer", ["supervisor"]))
    orch = WorkflowOrchestrator(database=db)
    config = make_config(
        checkpoints=[
            CheckpointConfig(name="one", checkpoint_id="cp1"),
            CheckpointConfig(name="two", checkpoint_id="cp2", timeout_seconds=1, on_timeout="approve"),
        ]
    )
    wf = started(orch, config)
    decide(orch, await pause(orch, wf, "cp1"), "APPROVED")
    await pause(orch, wf, "cp2")
    assert orch.sweep_expired(utcnow() + timedelta(seconds=5))  # the timeout approves cp2
    orch.settle_workflow(wf, {"ok": True})
    orch.complete_workflow(wf)

    with db.read() as conn:
        main = job_store.get(conn, orch.get_workflow(wf).job_id)
        children = job_store.children(conn, main["job_id"])
        quality = market.get_quality(conn, "reviewer", wf)
    assert main["status"] == "completed"
    assert [c["job_type"] for c in children] == ["approval", "approval", "settlement"]
    assert all(c["status"] == "completed" for c in children)
    settlement = children[-1]["data"]
    assert settlement["outcome"] == "completed" and settlement["locked"] == "100.00"
    assert settlement["released"] == "100.00" and settlement["held"] == "0.00"
    assert settlement["payments"] == {"wallet:agent": "90.00", "wallet:reviewer": "10.00"}
    # one of two requests decided in person, the other left to the timeout
    assert quality is not None and quality["quality_score"] == 0.5
    profile = await EmbeddedPlatform(db).get_user_profile("reviewer")
    assert profile["reputation"] == reputation([], [0.5])


async def test_failed_workflow_settles_and_scores_too(db: Database) -> None:
    register(db, ("reviewer", ["supervisor"]))
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    decide(orch, await pause(orch, wf, "cp1"), "APPROVED")
    orch.fail_workflow(wf, "the API went away")
    with db.read() as conn:
        children = job_store.children(conn, orch.get_workflow(wf).job_id)
        quality = market.get_quality(conn, "reviewer", wf)
    settlement = next(c for c in children if c["job_type"] == "settlement")["data"]
    assert settlement["outcome"] == "failed" and settlement["refunded"] == "50.00"
    assert quality is not None and quality["quality_score"] == 1.0


async def test_rating_needs_the_supervisor_to_have_worked_on_it(db: Database) -> None:
    register(db, ("reviewer", ["supervisor"]), ("other", ["supervisor"]))
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch, make_config(supervisor_id=None))
    decide(orch, await pause(orch, wf, "cp1"), "APPROVED", by="reviewer")
    platform = EmbeddedPlatform(db)
    rated = await platform.rate_supervisor("reviewer", wf, 5, "quick")
    assert rated["reputation"] > 0.5
    with pytest.raises(Forbidden) as err:
        await platform.rate_supervisor("other", wf, 1)
    assert err.value.rule == "supervised_workflow"


# --- x402 funding gate ---------------------------------------------------------------------------------


def test_an_x402_funded_workflow_waits_for_its_money(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    config = make_config(funding="x402")
    orch.initialize_workflow(config)
    wf = config.workflow_id
    with db.read() as conn:
        assert book.escrow_position(conn, wf).locked == 0  # nothing drawn from the poster's account
    with pytest.raises(Conflict) as err:
        orch.start_execution(wf)
    assert err.value.fields["reason"] == "escrow_not_funded" and "/escrow/fund" in err.value.message
    assert orch.get_workflow(wf).current_state == WorkflowState.INITIALIZED
    with db.transaction() as conn:  # what a settled x402 payment posts (tests/test_x402_funding.py)
        book.post(
            conn,
            rules.lock(wf, "x402-payer", 100_000_000),
            idempotency_key=rules.lock_key(wf),
            workflow_id=wf,
        )
    assert orch.start_execution(wf).current_state == WorkflowState.EXECUTING


# --- the outbox to a remote platform -------------------------------------------------------------------


class FlakyPlatform:
    """A real ``EmbeddedPlatform`` on another database, behind a link that can fail: ``fail_next`` calls
    raise before reaching it, ``lose_next`` reach it and then lose the answer (what a dropped connection
    looks like to the sender)."""

    def __init__(self, platform: EmbeddedPlatform) -> None:
        self.platform = platform
        self.fail_next = 0
        self.lose_next = 0
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.platform, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if self.fail_next:
                self.fail_next -= 1
                raise ServerUnreachable("platform down")
            result = await target(*args, **kwargs)
            if self.lose_next:
                self.lose_next -= 1
                raise ServerUnreachable("connection dropped after the platform acted")
            return result

        return call


class RemoteLink:
    """What the orchestrator needs of a remote ``X402Integration``: its mode, URL and platform."""

    mode = "remote"
    api_url = "https://platform.example"

    def __init__(self, platform: Any, database: Database) -> None:
        self.platform = platform
        self.database = database


@pytest.fixture
def remote_platform(tmp_path: Any) -> EmbeddedPlatform:
    other = Database(f"sqlite:///{tmp_path / 'platform.db'}")
    return EmbeddedPlatform(other, strict_identities=False)


async def drain(delivery: OutboxDelivery, rounds: int = 10) -> None:
    for _ in range(rounds):
        await delivery.deliver_due(utcnow() + timedelta(days=1))


async def test_outbox_mirrors_jobs_and_money_exactly_once(
    db: Database, remote_platform: EmbeddedPlatform
) -> None:
    register(remote_platform.db, ("reviewer", ["supervisor"]))
    flaky = FlakyPlatform(remote_platform)
    orch = WorkflowOrchestrator(RemoteLink(flaky, db), database=db)  # type: ignore[arg-type]
    wf = started(orch)
    decide(orch, await pause(orch, wf, "cp1"), "APPROVED")
    decide(orch, await pause(orch, wf, "cp2"), "APPROVED")
    orch.settle_workflow(wf, {})
    orch.complete_workflow(wf)
    with db.read() as conn:
        queued = outbox.for_workflow(conn, wf)
    assert [r["operation"] for r in queued] == [
        "create_job",
        "lock_escrow",
        "create_artifact",  # the checkpoint's state, read from the local store when it is sent
        "create_approval_subjob",
        "update_job_status",  # the decision, as the sub-job's outcome: the platform pays only for it
        "split_payment",
        "create_artifact",
        "create_approval_subjob",
        "update_job_status",
        "split_payment",
        "update_job_status",  # the main job ended: only then may the platform refund its payer
        "create_job",
        "record_approval_quality",
    ]
    assert "agent_memory" not in str(queued[2]["arguments"])  # a reference, not a copy of the state

    flaky.fail_next = 1  # the first send finds the platform down
    flaky.lose_next = 2  # the next two act but their answers are lost
    delivery = OutboxDelivery(db, flaky, backoff_base=0.0)  # type: ignore[arg-type]
    await drain(delivery)
    with db.read() as conn:
        statuses = {r["idempotency_key"]: r["status"] for r in outbox.for_workflow(conn, wf)}
    assert set(statuses.values()) == {"delivered"}, statuses
    assert len(flaky.calls) > len(statuses)  # there were retries

    with remote_platform.db.read() as conn:
        position = book.escrow_position(conn, wf)
        paid = book.payments(conn, wf)
        job_types = sorted(j["job_type"] for j in job_store.for_workflow(conn, wf))
    assert position.locked == 100_000_000 and position.released == 100_000_000  # once, not twice
    assert paid == {"wallet:agent": 90_000_000, "wallet:reviewer": 10_000_000}
    assert job_types == ["approval", "approval", "settlement", "supervised_workflow"]
    assert (await remote_platform.get_user_profile("reviewer"))["reputation"] == reputation([], [1.0])
    with db.read() as conn:
        artifact = next(r for r in outbox.for_workflow(conn, wf) if r["operation"] == "create_artifact")
    stored = await remote_platform.get_artifact(artifact["result"]["uri"])
    assert stored["artifact_type"] == "checkpoint_state" and stored["metadata"]["checkpoint_id"] == "cp1"
    assert ExecutionState.model_validate_json(stored["content"]).checkpoint_id == "cp1"
    await drain(delivery)  # nothing left to send, nothing sent again
    with remote_platform.db.read() as conn:
        assert book.escrow_position(conn, wf).released == 100_000_000


async def test_outbox_marks_a_refused_call_failed(db: Database, remote_platform: EmbeddedPlatform) -> None:
    strict = EmbeddedPlatform(remote_platform.db)  # the remote platform knows none of these identities
    orch = WorkflowOrchestrator(RemoteLink(strict, db), database=db)  # type: ignore[arg-type]
    wf = started(orch)
    report = await OutboxDelivery(db, strict).deliver_due()
    assert report.failed == [f"job:{wf}"] and report.waiting == [f"lock:{wf}"]  # the lock waits behind it
    with db.read() as conn:
        rows = outbox.for_workflow(conn, wf)
    assert [r["status"] for r in rows] == ["failed", "pending"]
    assert "does not exist" in rows[0]["last_error"]

    register(remote_platform.db, ("poster", ["poster"]), ("agent", ["executor"]))  # the operator's fix
    with db.transaction() as conn:
        assert outbox.retry_failed(conn, wf) == 1
    report = await OutboxDelivery(db, strict).deliver_due()
    assert report.delivered == [f"job:{wf}", f"lock:{wf}"]
    with remote_platform.db.read() as conn:
        assert book.escrow_position(conn, wf).locked == 100_000_000


def test_embedded_workflows_enqueue_nothing(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch)
    with db.read() as conn:
        assert outbox.for_workflow(conn, wf) == []


# --- the poster's rating over the API ------------------------------------------------------------------


async def test_the_poster_rates_the_supervisor_once_the_workflow_ended(db: Database) -> None:
    import httpx

    from saferun.api.server import create_app
    from saferun.core.identity import IdentityService

    service = IdentityService(db)
    _, poster_key = service.create_identity_with_key("poster", "Pat", ["poster"])
    _, other_key = service.create_identity_with_key("someone", "Sam", ["poster"])
    register(db, ("reviewer", ["supervisor"]))
    orch = WorkflowOrchestrator(database=db)
    wf = started(orch, make_config(n=1))
    app = create_app(orch, auth="keys", sweep=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as api:

        def auth(key: Any) -> dict[str, str]:
            return {"Authorization": f"Bearer {key.api_key}"}

        early = await api.post(f"/api/workflows/{wf}/rating", json={"rating": 5}, headers=auth(poster_key))
        assert early.status_code == 409  # still running
        decide(orch, await pause(orch, wf, "cp1"), "APPROVED")
        orch.settle_workflow(wf, {})
        orch.complete_workflow(wf)
        for bad in (0, 6, "5", 4.5, True):
            res = await api.post(
                f"/api/workflows/{wf}/rating", json={"rating": bad}, headers=auth(poster_key)
            )
            assert res.status_code == 422 and "rating" in res.text
        stranger = await api.post(f"/api/workflows/{wf}/rating", json={"rating": 1}, headers=auth(other_key))
        # a stranger may not even see the workflow (one visibility rule): 404, as for an unknown id
        assert stranger.status_code == 404 and "does not exist" in stranger.text
        body = {"rating": 5, "review": "clear and quick"}
        ok = await api.post(f"/api/workflows/{wf}/rating", json=body, headers=auth(poster_key))
        assert ok.status_code == 200, ok.text
        assert ok.json()["supervisor_id"] == "reviewer"
        assert ok.json()["reputation"] == reputation([5], [1.0])
        again = await api.post(f"/api/workflows/{wf}/rating", json=body, headers=auth(poster_key))
        assert again.json() == ok.json()  # the same rating again changes nothing
        changed = await api.post(f"/api/workflows/{wf}/rating", json={"rating": 1}, headers=auth(poster_key))
        assert changed.status_code == 409
    assert (await EmbeddedPlatform(db).get_user_profile("reviewer"))["ratings_count"] == 1
