"""bench/results/SUMMARY.md from the bench/results/*.json files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.measures import RESULTS

ORDER = ["ingest", "ring", "fanout", "soak", "chaos", "fuzz"]


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip()


def _met(value: bool | None) -> str:
    return {True: "yes", False: "**NO**", None: ""}[value]


def load_results() -> list[dict[str, Any]]:
    found = {p.stem: json.loads(p.read_text()) for p in RESULTS.glob("*.json")}
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    return [found[n] for n in names]


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "# Benchmark summary",
        "",
        "Every speed is measured next to a reference taken in the same run on the same machine "
        "(the machines are noisy); `ratio` = value / reference.  Regenerate: "
        "`python -m bench all` (a full run takes about 35 minutes; `--quick`, a smoke run, "
        "about 5).",
        "",
        "| benchmark | metric | value | reference | ratio | target | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        name = result["name"] + (" (quick)" if result.get("quick") else "")
        if result.get("error"):
            lines.append(f"| {name} | **run failed** | {result['error']} | | | | **NO** |")
        for row in result.get("metrics", []):
            reference = _fmt(row.get("reference"), row.get("unit", ""))
            if row.get("reference_name") and row.get("reference") is not None:
                reference += f" ({row['reference_name']})"
            lines.append(
                f"| {name} | {row['metric']} | {_fmt(row.get('value'), row.get('unit', ''))} | "
                f"{reference} | {_fmt(row.get('ratio'))} | {row.get('target', '')} | "
                f"{_met(row.get('met'))} |"
            )
    if results:
        machine = results[-1]["machine"]
        lines += [
            "",
            f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine.get('memory_gib')} GiB;"
            f" Python {machine['python']}; {machine['platform']}.",
            "Runs: "
            + "; ".join(
                f"{r['name']} {r['machine']['date']} ({r['duration_s']} s,"
                f" 1-min load avg {r['machine']['loadavg_at_start'][0]:.1f} at start,"
                f" {r['machine'].get('loadavg_at_end', [0])[0]:.1f} at end)"
                for r in results
            )
            + ".",
        ]
    notes = [(r["name"], row) for r in results for row in r.get("metrics", []) if row.get("note")]
    if notes:
        lines += ["", "## Notes per row", ""]
        lines += [f"- **{name} / {row['metric']}**: {row['note']}" for name, row in notes]
    findings = [(r["name"], f) for r in results for f in r.get("findings", [])]
    if findings:
        lines += ["", "## Findings: missed targets, limits, profiles, bugs", ""]
        lines += [f"- **{name}**: {text}" for name, text in findings]
    return "\n".join(lines) + "\n"


def write_summary() -> Path:
    path = RESULTS / "SUMMARY.md"
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(render(load_results()))
    return path
