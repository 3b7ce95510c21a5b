"""Money moves only through the engine's rules on ``/x402`` (issue 9, finding 2).

The pure rules (``saferun.domain.platform_policy``) directly, then the HTTP API in keys mode on SQLite and
PostgreSQL: two platform identities, each with its own workflow known through platform jobs, an engine
workflow on platform A, an admin. Every refusal is checked to have moved nothing (balances, postings,
jobs, remembered answers, reputations).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from saferun.api.server import create_app
from saferun.core.identity import IdentityService
from saferun.core.state_machine.models import CheckpointConfig, WorkflowConfig
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain import platform_policy as pp
from saferun.domain.policy import Caller, Role
from saferun.platform import scope
from saferun.storage.database import Database
from saferun.storage.schema import (
    approval_quality,
    jobs,
    ledger_legs,
    ledger_transactions,
    platform_requests,
)
from tests.helpers import pause

# --------------------------------------------------------------------------------------------- pure rules

PLATFORM = Caller("plat_a", frozenset({Role.PLATFORM}), True)
ADMIN = Caller("root", frozenset({Role.ADMIN}), True)


def job_terms(**overrides: Any) -> pp.Terms:
    base: dict[str, Any] = {
        "workflow_id": "wf_1",
        "platform_id": "plat_a",
        "engine": False,
        "poster_id": "poster_1",
        "executor_id": "exec_1",
        "escrow_micro": 100_000_000,
        "milestones": (("cp1", "1"), ("cp2", "3")),
        "executor_share": Decimal("0.9"),
        "approvals": (pp.Approval("cp1", "sup_1", "approved"), pp.Approval("cp2", "sup_1", None)),
    }
    return pp.Terms(**{**base, **overrides})


def test_who_may_call_what() -> None:
    assert pp.may_call(PLATFORM, "release_escrow") is None
    assert pp.may_call(Caller.open(), "release_escrow") is None
    for operation in (
        "lock_escrow",
        "release_escrow",
        "split_payment",
        "record_approval_quality",
        "create_job",
        "update_job_status",
        "rate_supervisor",
    ):
        refusal = pp.may_call(ADMIN, operation)
        assert refusal is not None and refusal.rule == "admin_moves_no_money", operation
    assert pp.may_call(ADMIN, "get_escrow") is None and pp.may_call(ADMIN, "register_supervisor") is None
    poster = Caller("poster_1", frozenset({Role.POSTER}), True)
    assert pp.may_call(poster, "get_job").rule == "platform_role"  # type: ignore[union-attr]
    assert pp.on_platform(PLATFORM, "plat_a") and not pp.on_platform(PLATFORM, "plat_b")
    assert not pp.on_platform(PLATFORM, None) and pp.on_platform(ADMIN, "plat_b")


def test_a_platform_locks_only_from_a_poster_that_allowed_it() -> None:
    assert pp.check_poster_grant(PLATFORM, "poster_1", {"plat_a"}) is None
    refusal = pp.check_poster_grant(PLATFORM, "poster_1", {"plat_b"})
    assert refusal is not None and refusal.rule == "poster_grant"
    assert pp.check_poster_grant(Caller.open(), "poster_1", set()) is None  # no platform identity
    poster = Caller("poster_1", frozenset({Role.POSTER}), True)
    assert pp.may_grant(poster, "poster_1") is None and pp.may_grant(ADMIN, "poster_1") is None
    assert pp.may_grant(poster, "poster_2").rule == "poster_is_caller"  # type: ignore[union-attr]
    assert pp.may_grant(PLATFORM, "plat_a").rule == "poster_is_caller"  # type: ignore[union-attr]


def test_outcome_of_a_sub_job() -> None:
    assert pp.outcome_of("completed", "approved") == ("approved", False)
    assert pp.outcome_of("completed", "Modified by sup") == ("modified", False)
    assert pp.outcome_of("completed", "approved (automatic)") == ("approved", True)
    assert pp.outcome_of("running", "approved") == (None, False)
    assert pp.outcome_of("completed", "looks fine") == (None, False)


def test_lock_only_the_jobs_escrow_from_its_poster() -> None:
    terms = job_terms()
    assert pp.check_lock(terms, "poster_1", "exec_1", 100_000_000) is None
    for poster, executor, amount in (
        ("poster_2", "exec_1", 100_000_000),
        ("poster_1", "exec_2", 100_000_000),
        ("poster_1", "exec_1", 500_000_000),
    ):
        refusal = pp.check_lock(terms, poster, executor, amount)
        assert refusal is not None and refusal.rule == "lock_terms"
    assert pp.check_lock(job_terms(poster_id=None), "poster_1", "exec_1", 100_000_000) is not None
    engine = pp.check_lock(job_terms(engine=True), "poster_1", "exec_1", 100_000_000)
    assert engine is not None and engine.rule == "engine_workflow"


def test_earned_is_each_approved_milestone_once_split_like_the_engine() -> None:
    # cp1 weighs 1 of 4: 25.00, 90/10
    assert pp.earned(job_terms()) == {"exec_1": 22_500_000, "sup_1": 2_500_000}
    twice = job_terms(
        approvals=(pp.Approval("cp1", "sup_1", "approved"), pp.Approval("cp1", "sup_2", "modified"))
    )
    assert pp.earned(twice) == {"exec_1": 22_500_000, "sup_1": 2_500_000}
    both = job_terms(
        approvals=(pp.Approval("cp1", "sup_1", "approved"), pp.Approval("cp2", "sup_2", "modified"))
    )
    assert pp.earned(both) == {"exec_1": 90_000_000, "sup_1": 2_500_000, "sup_2": 7_500_000}
    assert pp.earned(job_terms(approvals=(pp.Approval("cp1", "sup_1", "rejected"),))) == {}
    assert pp.earned(job_terms(approvals=(pp.Approval("cp9", "sup_1", "approved"),))) == {}
    assert pp.earned(job_terms(milestones=())) == {}
    assert pp.earned(job_terms(engine=True)) == {}


def test_payouts_only_what_is_owed_to_the_workflows_parties() -> None:
    terms = job_terms()
    ok = pp.check_payout(terms, [("exec_1", 22_500_000), ("sup_1", 2_500_000)], {}, 100_000_000, "poster_1")
    assert ok is None
    cases = [
        ([("exec_1", 22_500_001)], {}, "payout_earned"),
        ([("exec_1", 1)], {"exec_1": 22_500_000}, "payout_earned"),  # already paid
        ([("plat_a", 1)], {}, "payout_recipient"),  # the caller itself
        ([("stranger", 1)], {}, "payout_recipient"),
        ([("poster_1", 1)], {}, "settlement_only"),  # the payer, before the end
    ]
    for payouts, paid, rule in cases:
        refusal = pp.check_payout(terms, payouts, paid, 100_000_000, "poster_1")
        assert refusal is not None and refusal.rule == rule, (payouts, paid)
    ended = job_terms(ended=True)
    # 25.00 owed for cp1, nothing paid yet: 75.00 may go back, not more
    assert pp.check_payout(ended, [("poster_1", 75_000_000)], {}, 100_000_000, "poster_1") is None
    refusal = pp.check_payout(ended, [("poster_1", 75_000_001)], {}, 100_000_000, "poster_1")
    assert refusal is not None and refusal.rule == "payout_earned"
    both = [("poster_1", 75_000_000), ("exec_1", 22_500_000), ("sup_1", 2_500_000)]
    assert pp.check_payout(ended, both, {}, 100_000_000, "poster_1") is None
    engine = pp.check_payout(job_terms(engine=True), [("exec_1", 1)], {}, 1, "poster_1")
    assert engine is not None and engine.rule == "engine_workflow"


def test_quality_only_from_the_outcome() -> None:
    decided = job_terms(
        ended=True,
        approvals=(
            pp.Approval("cp1", "sup_1", "approved"),
            pp.Approval("cp2", "sup_1", "approved", automatic=True),
        ),
    )
    assert pp.expected_quality(decided, "sup_1") == 0.5
    assert pp.check_quality(decided, "sup_1", 0.5) is None
    for terms, supervisor, score in (
        (decided, "sup_1", 0.0),
        (decided, "sup_2", 0.5),
        (job_terms(), "sup_1", 0.5),
    ):
        refusal = pp.check_quality(terms, supervisor, score)
        assert refusal is not None and refusal.rule == "quality_from_outcome"
    refusal = pp.check_quality(job_terms(engine=True, ended=True), "sup_1", 1.0)
    assert refusal is not None and refusal.rule == "engine_workflow"


def test_terms_from_the_engines_job_and_the_original_clients() -> None:
    config = {
        "poster_id": "p",
        "executor_share": "0.8",
        "checkpoints": [{"checkpoint_id": "a", "milestone_weight": 2}, {"checkpoint_id": "b"}],
    }
    data = {"executor_id": "e", "escrow_micro": 5, "job_data": {"workflow_id": "w", "config": config}}
    terms = pp.terms_from_job("w", "plat", data, [], False)
    assert (terms.poster_id, terms.executor_id, terms.escrow_micro) == ("p", "e", 5)
    assert terms.milestones == (("a", "2"), ("b", "1")) and terms.executor_share == Decimal("0.8")
    original = pp.terms_from_job(
        "w", "plat", {"job_data": {"poster_id": "p", "checkpoints": ["x"]}}, [], False
    )
    assert (
        original.milestones == (("x", "1"),) and original.poster_id == "p" and original.escrow_micro is None
    )
    bad = pp.terms_from_job(
        "w", "plat", {"job_data": {"config": {"executor_share": "lots", "checkpoints": ["x"]}}}, [], False
    )
    assert bad.milestones == ()  # an unreadable split pays nothing rather than a guess


# --------------------------------------------------------------------------------------------- over HTTP


@dataclass
class World:
    http: httpx.AsyncClient
    db: Database
    keys: dict[str, dict[str, str]]
    engine_wf: str


def state(db: Database) -> tuple[Any, ...]:
    """Everything a platform call can change."""
    with db.read() as conn:
        balances = conn.execute(
            select(ledger_legs.c.account, func.sum(ledger_legs.c.amount_micro))
            .group_by(ledger_legs.c.account)
            .order_by(ledger_legs.c.account)
        ).all()
        counts = tuple(
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (ledger_transactions, jobs, platform_requests, approval_quality)
        )
    return tuple(balances), counts


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    service = IdentityService(db)
    keys: dict[str, dict[str, str]] = {}
    for name, roles in (
        ("poster_1", ["poster"]),
        ("poster_2", ["poster"]),
        ("exec_1", ["executor"]),
        ("sup_1", ["supervisor"]),
        ("sup_2", ["supervisor"]),
        ("plat_a", ["platform"]),
        ("plat_b", ["platform"]),
        ("root", ["admin"]),
    ):
        _, key = service.create_identity_with_key(name, roles=roles)
        keys[name] = {"Authorization": f"Bearer {key.api_key}"}
    with db.transaction() as conn:  # poster_1 lets both platforms lock from its funding account
        for platform in ("plat_a", "plat_b"):
            scope.grant(conn, "poster_1", platform, "poster_1")
    orch = WorkflowOrchestrator(database=db)
    orch.initialize_workflow(
        WorkflowConfig(
            workflow_id="wf_engine",
            name="engine",
            checkpoints=[CheckpointConfig(name="c", checkpoint_id="cp1")],
            escrow_amount="50",
            poster_id="poster_1",
            executor_id="exec_1",
            supervisor_id="sup_1",
            platform_id="plat_a",
        )
    )
    orch.start_execution("wf_engine")
    await pause(orch, "wf_engine", "cp1")  # pending: nothing earned
    app = create_app(orch, auth="keys", sweep=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        yield World(http, db, keys, "wf_engine")


async def call(w: World, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return await w.http.request(method, f"/x402{path}", headers=w.keys[who], **kw)


async def job_workflow(w: World, who: str, wf: str, amount: str = "100") -> tuple[str, str]:
    """A workflow known through ``who``'s jobs: main job, cp1 sub-job by sup_1 (pending), escrow locked."""
    data = {"workflow_id": wf, "config": {"poster_id": "poster_1", "checkpoints": [{"checkpoint_id": "cp1"}]}}
    job = await call(
        w,
        who,
        "POST",
        "/jobs",
        json={
            "job_type": "supervised_workflow",
            "job_data": data,
            "escrow_amount": amount,
            "executor_id": "exec_1",
        },
    )
    assert job.status_code == 201, job.text
    sub = await call(
        w,
        who,
        "POST",
        f"/jobs/{job.json()['job_id']}/approval-subjobs",
        json={"checkpoint_id": "cp1", "supervisor_id": "sup_1"},
    )
    assert sub.status_code == 201, sub.text
    lock = await call(
        w,
        who,
        "POST",
        "/escrow/lock",
        json={"workflow_id": wf, "amount": amount, "poster_id": "poster_1", "executor_id": "exec_1"},
    )
    assert lock.status_code == 200, lock.text
    return job.json()["job_id"], sub.json()["job_id"]


