"""Charts (issue 14, item 5): the pure arithmetic (``domain/series``), the aggregate queries against a
seeded week of decisions on SQLite and PostgreSQL (the numbers the charts show equal the seeded ones, and
the queries are a fixed number of aggregates however many rows there are), and the SVG drawing."""

from __future__ import annotations

import bisect
import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from saferun.core.charts import ChartData, Latency, Load, TimeSeries
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain import series
from saferun.domain.policy import Caller, Role
from saferun.storage.database import Database
from saferun.ui import charts
from tests.chart_support import seed_history

# ---------------------------------------------------------------------- pure: domain/series


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (42.4, "42s"),
        (60, "1m"),
        (130, "2m 10s"),
        (600, "10m"),
        (3600, "1h"),
        (4980, "1h 23m"),
        (86400, "1d"),
        (97200, "1d 3h"),
    ],
)
def test_duration_words(seconds: float, text: str) -> None:
    assert series.duration(seconds) == text


def test_bucket_labels_cover_every_bucket() -> None:
    assert series.bucket_labels((10, 60)) == ["<10s", "10s–1m", "≥1m"]
    assert len(series.bucket_labels(series.LATENCY_EDGES)) == len(series.LATENCY_EDGES) + 1


def test_fill_buckets_is_dense_and_refuses_a_stray_index() -> None:
    assert series.fill_buckets({0: 2, 3: 5}, 4) == [2, 0, 0, 5]
    with pytest.raises(ValueError, match="bucket 4 outside"):
        series.fill_buckets({4: 1}, 4)


@pytest.mark.parametrize(
    ("count", "p", "rank"), [(4, 50, 1), (10, 99, 9), (10, 90, 8), (1, 50, 0), (100_000, 99, 98_999)]
)
def test_percentile_rank_is_nearest_rank(count: int, p: float, rank: int) -> None:
    assert series.percentile_rank(count, p) == rank


def test_percentile_rank_refuses_nothing_to_rank() -> None:
    with pytest.raises(ValueError):
        series.percentile_rank(0, 50)
    with pytest.raises(ValueError):
        series.percentile_rank(5, 0)


def test_time_buckets_pick_the_narrowest_round_width() -> None:
    hour = series.time_buckets(3600 * 10 + 5, 3600 * 20)
    assert (hour.width, hour.start, hour.count) == (3600, 36000, 11)
    week = series.time_buckets(0, 7 * 86400 - 1)
    assert week.width == 6 * 3600 and week.count == 28
    one = series.time_buckets(100, 100)
    assert one.count == 1 and one.index(100) == 0
    years = series.time_buckets(0, 3 * 365 * 86400)
    assert (
        years.count <= series.MAX_TIME_BUCKETS and years.start + years.count * years.width > 3 * 365 * 86400
    )


def test_cumulative_and_ticks() -> None:
    assert series.cumulative([1, 0, 2, 5]) == [1, 1, 3, 8]
    assert series.ticks(7) == [0, 2, 4, 6, 8]
    assert series.ticks(3, whole=True) == [0, 1, 2, 3, 4]
    assert series.ticks(0, whole=True) == [0, 1, 2, 3, 4]
    assert series.nice_ceiling(0.3) == 0.5 and series.nice_ceiling(120) == 200


# ---------------------------------------------------------------------- aggregates on both stores


def _nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[series.percentile_rank(len(ordered), p)]


