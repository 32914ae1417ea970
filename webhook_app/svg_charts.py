"""The dashboard's charts as inline SVG, drawn on the server: the pages run no script
(webhook_app.dashboard's CSP), so a chart is markup like the rest of the page.

Pure functions from worker.ops.dashboard_charts' dataclasses to an SVG string: no database, no
clock.  Every chart has a ``viewBox`` and ``width="100%"``, so it scales to its column (a
phone's 390 px included) and never widens the page; colours and fonts are SVG presentation
attributes, which need no stylesheet.  Screen readers get ``role="img"`` with a ``<title>``
and a ``<desc>`` holding the numbers that matter (totals, percentiles, the peak); each bar
and point has a ``<title>`` too, which browsers show on hover.  Every text is escaped.

SVG 1.1, the parts used here: https://www.w3.org/TR/SVG11/ (viewBox: §7.7, presentation
attributes: §6.4); accessible names: https://www.w3.org/TR/svg-aam-1.0/.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from worker.foundation.text_escaping import escape_controls
from worker.ops.dashboard_charts import (
    LatencySeries,
    PushesByResult,
    QueueDepth,
    RingLatency,
    TimeBuckets,
)
from worker.ops.event_log import format_latency

WIDTH = 420  # user units; a phone's column (~340 px) shows 11-unit text at ~9 px
PLOT_HEIGHT = 150
LEFT, RIGHT, TOP = 56, 10, 10  # LEFT: room for a y label of seven characters
PLOT_WIDTH = WIDTH - LEFT - RIGHT
AXIS_LABELS = 16  # below the plot: the times
LEGEND_ROW = 16
# An entry's width: its key, the label at about this many units a character (11 px sans-serif),
# and a gap; entries flow onto another row when the plot's width is full.
LEGEND_KEY, LEGEND_CHAR, LEGEND_GAP = 17, 6.4, 14
FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="11"'
INK, MUTED, GRID = "#1d2330", "#667085", "#e4e7ec"

# The dashboard's badge colours (templates/dashboard/base.html), one per delivery status.
STATUS_COLOURS = {
    "sent": "#12b76a",
    "failed": "#d92d20",
    "token_invalid": "#912018",
    "expired": "#f79009",
    "unconfirmed": "#fdb022",
    "cancelled": "#98a2b3",
    "skipped": "#7a5af8",
    "retry": "#fec84b",
    "sending": "#53b1fd",
}
OTHER_COLOUR = "#475467"
PROVIDER_COLOUR, PHONE_COLOUR = "#2f5bea", "#067647"
_NOT_IN_ID = re.compile(r"[^A-Za-z0-9_-]")
# Minutes between time labels: the first that gives at most six steps across the window.
_TICK_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360, 720, 1440)


# --- the three charts -------------------------------------------------------------------------


def pushes_chart(chart: PushesByResult, *, title: str, chart_id: str) -> str:
    """Stacked bars: each bucket's pushes by result, ``sent`` at the bottom."""
    buckets = chart.buckets
    totals = chart.totals if chart.series else (0,) * buckets.count
    top, step = _linear_ticks(max(totals, default=0))
    y = _linear(top)
    width = PLOT_WIDTH / buckets.count
    gap = 1.0 if width > 4 else 0.0
    parts = [_y_grid([(v, y(v), f"{v:,}") for v in _range(top, step)])]
    for i, start in enumerate(buckets.starts):
        base = 0
        for series in chart.series:
            n = series.counts[i]
            if not n:
                continue
            y0, y1 = y(base), y(base + n)
            tip = f"{_hhmm(start)} UTC: {n:,} {series.name}"
            parts.append(
                f'<rect x="{LEFT + i * width + gap / 2:.1f}" y="{y1:.1f}" '
                f'width="{max(width - gap, 0.5):.1f}" height="{max(y0 - y1, 0.5):.1f}" '
                f'fill="{_colour(series.name)}"><title>{_text(tip)}</title></rect>'
            )
            base += n
    parts.append(_time_axis(buckets))
    legend = [(_colour(s.name), f"{s.name} {s.total:,}", "bar") for s in chart.series]
    if not chart.total:
        parts.append(_empty_note("No pushes in this window"))
    return _svg(chart_id, title, _pushes_desc(chart), parts, legend)