def release(recipient: str, amount: str) -> dict[str, Any]:
    return {"json": {"amount": amount, "recipient_id": recipient, "reason": "r"}}


async def test_a_platform_sees_and_moves_only_its_own_workflows(world: World) -> None:
    w = world
    job_a, sub_a = await job_workflow(w, "plat_a", "wf_a")
    _job_b, sub_b = await job_workflow(w, "plat_b", "wf_b")
    await call(
        w, "plat_b", "POST", f"/jobs/{sub_b}/status", json={"status": "completed", "reason": "approved"}
    )
    art = await call(w, "plat_a", "POST", "/artifacts", json={"artifact_type": "t", "content": "A's secret"})
    uri = art.json()["uri"]
    before = state(w.db)
    # plat_b on A's ids (and plat_a on B's): exactly the answer of an id that never existed
    probes = [
        ("GET", "/jobs/{}", job_a, "job_never", {}),
        (
            "POST",
            "/jobs/{}/status",
            sub_a,
            "job_never",
            {"json": {"status": "completed", "reason": "approved"}},
        ),
        (
            "POST",
            "/jobs/{}/approval-subjobs",
            job_a,
            "job_never",
            {"json": {"checkpoint_id": "cp1", "supervisor_id": "sup_2"}},
        ),
        ("GET", "/escrow/{}", "escrow_wf_a", "escrow_wf_never", {}),
        ("POST", "/escrow/{}/release", "escrow_wf_a", "escrow_wf_never", release("exec_1", "1")),
        (
            "POST",
            "/escrow/{}/split",
            "escrow_wf_a",
            "escrow_wf_never",
            {"json": {"splits": [{"recipient_id": "plat_b", "amount": "1"}]}},
        ),
        ("GET", "/artifacts?uri={}", uri, "x402://artifacts/sha256:" + "0" * 64, {}),
        ("GET", "/escrow/{}", f"escrow_{w.engine_wf}", "escrow_wf_never", {}),
    ]
    for method, template, real, unknown, kw in probes:
        foreign = await call(w, "plat_b", method, template.format(real), **kw)
        missing = await call(w, "plat_b", method, template.format(unknown), **kw)
        assert foreign.status_code == missing.status_code == 404, (template, foreign.text)
        assert foreign.text.replace(real, "ID") == missing.text.replace(unknown, "ID"), template
    for path, body in (
        (
            "/escrow/lock",
            {"workflow_id": "wf_a", "amount": "100", "poster_id": "poster_1", "executor_id": "exec_1"},
        ),
        ("/supervisors/sup_1/approval-quality", {"workflow_id": "wf_a", "quality_score": 0}),
        ("/supervisors/sup_1/ratings", {"workflow_id": "wf_a", "rating": 1}),
        ("/supervisors/sup_2/requests", {"workflow_id": "wf_a"}),
        ("/supervisors/assignments", {"workflow_id": "wf_a", "workflow_type": "x"}),
    ):
        res = await call(w, "plat_b", "POST", path, json=body)
        assert res.status_code == 404, (path, res.text)
    taken = await call(
        w,
        "plat_b",
        "POST",
        "/jobs",
        json={
            "job_type": "t",
            "job_data": {"workflow_id": "wf_a"},
            "escrow_amount": "1",
            "executor_id": "exec_1",
        },
    )
    assert taken.status_code == 409 and taken.json()["detail"]["field"] == "job_data.workflow_id"
    # cross-workflow ids: B's approved sub-job does not make A's escrow pay
    cross = await call(w, "plat_b", "POST", "/escrow/escrow_wf_b/release", **release("exec_1", "90.000001"))
    assert cross.status_code == 403 and cross.json()["detail"]["rule"] == "payout_earned"
    assert state(w.db) == before
    # the owner still reads its own
    assert (await call(w, "plat_a", "GET", f"/jobs/{job_a}")).status_code == 200
    assert (await call(w, "plat_a", "GET", "/artifacts", params={"uri": uri})).json()[
        "content"
    ] == "A's secret"


