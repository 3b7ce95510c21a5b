"""Server-rendered SVG charts for ``/stats`` and a workflow's page (pure: data in, escaped markup out).

No chart library and no script: each chart is an inline ``<svg role="img">`` with a ``<title>`` and a
``<desc>`` that says what it shows in words, a ``<title>`` on every bar and point (the exact value on
hover), and the same numbers as a table under "Data" for screen readers and for copying. Colours come
from CSS classes (the page's Content-Security-Policy allows no inline styles; SVG presentation
attributes and classes are not styles). Every label that came from a user (a supervisor's id) is
escaped here, since the markup is marked safe for the template.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from markupsafe import Markup, escape

from saferun.core.charts import DECISION_KINDS, MONEY_KINDS, ChartData, TimeSeries
from saferun.domain import series
from saferun.domain.money import format_micro

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 34
MAX_X_LABELS = 8

DECISION_NAMES = {
    "APPROVED": "approved",
    "MODIFIED": "modified",
    "REJECTED": "rejected",
    "TIMEOUT": "timed out",
}
MONEY_NAMES = {"lock": "locked", "release": "released", "refund": "refunded"}


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    css: str  # the class that colours it (``c-approved``…), defined in app.css
    values: Sequence[float]


@dataclass(frozen=True, slots=True)
class Figure:
    """One chart: its heading, one sentence of what it shows, the SVG, its legend and its data table."""

    key: str
    title: str
    summary: str
    svg: Markup
    legend: list[tuple[str, str]] = field(default_factory=list)
    head: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    stats: list[tuple[str, str]] = field(default_factory=list)  # headline numbers (p50 …) shown as chips
    empty: bool = False


def _fmt(value: float) -> str:
    """A number for SVG geometry: short, no exponent."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def count_label(value: float) -> str:
    return f"{int(value):,}"


def dollars(micro: int) -> str:
    """Exact micro-units as ``$13,990.00`` (``format_micro`` with thousands grouped)."""
    whole, _, frac = format_micro(micro).partition(".")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}${int(whole.lstrip('-')):,}.{frac}"


def money_label(micro: float) -> str:
    """An axis tick for micro-units: ``$0``, ``$7.5``, ``$120``, ``$12k``, ``$3.4M``."""
    amount = micro / 1_000_000
    if amount >= 1_000_000:
        return f"${amount / 1_000_000:.1f}M".replace(".0M", "M")
    if amount >= 10_000:
        return f"${amount / 1000:.0f}k"
    if amount >= 1000:
        return f"${amount / 1000:.1f}k".replace(".0k", "k")
    return f"${amount:.2f}".rstrip("0").rstrip(".") if amount < 10 else f"${amount:.0f}"


def time_label(epoch: int, width: int) -> str:
    at = datetime.fromtimestamp(epoch, UTC)
    if width < 3600:
        return at.strftime("%H:%M")
    if width < 86400:
        return at.strftime("%b %d %H:%M")
    return at.strftime("%b %d")


def _svg(title: str, desc: str, body: list[str], key: str) -> Markup:
    t, d = escape(title), escape(desc)
    return Markup(
        f'<svg class="chart-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{key}-t {key}-d" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{key}-t">{t}</title><desc id="{key}-d">{d}</desc>' + "".join(body) + "</svg>"
    )


def _y_axis(top: float, tick_values: list[float], fmt: Callable[[float], str]) -> list[str]:
    out = []
    plot_h = HEIGHT - TOP - BOTTOM
    for v in tick_values:
        y = TOP + plot_h - (v / top) * plot_h if top else TOP + plot_h
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_fmt(y)}" y2="{_fmt(y)}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{_fmt(y + 3.5)}" text-anchor="end">{escape(fmt(v))}</text>'
        )
    return out


