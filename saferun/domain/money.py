"""Money as integer micro-units (6 decimals, like USDC): never a float in any arithmetic.

The seed writes amounts as floats (``escrow_amount=100.0``). A float is accepted at the edge only
through its shortest repr (``100.01`` -> ``Decimal("100.01")``), then turned into an exact integer
count of micro-units. An amount with more than 6 decimals is refused rather than silently rounded: a
supervisor's fee must never differ from what the poster typed.
"""

from __future__ import annotations

from decimal import Decimal, DecimalException
from typing import Any

from saferun.errors import InvalidAmount

DECIMALS = 6
MICRO = 10**DECIMALS
_QUANTUM = Decimal(1).scaleb(-DECIMALS)
# every amount is stored as a signed 64-bit count of micro-units (BIGINT on PostgreSQL and SQLite)
MAX_MICRO = 2**63 - 1
MAX_AMOUNT = Decimal(MAX_MICRO).scaleb(-DECIMALS)  # 9223372036854.775807


def to_decimal(value: Any, field: str = "amount") -> Decimal:
    """Parse an amount given as int, float, str or Decimal; refuse anything else."""
    if isinstance(value, bool) or value is None:
        raise InvalidAmount(field, f"must be a number, got {value!r}")
    if isinstance(value, Decimal):
        dec = value
    elif isinstance(value, int):
        dec = Decimal(value)
    elif isinstance(value, float):
        dec = Decimal(repr(value))
    elif isinstance(value, str):
        if len(value) > 64:  # no amount needs more; a megabyte of digits would be parsed for nothing
            raise InvalidAmount(field, f"is {len(value)} characters long; an amount has at most 64")
        try:
            dec = Decimal(value.strip())
        except DecimalException:
            raise InvalidAmount(field, f"{value!r} is not a number") from None
    else:
        raise InvalidAmount(field, f"must be a number, got {type(value).__name__}")
    if not dec.is_finite():
        raise InvalidAmount(field, f"{value!r} is not a finite amount")
    # range first: quantizing 1e30 to 6 places overflows the decimal context (InvalidOperation)
    if dec.copy_abs() > MAX_AMOUNT:  # copy_abs, unlike abs(), never rounds (or overflows)
        raise InvalidAmount(field, f"{value!r} is out of range; amounts are at most {MAX_AMOUNT}")
    if dec != dec.quantize(_QUANTUM):
        raise InvalidAmount(field, f"{value!r} has more than {DECIMALS} decimal places")
    return dec.quantize(_QUANTUM)


def to_micro(value: Any, field: str = "amount", *, allow_zero: bool = True) -> int:
    """Exact micro-units of a non-negative amount."""
    dec = to_decimal(value, field)
    if dec < 0:
        raise InvalidAmount(field, f"must not be negative, got {dec}")
    if dec == 0 and not allow_zero:
        raise InvalidAmount(field, "must be greater than zero")
    return int(dec * MICRO)


def from_micro(micro: int) -> Decimal:
    return (Decimal(micro) / MICRO).quantize(_QUANTUM)


def format_micro(micro: int) -> str:
    """Human form with two to six decimals: ``100.01``, ``33.336667``."""
    text = f"{from_micro(micro):f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"