async def test_escrow_pays_only_approved_checkpoints_to_the_workflows_parties(world: World) -> None:
    w = world
    _job, sub = await job_workflow(w, "plat_a", "wf_a")
    before = state(w.db)
    # the approval is still pending: nobody is owed anything, least of all the platform itself
    for recipient, rule in (
        ("plat_a", "payout_recipient"),
        ("exec_1", "payout_earned"),
        ("sup_1", "payout_earned"),
        ("sup_2", "payout_recipient"),
        ("poster_1", "settlement_only"),
    ):
        res = await call(w, "plat_a", "POST", "/escrow/escrow_wf_a/release", **release(recipient, "1"))
        assert res.status_code == 403 and res.json()["detail"]["rule"] == rule, (recipient, res.text)
    lock_other = await call(
        w,
        "plat_a",
        "POST",
        "/escrow/lock",
        json={"workflow_id": "wf_a", "amount": "500", "poster_id": "poster_2", "executor_id": "exec_1"},
    )
    assert lock_other.status_code == 403 and lock_other.json()["detail"]["rule"] == "lock_terms"
    assert state(w.db) == before

    decided = await call(
        w, "plat_a", "POST", f"/jobs/{sub}/status", json={"status": "completed", "reason": "approved"}
    )
    assert decided.status_code == 200
    split = {
        "splits": [{"recipient_id": "exec_1", "amount": "90"}, {"recipient_id": "sup_1", "amount": "10"}],
        "total": "100",
    }
    too_much = {
        "splits": [{"recipient_id": "exec_1", "amount": "91"}, {"recipient_id": "sup_1", "amount": "9"}]
    }
    middle = state(w.db)
    res = await call(w, "plat_a", "POST", "/escrow/escrow_wf_a/split", json=too_much)
    assert res.status_code == 403 and res.json()["detail"]["rule"] == "payout_earned"
    assert state(w.db) == middle
    key = {"Idempotency-Key": "release:wf_a:cp1"}
    paid = await w.http.post(
        "/x402/escrow/escrow_wf_a/split", json=split, headers={**w.keys["plat_a"], **key}
    )
    assert paid.status_code == 200, paid.text
    again = await w.http.post(
        "/x402/escrow/escrow_wf_a/split", json=split, headers={**w.keys["plat_a"], **key}
    )
    assert again.json() == paid.json()  # the engine's release key: paid once
    after = state(w.db)
    assert dict(after[0])["wallet:exec_1"] == 90_000_000 and dict(after[0])["wallet:sup_1"] == 10_000_000
    res = await call(w, "plat_a", "POST", "/escrow/escrow_wf_a/release", **release("exec_1", "0.000001"))
    assert res.status_code == 422 and res.json()["detail"]["field"] == "amount"  # nothing left to pay
    assert state(w.db) == after