def latency_chart(chart: RingLatency, *, title: str, chart_id: str) -> str:
    """p50 and p99 per bucket on a log scale: webhook to provider (blue), to phone (green);
    p99 dashed.  A bucket without rings leaves a gap."""
    lines = [
        ("to provider p50", PROVIDER_COLOUR, False, [p.p50_ms for p in chart.provider.per_bucket]),
        ("to provider p99", PROVIDER_COLOUR, True, [p.p99_ms for p in chart.provider.per_bucket]),
        ("to phone p50", PHONE_COLOUR, False, [p.p50_ms for p in chart.phone.per_bucket]),
        ("to phone p99", PHONE_COLOUR, True, [p.p99_ms for p in chart.phone.per_bucket]),
    ]
    lines = [line for line in lines if any(v is not None for v in line[3])]
    values = [v for line in lines for v in line[3] if v is not None]
    low, high = _log_range(values)
    y = _log(low, high)
    parts = [_y_grid([(v, y(v), _latency_tick(v)) for v in _decades(low, high)])]
    buckets = chart.buckets
    width = PLOT_WIDTH / buckets.count
    for name, colour, dashed, points in lines:
        xy = [
            (LEFT + (i + 0.5) * width, y(v) if v is not None else 0.0, start, v)
            for i, (start, v) in enumerate(zip(buckets.starts, points, strict=True))
        ]
        parts.append(_polyline(xy, colour, dashed, name, format_latency))
    parts.append(_time_axis(buckets))
    if not values:
        parts.append(_empty_note("No rings accepted in this window"))
    legend = [(colour, name, "dashed" if dashed else "line") for name, colour, dashed, _ in lines]
    return _svg(chart_id, title, _latency_desc(chart), parts, legend)


def queue_chart(chart: QueueDepth, *, title: str, chart_id: str) -> str:
    """Events waiting at each bucket's end: a line over a shaded area."""
    buckets = chart.buckets
    top, step = _linear_ticks(max(chart.depth, default=0))
    y = _linear(top)
    parts = [_y_grid([(v, y(v), f"{v:,}") for v in _range(top, step)])]
    xy = [(_x(buckets, t), y(n), t, n) for t, n in zip(chart.at, chart.depth, strict=True)]
    floor = TOP + PLOT_HEIGHT
    area = " ".join(f"{x:.1f},{py:.1f}" for x, py, _, _ in xy)
    parts.append(
        f'<polygon points="{xy[0][0]:.1f},{floor} {area} {xy[-1][0]:.1f},{floor}" '
        f'fill="{PROVIDER_COLOUR}" fill-opacity="0.12"/>'
    )
    parts.append(
        _polyline(
            xy,
            PROVIDER_COLOUR,
            False,
            "waiting",
            lambda n: _count(int(n), "event"),
        )
    )
    parts.append(_time_axis(buckets))
    legend = [(PROVIDER_COLOUR, "events waiting", "line")]
    return _svg(chart_id, title, _queue_desc(chart), parts, legend)


# --- what a screen reader hears ---------------------------------------------------------------


def _pushes_desc(chart: PushesByResult) -> str:
    window = _window_text(chart.buckets)
    if not chart.total:
        return f"{window}: no pushes."
    results = ", ".join(f"{s.total:,} {s.name}" for s in chart.series)
    totals = chart.totals
    busiest = max(range(len(totals)), key=lambda i: totals[i])
    at = _hhmm(chart.buckets.starts[busiest])
    return (
        f"{window}: {_count(chart.total, 'push')}: {results}. "
        f"Busiest {_step_text(chart.buckets.step)}: {at} UTC, {_count(totals[busiest], 'push')}."
    )


def _latency_desc(chart: RingLatency) -> str:
    window = _window_text(chart.buckets)

    def summary(series: LatencySeries, what: str, counted: str) -> str:
        overall = series.overall
        if not overall.count:
            return f"No {counted}."
        worst = max(
            range(len(series.per_bucket)), key=lambda i: series.per_bucket[i].p99_ms or -1.0
        )
        at = _hhmm(chart.buckets.starts[worst])
        return (
            f"{what.capitalize()}, {overall.count:,} {counted}: p50 "
            f"{format_latency(overall.p50_ms)}, p99 {format_latency(overall.p99_ms)}; "
            f"highest p99 {format_latency(series.per_bucket[worst].p99_ms)} at {at} UTC."
        )

    return (
        f"{window}, from the webhook's arrival. "
        f"{summary(chart.provider, 'to the provider', 'rings accepted')} "
        f"{summary(chart.phone, 'to the phone', 'phone receipts')}"
    )


def _queue_desc(chart: QueueDepth) -> str:
    window = _window_text(chart.buckets)
    peak = max(range(len(chart.depth)), key=lambda i: chart.depth[i])
    return (
        f"{window}: {_count(chart.depth[-1], 'event')} waiting now, "
        f"{chart.depth[0]:,} at the start; "
        f"most {chart.depth[peak]:,} at {_hhmm(chart.at[peak])} UTC."
    )


