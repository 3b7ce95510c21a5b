"""The embedded x402 platform: the seed's Jobs, Escrow, Identity and Marketplace calls on SafeRun's database.

Every bad input is refused with a clear error and moves nothing: balances and rows are compared before
and after. Idempotent retries answer the first result and never pay twice.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from saferun.api.x402.client import X402Integration
from saferun.domain.reputation import reputation
from saferun.errors import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InvalidAmount,
    InvalidInput,
    NotFound,
)
from saferun.platform.embedded import EmbeddedPlatform
from saferun.storage import identities as id_store
from saferun.storage import ledger as book
from saferun.storage import marketplace as market
from saferun.storage.database import Database
from saferun.storage.schema import (
    job_events,
    jobs,
    ledger_legs,
    ledger_transactions,
    platform_requests,
    supervisor_assignments,
    supervisor_ratings,
)

WF = "wf_platform1"
ESCROW = f"escrow_{WF}"


@pytest.fixture
def platform(db: Database) -> EmbeddedPlatform:
    with db.transaction() as conn:
        id_store.create_identity(conn, "poster_1", roles=["poster"])
        id_store.create_identity(conn, "exec_1", roles=["executor"])
        id_store.create_identity(conn, "sup_1", roles=["supervisor"])
        id_store.create_identity(conn, "sup_2", roles=["supervisor"])
        id_store.create_identity(conn, "sup_3", roles=["supervisor", "executor"])
        id_store.create_identity(conn, "gone", roles=["supervisor"], disabled=True)
    return EmbeddedPlatform(db)


def balances(db: Database) -> dict[str, int]:
    with db.read() as conn:
        rows = conn.execute(
            select(ledger_legs.c.account, func.sum(ledger_legs.c.amount_micro)).group_by(
                ledger_legs.c.account
            )
        ).all()
    return {account: int(total) for account, total in rows}


def count(db: Database, table: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def snapshot(db: Database) -> tuple[Any, ...]:
    tables = (
        jobs,
        job_events,
        ledger_transactions,
        platform_requests,
        supervisor_ratings,
        supervisor_assignments,
    )
    return (balances(db), *(count(db, t) for t in tables))


def invariant(db: Database, workflow_id: str = WF) -> None:
    with db.read() as conn:
        position = book.escrow_position(conn, workflow_id)
    assert position.invariant_holds(), position
    assert sum(balances(db).values()) == 0
    assert all(v >= 0 for k, v in balances(db).items() if not k.startswith("funding:"))


def supervised_by(db: Database, supervisor_id: str, *workflow_ids: str) -> None:
    """Record that ``supervisor_id`` was assigned to these workflows: only then may they be rated."""
    with db.transaction() as conn:
        for workflow_id in workflow_ids:
            market.assign(conn, workflow_id, supervisor_id)


async def locked(platform: EmbeddedPlatform, amount: Any = 100.0) -> dict[str, Any]:
    return await platform.lock_escrow(
        workflow_id=WF, amount=amount, poster_id="poster_1", executor_id="exec_1"
    )


# --- Jobs ---------------------------------------------------------------------------------------------


async def test_jobs_main_job_subjob_and_history(platform: EmbeddedPlatform) -> None:
    job = await platform.create_job(
        job_type="supervised_workflow",
        job_data={"workflow_id": WF, "config": {"checkpoints": 2}},
        escrow_amount=100.01,
        executor_id="exec_1",
    )
    assert job["job_id"].startswith("job_")
    assert job["status"] == "open" and job["workflow_id"] == WF
    assert job["data"]["escrow_amount"] == "100.01" and job["data"]["escrow_micro"] == 100_010_000
    assert [h["status"] for h in job["history"]] == ["open"]

    sub = await platform.create_approval_subjob(
        parent_job_id=job["job_id"],
        checkpoint_id="cp_1",
        supervisor_id="sup_1",
        approval_data={"summary": "looks fine"},
    )
    assert sub["parent_job_id"] == job["job_id"] and sub["job_type"] == "approval"
    assert sub["workflow_id"] == WF and sub["data"]["supervisor_id"] == "sup_1"

    await platform.update_job_status(job["job_id"], "running", "started")
    await platform.update_job_status(job["job_id"], "completed", "settled")
    got = await platform.get_job(job["job_id"])
    assert got["status"] == "completed"
    assert [(h["status"], h["reason"]) for h in got["history"]] == [
        ("open", "created"),
        ("running", "started"),
        ("completed", "settled"),
    ]
    assert got["subjobs"] == [sub["job_id"]]


async def test_jobs_bad_input_moves_nothing(platform: EmbeddedPlatform, db: Database) -> None:
    before = snapshot(db)
    with pytest.raises(NotFound, match="nobody"):
        await platform.create_job("t", {}, 1, "nobody")
    with pytest.raises(InvalidInput, match=r"executor_id.*executor role"):
        await platform.create_job("t", {}, 1, "sup_1")
    with pytest.raises(InvalidAmount, match="escrow_amount"):
        await platform.create_job("t", {}, -5, "exec_1")
    with pytest.raises(InvalidInput, match="job_data"):
        await platform.create_job("t", {"x": {1, 2}}, 1, "exec_1")
    with pytest.raises(NotFound, match="job_missing"):
        await platform.create_approval_subjob("job_missing", "cp", "sup_1", {})
    job = await platform.create_job("t", {"workflow_id": WF}, 1, "sup_3")
    mid = snapshot(db)
    with pytest.raises(Forbidden) as err:  # sup_3 executes the job: four eyes
        await platform.create_approval_subjob(job["job_id"], "cp", "sup_3", {})
    assert err.value.rule == "four_eyes"
    with pytest.raises(InvalidInput, match=r"supervisor_id.*supervisor role"):
        await platform.create_approval_subjob(job["job_id"], "cp", "exec_1", {})
    with pytest.raises(InvalidInput, match="status"):
        await platform.update_job_status(job["job_id"], "exploded")
    with pytest.raises(NotFound):
        await platform.get_job("job_nope")
    assert snapshot(db) == mid
    assert before[1] + 1 == mid[1]


async def test_create_job_idempotent(platform: EmbeddedPlatform, db: Database) -> None:
    first = await platform.create_job("t", {"workflow_id": WF}, "5", "exec_1", idempotency_key="k-job")
    again = await platform.create_job("t", {"workflow_id": WF}, 5.0, "exec_1", idempotency_key="k-job")
    assert again == first
    assert count(db, jobs) == 1
    with pytest.raises(IdempotencyConflict):
        await platform.create_job("t", {"workflow_id": WF}, 6, "exec_1", idempotency_key="k-job")
    assert count(db, jobs) == 1


# --- Escrow -------------------------------------------------------------------------------------------


async def test_escrow_lock_release_split(platform: EmbeddedPlatform, db: Database) -> None:
    escrow = await locked(platform)
    assert escrow["escrow_id"] == ESCROW and escrow["status"] == "locked"
    assert escrow["amount"] == "100.00" and escrow["amount_micro"] == 100_000_000
    assert balances(db)[f"escrow:{WF}"] == 100_000_000

    released = await platform.release_escrow(
        escrow_id=escrow["escrow_id"], amount=20.5, recipient_id="exec_1", reason="checkpoint_approved"
    )
    assert released["status"] == "released" and released["remaining"] == "79.50"
    split = await platform.split_payment(
        escrow_id=escrow["escrow_id"],
        splits=[
            {"recipient_id": "exec_1", "amount": 70.0, "reason": "execution"},
            {"recipient_id": "sup_1", "amount": "9.5", "reason": "supervision"},
        ],
        total="79.5",
    )
    assert split["total"] == "79.50" and split["remaining_micro"] == 0
    bal = balances(db)
    assert bal["wallet:exec_1"] == 90_500_000 and bal["wallet:sup_1"] == 9_500_000
    assert bal[f"escrow:{WF}"] == 0
    invariant(db)
    status = await platform.get_escrow(ESCROW)
    assert status["released"] == "100.00" and status["invariant_holds"]


async def test_lock_is_once_per_workflow_and_shares_the_engine_key(
    platform: EmbeddedPlatform, db: Database
) -> None:
    first = await locked(platform)
    again = await locked(platform)  # same content, engine key lock:<wf>: nothing more is locked
    assert again["txn_id"] == first["txn_id"]
    assert balances(db)[f"escrow:{WF}"] == 100_000_000
    with pytest.raises(IdempotencyConflict):
        await locked(platform, amount=50)
    assert balances(db)[f"escrow:{WF}"] == 100_000_000
    invariant(db)


async def test_escrow_bad_input_moves_nothing(platform: EmbeddedPlatform, db: Database) -> None:
    with pytest.raises(NotFound, match=r"poster_id.*nobody"):
        await platform.lock_escrow(WF, 10, "nobody", "exec_1")
    with pytest.raises(InvalidInput, match=r"poster_id.*poster role"):
        await platform.lock_escrow(WF, 10, "exec_1", "exec_1")
    with pytest.raises(InvalidAmount, match="amount"):
        await platform.lock_escrow(WF, -10, "poster_1", "exec_1")
    with pytest.raises(InvalidAmount, match="amount"):
        await platform.lock_escrow(WF, 0, "poster_1", "exec_1")
    with pytest.raises(NotFound, match="escrow"):
        await platform.release_escrow(ESCROW, 1, "exec_1", "x")
    assert balances(db) == {}

    await locked(platform)
    before = snapshot(db)
    with pytest.raises(InvalidAmount, match=r"amount.*more than escrow") as err:
        await platform.release_escrow(ESCROW, 100.01, "exec_1", "too much")
    assert err.value.field == "amount"
    with pytest.raises(InvalidAmount, match="amount"):
        await platform.release_escrow(ESCROW, -1, "exec_1", "negative")
    with pytest.raises(InvalidAmount, match="amount"):
        await platform.release_escrow(ESCROW, "0.0000001", "exec_1", "too precise")
    with pytest.raises(NotFound, match="recipient_id"):
        await platform.release_escrow(ESCROW, 1, "nobody", "x")
    with pytest.raises(InvalidInput, match="escrow_id"):
        await platform.release_escrow("wf_platform1", 1, "exec_1", "x")
    bad_splits: list[tuple[Any, type[Exception], str]] = [
        ([], InvalidInput, "splits"),
        ([{"recipient_id": "exec_1", "amount": -1, "reason": "r"}], InvalidAmount, r"splits\[0\].amount"),
        ([{"recipient_id": "exec_1", "amount": 0, "reason": "r"}], InvalidAmount, r"splits\[0\].amount"),
        ([{"recipient_id": "exec_1", "reason": "r"}], InvalidInput, r"splits\[0\]"),
        ([{"recipient_id": "exec_1", "amount": 1, "bogus": 1}], InvalidInput, "unknown keys"),
        (
            [{"recipient_id": "exec_1", "amount": 90}, {"recipient_id": "nobody", "amount": 10}],
            NotFound,
            r"splits\[1\].recipient_id",
        ),
        (
            [{"recipient_id": "exec_1", "amount": 90}, {"recipient_id": "sup_1", "amount": 10.01}],
            InvalidAmount,
            "more than escrow",
        ),
    ]
    for splits, exc, pattern in bad_splits:
        with pytest.raises(exc, match=pattern):
            await platform.split_payment(ESCROW, splits)
    with pytest.raises(InvalidAmount, match=r"add up to 95.00, not the total 100.00"):
        await platform.split_payment(
            ESCROW,
            [{"recipient_id": "exec_1", "amount": 90}, {"recipient_id": "sup_1", "amount": 5}],
            total=100,
        )
    assert snapshot(db) == before
    invariant(db)


async def test_retried_release_and_split_pay_once(platform: EmbeddedPlatform, db: Database) -> None:
    await locked(platform)
    first = await platform.release_escrow(ESCROW, 30, "exec_1", "m1", idempotency_key="rel-m1")
    for _ in range(3):
        assert await platform.release_escrow(ESCROW, 30, "exec_1", "m1", idempotency_key="rel-m1") == first
    assert balances(db)["wallet:exec_1"] == 30_000_000
    with pytest.raises(IdempotencyConflict):
        await platform.release_escrow(ESCROW, 31, "exec_1", "m1", idempotency_key="rel-m1")
    with pytest.raises(IdempotencyConflict):  # a key belongs to one operation
        await platform.split_payment(
            ESCROW, [{"recipient_id": "exec_1", "amount": 1}], idempotency_key="rel-m1"
        )

    splits = [{"recipient_id": "exec_1", "amount": 63}, {"recipient_id": "sup_1", "amount": 7}]
    s1 = await platform.split_payment(ESCROW, splits, total=70, idempotency_key="final")
    s2 = await platform.split_payment(ESCROW, splits, total=70, idempotency_key="final")
    assert s1 == s2
    bal = balances(db)
    assert bal["wallet:exec_1"] == 93_000_000 and bal["wallet:sup_1"] == 7_000_000
    assert bal[f"escrow:{WF}"] == 0
    # without a key each call is a new payment: here, one the escrow can no longer afford
    with pytest.raises(InvalidAmount):
        await platform.release_escrow(ESCROW, 1, "exec_1", "m2")
    invariant(db)


# --- Identity -----------------------------------------------------------------------------------------


async def test_identity_calls(platform: EmbeddedPlatform, db: Database) -> None:
    assert await platform.verify_identity(user_id="exec_1", role="executor") is True
    assert await platform.verify_identity(user_id="exec_1", role="supervisor") is False
    assert await platform.verify_identity(user_id="nobody", role="executor") is False
    assert await platform.verify_identity(user_id="gone", role="supervisor") is False
    with pytest.raises(InvalidInput, match="role"):
        await platform.verify_identity("exec_1", "wizard")

    profile = await platform.get_user_profile("sup_1")
    assert profile["roles"] == ["supervisor"] and profile["reputation"] == 0.5
    assert profile["supervisor_profile"] is None
    with pytest.raises(NotFound):
        await platform.get_user_profile("nobody")

    with pytest.raises(Forbidden) as stranger:  # sup_1 has not supervised WF yet
        await platform.record_approval_quality("sup_1", WF, 0.95)
    assert stranger.value.rule == "supervised_workflow"
    supervised_by(db, "sup_1", WF, "wf_other")
    result = await platform.record_approval_quality(supervisor_id="sup_1", workflow_id=WF, quality_score=0.95)
    assert result["reputation"] == reputation([], [0.95]) > 0.5
    assert (await platform.record_approval_quality("sup_1", WF, 0.95)) == result  # same record: no change
    with pytest.raises(Conflict):
        await platform.record_approval_quality("sup_1", WF, 0.5)
    for bad in (1.5, -0.1, float("nan"), "0.9", True):
        with pytest.raises(InvalidInput, match="quality_score"):
            await platform.record_approval_quality("sup_1", "wf_other", bad)
    with pytest.raises(NotFound):
        await platform.record_approval_quality("nobody", WF, 0.9)
    with pytest.raises(InvalidInput, match="supervisor role"):
        await platform.record_approval_quality("exec_1", WF, 0.9)
    assert (await platform.get_user_profile("sup_1"))["reputation"] == result["reputation"]


# --- Marketplace --------------------------------------------------------------------------------------


async def test_marketplace_find_request_rate(platform: EmbeddedPlatform, db: Database) -> None:
    await platform.register_supervisor("sup_1", ["data_processing", "finance"], price_per_approval=2.5)
    await platform.register_supervisor("sup_2", ["data_processing"], price_per_approval="1")
    await platform.register_supervisor("sup_3", ["data_processing"], price_per_approval=1, available=False)

    supervised_by(db, "sup_1", "wf_a", "wf_b", "wf_c")
    supervised_by(db, "sup_2", "wf_d")
    for wf, rating in (("wf_a", 5), ("wf_b", 5), ("wf_c", 4)):
        r = await platform.rate_supervisor(supervisor_id="sup_1", workflow_id=wf, rating=rating, review="ok")
    assert r["reputation"] == reputation([5, 5, 4], [])
    await platform.rate_supervisor("sup_2", "wf_d", 2)
    with pytest.raises(Forbidden, match="did not supervise"):
        await platform.rate_supervisor("sup_2", "wf_a", 1)

    found = await platform.find_supervisors(workflow_type="data_processing", min_reputation=0.0)
    assert [s["supervisor_id"] for s in found] == ["sup_1", "sup_2"]  # sup_3 unavailable
    assert found[0]["reputation"] > found[1]["reputation"]
    assert found[0]["price_per_approval"] == "2.50" and found[0]["specialties"] == [
        "data_processing",
        "finance",
    ]
    assert set(found[0]) >= {"supervisor_id", "reputation", "specialties", "available", "price_per_approval"}
    assert [s["supervisor_id"] for s in await platform.find_supervisors("data_processing", 0.6)] == ["sup_1"]
    assert await platform.find_supervisors("painting") == []

    await platform.create_job("supervised_workflow", {"workflow_id": WF}, 10, "exec_1")
    await locked(platform, 10)
    assigned = await platform.request_supervisor(supervisor_id=found[0]["supervisor_id"], workflow_id=WF)
    assert assigned["status"] == "assigned" and assigned["supervisor_id"] == "sup_1"
    assert await platform.request_supervisor("sup_1", WF) == assigned  # asking again changes nothing
    with pytest.raises(Conflict, match="already has supervisor"):
        await platform.request_supervisor("sup_2", WF)

    profile = await platform.get_user_profile("sup_1")
    assert profile["ratings_count"] == 3 and profile["supervisor_profile"]["available"] is True


async def test_marketplace_bad_input_moves_nothing(platform: EmbeddedPlatform, db: Database) -> None:
    await platform.register_supervisor("sup_1", ["data_processing"], price_per_approval=1)
    await platform.register_supervisor("sup_2", ["data_processing"], price_per_approval=1, available=False)
    await platform.register_supervisor("sup_3", ["data_processing"], price_per_approval=1)
    await platform.create_job("supervised_workflow", {"workflow_id": WF}, 10, "sup_3")
    before = snapshot(db)
    for bad in (0, 6, -1, 4.5, "5", True, None):
        with pytest.raises(InvalidInput, match="rating") as err:
            await platform.rate_supervisor("sup_1", WF, bad)  # type: ignore[arg-type]
        assert err.value.field == "rating"
    with pytest.raises(NotFound):
        await platform.rate_supervisor("nobody", WF, 5)
    with pytest.raises(InvalidInput, match="supervisor role"):
        await platform.rate_supervisor("exec_1", WF, 5)
    with pytest.raises(InvalidInput, match="supervisor_id"):
        await platform.rate_supervisor("bad id!", WF, 5)
    with pytest.raises(Forbidden) as four_eyes:  # sup_3 executes WF
        await platform.request_supervisor("sup_3", WF)
    assert four_eyes.value.rule == "four_eyes"
    with pytest.raises(Conflict, match="not available"):
        await platform.request_supervisor("sup_2", WF)
    with pytest.raises(NotFound, match="unknown to the platform"):
        await platform.request_supervisor("sup_1", "wf_never_seen")
    with pytest.raises(NotFound, match="no marketplace profile"):
        await _no_profile(platform)
    with pytest.raises(InvalidInput, match="min_reputation"):
        await platform.find_supervisors("data_processing", 1.5)
    with pytest.raises(InvalidInput, match="workflow_type"):
        await platform.find_supervisors("")
    with pytest.raises(InvalidInput, match="supervisor role"):
        await platform.register_supervisor("exec_1", ["x"], 1)
    with pytest.raises(InvalidAmount, match="price_per_approval"):
        await platform.register_supervisor("sup_1", ["x"], -1)
    assert snapshot(db) == before

    supervised_by(db, "sup_1", WF)
    await platform.rate_supervisor("sup_1", WF, 4, "good")
    with pytest.raises(Conflict, match="already rated"):  # one rating per (supervisor, workflow)
        await platform.rate_supervisor("sup_1", WF, 5, "better")
    assert count(db, supervisor_ratings) == 1


async def _no_profile(platform: EmbeddedPlatform) -> None:
    with platform.db.transaction() as conn:
        id_store.create_identity(conn, "sup_noprofile", roles=["supervisor"])
    await platform.request_supervisor("sup_noprofile", WF)


async def test_automatic_assignment_skips_the_parties(platform: EmbeddedPlatform, db: Database) -> None:
    await platform.register_supervisor("sup_3", ["data_processing"], price_per_approval=1)
    await platform.register_supervisor("sup_1", ["data_processing"], price_per_approval=1)
    supervised_by(db, "sup_3", "wf_old")
    await platform.rate_supervisor("sup_3", "wf_old", 5)  # the best reputation, but it executes WF
    await platform.create_job("supervised_workflow", {"workflow_id": WF}, 10, "sup_3")
    with pytest.raises(NotFound, match="unknown to the platform"):
        await platform.assign_supervisor("wf_never_seen", "data_processing")
    with pytest.raises(NotFound, match="no available supervisor"):
        await platform.assign_supervisor(WF, "painting")
    assigned = await platform.assign_supervisor(WF, "data_processing")
    assert assigned["supervisor_id"] == "sup_1"
    assert (await platform.assign_supervisor(WF, "data_processing"))["supervisor_id"] == "sup_1"
    assert count(db, supervisor_assignments) == 2  # wf_old's and WF's


async def test_rate_supervisor_idempotent(platform: EmbeddedPlatform, db: Database) -> None:
    supervised_by(db, "sup_1", "wf_a", "wf_b")
    first = await platform.rate_supervisor("sup_1", "wf_a", 5, "great", idempotency_key="rate-1")
    assert await platform.rate_supervisor("sup_1", "wf_a", 5, "great", idempotency_key="rate-1") == first
    assert count(db, supervisor_ratings) == 1
    with pytest.raises(IdempotencyConflict):
        await platform.rate_supervisor("sup_1", "wf_b", 5, "great", idempotency_key="rate-1")
    with pytest.raises(InvalidInput, match="idempotency_key"):
        await platform.rate_supervisor("sup_1", "wf_b", 5, idempotency_key="")


def test_reputation_rule() -> None:
    assert reputation([], []) == 0.5
    assert reputation([5], []) == 0.625  # (1.5 + 1) / 4: one rating moves a newcomer only a little
    assert reputation([1], []) == 0.375
    assert reputation([5] * 12, []) == 0.9
    assert reputation([5, 5], [0.0, 0.0]) < reputation([5, 5], [])  # poor approvals pull it down


# --- the seed's client delegates to the embedded platform ----------------------------------------------


async def test_x402_integration_delegates(platform: EmbeddedPlatform, db: Database) -> None:
    x402 = X402Integration(database=db)
    assert x402.mode == "embedded"
    job = await x402.create_job(
        job_type="supervised_workflow",
        job_data={"workflow_id": WF},
        escrow_amount=100.0,
        executor_id="exec_1",
    )
    escrow = await x402.lock_escrow(workflow_id=WF, amount=100.0, poster_id="poster_1", executor_id="exec_1")
    await x402.release_escrow(
        escrow_id=escrow["escrow_id"], amount=50.0, recipient_id="exec_1", reason="checkpoint_approved"
    )
    await x402.split_payment(
        escrow_id=escrow["escrow_id"],
        splits=[
            {"recipient_id": "exec_1", "amount": 45.0, "reason": "execution"},
            {"recipient_id": "sup_1", "amount": 5.0, "reason": "supervision"},
        ],
    )
    assert await x402.verify_identity(user_id="exec_1", role="executor")
    assert (await x402.get_user_profile("sup_1"))["reputation"] == 0.5
    sub = await x402.create_approval_subjob(
        parent_job_id=job["job_id"], checkpoint_id="cp", supervisor_id="sup_1", approval_data={}
    )
    assert (await x402.get_job(job["job_id"]))["subjobs"] == [sub["job_id"]]
    await platform.register_supervisor("sup_1", ["data_processing"], 1)
    assert (await x402.find_supervisors(workflow_type="data_processing", min_reputation=0.0))[0][
        "supervisor_id"
    ]
    await x402.request_supervisor(supervisor_id="sup_1", workflow_id=WF)
    await x402.record_approval_quality(supervisor_id="sup_1", workflow_id=WF, quality_score=0.95)
    rated = await x402.rate_supervisor(supervisor_id="sup_1", workflow_id=WF, rating=5, review="Quick")
    assert rated["reputation"] == reputation([5], [0.95])
    artifact = await x402.create_artifact("checkpoint_state", '{"a": 1}', {"workflow_id": WF})
    assert (await x402.get_artifact(artifact["uri"]))["content"] == '{"a": 1}'
    await x402.close()
    bal = balances(db)
    assert bal["wallet:exec_1"] == 95_000_000 and bal["wallet:sup_1"] == 5_000_000
    invariant(db)