async def test_the_payer_gets_back_only_after_the_end(world: World) -> None:
    w = world
    job, _ = await job_workflow(w, "plat_a", "wf_a")
    early = await call(w, "plat_a", "POST", "/escrow/escrow_wf_a/release", **release("poster_1", "100"))
    assert early.status_code == 403 and early.json()["detail"]["rule"] == "settlement_only"
    ended = await call(
        w, "plat_a", "POST", f"/jobs/{job}/status", json={"status": "failed", "reason": "gave up"}
    )
    assert ended.status_code == 200
    stranger = await call(w, "plat_a", "POST", "/escrow/escrow_wf_a/release", **release("poster_2", "100"))
    assert stranger.status_code == 403 and stranger.json()["detail"]["rule"] == "payout_recipient"
    back = await call(w, "plat_a", "POST", "/escrow/escrow_wf_a/release", **release("poster_1", "100"))
    assert back.status_code == 200 and back.json()["remaining"] == "0.00"


async def test_approval_quality_comes_from_the_outcome_not_the_caller(world: World) -> None:
    w = world
    job, sub = await job_workflow(w, "plat_a", "wf_a")
    await call(w, "plat_a", "POST", f"/jobs/{sub}/status", json={"status": "completed", "reason": "approved"})
    await call(w, "plat_a", "POST", f"/jobs/{job}/status", json={"status": "completed", "reason": "settled"})
    before = state(w.db)
    zero = await call(
        w,
        "plat_a",
        "POST",
        "/supervisors/sup_1/approval-quality",
        json={"workflow_id": "wf_a", "quality_score": 0},
    )
    assert zero.status_code == 403 and zero.json()["detail"]["rule"] == "quality_from_outcome"
    other = await call(
        w,
        "plat_a",
        "POST",
        "/supervisors/sup_2/approval-quality",
        json={"workflow_id": "wf_a", "quality_score": 1},
    )
    assert other.status_code == 403  # sup_2 never supervised wf_a
    assert state(w.db) == before
    ok = await call(
        w,
        "plat_a",
        "POST",
        "/supervisors/sup_1/approval-quality",
        json={"workflow_id": "wf_a", "quality_score": 1},
    )
    assert ok.status_code == 200 and ok.json()["quality_score"] == 1.0


