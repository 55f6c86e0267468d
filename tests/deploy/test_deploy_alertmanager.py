"""Alertmanager configuration: validity, the route of every alert, inhibition rules."""

from __future__ import annotations

import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.support.policy import require_tool
from tests.support.servers import ALERTMANAGER, start_alertmanager

REPO = Path(__file__).resolve().parents[2]
ALERTMANAGER_YML = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
ALERTS = REPO / "deploy" / "prometheus" / "rules" / "streamdrift-alerts.yml"

RECEIVER_OF_SEVERITY = {"critical": "pager", "warning": "tickets", "none": "deadmansswitch"}


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def config() -> dict:
    return yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))


def amtool(*args: str) -> subprocess.CompletedProcess:
    binary = require_tool("amtool")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


def output(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def route_test(receiver: str, labels: dict[str, str]) -> subprocess.CompletedProcess:
    return amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_YML}",
                  f"--verify.receivers={receiver}",
                  *(f"{k}={v}" for k, v in sorted(labels.items())))


def test_amtool_check_config():
    result = amtool("check-config", str(ALERTMANAGER_YML))
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout, output(result)


ROUTE_CASES = [
    ("pager", {"alertname": "StreamdriftPredictionDrift", "severity": "critical",
               "category": "drift", "job": "streamdrift", "model": "fraud", "feature": "score"}),
    ("pager", {"alertname": "StreamdriftTargetAbsent", "severity": "critical",
               "category": "pipeline", "job": "streamdrift"}),
    ("tickets", {"alertname": "StreamdriftFeatureDrift", "severity": "warning",
                 "category": "drift", "job": "streamdrift", "model": "fraud",
                 "feature": "amount"}),
    ("tickets", {"alertname": "StreamdriftConsumerLagGrowing", "severity": "warning",
                 "category": "pipeline", "job": "streamdrift", "topic": "events"}),
    ("deadmansswitch", {"alertname": "StreamdriftWatchdog", "severity": "none",
                        "category": "meta"}),
    # an alert without severity still reaches someone
    ("tickets", {"alertname": "SomethingElse"}),
]


@pytest.mark.parametrize(("receiver", "labels"), ROUTE_CASES,
                         ids=[f"{c[1]['alertname']}->{c[0]}" for c in ROUTE_CASES])
def test_route(receiver, labels):
    result = route_test(receiver, labels)
    assert result.returncode == 0, output(result)