def _count(n: int, noun: str) -> str:
    """``1 push``, ``2 pushes``, ``1 event``, ``1,200 events``."""
    if n == 1:
        return f"1 {noun}"
    return f"{n:,} {noun}es" if noun.endswith("sh") else f"{n:,} {noun}s"


def _window_text(buckets: TimeBuckets) -> str:
    return f"{_hhmm(buckets.start)} to {_hhmm(buckets.now)} UTC, per {_step_text(buckets.step)}"


def _step_text(step: timedelta) -> str:
    minutes = int(step.total_seconds() // 60)
    if minutes == 1:
        return "minute"
    if minutes == 30:
        return "half hour"
    if minutes and minutes % 60 == 0:
        return "hour" if minutes == 60 else f"{minutes // 60} hours"
    return f"{minutes} minutes" if minutes else f"{int(step.total_seconds())} seconds"


# --- drawing ----------------------------------------------------------------------------------


def _svg(
    chart_id: str,
    title: str,
    desc: str,
    parts: Sequence[str],
    legend: Sequence[tuple[str, str, str]],
) -> str:
    legend_top = TOP + PLOT_HEIGHT + AXIS_LABELS + 10
    keys, rows = _legend(legend, legend_top)
    height = legend_top + rows * LEGEND_ROW + 2
    # An id: aria-labelledby is a space-separated list of them, so nothing else is kept.
    ident = _NOT_IN_ID.sub("-", chart_id) or "chart"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" role="img" aria-labelledby="{ident}-title {ident}-desc" {FONT}>'
        f'<title id="{ident}-title">{_text(title)}</title>'
        f'<desc id="{ident}-desc">{_text(desc)}</desc>'
        + "".join(parts)
        + f'<g class="legend">{keys}</g></svg>'
    )


def _legend(entries: Sequence[tuple[str, str, str]], top: int) -> tuple[str, int]:
    """The legend's markup and its rows: each entry a key ("bar": a square, "line" or
    "dashed": a stroke) and its label, flowing left to right under the plot."""
    keys = []
    x, row = float(LEFT), 0
    for colour, label, style in entries:
        width = LEGEND_KEY + len(label) * LEGEND_CHAR + LEGEND_GAP
        if x > LEFT and x + width - LEGEND_GAP > WIDTH - RIGHT:
            x, row = float(LEFT), row + 1
        y = top + row * LEGEND_ROW
        if style == "bar":
            key = f'<rect x="{x:.1f}" y="{y - 9}" width="11" height="10" fill="{colour}"/>'
        else:
            dash = ' stroke-dasharray="4 3"' if style == "dashed" else ""
            key = (
                f'<line x1="{x:.1f}" y1="{y - 4}" x2="{x + 13:.1f}" y2="{y - 4}" '
                f'stroke="{colour}" stroke-width="2"{dash}/>'
            )
        keys.append(
            f'{key}<text x="{x + LEGEND_KEY:.1f}" y="{y}" fill="{INK}">{_text(label)}</text>'
        )
        x += width
    return "".join(keys), row + 1


def _y_grid(ticks: Sequence[tuple[float, float, str]]) -> str:
    lines = []
    for _, y, label in ticks:
        lines.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="{GRID}"/>'
            f'<text x="{LEFT - 5}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">'
            f"{_text(label)}</text>"
        )
    return f'<g class="y-axis">{"".join(lines)}</g>'


def _time_axis(buckets: TimeBuckets) -> str:
    """The plot's bottom line and round times under it (UTC, said once at the left)."""
    floor = TOP + PLOT_HEIGHT
    label_y = floor + 13
    parts = [
        f'<line x1="{LEFT}" y1="{floor}" x2="{WIDTH - RIGHT}" y2="{floor}" stroke="{MUTED}"/>',
        f'<text x="{LEFT - 5}" y="{label_y}" text-anchor="end" fill="{MUTED}">UTC</text>',
    ]
    for t in _time_ticks(buckets):
        x = _x(buckets, t)
        # A label at either edge is kept inside the viewBox.
        anchor = "end" if x > WIDTH - RIGHT - 16 else "start" if x < LEFT + 16 else "middle"
        parts.append(
            f'<line x1="{x:.1f}" y1="{floor}" x2="{x:.1f}" y2="{floor + 4}" stroke="{MUTED}"/>'
            f'<text x="{x:.1f}" y="{label_y}" text-anchor="{anchor}" fill="{MUTED}">'
            f"{_hhmm(t)}</text>"
        )
    return f'<g class="x-axis">{"".join(parts)}</g>'