async def test_an_engine_workflow_changes_only_through_the_engine(world: World) -> None:
    w = world
    wf = w.engine_wf
    before = state(w.db)
    assert (await call(w, "plat_a", "GET", f"/escrow/escrow_{wf}")).status_code == 200  # its platform reads
    for path, body in (
        (f"/escrow/escrow_{wf}/release", release("plat_a", "1")["json"]),
        (f"/escrow/escrow_{wf}/release", release("exec_1", "1")["json"]),
        (f"/escrow/escrow_{wf}/split", {"splits": [{"recipient_id": "exec_1", "amount": "1"}]}),
        (
            "/escrow/lock",
            {"workflow_id": wf, "amount": "50", "poster_id": "poster_1", "executor_id": "exec_1"},
        ),
        ("/supervisors/sup_1/approval-quality", {"workflow_id": wf, "quality_score": 0}),
        ("/supervisors/sup_1/ratings", {"workflow_id": wf, "rating": 1}),
        (
            "/jobs",
            {"job_type": "t", "job_data": {"workflow_id": wf}, "escrow_amount": "1", "executor_id": "exec_1"},
        ),
    ):
        res = await call(w, "plat_a", "POST", path, json=body)
        assert res.status_code == 403 and res.json()["detail"]["rule"] == "engine_workflow", (path, res.text)
    assert state(w.db) == before


