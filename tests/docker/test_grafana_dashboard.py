"""docker/grafana/callpush.json: a dashboard Grafana can import or provision anywhere (the
Prometheus data source is a variable, never a fixed uid), whose every query is valid PromQL
(`promtool check rules` on them) about metrics callpush really exposes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker.promql_names import DOCKER, exposed_series_names, promtool, referenced_names

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to write the rule file")

DASHBOARD = DOCKER / "grafana" / "callpush.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's own variables, which Prometheus does not know: replaced by a value for checking.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in panels(dashboard)
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_the_dashboard_is_identified_and_laid_out(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "callpush" and dashboard["title"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24 and box["h"] > 0, panel["title"]


def test_the_data_source_is_a_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
            assert target["expr"].strip() and target["refId"], panel["title"]
    # No fixed data source anywhere (an import elsewhere would point at nothing).
    assert set(_datasource_uids(dashboard)) == {"${datasource}"}


def _datasource_uids(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield node["datasource"].get("uid", "")
        elif isinstance(node.get("datasource"), str):
            yield node["datasource"]
        for value in node.values():
            yield from _datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasource_uids(value)


def test_every_query_is_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    rules = []
    for index, expr in enumerate(queries(dashboard)):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"an unknown variable in {expr}"
        rules.append({"record": f"callpush_dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    binary = promtool()
    assert binary is not None
    done = subprocess.run(
        [binary, "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


@pytest.mark.services
def test_every_panel_shows_metrics_the_code_exposes(
    dashboard: dict[str, Any], redis_url: str
) -> None:
    exposed = exposed_series_names(redis_url)
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        named = {name for target in panel["targets"] for name in referenced_names(target["expr"])}
        assert named, f"panel {panel['title']!r} shows no callpush metric"
        assert named <= exposed, f"{panel['title']!r}: not exposed: {sorted(named - exposed)}"
    # Every metric callpush defines is on the dashboard somewhere.
    shown = {name for expr in queries(dashboard) for name in referenced_names(expr)}
    defined = {name for name in exposed if name.startswith("callpush_")}
    bases = {name.removesuffix("_sum").removesuffix("_count") for name in defined}
    missing = {name for name in bases if not any(s.startswith(name) for s in shown)}
    assert not missing, f"not on the dashboard: {sorted(missing)}"
