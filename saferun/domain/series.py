"""The arithmetic behind the dashboard's charts: bucket edges, time-bucket widths, percentile ranks, axis
ticks and cumulative series (pure; the store does the counting with ``GROUP BY``, these shape it).

Charts read aggregates, never rows: a store with 100,000 workflows answers each chart with a handful of
grouped rows, so the only per-row work happens inside the database. What is left for Python is choosing
the buckets before the query and turning its few rows into what is drawn, which is all here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# Waiting times span seconds to days, so the buckets grow roughly geometrically (a linear axis would put
# every human decision in its first bar). Upper edges in seconds; the last bucket is open-ended.
LATENCY_EDGES: tuple[int, ...] = (10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
# Candidate widths for time buckets (seconds): a minute up to thirty days, each a "round" unit.
TIME_WIDTHS: tuple[int, ...] = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
MAX_TIME_BUCKETS = 30
PERCENTILES: tuple[int, ...] = (50, 90, 99)


def duration(seconds: float) -> str:
    """A waiting time in the largest units that keep it short: ``42s``, ``5m``, ``1h 20m``, ``2d 3h``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        m, rest = divmod(s, 60)
        return f"{m}m" if m >= 10 or not rest else f"{m}m {rest}s"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h" if not m else f"{h}h {m}m"
    d, h = divmod(s // 3600, 24)
    return f"{d}d" if not h else f"{d}d {h}h"


def bucket_labels(edges: Sequence[int]) -> list[str]:
    """One label per bucket for upper ``edges`` (plus the open last one): ``<10s``, ``10s–30s``, ``≥1d``."""
    if not edges:
        return ["all"]
    labels = [f"<{duration(edges[0])}"]
    labels += [f"{duration(lo)}–{duration(hi)}" for lo, hi in itertools.pairwise(edges)]
    labels.append(f"≥{duration(edges[-1])}")
    return labels


def fill_buckets(counts: Mapping[int, int], size: int) -> list[int]:
    """The grouped query's ``{bucket index: count}`` as a dense list (missing buckets are zero).

    An index outside ``0..size-1`` means the query and the edges disagree: refused, not silently dropped.
    """
    out = [0] * size
    for index, count in counts.items():
        if not 0 <= index < size:
            raise ValueError(f"bucket {index} outside 0..{size - 1}")
        out[index] += int(count)
    return out


def percentile_rank(count: int, percentile: float) -> int:
    """The 0-based rank (``OFFSET``) of the nearest-rank ``percentile`` among ``count`` sorted values.

    Nearest rank (ceil(p/100 · n)), so p50 of [1, 2, 3, 4] is 2 and p99 of 10 values is the largest: the
    value is always one that was observed, never an interpolation nobody waited.
    """
    if count <= 0:
        raise ValueError("no values")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    return max(0, math.ceil(percentile / 100 * count) - 1)


@dataclass(frozen=True, slots=True)
class TimeBuckets:
    """A time axis: ``count`` buckets of ``width`` seconds from ``start`` (epoch seconds, aligned)."""

    start: int
    width: int
    count: int

    def index(self, epoch: float) -> int:
        return min(self.count - 1, max(0, int((epoch - self.start) // self.width)))

    def starts(self) -> list[int]:
        return [self.start + i * self.width for i in range(self.count)]


def time_buckets(first: float, last: float, max_buckets: int = MAX_TIME_BUCKETS) -> TimeBuckets:
    """The narrowest round width that covers ``first``..``last`` in at most ``max_buckets`` buckets,
    aligned to a multiple of the width (days start at midnight UTC, hours on the hour)."""
    if last < first:
        raise ValueError("last is before first")
    for width in TIME_WIDTHS:
        start = int(first // width) * width
        count = int(last // width) - int(first // width) + 1
        if count <= max_buckets:
            return TimeBuckets(start, width, count)
    width = TIME_WIDTHS[-1]
    start = int(first // width) * width
    # wider than thirty days per bucket: widen by whole multiples instead of growing the axis
    factor = math.ceil((last - start + 1) / (width * max_buckets))
    width *= factor
    return TimeBuckets(start, width, int((last - start) // width) + 1)


def cumulative(values: Iterable[int]) -> list[int]:
    """Running totals (exact integers: money stays in micro-units until it is formatted)."""
    total = 0
    out = []
    for v in values:
        total += v
        out.append(total)
    return out


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above ``value``: a round top for a chart's y axis."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    base = 10.0**exponent
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * base * (1 + 1e-12):
            return step * base
    return 10.0 * base  # pragma: no cover - the loop always returns


def ticks(maximum: float, count: int = 4, *, whole: bool = False) -> list[float]:
    """``count`` + 1 evenly spaced ticks from 0 to a round top at or above ``maximum``; ``whole`` keeps
    the step a whole number (a count of decisions has no quarter decisions)."""
    step = nice_ceiling(maximum / count) if maximum > 0 else 1.0
    if whole:
        step = max(1.0, float(math.ceil(step)))
    return [step * i for i in range(count + 1)]
