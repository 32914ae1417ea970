"""docker/prometheus/callpush-alerts.yml: valid for Prometheus (`promtool check rules`), each
alert proven by its unit tests (`promtool test rules`), complete for whoever is paged, and about
metrics callpush really exposes."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.docker.promql_names import DOCKER, exposed_series_names, promtool, referenced_names

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the rules")

RULES = DOCKER / "prometheus" / "callpush-alerts.yml"
RULE_TESTS = DOCKER / "prometheus" / "callpush-alerts.test.yml"
SEVERITIES = {"critical", "warning"}
ANNOTATIONS = {"summary", "description", "runbook"}


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = promtool()
    assert binary is not None
    return subprocess.run(
        [binary, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=120
    )


def test_promtool_accepts_the_rules() -> None:
    done = run_promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_the_alerts_unit_tests_pass() -> None:
    done = run_promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_each_alert_fires_in_a_unit_test_and_stays_quiet_in_another() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    for rule in alerts():
        own = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in own), f"{rule['alert']} never fires in a test"
        assert any(not case["exp_alerts"] for case in own), f"{rule['alert']}: no quiet case"


def test_each_alert_says_how_bad_what_happened_and_what_to_check_first() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names))
    for rule in alerts():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        annotations = rule["annotations"]
        assert set(annotations) >= ANNOTATIONS, rule["alert"]
        assert all(annotations[key].strip() for key in ANNOTATIONS), rule["alert"]


def test_the_brief_alerts_are_all_there() -> None:
    """What issue 14 asks to be alerted on, each by the metric that shows it."""
    by_metric: dict[str, set[str]] = {}
    for rule in alerts():
        for name in referenced_names(rule["expr"]):
            by_metric.setdefault(name, set()).add(rule["alert"])
    for metric in (
        "callpush_ring_pushes_total",  # ring failure rate
        "callpush_ring_push_latency_seconds_bucket",  # ring latency p99
        "callpush_queue_depth",
        "callpush_queue_oldest_message_age_seconds",
        "callpush_tokens_disabled_total",
        "callpush_push_auth_failures_total",  # APNs auth errors
        "callpush_webhooks_total",  # 401s, and no webhooks while calls happen
    ):
        assert metric in by_metric, f"no alert on {metric}"
    no_webhooks = next(rule for rule in alerts() if rule["alert"] == "CallpushNoWebhooks")
    assert "offset 1d" in no_webhooks["expr"]


@pytest.mark.services
def test_every_metric_the_rules_name_is_exposed_by_the_code(redis_url: str) -> None:
    exposed = exposed_series_names(redis_url)
    named: set[str] = set()
    for rule in alerts():
        texts = [rule["expr"], *rule["annotations"].values()]
        named |= {name for text in texts for name in referenced_names(text)}
    assert len(named) >= 10  # the check looked at real queries
    assert named <= exposed, (
        f"not exposed by worker/foundation/metrics.py: {sorted(named - exposed)}"
    )
    # The unit tests feed series under the same names.
    fed = referenced_names(RULE_TESTS.read_text())
    assert fed <= exposed, f"unit tests feed unknown series: {sorted(fed - exposed)}"
