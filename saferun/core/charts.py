"""What the charts on ``/stats`` and a workflow's page show, read in one transaction from aggregates.

``chart_data`` runs a fixed number of grouped queries (``saferun.storage.charts``) whatever the store
holds, and shapes their rows with ``saferun.domain.series``: dense buckets, exact nearest-rank
percentiles, time axes and running totals. The result is plain data; drawing it is the dashboard's job
(``saferun.ui.charts``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection

from saferun.domain import series
from saferun.domain.ledger import KIND_LOCK, KIND_REFUND, KIND_RELEASE
from saferun.storage import charts as q
from saferun.storage.charts import TIMEOUT, Scope

DECISION_KINDS = ("APPROVED", "MODIFIED", "REJECTED", TIMEOUT)
MONEY_KINDS = (KIND_LOCK, KIND_RELEASE, KIND_REFUND)
# pending requests by age: the same geometric buckets as the latency (a queue is "old" on that scale too)
AGE_EDGES = series.LATENCY_EDGES
TOP_SUPERVISORS = 10


@dataclass(frozen=True, slots=True)
class Latency:
    """Human decision latency: the histogram over ``series.LATENCY_EDGES`` and p50/p90/p99 in seconds."""

    counts: list[int]
    percentiles: dict[int, float]

    @property
    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class TimeSeries:
    """Values per time bucket and kind; ``axis`` is None when nothing happened yet."""

    axis: series.TimeBuckets | None
    values: dict[str, list[int]]


@dataclass(frozen=True, slots=True)
class Load:
    """One supervisor's load: decisions made (mean seconds taken) and requests waiting for them."""

    who: str | None
    decided: int = 0
    mean_seconds: float = 0.0
    pending: int = 0


@dataclass(frozen=True, slots=True)
class ChartData:
    latency: Latency
    decisions: TimeSeries
    pending_age: list[int]
    money: TimeSeries  # running totals of micro-units locked / released / refunded
    load: list[Load] = field(default_factory=list)


# How long the store-wide charts are reused while no kept count moved (see ChartCache)
CACHE_SECONDS = 10.0


class ChartCache:
    """The store-wide chart data, reused for at most ``CACHE_SECONDS`` while nothing it counts changed.

    The charts' grouped queries read every decision, pending request and escrow posting: seconds at
    100,000 workflows (issue 14), and ``/stats`` re-asks every 5 s while open. An entry is keyed by who
    asked (their visibility) and stamped with the kept counts (``storage.counters``: workflows by state,
    requests by status, decisions), read in one statement; any decision, pause, expiry or state change
    moves those, so a changed store is always recomputed. What can be up to ``CACHE_SECONDS`` old: the
    pending requests' ages (the smallest age bucket is 10 s wide) and a posting that moved no count (an
    x402 payment funding an existing workflow). A workflow's own charts are never cached.
    """

    def __init__(self, seconds: float = CACHE_SECONDS) -> None:
        self.seconds = seconds
        self._entries: dict[Hashable, tuple[float, Hashable, ChartData]] = {}
        self._lock = threading.Lock()

    def get(self, who: Hashable, stamp: Hashable) -> ChartData | None:
        with self._lock:
            entry = self._entries.get(who)
        if entry is None or entry[1] != stamp or time.monotonic() - entry[0] > self.seconds:
            return None
        return entry[2]

    def put(self, who: Hashable, stamp: Hashable, data: ChartData) -> None:
        with self._lock:
            if len(self._entries) > 256:  # one per distinct viewer; a bound, not an eviction policy
                self._entries.clear()
            self._entries[who] = (time.monotonic(), stamp, data)


def chart_data(conn: Connection, scope: Scope, now: datetime) -> ChartData:
    return ChartData(
        latency=_latency(conn, scope),
        decisions=_decisions(conn, scope),
        pending_age=series.fill_buckets(q.pending_age(conn, scope, now, AGE_EDGES), len(AGE_EDGES) + 1),
        money=_money(conn, scope),
        load=_load(conn, scope),
    )


def _latency(conn: Connection, scope: Scope) -> Latency:
    edges = series.LATENCY_EDGES
    counts = series.fill_buckets(q.latency_histogram(conn, scope, edges), len(edges) + 1)
    total = sum(counts)
    if not total:
        return Latency(counts, {})
    ranks = [series.percentile_rank(total, p) for p in series.PERCENTILES]
    values = q.latency_at_ranks(conn, scope, ranks)
    return Latency(counts, dict(zip(series.PERCENTILES, values, strict=True)))


def _decisions(conn: Connection, scope: Scope) -> TimeSeries:
    span = q.decision_span(conn, scope)
    if span is None:
        return TimeSeries(None, {k: [] for k in DECISION_KINDS})
    axis = series.time_buckets(span[0].timestamp(), span[1].timestamp())
    return TimeSeries(axis, _dense(q.decisions_over_time(conn, scope, axis), axis, DECISION_KINDS))


def _money(conn: Connection, scope: Scope) -> TimeSeries:
    span = q.money_span(conn, scope)
    if span is None:
        return TimeSeries(None, {k: [] for k in MONEY_KINDS})
    axis = series.time_buckets(span[0].timestamp(), span[1].timestamp())
    per_bucket = _dense(q.money_over_time(conn, scope, axis), axis, MONEY_KINDS)
    return TimeSeries(axis, {k: series.cumulative(v) for k, v in per_bucket.items()})


def _dense(
    rows: dict[tuple[int, str], int], axis: series.TimeBuckets, kinds: tuple[str, ...]
) -> dict[str, list[int]]:
    out = {k: [0] * axis.count for k in kinds}
    for (slot, kind), n in rows.items():
        if kind in out:  # e.g. a decision word outside the four is not drawn rather than mislabelled
            out[kind][min(max(slot, 0), axis.count - 1)] += n
    return out


def _load(conn: Connection, scope: Scope) -> list[Load]:
    """The busiest supervisors by decisions made plus requests waiting for them (top ``TOP_SUPERVISORS``)."""
    decided: dict[str | None, tuple[int, float]] = {
        who: (n, mean) for who, n, mean in q.decided_by(conn, scope, TOP_SUPERVISORS)
    }
    waiting = dict(q.pending_by_supervisor(conn, scope, TOP_SUPERVISORS))
    people: set[str | None] = set(decided) | set(waiting)
    rows = [Load(who, *decided.get(who, (0, 0.0)), pending=waiting.get(who, 0)) for who in people]
    rows.sort(key=lambda r: (-(r.decided + r.pending), r.who is None, r.who or ""))
    return rows[:TOP_SUPERVISORS]