def _polyline(
    points: Sequence[tuple[float, float, datetime, float | None]],
    colour: str,
    dashed: bool,
    name: str,
    value_text: Callable[[float], str],
) -> str:
    """A line through the points, broken where a value is None (a point with no neighbour is
    a dot); each point has an invisible target whose ``<title>`` is its hover tip."""
    segments: list[list[tuple[float, float]]] = [[]]
    targets = []
    for x, y, at, value in points:
        if value is None:
            segments.append([])
            continue
        segments[-1].append((x, y))
        targets.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}" fill-opacity="0">'
            f"<title>{_text(f'{_hhmm(at)} UTC: {name} {value_text(value)}')}</title></circle>"
        )
    dash = ' stroke-dasharray="4 3"' if dashed else ""
    marks = [
        f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in segment)}" fill="none" '
        f'stroke="{colour}" stroke-width="1.6"{dash}/>'
        if len(segment) > 1
        else f'<circle cx="{segment[0][0]:.1f}" cy="{segment[0][1]:.1f}" r="2" fill="{colour}"/>'
        for segment in segments
        if segment
    ]
    return f'<g class="series" data-series="{_text(name)}">{"".join(marks + targets)}</g>'


def _empty_note(text: str) -> str:
    return (
        f'<text x="{LEFT + PLOT_WIDTH / 2:.1f}" y="{TOP + PLOT_HEIGHT / 2:.1f}" '
        f'text-anchor="middle" fill="{MUTED}">{_text(text)}</text>'
    )


# --- scales -----------------------------------------------------------------------------------


def _linear_ticks(value: float) -> tuple[int, int]:
    """(top, step): a round step (1, 2 or 5 times a power of ten) and the first multiple of it
    at or above ``value``, at most five steps up; counts, so never below 1."""
    step = 1
    for power in range(0, 19):
        for mantissa in (1, 2, 5):
            step = mantissa * 10**power
            if value <= step * 5:
                return max(step, math.ceil(value / step) * step), step
    return math.ceil(value / step) * step, step


def _range(top: int, step: int) -> list[int]:
    return list(range(0, top + 1, step))


def _linear(top: float) -> Callable[[float], float]:
    def y(value: float) -> float:
        return TOP + PLOT_HEIGHT * (1 - value / top)

    return y


def _log_range(values: Sequence[float]) -> tuple[float, float]:
    """Whole decades around the values (10 ms .. 1 s when there are none)."""
    positive = [v for v in values if v > 0]
    if not positive:
        return 10.0, 1000.0
    low = 10.0 ** math.floor(math.log10(min(positive)))
    high = 10.0 ** math.ceil(math.log10(max(positive)))
    return low, max(high, low * 10)


def _log(low: float, high: float) -> Callable[[float], float]:
    span = math.log10(high) - math.log10(low)

    def y(value: float) -> float:
        clamped = min(max(value, low), high)
        return TOP + PLOT_HEIGHT * (1 - (math.log10(clamped) - math.log10(low)) / span)

    return y


def _decades(low: float, high: float) -> list[float]:
    first, last = round(math.log10(low)), round(math.log10(high))
    return [10.0**d for d in range(first, last + 1)]


def _latency_tick(ms: float) -> str:
    """A decade, short enough for the axis: ``10 ms``, ``1 s``, ``1,000 s``, ``2.8 h``."""
    if ms < 1000:
        return f"{ms:,g} ms"
    if ms < 10_000_000:
        return f"{ms / 1000:,g} s"
    hours = ms / 3_600_000
    return f"{hours:.2g} h" if hours < 100 else f"{hours:,.0f} h"


def _x(buckets: TimeBuckets, t: datetime) -> float:
    return LEFT + PLOT_WIDTH * ((t - buckets.start) / buckets.span)


def _time_ticks(buckets: TimeBuckets) -> list[datetime]:
    span_minutes = buckets.span.total_seconds() / 60
    every = next((m for m in _TICK_MINUTES if span_minutes / m <= 6), _TICK_MINUTES[-1])
    step = timedelta(minutes=every)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = epoch + step * math.ceil((buckets.start - epoch) / step)
    ticks = []
    t = first
    while t <= buckets.end:
        ticks.append(t)
        t += step
    return ticks


def _hhmm(t: datetime) -> str:
    return f"{t.astimezone(UTC):%H:%M}"


def _colour(status: str) -> str:
    return STATUS_COLOURS.get(status, OTHER_COLOUR)


def _text(value: str) -> str:
    """Text for an SVG element or attribute: controls written as escapes (XML 1.0 cannot hold
    most of them, https://www.w3.org/TR/xml/#charsets), then the markup characters escaped."""
    safe = escape_controls(value).replace("\ufffe", "\\ufffe").replace("\uffff", "\\uffff")
    return html.escape(safe, quote=True)
