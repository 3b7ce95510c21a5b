"""The escrow ledger's rules as pure values: double-entry postings in integer micro-units.

Every movement of money is a ``Posting`` whose ``Leg`` amounts sum to exactly zero, so money is never
created or destroyed inside SafeRun: it only enters through a *funding source* (the one kind of account
allowed to go negative, because its balance mirrors money that arrived from outside) and moves between
accounts from there. A leg's amount is the change of that account's balance: positive = it receives.

The life of a workflow's escrow::

    lock     funding:<poster>  -total   escrow:<wf> +total          when the workflow is initialized
    release  escrow:<wf>       -a_i     wallet:<executor> +e_i       once per approved milestone i
                                        wallet:<supervisor> +s_i     (a_i = e_i + s_i, exactly)
    refund   escrow:<wf>       -held    funding:<poster> +held       at settlement, success or failure

so at every moment ``locked = released + refunded + held`` (``EscrowPosition.invariant_holds``). The
refund goes back to the funding source it came from rather than to a poster wallet: the lock draws from
funding, so money parked in a poster wallet would have no way out.

Amounts are ``int`` micro-units and shares/weights are ``Decimal`` or ``int`` turned into exact
``Fraction`` arithmetic; a float is refused everywhere because it cannot represent 0.9 or 100.01.

Nothing here does I/O: ``saferun.storage.ledger`` persists postings and enforces the balance rule
against the stored history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from math import floor, lcm
from typing import Any

from saferun.errors import InvalidAmount, InvalidInput, LedgerError

ESCROW_PREFIX = "escrow:"
FUNDING_PREFIX = "funding:"
WALLET_PREFIX = "wallet:"

KIND_LOCK = "lock"
KIND_RELEASE = "release"
KIND_REFUND = "refund"

DEFAULT_EXECUTOR_SHARE = Decimal("0.9")

# Column limits of ``ledger_legs`` / ``ledger_transactions``: refuse here, with a clear message, what the
# database would otherwise refuse (or, worse, overflow) at commit time.
MAX_ACCOUNT_LENGTH = 300
MAX_KIND_LENGTH = 32
_INT64_MAX = 2**63 - 1


# --- accounts ----------------------------------------------------------------------------------------


def _party(value: str, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, f"must be a non-empty string, got {value!r}")
    return value


def escrow_account(workflow_id: str) -> str:
    """The account holding one workflow's locked money; never negative."""
    return ESCROW_PREFIX + _party(workflow_id, "workflow_id")


def funding_account(party_id: str) -> str:
    """A party's funding source: money entering or leaving SafeRun, hence allowed to go negative."""
    return FUNDING_PREFIX + _party(party_id, "party_id")


def wallet_account(party_id: str) -> str:
    """Money SafeRun owes a party (executor or supervisor earnings); never negative."""
    return WALLET_PREFIX + _party(party_id, "party_id")


def is_source(account: str) -> bool:
    """Sources are exempt from the no-negative-balance rule: their balance is outside money."""
    return account.startswith(FUNDING_PREFIX)


# --- postings ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leg:
    """One account's balance change inside a posting; zero legs are refused because they say nothing."""

    account: str
    amount: int

    def __post_init__(self) -> None:
        if not isinstance(self.account, str) or not self.account:
            raise LedgerError(
                f"leg account must be a non-empty string, got {self.account!r}", account=self.account
            )
        if len(self.account) > MAX_ACCOUNT_LENGTH:
            raise LedgerError(
                f"leg account is longer than {MAX_ACCOUNT_LENGTH} characters", account=self.account
            )
        # bool is an int subclass and Decimal/float would smuggle fractions of a micro-unit in
        if type(self.amount) is not int:
            raise LedgerError(
                f"leg amount for {self.account!r} must be an int of micro-units, "
                f"got {type(self.amount).__name__} {self.amount!r}",
                account=self.account,
            )
        if self.amount == 0:
            raise LedgerError(f"leg amount for {self.account!r} must not be zero", account=self.account)
        if abs(self.amount) > _INT64_MAX:
            raise LedgerError(
                f"leg amount for {self.account!r} does not fit in 64 bits", account=self.account
            )


