"""The pure ledger rules: exact allocation, exact splits, balanced postings, escrow invariant."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saferun.domain import ledger
from saferun.domain.ledger import (
    EscrowPosition,
    Leg,
    Posting,
    allocate,
    balances_from_postings,
    escrow_account,
    funding_account,
    is_source,
    negative_accounts,
    position_from_postings,
    split_release,
    wallet_account,
)
from saferun.domain.money import to_micro
from saferun.errors import InvalidAmount, InvalidInput, LedgerError

MAX_TOTAL = 10**15  # a billion USDC in micro-units

int_weights = st.integers(min_value=1, max_value=10**6)
decimal_weights = st.decimals(
    min_value=Decimal("0.001"), max_value=Decimal("1000"), places=3, allow_nan=False, allow_infinity=False
)
weights_strategy = st.lists(st.one_of(int_weights, decimal_weights), min_size=1, max_size=12)
shares = st.decimals(min_value=0, max_value=1, places=4, allow_nan=False, allow_infinity=False)


# --- postings ----------------------------------------------------------------------------------------


def test_posting_must_balance() -> None:
    with pytest.raises(LedgerError, match="sum to 5"):
        Posting("lock", (Leg("funding:p", -5), Leg("escrow:w", 10)))


@pytest.mark.parametrize("amount", [0])
def test_zero_leg_refused(amount: int) -> None:
    with pytest.raises(LedgerError, match="must not be zero"):
        Leg("escrow:w", amount)


@pytest.mark.parametrize("amount", [1.0, Decimal("1"), True, "1", None])
def test_non_int_leg_refused(amount: object) -> None:
    with pytest.raises(LedgerError, match="must be an int"):
        Leg("escrow:w", amount)  # type: ignore[arg-type]


def test_empty_and_single_leg_postings_refused() -> None:
    with pytest.raises(LedgerError, match="at least two legs"):
        Posting("lock", ())
    with pytest.raises(LedgerError, match="at least two legs"):
        Posting("lock", (Leg("escrow:w", 1),))


def test_posting_rejects_bad_kind_and_non_legs() -> None:
    with pytest.raises(LedgerError, match="kind"):
        Posting("", (Leg("a", 1), Leg("b", -1)))
    with pytest.raises(LedgerError, match="non-Leg"):
        Posting("x", (Leg("a", 1), ("b", -1)))  # type: ignore[arg-type]


def test_posting_accepts_a_list_but_stays_immutable() -> None:
    p = Posting("x", [Leg("a", 1), Leg("b", -1)])  # type: ignore[arg-type]
    assert isinstance(p.legs, tuple)
    assert hash(p) == hash(Posting("x", (Leg("a", 1), Leg("b", -1))))


def test_account_helpers() -> None:
    assert escrow_account("wf_1") == "escrow:wf_1"
    assert funding_account("alice") == "funding:alice"
    assert wallet_account("bob") == "wallet:bob"
    assert is_source("funding:alice")
    assert not is_source("escrow:wf_1") and not is_source("wallet:bob")
    with pytest.raises(InvalidInput):
        escrow_account("")


# --- allocation --------------------------------------------------------------------------------------


def test_hundred_point_oh_one_over_three_milestones() -> None:
    total = to_micro("100.01")
    assert total == 100_010_000
    assert allocate(total, [1, 1, 1]) == [33_336_667, 33_336_667, 33_336_666]
    assert allocate(total, [Decimal("1"), Decimal("1"), Decimal("1")]) == [33_336_667, 33_336_667, 33_336_666]


def test_allocate_largest_remainder_not_first_come() -> None:
    # exact shares 1.6 / 1.6 / 0.8 (x micro): remainders .6 .6 .8 -> the 0.8 part gets the first extra unit
    assert allocate(4, [2, 2, 1]) == [2, 1, 1]
    assert allocate(0, [1, 2, 3]) == [0, 0, 0]
    assert allocate(5, [Decimal("0.5")]) == [5]


@pytest.mark.parametrize(
    ("total", "weights", "field"),
    [
        (-1, [1], "total"),
        (1.5, [1], "total"),
        (10, [], "weights"),
        (10, [1, 0], "weights[1]"),
        (10, [1, -2], "weights[1]"),
        (10, [1, 0.5], "weights[1]"),
        (10, [True], "weights[0]"),
        (10, [Decimal("NaN")], "weights[0]"),
    ],
)
def test_allocate_refuses_bad_input(total: object, weights: list[object], field: str) -> None:
    with pytest.raises(InvalidAmount) as err:
        allocate(total, weights)  # type: ignore[arg-type]
    assert err.value.field == field


@given(st.integers(min_value=0, max_value=MAX_TOTAL), weights_strategy)
def test_allocate_is_exact_and_fair(total: int, weights: list[int | Decimal]) -> None:
    parts = allocate(total, weights)
    assert len(parts) == len(weights)
    assert sum(parts) == total
    assert all(type(p) is int and p >= 0 for p in parts)
    weight_sum = sum(Fraction(w) for w in weights)
    for part, w in zip(parts, weights, strict=True):
        exact = Fraction(total) * Fraction(w) / weight_sum
        assert abs(part - exact) < 1
    assert allocate(total, weights) == parts  # deterministic


# --- release split -----------------------------------------------------------------------------------


def test_split_release_examples() -> None:
    assert split_release(1_000_000, Decimal("0.9"), True) == (900_000, 100_000)
    assert split_release(33_336_667, Decimal("0.9"), True) == (30_003_001, 3_333_666)
    assert split_release(33_336_667, Decimal("0.9"), False) == (33_336_667, 0)
    assert split_release(7, Decimal(1), True) == (7, 0)
    assert split_release(7, Decimal(0), True) == (0, 7)
    assert split_release(7, 1, True) == (7, 0)


@pytest.mark.parametrize("share", [Decimal("1.01"), Decimal("-0.1"), 0.9, Decimal("Infinity"), 2])
def test_split_release_refuses_bad_share(share: object) -> None:
    with pytest.raises(InvalidAmount) as err:
        split_release(100, share, True)  # type: ignore[arg-type]
    assert err.value.field == "executor_share"


@given(st.integers(min_value=0, max_value=MAX_TOTAL), shares, st.booleans())
def test_split_release_is_exact(amount: int, share: Decimal, has_supervisor: bool) -> None:
    executor, supervisor = split_release(amount, share, has_supervisor)
    assert executor + supervisor == amount
    assert executor >= 0 and supervisor >= 0
    if has_supervisor:
        exact_supervisor = Fraction(amount) * (1 - Fraction(share))
        assert supervisor <= exact_supervisor < supervisor + 1
    else:
        assert supervisor == 0


# --- builders ----------------------------------------------------------------------------------------


def test_builders_produce_the_documented_legs() -> None:
    assert ledger.lock("w", "p", 100).legs == (Leg("funding:p", -100), Leg("escrow:w", 100))
    rel = ledger.release("w", 100, "e", "s", Decimal("0.9"), milestone=2)
    assert rel.kind == "release"
    assert rel.legs == (Leg("escrow:w", -100), Leg("wallet:e", 90), Leg("wallet:s", 10))
    assert "milestone 2" in rel.memo
    # a part that rounds to zero gets no leg rather than a zero leg
    assert ledger.release("w", 100, "e", None).legs == (Leg("escrow:w", -100), Leg("wallet:e", 100))
    assert ledger.release("w", 5, "e", "s", Decimal("0.9")).legs == (Leg("escrow:w", -5), Leg("wallet:e", 5))
    assert ledger.release("w", 5, "e", "s", Decimal(0)).legs == (Leg("escrow:w", -5), Leg("wallet:s", 5))
    ref = ledger.refund("w", "p", 40)
    assert ref.kind == "refund"
    assert ref.legs == (Leg("escrow:w", -40), Leg("funding:p", 40))


@pytest.mark.parametrize("amount", [-1, 0, 1.5, Decimal("1")])
def test_builders_refuse_bad_amounts(amount: object) -> None:
    for build in (
        lambda: ledger.lock("w", "p", amount),  # type: ignore[arg-type]
        lambda: ledger.release("w", amount, "e", "s"),  # type: ignore[arg-type]
        lambda: ledger.refund("w", "p", amount),
    ):  # type: ignore[arg-type]
        with pytest.raises(InvalidAmount) as err:
            build()
        assert err.value.field == "amount"


def test_idempotency_keys_are_per_milestone() -> None:
    assert ledger.release_key("w", 0) != ledger.release_key("w", 1)
    assert ledger.release_key("w", "cp_review") == "release:w:cp_review"
    assert (ledger.lock_key("w"), ledger.refund_key("w")) == ("lock:w", "refund:w")
    assert len({ledger.lock_key("w"), ledger.release_key("w", 0), ledger.refund_key("w")}) == 3
    for bad in (-1, "", True, None):
        with pytest.raises(InvalidInput):
            ledger.release_key("w", bad)  # type: ignore[arg-type]


def test_position_detects_foreign_escrow_movement() -> None:
    postings = [ledger.lock("w", "p", 100), Posting("adjust", (Leg("escrow:w", -10), Leg("wallet:x", 10)))]
    pos = position_from_postings("w", postings)
    assert pos == EscrowPosition(locked=100, released=0, refunded=0, held=90)
    assert not pos.invariant_holds()
    assert not EscrowPosition(locked=0, released=0, refunded=10, held=-10).invariant_holds()


# --- whole lifecycles --------------------------------------------------------------------------------


@st.composite
def lifecycles(draw: st.DrawFn) -> dict[str, object]:
    weights = draw(weights_strategy)
    return {
        "total": draw(st.integers(min_value=1, max_value=MAX_TOTAL)),
        "weights": weights,
        "share": draw(shares),
        "supervisor": draw(st.sampled_from([None, "sup", "exe"])),  # "exe": supervisor is the executor
        # approvals in any order, repeats included (retries); settlement after a prefix of them
        "approvals": draw(st.lists(st.integers(min_value=0, max_value=len(weights) - 1), max_size=20)),
        "settle_after": draw(st.integers(min_value=0, max_value=20)),
    }


@given(lifecycles())
def test_random_lifecycle_keeps_every_promise(case: dict[str, object]) -> None:
    total: int = case["total"]  # type: ignore[assignment]
    weights: list[int | Decimal] = case["weights"]  # type: ignore[assignment]
    share: Decimal = case["share"]  # type: ignore[assignment]
    supervisor: str | None = case["supervisor"]  # type: ignore[assignment]
    approvals: list[int] = case["approvals"]  # type: ignore[assignment]
    wf, poster, executor = "wf", "poster", "exe"

    allocations = allocate(total, weights)
    journal: dict[str, Posting] = {}  # idempotency key -> posting, as the store keeps it

    def apply(key: str, posting: Posting | None) -> None:
        if posting is not None and key not in journal:
            journal[key] = posting
        postings = list(journal.values())
        pos = position_from_postings(wf, postings)
        assert pos.invariant_holds(), pos
        assert pos.locked == total
        assert negative_accounts(balances_from_postings(postings)) == []

    apply(ledger.lock_key(wf), ledger.lock(wf, poster, total))
    paid: set[int] = set()
    for i in approvals[: case["settle_after"]]:  # type: ignore[misc]
        amount = allocations[i]
        posting = ledger.release(wf, amount, executor, supervisor, share, milestone=i) if amount else None
        apply(ledger.release_key(wf, i), posting)
        paid.add(i)

    held = position_from_postings(wf, journal.values()).held
    apply(ledger.refund_key(wf), ledger.refund(wf, poster, held) if held else None)

    final = position_from_postings(wf, journal.values())
    expected_released = sum(allocations[i] for i in paid)
    assert final == EscrowPosition(
        locked=total, released=expected_released, refunded=total - expected_released, held=0
    )
    balances = balances_from_postings(journal.values())
    assert balances.get(funding_account(poster), 0) == -expected_released
    wallets = sum(b for a, b in balances.items() if a.startswith("wallet:"))
    assert wallets == expected_released
    assert sum(balances.values()) == 0
    # after settlement any further release would overdraw escrow, which the balance rule catches
    unpaid = [a for i, a in enumerate(allocations) if i not in paid and a]
    if unpaid:
        extra = ledger.release(wf, unpaid[0], executor, supervisor, share)
        assert negative_accounts(balances_from_postings([*journal.values(), extra])) == [escrow_account(wf)]