async def test_admin_decides_like_a_supervisor_and_moves_no_money(world: World) -> None:
    w = world
    job, sub = await job_workflow(w, "plat_a", "wf_a")
    await call(w, "plat_a", "POST", f"/jobs/{sub}/status", json={"status": "completed", "reason": "approved"})
    before = state(w.db)
    for method, path, body in (
        ("POST", "/escrow/escrow_wf_a/release", release("root", "1")["json"]),
        ("POST", "/escrow/escrow_wf_a/release", release("exec_1", "1")["json"]),
        ("POST", "/escrow/escrow_wf_a/split", {"splits": [{"recipient_id": "exec_1", "amount": "1"}]}),
        (
            "POST",
            "/escrow/lock",
            {"workflow_id": "wf_x", "amount": "5", "poster_id": "poster_1", "executor_id": "exec_1"},
        ),
        ("POST", "/supervisors/sup_1/approval-quality", {"workflow_id": "wf_a", "quality_score": 0}),
        ("POST", f"/jobs/{sub}/status", {"status": "completed", "reason": "rejected"}),
        ("POST", "/jobs", {"job_type": "t", "job_data": {}, "escrow_amount": "1", "executor_id": "exec_1"}),
    ):
        res = await call(w, "root", method, path, json=body)
        assert res.status_code == 403 and res.json()["detail"]["rule"] == "admin_moves_no_money", path
    assert state(w.db) == before
    assert (await call(w, "root", "GET", "/escrow/escrow_wf_a")).status_code == 200
    assert (await call(w, "root", "GET", f"/jobs/{job}")).status_code == 200