def test_chart_numbers_equal_the_seeded_history(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    seeded = seed_history(orch, 40)
    data = orch.chart_data(now=seeded.now)

    # latency: the histogram and the exact nearest-rank percentiles of the human decisions
    expected = [0] * (len(series.LATENCY_EDGES) + 1)
    for value in seeded.latencies:
        expected[bisect.bisect_right(series.LATENCY_EDGES, value)] += 1
    assert data.latency.counts == expected
    for p in series.PERCENTILES:
        assert data.latency.percentiles[p] == pytest.approx(_nearest_rank(seeded.latencies, p), abs=0.01)

    # decisions by kind over the whole axis; the axis covers the seeded week in at most 30 buckets
    assert data.decisions.axis is not None and data.decisions.axis.count <= series.MAX_TIME_BUCKETS
    totals = {k: sum(v) for k, v in data.decisions.values.items()}
    assert totals == {k: seeded.kinds[k] for k in ("APPROVED", "MODIFIED", "REJECTED", "TIMEOUT")}

    # the pending queue's age
    ages = [0] * (len(series.LATENCY_EDGES) + 1)
    for age in seeded.pending_ages:
        ages[bisect.bisect_right(series.LATENCY_EDGES, age)] += 1
    assert data.pending_age == ages

    # money: the running totals end where the ledger's own per-workflow positions add up to
    positions = [orch.escrow_position(wf) for wf in seeded.workflow_ids]
    assert data.money.values["lock"][-1] == sum(p.locked for p in positions)
    assert data.money.values["release"][-1] == sum(p.released for p in positions)
    assert data.money.values["refund"][-1] == sum(p.refunded for p in positions) > 0
    assert all(a <= b for a, b in zip(data.money.values["lock"], data.money.values["lock"][1:], strict=False))

    # per-supervisor load: decisions made and requests waiting
    loads = {row.who: row for row in data.load}
    for who, n in seeded.decided_by.items():
        assert loads[who].decided == n
    for who, n in seeded.pending_for.items():
        assert loads[who].pending == n


def test_a_workflows_charts_count_only_that_workflow(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    seeded = seed_history(orch, 6)
    first = seeded.workflow_ids[0]  # seeded APPROVED
    data = orch.chart_data(workflow_id=first, now=seeded.now)
    assert {k: sum(v) for k, v in data.decisions.values.items()} == {
        "APPROVED": 1,
        "MODIFIED": 0,
        "REJECTED": 0,
        "TIMEOUT": 0,
    }
    assert data.money.values["lock"][-1] == orch.escrow_position(first).locked
    assert data.latency.total == 1


def test_charts_count_only_what_the_caller_may_see(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    seeded = seed_history(orch, 10)
    stranger = Caller(identity_id="nobody", roles=frozenset({Role.POSTER}), authenticated=True)
    data = orch.chart_data(visible_to=stranger, now=seeded.now)
    assert data.latency.total == 0 and data.decisions.axis is None and data.money.axis is None
    assert data.load == [] and sum(data.pending_age) == 0


def test_chart_queries_are_a_fixed_number_of_aggregates(db: Database) -> None:
    """Seeding 10 or 40 workflows runs the same statements; none reads the rows of a table (each is a
    COUNT/SUM/MIN/MAX with GROUP BY, or the one ranked read that returns the three percentile rows)."""
    orch = WorkflowOrchestrator(database=db)
    counts = []
    for n in (10, 30):
        seeded = seed_history(orch, n, seed=n)
        seen: list[str] = []

        def record(_c: object, _cur: object, statement: str, *_: object, into: list[str] = seen) -> None:
            into.append(" ".join(statement.lower().split()))

        event.listen(db.engine, "before_cursor_execute", record)
        try:
            orch.chart_data(now=seeded.now)
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        selects = [s for s in seen if s.startswith("select")]
        counts.append(len(selects))
        for s in selects:
            aggregate = re.search(r"\b(count|sum|min|max|avg)\(", s)
            assert aggregate or "row_number() over" in s, s
    assert counts[0] == counts[1] == 9, counts


# ---------------------------------------------------------------------- drawing


def _data(**overrides: object) -> ChartData:
    base: dict[str, object] = {
        "latency": Latency([3, 1, 0, 0, 0, 0, 0, 0, 2], {50: 8.0, 90: 86400.0, 99: 90000.0}),
        "decisions": TimeSeries(
            series.TimeBuckets(0, 3600, 2),
            {"APPROVED": [2, 1], "MODIFIED": [0, 1], "REJECTED": [1, 0], "TIMEOUT": [0, 1]},
        ),
        "pending_age": [0, 2, 0, 0, 0, 0, 0, 0, 1],
        "money": TimeSeries(
            series.TimeBuckets(0, 3600, 2),
            {"lock": [100_000_000, 250_000_000], "release": [0, 90_000_000], "refund": [0, 10_000_000]},
        ),
        "load": [Load("<script>alert(1)</script>", 4, 30.0, 1), Load(None, 0, 0.0, 2)],
    }
    base.update(overrides)
    return ChartData(**base)  # type: ignore[arg-type]


def test_figures_are_labelled_svg_with_a_title_per_mark_and_escaped_names() -> None:
    figs = {f.key: f for f in charts.figures(_data())}
    assert list(figs) == ["latency", "decisions", "pending-age", "money", "load"]
    for fig in figs.values():
        svg = str(fig.svg)
        assert svg.startswith('<svg class="chart-svg"') and 'role="img"' in svg
        assert f'aria-labelledby="{fig.key}-t {fig.key}-d"' in svg and "<desc" in svg
        assert "style=" not in svg  # the CSP allows no inline style
    latency = str(figs["latency"].svg)
    assert latency.count("<rect") == 3  # one bar per non-empty bucket
    assert "<title>&lt;10s: 3</title>" in latency
    assert dict(figs["latency"].stats) == {"p50": "8s", "p90": "1d", "p99": "1d 1h"}
    decisions = str(figs["decisions"].svg)
    assert decisions.count("<rect") == 5 and "timed out: 1" in decisions
    load = str(figs["load"].svg)
    assert "<script>" not in load and "&lt;script&gt;" in load and "(any supervisor)" in load
    assert figs["money"].rows[-1] == ["Jan 01 01:00", "$250.00", "$90.00", "$10.00"]
    assert "$150.00 still held" in figs["money"].summary


def test_empty_charts_say_so_instead_of_drawing_nothing() -> None:
    empty = _data(
        latency=Latency([0] * 9, {}),
        decisions=TimeSeries(None, {}),
        pending_age=[0] * 9,
        money=TimeSeries(None, {}),
        load=[],
    )
    figs = charts.figures(empty)
    assert all(f.empty and not str(f.svg) for f in figs)
    assert figs[0].summary == "No human decision recorded yet."


def test_money_ticks_read_as_dollars() -> None:
    assert [
        charts.money_label(v) for v in (0, 7_500_000, 120_000_000, 12_000_000_000, 3_400_000_000_000)
    ] == ["$0", "$7.5", "$120", "$12k", "$3.4M"]


def test_exact_dollars_are_grouped() -> None:
    assert charts.dollars(13_990_000_000) == "$13,990.00"
    assert charts.dollars(1_500_001) == "$1.500001"
    assert charts.dollars(0) == "$0.00"


def test_time_labels_fit_the_bucket_width() -> None:
    at = int(datetime(2026, 12, 6, 14, 30, tzinfo=UTC).timestamp())
    assert charts.time_label(at, 300) == "14:30"
    assert charts.time_label(at, 3600) == "Dec 06 14:30"
    assert charts.time_label(at, 86400) == "Dec 06"
