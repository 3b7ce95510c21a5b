"""The stored ledger on SQLite and PostgreSQL: idempotency, no overdraft, positions, concurrency."""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, func, select

from saferun.domain import ledger
from saferun.domain.ledger import EscrowPosition, Leg, Posting
from saferun.errors import IdempotencyConflict, InvalidInput, LedgerError
from saferun.storage import ledger as store
from saferun.storage.database import Database
from saferun.storage.schema import ledger_legs, ledger_transactions


def _counts(conn: Connection) -> tuple[int, int]:
    txns = conn.execute(select(func.count()).select_from(ledger_transactions)).scalar_one()
    legs = conn.execute(select(func.count()).select_from(ledger_legs)).scalar_one()
    return txns, legs


def _wf() -> str:
    return "wf_" + uuid.uuid4().hex[:12]


def test_lock_release_refund_balances_and_position(db: Database) -> None:
    wf = _wf()
    total = 100_010_000
    parts = ledger.allocate(total, [1, 1, 1])
    with db.transaction() as conn:
        txn = store.post(
            conn, ledger.lock(wf, "poster", total), idempotency_key=ledger.lock_key(wf), workflow_id=wf
        )
        assert txn.startswith("txn_") and len(txn) == 24
        store.post(
            conn,
            ledger.release(wf, parts[0], "exe", "sup", Decimal("0.9"), milestone=0),
            idempotency_key=ledger.release_key(wf, 0),
            workflow_id=wf,
        )
    with db.transaction() as conn:
        assert store.balance(conn, ledger.escrow_account(wf)) == total - parts[0]
        assert store.balance(conn, "funding:poster") == -total
        assert store.balance(conn, "wallet:exe") == 30_003_001
        assert store.balance(conn, "wallet:sup") == 3_333_666
        assert store.balance(conn, "wallet:nobody") == 0
        assert store.escrow_position(conn, wf) == EscrowPosition(
            locked=total, released=parts[0], refunded=0, held=total - parts[0]
        )
        held = store.escrow_position(conn, wf).held
        store.post(
            conn, ledger.refund(wf, "poster", held), idempotency_key=ledger.refund_key(wf), workflow_id=wf
        )
    with db.read() as conn:
        pos = store.escrow_position(conn, wf)
        assert pos == EscrowPosition(locked=total, released=parts[0], refunded=total - parts[0], held=0)
        assert pos.invariant_holds()
        assert store.balance(conn, "funding:poster") == -parts[0]
        rows = store.entries(conn, wf)
    assert [e["kind"] for e in rows] == ["lock", "release", "refund"]
    assert rows[0]["txn_id"] == txn
    assert rows[0]["idempotency_key"] == ledger.lock_key(wf)
    assert rows[0]["created_at"].tzinfo is not None
    assert rows[1]["legs"] == [
        {"account": f"escrow:{wf}", "amount_micro": -parts[0]},
        {"account": "wallet:exe", "amount_micro": 30_003_001},
        {"account": "wallet:sup", "amount_micro": 3_333_666},
    ]
    assert "milestone 0" in rows[1]["memo"]
    with db.read() as conn:
        assert store.entries(conn, "wf_unknown") == []
        assert store.escrow_position(conn, "wf_unknown") == EscrowPosition(0, 0, 0, 0)


def test_idempotent_repost_writes_nothing(db: Database) -> None:
    wf = _wf()
    with db.transaction() as conn:
        first = store.post(conn, ledger.lock(wf, "p", 500), idempotency_key="k1", workflow_id=wf)
        # same transaction: the retry sees its own write
        assert store.post(conn, ledger.lock(wf, "p", 500), idempotency_key="k1", workflow_id=wf) == first
        before = _counts(conn)
        assert store.exists(conn, "k1") and not store.exists(conn, "k2")
    with db.transaction() as conn:
        # later transaction, legs given in another order and another memo: still the same posting
        swapped = Posting("lock", (Leg(f"escrow:{wf}", 500), Leg("funding:p", -500)), memo="retry")
        assert store.post(conn, swapped, idempotency_key="k1", workflow_id=wf) == first
        assert _counts(conn) == before
        assert store.balance(conn, f"escrow:{wf}") == 500