@pytest.mark.parametrize("rule", alert_rules(),
                         ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_every_alert_routes_by_its_severity(rule):
    labels = {"alertname": rule["alert"], **rule["labels"]}
    result = route_test(RECEIVER_OF_SEVERITY[rule["labels"]["severity"]], labels)
    assert result.returncode == 0, output(result)


def test_route_verification_detects_a_wrong_receiver():
    """Sanity check of the check: amtool fails when the expected receiver is wrong."""
    result = route_test("pager", {"alertname": "StreamdriftFeatureDrift", "severity": "warning"})
    assert result.returncode != 0, output(result)


def test_route_tree_settings():
    cfg = config()
    route = cfg["route"]
    assert route["group_by"] == ["alertname", "model"]
    receivers = {r["name"] for r in cfg["receivers"]}
    assert receivers == {"pager", "tickets", "deadmansswitch"}
    watchdog = next(r for r in route["routes"] if r["receiver"] == "deadmansswitch")
    assert watchdog["matchers"] == ['alertname = "StreamdriftWatchdog"']
    assert re.fullmatch(r"\d+[sm]", watchdog["repeat_interval"]), "the heartbeat must be short"
    # the watchdog route comes first so that its severity never sends it to a person
    assert route["routes"][0] is watchdog


def test_inhibition_rules_reference_real_alerts_and_labels():
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    categories = {r["labels"]["category"] for r in rules}
    inhibit = config()["inhibit_rules"]
    assert len(inhibit) == 4
    for rule in inhibit:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            label, op, value = re.fullmatch(r'(\w+)\s*(=~|!~|!=|=)\s*"(.*)"', matcher).groups()
            pattern = value if op == "=~" else re.escape(value)
            universe = {"alertname": names, "category": categories,
                        "severity": {"critical", "warning", "none"}}[label]
            assert any(re.fullmatch(pattern, v) for v in universe), matcher
            if label == "alertname" and op == "=~":
                for alt in value.split("|"):
                    assert alt in names, f"inhibit rule names unknown alert {alt}"


def test_pipeline_outages_inhibit_on_labels_their_alerts_carry():
    """`equal` labels must be present on the source alerts, or inhibition never applies;
    absent() gives StreamdriftTargetAbsent only its explicit labels, hence `equal: [job]`."""
    inhibit = config()["inhibit_rules"][0]
    assert "StreamdriftTargetAbsent" in inhibit["source_matchers"][0]
    assert inhibit["equal"] == ["job"]
    absent = next(r for r in alert_rules() if r["alert"] == "StreamdriftTargetAbsent")
    assert absent["labels"]["job"] == "streamdrift"


# --------------------------------------------------------------------------- inhibition, live
#: the column and joint alerts of a model, and its performance estimate:
#: StreamdriftModelDataQuality inhibits them for its model
COLUMN_ALERTS = ("StreamdriftFeatureDrift", "StreamdriftPredictionDrift",
                 "StreamdriftSegmentDrift", "StreamdriftMultivariateDrift",
                 "StreamdriftEmbeddingDrift", "StreamdriftEstimatedPerformanceDrop",
                 "StreamdriftMissingValuesHigh", "StreamdriftOutOfRangeValuesHigh",
                 "StreamdriftUnseenCategories", "StreamdriftInvalidValuesHigh")


def _alert(name: str, **labels: str) -> dict:
    """An alert as Prometheus posts it, with the labels its rule gives it."""
    rule = next(r for r in alert_rules() if r["alert"] == name)
    now = datetime.now(UTC)
    return {"labels": {"alertname": name, **rule["labels"], "job": "streamdrift", **labels},
            "annotations": {"summary": name},
            "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}


def _column_labels(name: str, model: str) -> dict[str, str]:
    role = "prediction" if name == "StreamdriftPredictionDrift" else "feature"
    return {"model": model, "feature": "score" if role == "prediction" else "income",
            "role": role}


def test_model_data_quality_inhibits_the_column_alerts_of_its_model(tmp_path):
    """Against a real Alertmanager running the shipped configuration: while
    StreamdriftModelDataQuality fires for credit, every column alert of credit is
    suppressed (inhibited by it); fraud's column alerts, credit's pipeline-level alerts and
    the model-level alert itself stay active; once it resolves, credit's alerts are back."""
    binary = require_tool(*ALERTMANAGER)
    am = start_alertmanager(ALERTMANAGER_YML, binary=binary, storage_path=tmp_path / "data")
    try:
        columns = [_alert(n, **_column_labels(n, m)) for m in ("credit", "fraud")
                   for n in COLUMN_ALERTS]
        others = [_alert("StreamdriftModelNoEvents", model="fraud")]
        source = _alert("StreamdriftModelDataQuality", model="credit")
        am.post_json("/api/v2/alerts", [*columns, *others, source])

        def states() -> dict[tuple[str, str], tuple[str, list[str]]]:
            got = am.get_json("/api/v2/alerts")
            return {(a["labels"]["alertname"], a["labels"].get("model", "")):
                    (a["status"]["state"], a["status"]["inhibitedBy"]) for a in got}

        want = {**{(n, "credit"): "suppressed" for n in COLUMN_ALERTS},
                ("StreamdriftModelDataQuality", "credit"): "active"}
        deadline = time.monotonic() + 20
        while True:
            got = states()
            if all(got.get(k, ("", []))[0] == v for k, v in want.items()) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for name in COLUMN_ALERTS:
            state, by = got[(name, "credit")]
            assert state == "suppressed" and len(by) == 1, (name, got[(name, "credit")])
        assert got[("StreamdriftModelDataQuality", "credit")] == ("active", [])
        # fraud's column alerts: inhibited only by fraud's own StreamdriftModelNoEvents
        for name in COLUMN_ALERTS:
            assert got[(name, "fraud")][0] == "suppressed"
        # without it, fraud's alerts are active: data quality of credit does not reach them
        am.post_json("/api/v2/alerts", [{**others[0], "endsAt": datetime.now(UTC).isoformat()}])
        deadline = time.monotonic() + 20
        while any(states()[(n, "fraud")][0] != "active" for n in COLUMN_ALERTS) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        got = states()
        assert all(got[(n, "fraud")] == ("active", []) for n in COLUMN_ALERTS), got
        assert all(got[(n, "credit")][0] == "suppressed" for n in COLUMN_ALERTS), got
        # the model-level alert resolves: credit's column alerts come back
        am.post_json("/api/v2/alerts", [{**source, "endsAt": datetime.now(UTC).isoformat()}])
        deadline = time.monotonic() + 20
        while any(states()[(n, "credit")][0] != "active" for n in COLUMN_ALERTS) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        got = states()
        assert all(got[(n, "credit")] == ("active", []) for n in COLUMN_ALERTS), got
    finally:
        am.stop()
