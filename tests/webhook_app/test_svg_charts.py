"""The dashboard's charts as SVG (webhook_app.svg_charts), drawn from dataclasses built here:
well-formed XML (parsed with xml.etree), every series drawn and named, the numbers in the
accessible description, every text escaped, and sized by viewBox to any width."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from webhook_app import svg_charts
from worker.ops.dashboard_charts import (
    LAST_DAY,
    LAST_HOUR,
    CountSeries,
    LatencySeries,
    Percentiles,
    PushesByResult,
    QueueDepth,
    RingLatency,
    buckets_until,
)

SVG = "{http://www.w3.org/2000/svg}"
NOW = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
HOUR = buckets_until(NOW, *LAST_HOUR)
DAY = buckets_until(NOW, *LAST_DAY)
NONE = Percentiles(0, None, None)


def parse(markup: str) -> ET.Element:
    root = ET.fromstring(markup)
    assert root.tag == f"{SVG}svg"
    return root


def counts(**at: int) -> tuple[int, ...]:
    """Per minute of the hour: ``m5=3`` is 3 in bucket 5."""
    values = [0] * HOUR.count
    for key, n in at.items():
        values[int(key[1:])] = n
    return tuple(values)


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def accessible_name(root: ET.Element) -> tuple[str, str]:
    """The <title> and <desc> that aria-labelledby names."""
    ids = root.get("aria-labelledby", "").split()
    by_id = {e.get("id"): "".join(e.itertext()) for e in root.iter() if e.get("id")}
    assert len(ids) == 2 and all(i in by_id for i in ids)
    return by_id[ids[0]], by_id[ids[1]]


def test_pushes_are_stacked_bars_one_colour_per_result():
    chart = PushesByResult(
        HOUR,
        (
            CountSeries("sent", counts(m5=3, m59=2)),
            CountSeries("failed", counts(m5=1)),
            CountSeries("skipped", counts(m30=4)),
        ),
    )
    root = parse(svg_charts.pushes_chart(chart, title="Pushes, last hour", chart_id="p-hour"))
    # Scales to its column: a viewBox, the full width, no fixed height.
    assert root.get("viewBox", "").startswith(f"0 0 {svg_charts.WIDTH} ")
    assert root.get("width") == "100%" and root.get("height") is None
    assert root.get("role") == "img"
    title, desc = accessible_name(root)
    assert title == "Pushes, last hour"
    assert "10 pushes: 5 sent, 1 failed, 4 skipped" in desc
    assert "Busiest minute: 11:06 UTC, 4 pushes" in desc
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    tips = sorted("".join(r.find(f"{SVG}title").itertext()) for r in bars)
    assert tips == [
        "11:06 UTC: 1 failed",
        "11:06 UTC: 3 sent",
        "11:31 UTC: 4 skipped",
        "12:00 UTC: 2 sent",
    ]
    fills = {r.get("fill") for r in bars}
    assert fills == {svg_charts.STATUS_COLOURS[s] for s in ("sent", "failed", "skipped")}
    # Stacked: the failed bar sits on top of the sent one in the same column.
    sent, failed = (
        next(
            r
            for r in bars
            if r.find(f"{SVG}title").text.endswith(f" {name}")
            and "11:06" in r.find(f"{SVG}title").text
        )
        for name in ("sent", "failed")
    )
    assert sent.get("x") == failed.get("x")
    assert float(failed.get("y")) + float(failed.get("height")) == pytest.approx(
        float(sent.get("y")), abs=0.2
    )
    labels = texts(root)
    assert {"sent 5", "failed 1", "skipped 4"} <= set(labels)  # the legend
    assert {"0", "2", "4"} <= set(labels)  # the y axis: round steps up to the tallest bar
    assert {"UTC", "11:10", "11:20", "12:00"} <= set(labels)  # the time axis


def test_a_day_of_pushes_is_labelled_every_few_hours():
    chart = PushesByResult(DAY, (CountSeries("sent", (1,) * DAY.count),))
    root = parse(svg_charts.pushes_chart(chart, title="Pushes, last day", chart_id="p-day"))
    labels = texts(root)
    assert {"16:00", "20:00", "00:00", "04:00", "08:00", "12:00"} <= set(labels)
    _, desc = accessible_name(root)
    assert desc.startswith("12:30 to 12:00 UTC, per half hour: 48 pushes")


def test_no_pushes_says_so():
    root = parse(svg_charts.pushes_chart(PushesByResult(HOUR, ()), title="t", chart_id="e"))
    assert "No pushes in this window" in texts(root)
    assert accessible_name(root)[1].endswith("no pushes.")


def latency(provider: list[float | None], phone: list[float | None]) -> RingLatency:
    def series(values: list[float | None]) -> LatencySeries:
        per_bucket = [NONE] * HOUR.count
        for i, v in enumerate(values):
            per_bucket[i] = Percentiles(1, v, v * 2) if v is not None else NONE
        present = [v for v in values if v is not None]
        overall = Percentiles(len(present), min(present), max(present) * 2) if present else NONE
        return LatencySeries(tuple(per_bucket), overall)

    return RingLatency(HOUR, series(provider), series(phone))


def test_latency_lines_break_where_a_bucket_has_no_ring():
    chart = latency([40.0, 50.0, None, 60.0, 70.0, None, 1200.0], [800.0, 900.0])
    root = parse(svg_charts.latency_chart(chart, title="Ring latency", chart_id="l-hour"))
    groups = {g.get("data-series"): g for g in root.iter(f"{SVG}g") if g.get("data-series")}
    assert set(groups) == {"to provider p50", "to provider p99", "to phone p50", "to phone p99"}
    p50 = groups["to provider p50"]
    # Two runs of two points each become lines; 1,200 ms alone in its run is a dot.
    assert len(p50.findall(f"{SVG}polyline")) == 2
    dots = [c for c in p50.findall(f"{SVG}circle") if c.get("fill-opacity") != "0"]
    assert len(dots) == 1
    assert groups["to provider p99"].find(f"{SVG}polyline").get("stroke-dasharray") == "4 3"
    tips = ["".join(c.itertext()) for c in p50.iter(f"{SVG}title")]
    assert tips[0] == "11:01 UTC: to provider p50 40 ms" and tips[-1].endswith("1200 ms")
    # A log scale by decades, from 10 ms to 10 s (the largest p99 is 2,400 ms).
    assert {"10 ms", "100 ms", "1 s", "10 s"} <= set(texts(root))
    _, desc = accessible_name(root)
    assert "To the provider, 5 rings accepted: p50 40 ms, p99 2400 ms" in desc
    assert "highest p99 2400 ms at 11:07 UTC" in desc
    assert "To the phone, 2 phone receipts: p50 800 ms, p99 1800 ms" in desc


def test_latency_without_receipts_or_rings():
    only_provider = parse(svg_charts.latency_chart(latency([40.0], []), title="t", chart_id="a"))
    groups = {g.get("data-series") for g in only_provider.iter(f"{SVG}g") if g.get("data-series")}
    assert groups == {"to provider p50", "to provider p99"}
    assert "No phone receipts." in accessible_name(only_provider)[1]
    empty = parse(svg_charts.latency_chart(latency([], []), title="t", chart_id="b"))
    assert "No rings accepted in this window" in texts(empty)


def test_queue_depth_is_a_line_over_an_area():
    depth = (0, 0, 3, 5, *([1] * 56), 2)
    at = (HOUR.start, *(min(t + HOUR.step, NOW) for t in HOUR.starts))
    root = parse(svg_charts.queue_chart(QueueDepth(HOUR, at, depth), title="Queue", chart_id="q"))
    assert root.find(f"{SVG}polygon") is not None
    (series,) = [g for g in root.iter(f"{SVG}g") if g.get("data-series") == "waiting"]
    tips = ["".join(t.itertext()) for t in series.iter(f"{SVG}title")]
    assert len(tips) == 61 and tips[3] == "11:04 UTC: waiting 5 events"
    assert tips[-1] == "12:00 UTC: waiting 2 events"
    _, desc = accessible_name(root)
    assert "2 events waiting now, 0 at the start; most 5 at 11:04 UTC" in desc


@pytest.mark.parametrize(
    "name",
    [
        '<script>alert("x")</script>',
        "a & b ' \" > <",
        "ctl\x01\x1b[31m\x00",
        "\ud800 lone surrogate",
        "\ufffe",
    ],
)
def test_every_text_is_escaped(name):
    chart = PushesByResult(HOUR, (CountSeries(name, counts(m1=1)),))
    markup = svg_charts.pushes_chart(chart, title=f"title {name}", chart_id=f'id" onload="{name}')
    root = parse(markup)  # well-formed XML: nothing broke out of its element or attribute
    assert not [e for e in root.iter() if e.tag.endswith("script")]
    assert "onload" not in root.attrib
    title, desc = accessible_name(root)
    # The ids keep only what an id may hold: aria-labelledby still names exactly two.
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in root.get("aria-labelledby").split())
    markup.encode("utf-8")  # no lone surrogate left to fail the page
    if name.isprintable() and "\ud800" not in name:
        assert title == f"title {name}"
        assert f"1 {name}" in desc
        assert f"{name} 1" in texts(root)
    # Colours come from the known statuses; anything else is grey.
    (bar,) = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert bar.get("fill") == svg_charts.OTHER_COLOUR


def test_the_legend_wraps_inside_the_view_box():
    statuses = list(svg_charts.STATUS_COLOURS)
    chart = PushesByResult(HOUR, tuple(CountSeries(s, counts(m0=1000)) for s in statuses))
    root = parse(svg_charts.pushes_chart(chart, title="t", chart_id="w"))
    width = float(root.get("viewBox", "").split()[2])
    legend = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "legend")
    rows = {t.get("y") for t in legend.iter(f"{SVG}text")}
    assert len(rows) > 1
    for label in legend.iter(f"{SVG}text"):
        end = float(label.get("x")) + len(label.text) * svg_charts.LEGEND_CHAR
        assert end <= width
    # The y axis counts in round steps past the tallest bar: 9,000 -> 0 .. 10,000.
    assert "10,000" in texts(root)


def test_time_labels_stay_inside_the_view_box():
    # A window ending on the hour: the last label, 12:00, sits on the right edge.
    buckets = buckets_until(datetime(2026, 5, 1, 11, 59, 59, tzinfo=UTC), *LAST_HOUR)
    assert buckets.end == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    root = parse(svg_charts.pushes_chart(PushesByResult(buckets, ()), title="t", chart_id="x"))
    (last,) = [t for t in root.iter(f"{SVG}text") if t.text == "12:00"]
    assert last.get("text-anchor") == "end"
    assert buckets.start + timedelta(minutes=60) == buckets.end