def test_releasing_a_milestone_twice_pays_once(db: Database) -> None:
    wf = _wf()
    with db.transaction() as conn:
        store.post(conn, ledger.lock(wf, "p", 300), idempotency_key=ledger.lock_key(wf), workflow_id=wf)
    for _ in range(3):
        with db.transaction() as conn:
            store.post(
                conn,
                ledger.release(wf, 100, "e", None, milestone=1),
                idempotency_key=ledger.release_key(wf, 1),
                workflow_id=wf,
            )
    with db.read() as conn:
        assert store.balance(conn, "wallet:e") == 100
        assert store.escrow_position(conn, wf).released == 100


@pytest.mark.parametrize("change", ["amount", "kind", "account", "workflow"])
def test_conflicting_repost_raises(db: Database, change: str) -> None:
    wf = _wf()
    with db.transaction() as conn:
        store.post(conn, ledger.lock(wf, "p", 500), idempotency_key="k", workflow_id=wf)
    other = {
        "amount": (ledger.lock(wf, "p", 501), wf),
        "kind": (Posting("deposit", ledger.lock(wf, "p", 500).legs), wf),
        "account": (ledger.lock(wf, "q", 500), wf),
        "workflow": (ledger.lock(wf, "p", 500), None),
    }[change]
    with pytest.raises(IdempotencyConflict) as err, db.transaction() as conn:
        store.post(conn, other[0], idempotency_key="k", workflow_id=other[1])
    assert err.value.key == "k"
    with db.read() as conn:
        assert _counts(conn) == (1, 2)


def test_overdraw_raises_and_rollback_writes_nothing(db: Database) -> None:
    wf = _wf()
    with db.transaction() as conn:
        store.post(conn, ledger.lock(wf, "p", 100), idempotency_key="lock", workflow_id=wf)
    with pytest.raises(LedgerError) as err, db.transaction() as conn:
        store.post(conn, ledger.release(wf, 60, "e", None), idempotency_key="r1", workflow_id=wf)
        store.post(conn, ledger.release(wf, 60, "e", None), idempotency_key="r2", workflow_id=wf)
    assert err.value.fields["account"] == f"escrow:{wf}"
    assert err.value.fields["balance"] == -20
    with db.read() as conn:
        # the first (valid) release shared the failed transaction, so it is gone too
        assert _counts(conn) == (1, 2)
        assert store.balance(conn, f"escrow:{wf}") == 100
        assert store.balance(conn, "wallet:e") == 0
    # the keys were not consumed: a correct release under r1 goes through afterwards
    with db.transaction() as conn:
        store.post(conn, ledger.release(wf, 60, "e", None), idempotency_key="r1", workflow_id=wf)


def test_wallets_cannot_go_negative_but_funding_can(db: Database) -> None:
    with pytest.raises(LedgerError, match="wallet:x"), db.transaction() as conn:
        store.post(
            conn,
            Posting("payout", (Leg("wallet:x", -1), Leg("funding:x", 1))),
            idempotency_key="payout",
            workflow_id=None,
        )
    with db.transaction() as conn:
        store.post(
            conn,
            Posting("deposit", (Leg("funding:x", -7), Leg("wallet:x", 7))),
            idempotency_key="deposit",
            workflow_id=None,
        )
        assert store.balance(conn, "funding:x") == -7


def test_bad_idempotency_key_refused(db: Database) -> None:
    with db.transaction() as conn:
        for key in ["", "k" * 301]:
            with pytest.raises(InvalidInput):
                store.post(conn, ledger.lock("w", "p", 1), idempotency_key=key, workflow_id="w")
        assert _counts(conn) == (0, 0)


# --- concurrency -------------------------------------------------------------------------------------


def _in_thread(db: Database, posting: Posting, key: str, wf: str) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            with db.transaction() as conn:
                outcome.append(store.post(conn, posting, idempotency_key=key, workflow_id=wf))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_concurrent_releases_cannot_both_overdraw(db: Database) -> None:
    wf = _wf()
    with db.transaction() as conn:
        store.post(conn, ledger.lock(wf, "p", 100), idempotency_key="lock", workflow_id=wf)
    with db.transaction() as conn:
        store.post(conn, ledger.release(wf, 70, "e", None), idempotency_key="r1", workflow_id=wf)
        thread, outcome = _in_thread(db, ledger.release(wf, 70, "e", None), "r2", wf)
        time.sleep(0.5)  # the second writer is now waiting for our lock
        assert outcome == []
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], LedgerError), outcome
    with db.read() as conn:
        assert store.balance(conn, f"escrow:{wf}") == 30
        assert store.escrow_position(conn, wf).invariant_holds()