async def test_a_poster_chooses_which_platforms_draw_on_its_funding(world: World) -> None:
    """Naming a poster in a platform's own job is not the poster's consent: poster_2 never allowed plat_a,
    so plat_a's lock from poster_2's account is refused until poster_2 grants it (and after it revokes)."""
    w = world
    data = {"workflow_id": "wf_p2", "config": {"poster_id": "poster_2", "checkpoints": ["cp1"]}}
    job = await call(
        w,
        "plat_a",
        "POST",
        "/jobs",
        json={
            "job_type": "supervised_workflow",
            "job_data": data,
            "escrow_amount": "500",
            "executor_id": "exec_1",
        },
    )
    assert job.status_code == 201
    lock = {"workflow_id": "wf_p2", "amount": "500", "poster_id": "poster_2", "executor_id": "exec_1"}
    before = state(w.db)
    refused = await call(w, "plat_a", "POST", "/escrow/lock", json=lock)
    assert refused.status_code == 403 and refused.json()["detail"]["rule"] == "poster_grant"
    assert state(w.db) == before

    grants = "/api/platform-grants"
    for who, body, status in (
        ("poster_1", {"platform_id": "plat_a", "poster_id": "poster_2"}, 403),
        ("plat_a", {"platform_id": "plat_a", "poster_id": "poster_2"}, 403),
        ("exec_1", {"platform_id": "plat_a"}, 403),
        ("poster_2", {"platform_id": "exec_1"}, 422),  # not a platform
        ("poster_2", {"platform_id": "nobody"}, 404),
    ):
        res = await w.http.post(grants, json=body, headers=w.keys[who])
        assert res.status_code == status, (who, body, res.text)
    assert (await w.http.get(grants, headers=w.keys["poster_2"])).json()["platforms"] == []
    ok = await w.http.post(grants, json={"platform_id": "plat_a"}, headers=w.keys["poster_2"])
    assert ok.status_code == 200 and ok.json()["platforms"] == ["plat_a"]
    again = await w.http.post(grants, json={"platform_id": "plat_a"}, headers=w.keys["poster_2"])
    assert again.json()["granted"] is False  # idempotent
    assert (await call(w, "plat_a", "POST", "/escrow/lock", json=lock)).status_code == 200

    gone = await w.http.delete(f"{grants}/plat_a", headers=w.keys["poster_2"])
    assert gone.json() == {"poster_id": "poster_2", "platform_id": "plat_a", "revoked": True, "platforms": []}
    by_admin = await w.http.post(
        grants, json={"platform_id": "plat_b", "poster_id": "poster_2"}, headers=w.keys["root"]
    )
    assert by_admin.status_code == 200 and by_admin.json()["platforms"] == ["plat_b"]
    with w.db.read() as conn:
        assert scope.grants_of(conn, "poster_2") == {"plat_b"}