def _x_labels(labels: Sequence[str], centers: Sequence[float], every: bool = False) -> list[str]:
    """Labels under the x axis: all of them for a few categories (``every``), else at most
    ``MAX_X_LABELS`` evenly spaced; one that would run past the right edge is right-aligned to it."""
    step = 1 if every else max(1, -(-len(labels) // MAX_X_LABELS))
    out = []
    right_of_last = float("-inf")
    for i, (label, x) in enumerate(zip(labels, centers, strict=True)):
        if i % step:
            continue
        half = len(label) * 3.1  # ~ half the label's width at the tick's size
        anchor, at, left = "middle", x, x - half
        if x + half > WIDTH - 2:
            anchor, at, left = "end", WIDTH - 2.0, WIDTH - 2.0 - 2 * half
        if left < right_of_last + 4:
            continue  # would overlap the label before it
        right_of_last = left + 2 * half
        out.append(
            f'<text class="tick" x="{_fmt(at)}" y="{HEIGHT - BOTTOM + 15}" text-anchor="{anchor}">'
            f"{escape(label)}</text>"
        )
    return out


def bar_chart(
    key: str,
    title: str,
    desc: str,
    labels: Sequence[str],
    stacks: Sequence[Series],
    fmt: Callable[[float], str] = count_label,
) -> Markup:
    """Vertical bars, one per label, stacked by series (a histogram is one series)."""
    totals = [sum(s.values[i] for s in stacks) for i in range(len(labels))]
    tick_values = series.ticks(max(totals, default=0), whole=True)
    top = tick_values[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    band = plot_w / max(len(labels), 1)
    bar_w = max(1.0, min(band * 0.72, 56.0))  # one bar alone stays a bar, not a slab
    body = _y_axis(top, tick_values, fmt)
    centers = []
    for i, label in enumerate(labels):
        x = LEFT + i * band + (band - bar_w) / 2
        centers.append(x + bar_w / 2)
        base = 0.0
        for s in stacks:
            v = s.values[i]
            if v <= 0:
                continue
            h = v / top * plot_h
            y = TOP + plot_h - (base + v) / top * plot_h
            tip = f"{label} · {s.name}: {fmt(v)}" if len(stacks) > 1 else f"{label}: {fmt(v)}"
            body.append(
                f'<rect class="{s.css}" x="{_fmt(x)}" y="{_fmt(y)}" width="{_fmt(bar_w)}" height="{_fmt(h)}">'
                f"<title>{escape(tip)}</title></rect>"
            )
            base += v
    body.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>'
    )
    body += _x_labels(labels, centers, every=len(labels) <= 10)
    return _svg(title, desc, body, key)


def line_chart(
    key: str,
    title: str,
    desc: str,
    labels: Sequence[str],
    lines: Sequence[Series],
    fmt: Callable[[float], str],
) -> Markup:
    """One line per series over the labels (time buckets), with a dot per point carrying its value."""
    tick_values = series.ticks(max((max(s.values, default=0) for s in lines), default=0))
    top = tick_values[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = len(labels)
    xs = [LEFT + (plot_w * (i + 0.5) / n) for i in range(n)]
    body = _y_axis(top, tick_values, fmt)
    for s in lines:
        ys = [TOP + plot_h - v / top * plot_h for v in s.values]
        points = " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in zip(xs, ys, strict=True))
        body.append(f'<polyline class="line {s.css}" points="{points}"/>')
        for x, y, label, v in zip(xs, ys, labels, s.values, strict=True):
            body.append(
                f'<circle class="dot {s.css}" cx="{_fmt(x)}" cy="{_fmt(y)}" r="3">'
                f"<title>{escape(f'{label} · {s.name}: {fmt(v)}')}</title></circle>"
            )
    body.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>'
    )
    body += _x_labels(labels, xs)
    return _svg(title, desc, body, key)


def hbar_chart(key: str, title: str, desc: str, labels: Sequence[str], stacks: Sequence[Series]) -> Markup:
    """Horizontal bars, one row per label (a person), stacked by series: long names fit on the left."""
    row_h, gap, label_w = 22, 6, 150
    height = TOP + len(labels) * (row_h + gap) + 24
    totals = [sum(s.values[i] for s in stacks) for i in range(len(labels))]
    tick_values = series.ticks(max(totals, default=0), whole=True)
    top = tick_values[-1]
    plot_w = WIDTH - label_w - RIGHT
    body = []
    for v in tick_values:
        x = label_w + v / top * plot_w
        body.append(
            f'<line class="grid" x1="{_fmt(x)}" x2="{_fmt(x)}" y1="{TOP}" y2="{height - 20}"/>'
            f'<text class="tick" x="{_fmt(x)}" y="{height - 6}" text-anchor="middle">{count_label(v)}</text>'
        )
    for i, label in enumerate(labels):
        y = TOP + i * (row_h + gap)
        shown = label if len(label) <= 22 else label[:21] + "…"
        body.append(
            f'<text class="row-label" x="{label_w - 8}" y="{_fmt(y + row_h / 2 + 4)}" text-anchor="end">'
            f"<title>{escape(label)}</title>{escape(shown)}</text>"
        )
        base = 0.0
        for s in stacks:
            v = s.values[i]
            if v <= 0:
                continue
            x = label_w + base / top * plot_w
            body.append(
                f'<rect class="{s.css}" x="{_fmt(x)}" y="{y}" width="{_fmt(v / top * plot_w)}" '
                f'height="{row_h}">'
                f"<title>{escape(f'{label} · {s.name}: {count_label(v)}')}</title></rect>"
            )
            base += v
    t, d = escape(title), escape(desc)
    return Markup(
        f'<svg class="chart-svg" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="{key}-t {key}-d" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{key}-t">{t}</title><desc id="{key}-d">{d}</desc>' + "".join(body) + "</svg>"
    )


# ---------------------------------------------------------------------- the five figures


def _time_labels(ts: TimeSeries) -> list[str]:
    assert ts.axis is not None
    return [time_label(start, ts.axis.width) for start in ts.axis.starts()]


def latency_figure(data: ChartData, key: str = "latency") -> Figure:
    lat = data.latency
    labels = series.bucket_labels(series.LATENCY_EDGES)
    title = "How long people take to decide"
    stats = [(f"p{p}", series.duration(v)) for p, v in lat.percentiles.items()]
    if not lat.total:
        return Figure(key, title, "No human decision recorded yet.", Markup(""), empty=True)
    p50, p90, p99 = (series.duration(lat.percentiles[p]) for p in series.PERCENTILES)
    plural = "s" if lat.total != 1 else ""
    summary = (
        f"{lat.total:,} human decision{plural}; half were made within {p50}, "
        f"90% within {p90}, 99% within {p99}."
    )
    svg = bar_chart(key, title, summary, labels, [Series("decisions", "c-bar", lat.counts)])
    return Figure(
        key,
        title,
        summary,
        svg,
        head=["waited", "decisions"],
        rows=[[label, count_label(n)] for label, n in zip(labels, lat.counts, strict=True)],
        stats=stats,
    )


def decisions_figure(data: ChartData, key: str = "decisions") -> Figure:
    ts = data.decisions
    title = "Decisions over time"
    if ts.axis is None:
        return Figure(key, title, "No decision recorded yet.", Markup(""), empty=True)
    labels = _time_labels(ts)
    totals = {k: sum(v) for k, v in ts.values.items()}
    summary = (
        f"Bars of {series.duration(ts.axis.width)} each: "
        + ", ".join(f"{totals[k]:,} {DECISION_NAMES[k]}" for k in DECISION_KINDS)
        + " in all (timed out = decided by the checkpoint's on_timeout policy)."
    )
    stacks = [Series(DECISION_NAMES[k], f"c-{k.lower()}", ts.values[k]) for k in DECISION_KINDS]
    svg = bar_chart(key, title, summary, labels, stacks)
    rows = [
        [label] + [count_label(ts.values[k][i]) for k in DECISION_KINDS] for i, label in enumerate(labels)
    ]
    return Figure(
        key,
        title,
        summary,
        svg,
        legend=[(s.name, s.css) for s in stacks],
        head=["from", *(DECISION_NAMES[k] for k in DECISION_KINDS)],
        rows=rows,
    )


def pending_age_figure(data: ChartData, key: str = "pending-age") -> Figure:
    labels = series.bucket_labels(series.LATENCY_EDGES)
    total = sum(data.pending_age)
    title = "How long pending requests have waited"
    if not total:
        return Figure(key, title, "Nothing is waiting for a decision.", Markup(""), empty=True)
    oldest = max(i for i, n in enumerate(data.pending_age) if n)
    summary = f"{total:,} pending; the oldest have waited {labels[oldest]}."
    svg = bar_chart(key, title, summary, labels, [Series("pending", "c-pending", data.pending_age)])
    return Figure(
        key,
        title,
        summary,
        svg,
        head=["waiting", "requests"],
        rows=[[label, count_label(n)] for label, n in zip(labels, data.pending_age, strict=True)],
    )


def money_figure(data: ChartData, key: str = "money") -> Figure:
    ts = data.money
    title = "Escrow locked, released and refunded (running totals)"
    if ts.axis is None:
        return Figure(key, title, "No money has moved yet.", Markup(""), empty=True)
    labels = _time_labels(ts)
    final = {k: (v[-1] if v else 0) for k, v in ts.values.items()}
    held = final["lock"] - final["release"] - final["refund"]
    locked, released, refunded = (dollars(final[k]) for k in MONEY_KINDS)
    summary = (
        f"{locked} locked, {released} released to executors and supervisors, "
        f"{refunded} refunded to posters; {dollars(held)} still held."
    )
    lines = [Series(MONEY_NAMES[k], f"c-{k}", ts.values[k]) for k in MONEY_KINDS]
    svg = line_chart(key, title, summary, labels, lines, money_label)
    rows = [[label] + [dollars(ts.values[k][i]) for k in MONEY_KINDS] for i, label in enumerate(labels)]
    return Figure(
        key,
        title,
        summary,
        svg,
        legend=[(s.name, s.css) for s in lines],
        head=["until the end of", *(MONEY_NAMES[k] for k in MONEY_KINDS)],
        rows=rows,
    )


def load_figure(data: ChartData, key: str = "load") -> Figure:
    title = "Load per supervisor"
    if not data.load:
        return Figure(key, title, "No decisions and no pending requests yet.", Markup(""), empty=True)
    labels = [row.who if row.who is not None else "(any supervisor)" for row in data.load]
    summary = (
        f"Decisions made and requests waiting, for the {len(labels)} busiest; "
        "“(any supervisor)” are requests no one is assigned to."
    )
    stacks = [
        Series("decided", "c-decided", [row.decided for row in data.load]),
        Series("waiting", "c-pending", [row.pending for row in data.load]),
    ]
    svg = hbar_chart(key, title, summary, labels, stacks)
    rows = [
        [
            label,
            count_label(r.decided),
            series.duration(r.mean_seconds) if r.decided else "–",
            count_label(r.pending),
        ]
        for label, r in zip(labels, data.load, strict=True)
    ]
    return Figure(
        key,
        title,
        summary,
        svg,
        legend=[(s.name, s.css) for s in stacks],
        head=["supervisor", "decided", "mean time to decide", "waiting"],
        rows=rows,
    )


def figures(data: ChartData, *, per_workflow: bool = False) -> list[Figure]:
    """The charts of ``/stats``; a workflow's page leaves out the per-supervisor load and the queue age
    (one workflow has at most a request or two waiting)."""
    if per_workflow:
        return [
            decisions_figure(data, "wf-decisions"),
            latency_figure(data, "wf-latency"),
            money_figure(data, "wf-money"),
        ]
    return [
        latency_figure(data),
        decisions_figure(data),
        pending_age_figure(data),
        money_figure(data),
        load_figure(data),
    ]