@pytest.mark.parametrize("same", [True, False])
def test_concurrent_same_key(db: Database, same: bool) -> None:
    wf = _wf()
    with db.transaction() as conn:
        first = store.post(conn, ledger.lock(wf, "p", 100), idempotency_key="lock", workflow_id=wf)
        thread, outcome = _in_thread(db, ledger.lock(wf, "p", 100 if same else 99), "lock", wf)
        time.sleep(0.5)
    thread.join(30)
    if same:
        assert outcome == [first]
    else:
        assert len(outcome) == 1 and isinstance(outcome[0], IdempotencyConflict), outcome
    with db.read() as conn:
        assert _counts(conn) == (1, 2)


# --- random decision sequences against the real store -----------------------------------------------

decisions = st.lists(
    st.one_of(
        st.tuples(st.just("approve"), st.integers(min_value=0, max_value=5)),
        st.tuples(st.just("settle"), st.just(0)),
        st.tuples(st.just("overdraw"), st.integers(min_value=1, max_value=10**9)),
    ),
    max_size=10,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    total=st.integers(min_value=1, max_value=10**12),
    weights=st.lists(
        st.one_of(
            st.integers(min_value=1, max_value=100),
            st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10"), places=2),
        ),
        min_size=1,
        max_size=6,
    ),
    share=st.decimals(min_value=0, max_value=1, places=3),
    supervisor=st.sampled_from([None, "sup"]),
    steps=decisions,
)
def test_random_decisions_keep_the_invariant(
    db: Database,
    total: int,
    weights: list[int | Decimal],
    share: Decimal,
    supervisor: str | None,
    steps: list[tuple[str, int]],
) -> None:
    wf = _wf()  # the database is shared by all examples of one test run
    poster, executor = f"poster-{wf}", f"exe-{wf}"
    allocations = ledger.allocate(total, weights)
    paid: set[int] = set()
    settled = False

    def check() -> None:
        with db.read() as conn:
            pos = store.escrow_position(conn, wf)
            assert pos.invariant_holds(), pos
            assert pos.locked == total
            released = sum(allocations[i] for i in paid)
            assert pos.released == released
            assert pos.held == (0 if settled else total - released)
            for account in [ledger.escrow_account(wf), ledger.wallet_account(executor), "wallet:sup"]:
                assert store.balance(conn, account) >= 0
            assert store.balance(conn, ledger.funding_account(poster)) == -(total - pos.refunded)

    with db.transaction() as conn:
        store.post(conn, ledger.lock(wf, poster, total), idempotency_key=ledger.lock_key(wf), workflow_id=wf)
    check()
    for action, arg in steps:
        if action == "approve":
            i = arg % len(allocations)
            if settled or allocations[i] == 0:
                continue  # the workflow engine releases nothing after settlement or for a zero part
            with db.transaction() as conn:
                store.post(
                    conn,
                    ledger.release(wf, allocations[i], executor, supervisor, share, milestone=i),
                    idempotency_key=ledger.release_key(wf, i),
                    workflow_id=wf,
                )
            paid.add(i)
        elif action == "settle":
            with db.transaction() as conn:
                held = store.escrow_position(conn, wf).held
                if held:
                    store.post(
                        conn,
                        ledger.refund(wf, poster, held),
                        idempotency_key=ledger.refund_key(wf),
                        workflow_id=wf,
                    )
            settled = True
        else:
            with db.read() as conn:
                held = store.escrow_position(conn, wf).held
            with pytest.raises(LedgerError), db.transaction() as conn:
                store.post(
                    conn,
                    ledger.release(wf, held + arg, executor, supervisor, share),
                    idempotency_key=f"{wf}:bogus:{arg}",
                    workflow_id=wf,
                )
        check()
