"""The time-to-page budget of the drift alerts, computed from the shipped files.

Issue #13: a drift is notified within 90 s of the first drifted event (at 1,000 events/s).
From the first drifted event to the notification, in the worst case:

    detection delay                      DETECTION_S (a 1 sigma mean shift: ~20-40 values)
  + scrape interval                      the `streamdrift` job of each shipped Prometheus
  + evaluation interval                  the drift rules' group (`interval:` or global)
  + `for:`, rounded up to evaluations    the alert rule
  + group_wait                           the Alertmanager route the alert takes
  + delivery                             DELIVERY_S (Prometheus sends a newly firing alert
                                         at once; Alertmanager's webhook)

tests/integration/test_time_to_page.py measures the same path end to end with these files.
This test keeps a later edit of any term (a longer `for:`, a slower route, a scrape
interval) from breaking the budget unnoticed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "rules" / "streamdrift-alerts.yml"
ALERTMANAGER_YML = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
PROMETHEUS_YMLS = [REPO / "deploy" / "prometheus" / "prometheus.yml",
                   REPO / "deploy" / "compose" / "prometheus.yml"]
PODMONITOR = REPO / "deploy" / "kubernetes" / "podmonitor.yaml"

BUDGET_S = 90.0
#: detection delay allowed at 1,000 events/s (consumer poll + a few hundred values at most)
DETECTION_S = 5.0
#: Prometheus -> Alertmanager -> receiver, once the alert fires
DELIVERY_S = 2.0
#: Prometheus' default evaluation_interval when neither the group nor the global sets one
PROMETHEUS_DEFAULT_EVALUATION = "1m"


def seconds(duration: str | None) -> float:
    """A Prometheus / Alertmanager duration (`15s`, `1m30s`) in seconds."""
    if not duration:
        return 0.0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(int(n) * units[u] for n, u in parts)


def drift_rules() -> list[tuple[dict, dict]]:
    """(group, rule) of every alert rule of category drift."""
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    found = [(g, r) for g in doc["groups"] for r in g["rules"]
             if "alert" in r and r["labels"]["category"] == "drift"]
    assert {r["alert"] for _, r in found} == {"StreamdriftFeatureDrift",
                                              "StreamdriftPredictionDrift",
                                              "StreamdriftMultivariateDrift",
                                              "StreamdriftEmbeddingDrift",
                                              "StreamdriftSegmentDrift",
                                              # model quality: from the concept alarm (the
                                              # labels' delay comes first), and the estimate
                                              "StreamdriftModelQualityDegraded",
                                              "StreamdriftEstimatedPerformanceDrop",
                                              "StreamdriftBiasDrift",
                                              "StreamdriftAttributionDrift"}
    return found


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    label, op, value = re.fullmatch(r'(\w+)\s*(=~|!~|!=|=)\s*"(.*)"', matcher).groups()
    actual = labels.get(label, "")
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    found = re.fullmatch(value, actual) is not None
    return found if op == "=~" else not found


def route_of(labels: dict[str, str]) -> dict:
    """The route an alert with `labels` is notified by (first matching child, depth first,
    no `continue` in this tree), with the timings it inherits."""
    route = yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))["route"]
    settings = {"group_wait": "30s"} | {k: v for k, v in route.items() if k != "routes"}
    while True:
        for child in route.get("routes", []):
            assert not child.get("continue"), "this check assumes no `continue: true`"
            if all(_matches(m, labels) for m in child.get("matchers", [])):
                route = child
                settings |= {k: v for k, v in child.items() if k != "routes"}
                break
        else:
            return settings


def scrape_intervals() -> dict[str, float]:
    """Scrape interval of the streamdrift job in every shipped Prometheus configuration."""
    out = {}
    for path in PROMETHEUS_YMLS:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "streamdrift"]
        interval = job.get("scrape_interval", cfg["global"].get("scrape_interval", "1m"))
        out[str(path.relative_to(REPO))] = seconds(interval)
    monitor = yaml.safe_load(PODMONITOR.read_text(encoding="utf-8"))
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    out[str(PODMONITOR.relative_to(REPO))] = seconds(endpoint["interval"])
    return out


@pytest.mark.parametrize("group_rule", drift_rules(), ids=lambda gr: gr[1]["alert"])
def test_worst_case_time_to_page_fits_90_seconds(group_rule):
    group, rule = group_rule
    # The group pins its evaluation interval: the global one of a Prometheus the rules are
    # added to (1m by default, 30s in kube-prometheus-stack) must not stretch the budget.
    assert "interval" in group, f"group {group['name']} does not set its evaluation interval"
    evaluation = seconds(group["interval"])
    hold = math.ceil(seconds(rule.get("for")) / evaluation) * evaluation
    group_wait = seconds(route_of({"alertname": rule["alert"], **rule["labels"]})["group_wait"])
    for where, scrape in scrape_intervals().items():
        total = DETECTION_S + scrape + evaluation + hold + group_wait + DELIVERY_S
        assert total <= BUDGET_S, (
            f"{rule['alert']} with {where}: detection {DETECTION_S:.0f} s + scrape {scrape:.0f} s"
            f" + evaluation {evaluation:.0f} s + for {hold:.0f} s + group_wait {group_wait:.0f} s"
            f" + delivery {DELIVERY_S:.0f} s = {total:.0f} s > {BUDGET_S:.0f} s")


def test_route_resolution_follows_the_tree():
    """The route helper above finds the routes amtool finds (test_deploy_alertmanager)."""
    assert route_of({"alertname": "StreamdriftWatchdog", "severity": "none"})[
        "receiver"] == "deadmansswitch"
    assert route_of({"alertname": "X", "severity": "critical"})["receiver"] == "pager"
    assert route_of({"alertname": "X", "severity": "warning"})["receiver"] == "tickets"
    assert route_of({"alertname": "X"})["receiver"] == "tickets"  # the root's default