@dataclass(frozen=True, slots=True)
class Posting:
    """A balanced set of legs that is stored atomically; construction refuses an unbalanced one."""

    kind: str
    legs: tuple[Leg, ...]
    memo: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.legs, tuple):
            # accept any sequence of legs but keep the value hashable and immutable
            object.__setattr__(self, "legs", tuple(self.legs))
        self.validate()

    def validate(self) -> None:
        """Re-checkable: the store calls it again because a frozen dataclass can still be forced."""
        if not isinstance(self.kind, str) or not self.kind:
            raise LedgerError(f"posting kind must be a non-empty string, got {self.kind!r}")
        if len(self.kind) > MAX_KIND_LENGTH:
            raise LedgerError(f"posting kind {self.kind!r} is longer than {MAX_KIND_LENGTH} characters")
        if not isinstance(self.memo, str):
            raise LedgerError(f"posting memo must be a string, got {type(self.memo).__name__}")
        if len(self.legs) < 2:
            # one non-zero leg can never balance; zero legs would be an empty, meaningless transaction
            raise LedgerError(
                f"{self.kind} posting needs at least two legs, got {len(self.legs)}", kind=self.kind
            )
        for leg in self.legs:
            if not isinstance(leg, Leg):
                raise LedgerError(f"{self.kind} posting has a non-Leg entry {leg!r}", kind=self.kind)
        total = sum(leg.amount for leg in self.legs)
        if total != 0:
            raise LedgerError(
                f"{self.kind} posting legs sum to {total}, not zero", kind=self.kind, imbalance=total
            )

    def delta(self, account: str) -> int:
        """Net change of ``account`` (an account may appear in several legs, e.g. executor = supervisor)."""
        return sum(leg.amount for leg in self.legs if leg.account == account)


# --- allocation --------------------------------------------------------------------------------------


def _exact(value: int | Decimal, field: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise InvalidAmount(field, f"must be an int or Decimal, got {type(value).__name__} {value!r}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise InvalidAmount(field, f"must be finite, got {value!r}")
    return Fraction(value)


def _micro(amount: int, field: str, *, positive: bool = False) -> int:
    if type(amount) is not int:
        raise InvalidAmount(field, f"must be an int of micro-units, got {type(amount).__name__} {amount!r}")
    if amount < 0:
        raise InvalidAmount(field, f"must not be negative, got {amount}")
    if positive and amount == 0:
        # a zero movement would be an empty posting: callers skip it instead (nothing to move)
        raise InvalidAmount(field, "must be greater than zero (post nothing for a zero amount)")
    if amount > _INT64_MAX:
        raise InvalidAmount(field, f"{amount} does not fit in 64 bits")
    return amount


MAX_WEIGHT = Decimal(1_000_000)
_WEIGHT_PLACES = 6


def check_weight(value: Any, field: str = "milestone_weight") -> Decimal:
    """A milestone weight as an exact Decimal: finite, ``0 < w <= MAX_WEIGHT``, at most 6 decimals.

    Unbounded weights made ``allocate`` do unbounded work (``1e-999999`` has a denominator of a million
    digits) and let a weight of ``1e30`` starve every other milestone to zero."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InvalidAmount(field, f"must be a number, got {type(value).__name__}")
    try:
        dec = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except (ArithmeticError, ValueError):
        raise InvalidAmount(field, f"{value!r} is not a number") from None
    if not dec.is_finite():
        raise InvalidAmount(field, f"must be a finite number, got {value!r}")
    if not Decimal(0) < dec <= MAX_WEIGHT:
        raise InvalidAmount(field, f"must be greater than 0 and at most {MAX_WEIGHT}, got {value!r}")
    if dec.as_tuple().exponent < -_WEIGHT_PLACES and dec != dec.quantize(Decimal(1).scaleb(-_WEIGHT_PLACES)):
        raise InvalidAmount(field, f"must have at most {_WEIGHT_PLACES} decimal places, got {value!r}")
    return dec


def allocate(total: int, weights: Sequence[int | Decimal]) -> list[int]:
    """Split ``total`` by ``weights`` so the parts sum exactly to it (largest-remainder method).

    Every part is the floor of its exact share, then the micro-units left over go one each to the parts
    with the largest fractional remainders, lower index first on ties, so the result is deterministic
    and each part is within one micro-unit of its exact share.
    """
    total = _micro(total, "total")
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence):
        raise InvalidAmount("weights", f"must be a sequence of weights, got {type(weights).__name__}")
    if not weights:
        raise InvalidAmount("weights", "must not be empty")
    exact = [_exact(w, f"weights[{i}]") for i, w in enumerate(weights)]
    for i, w in enumerate(exact):
        if w <= 0:
            raise InvalidAmount(f"weights[{i}]", f"must be greater than zero, got {weights[i]}")
    # scale the weights to integers so the whole split is integer division
    scale = lcm(*(w.denominator for w in exact))
    ints = [w.numerator * (scale // w.denominator) for w in exact]
    weight_sum = sum(ints)
    parts: list[int] = []
    remainders: list[int] = []
    for w in ints:
        q, r = divmod(total * w, weight_sum)
        parts.append(q)
        remainders.append(r)
    left = total - sum(parts)  # < len(weights): each floor lost less than one unit
    for i in sorted(range(len(parts)), key=lambda i: (-remainders[i], i))[:left]:
        parts[i] += 1
    return parts


def split_release(amount: int, executor_share: Decimal, has_supervisor: bool) -> tuple[int, int]:
    """``(executor, supervisor)`` parts of a released amount; the supervisor's part is rounded down.

    Rounding goes to the executor (the one who did the work) and the two parts always sum to
    ``amount``, so no micro-unit is lost. Without a supervisor the executor gets everything.
    """
    amount = _micro(amount, "amount")
    share = _executor_share(executor_share)
    if not has_supervisor:
        return amount, 0
    supervisor = floor(amount * (1 - share))
    return amount - supervisor, supervisor


def _executor_share(value: Decimal) -> Fraction:
    share = _exact(value, "executor_share")
    if not 0 <= share <= 1:
        raise InvalidAmount("executor_share", f"must be between 0 and 1, got {value}")
    return share


# --- posting builders --------------------------------------------------------------------------------


def lock(workflow_id: str, poster_id: str, amount: int) -> Posting:
    """Move the poster's escrow from their funding source into the workflow's escrow account."""
    amount = _micro(amount, "amount", positive=True)
    return Posting(
        KIND_LOCK,
        (
            Leg(funding_account(poster_id), -amount),
            Leg(escrow_account(workflow_id), amount),
        ),
        memo=f"lock escrow of workflow {workflow_id}",
    )


def release(
    workflow_id: str,
    amount: int,
    executor_id: str,
    supervisor_id: str | None,
    executor_share: Decimal = DEFAULT_EXECUTOR_SHARE,
    *,
    milestone: int | None = None,
) -> Posting:
    """Pay one approved milestone's allocation out of escrow to the executor and supervisor.

    A party whose part rounds to zero gets no leg (zero legs are refused). ``milestone`` only labels
    the memo; what makes a milestone payable once is the idempotency key (``release_key``).
    """
    amount = _micro(amount, "amount", positive=True)
    _party(executor_id, "executor_id")
    if supervisor_id is not None:
        _party(supervisor_id, "supervisor_id")
    executor_part, supervisor_part = split_release(amount, executor_share, supervisor_id is not None)
    legs = [Leg(escrow_account(workflow_id), -amount)]
    if executor_part:
        legs.append(Leg(wallet_account(executor_id), executor_part))
    if supervisor_part and supervisor_id is not None:
        legs.append(Leg(wallet_account(supervisor_id), supervisor_part))
    label = f"milestone {milestone}" if milestone is not None else "milestone"
    return Posting(KIND_RELEASE, tuple(legs), memo=f"release {label} of workflow {workflow_id}")


def refund(workflow_id: str, poster_id: str, amount: int) -> Posting:
    """Return what is still held in escrow to the poster's funding source (settlement or failure)."""
    amount = _micro(amount, "amount", positive=True)
    return Posting(
        KIND_REFUND,
        (
            Leg(escrow_account(workflow_id), -amount),
            Leg(funding_account(poster_id), amount),
        ),
        memo=f"refund unreleased escrow of workflow {workflow_id}",
    )


def lock_key(workflow_id: str) -> str:
    """Idempotency key of a workflow's lock: a workflow locks escrow once."""
    return f"lock:{_party(workflow_id, 'workflow_id')}"


def release_key(workflow_id: str, milestone: str | int) -> str:
    """Idempotency key of one milestone's release (by checkpoint id or index): what makes it pay once.

    Derived from *what* is paid, never from when, so a retried or replayed decision maps to the same key.
    """
    if (
        isinstance(milestone, bool)
        or not isinstance(milestone, str | int)
        or milestone == ""
        or (isinstance(milestone, int) and milestone < 0)
    ):
        raise InvalidInput("milestone", f"must be a checkpoint id or a non-negative index, got {milestone!r}")
    return f"release:{_party(workflow_id, 'workflow_id')}:{milestone}"


def refund_key(workflow_id: str) -> str:
    """Idempotency key of a workflow's settlement refund: settlement happens once."""
    return f"refund:{_party(workflow_id, 'workflow_id')}"


# --- positions ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EscrowPosition:
    """Where a workflow's locked money is now; ``held`` is the escrow account's actual balance."""

    locked: int
    released: int
    refunded: int
    held: int

    def invariant_holds(self) -> bool:
        """False means money entered or left escrow other than by lock/release/refund, or overdrew it."""
        return (
            self.locked == self.released + self.refunded + self.held
            and min(self.locked, self.released, self.refunded, self.held) >= 0
        )


def position_from_escrow_deltas(deltas_by_kind: Mapping[str, int]) -> EscrowPosition:
    """Build a position from the net escrow-account change per posting kind.

    ``held`` sums *every* kind, while locked/released/refunded only count their own kind: a posting of
    any other kind that touches escrow therefore breaks the invariant instead of hiding in it. Shared by
    the pure and the stored computation so both read positions the same way.
    """
    return EscrowPosition(
        locked=int(deltas_by_kind.get(KIND_LOCK, 0)),
        released=-int(deltas_by_kind.get(KIND_RELEASE, 0)),
        refunded=-int(deltas_by_kind.get(KIND_REFUND, 0)),
        held=sum(int(v) for v in deltas_by_kind.values()),
    )


def position_from_postings(workflow_id: str, postings: Iterable[Posting]) -> EscrowPosition:
    """The escrow position of one workflow given (at least) all postings that touched its escrow."""
    account = escrow_account(workflow_id)
    deltas: dict[str, int] = {}
    for posting in postings:
        delta = posting.delta(account)
        if delta:
            deltas[posting.kind] = deltas.get(posting.kind, 0) + delta
    return position_from_escrow_deltas(deltas)


def position_from_entries(workflow_id: str, entries: Iterable[Mapping[str, Any]]) -> EscrowPosition:
    """The escrow position from a workflow's stored postings as read (``kind`` and ``legs`` of each, as
    ``storage.ledger.entries`` returns them): the read path computes it from the postings it has just
    checked against the chain, so the balance served is the one that was verified."""
    account = escrow_account(workflow_id)
    deltas: dict[str, int] = {}
    for entry in entries:
        delta = sum(int(leg["amount_micro"]) for leg in entry["legs"] if leg["account"] == account)
        if delta:
            deltas[entry["kind"]] = deltas.get(entry["kind"], 0) + delta
    return position_from_escrow_deltas(deltas)


def balances_from_postings(postings: Iterable[Posting]) -> dict[str, int]:
    """Every account's balance after ``postings``: the in-memory twin of the stored SUM over legs."""
    balances: dict[str, int] = {}
    for posting in postings:
        for leg in posting.legs:
            balances[leg.account] = balances.get(leg.account, 0) + leg.amount
    return balances


def negative_accounts(balances: Mapping[str, int]) -> list[str]:
    """Non-source accounts that are overdrawn; must always be empty."""
    return sorted(a for a, b in balances.items() if b < 0 and not is_source(a))
