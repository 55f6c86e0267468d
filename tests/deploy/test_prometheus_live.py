"""Smoke tests against real servers on loopback: Prometheus loads our rule files and
scrapes two fake streamdrift exporters (prometheus_client HTTP servers serving every metric
of docs/metrics.md with fake values); every rule evaluates without error, the recording
rules produce series, the alerts go pending/firing, every dashboard query runs; Alertmanager
starts with our configuration, routes alerts to the right receiver and applies the
inhibition rules; the watchdog travels Prometheus -> Alertmanager -> dead man's switch.

The servers come from tests.support.servers; everything is stopped at the end of the module.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.support.policy import find_binary, require_tool
from tests.support.servers import (
    ALERTMANAGER,
    PROMETHEUS,
    ServerStartError,
    query,
    start_alertmanager,
    start_prometheus,
)
from tests.support.waiting import wait_for
from tests.support.webhook import Webhook

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "rules" / "streamdrift-alerts.yml"
RECORDING = REPO / "deploy" / "prometheus" / "rules" / "streamdrift-recording.yml"
ALERTMANAGER_YML = REPO / "deploy" / "alertmanager" / "alertmanager.yml"

SCRAPE = 1  # seconds, scrape and rule evaluation interval of the test Prometheus
RATE_INTERVAL = "15s"  # what Grafana's $__rate_interval becomes for the dashboard queries

# --------------------------------------------------------------------------- fake exporter

NUMERIC = {"detectors": ("ks", "adwin", "missing", "out_of_range"),
           "distances": ("psi", "jensen_shannon", "wasserstein"),
           "ratios": ("missing", "invalid", "out_of_range")}
CATEGORICAL = {"detectors": ("chi2", "missing", "unseen"),
               "distances": ("psi", "jensen_shannon"),
               "ratios": ("missing", "invalid", "unseen")}
#: model -> column -> (role, kind)
INSTANCE_MODELS = [
    {"fraud": {"amount": ("feature", NUMERIC), "country": ("feature", CATEGORICAL),
               "score": ("prediction", NUMERIC)}},
    {"fraud": {"amount": ("feature", NUMERIC), "country": ("feature", CATEGORICAL),
               "score": ("prediction", NUMERIC)},
     "churn": {"tenure": ("feature", NUMERIC), "churn_probability": ("prediction", NUMERIC)}},
]
#: (model, column, detector) in the alarm state: a feature drift and a prediction drift.
ALARMING = {("fraud", "amount", "adwin"), ("fraud", "score", "ks")}
#: the root cause of the drifting prediction of model fraud: (rank, feature, contribution)
ROOT_CAUSE = [("1", "amount", 7.5), ("2", "country", 0.4)]
#: (model, segment, share of its events) of the segments (models[].segments) and the
#: (model, segment, column) drifting in its segment
SEGMENTS = [("fraud", "region=eu", 0.95), ("fraud", "region=other", 0.05)]
SEGMENT_ALARMING = {("fraud", "region=other", "amount")}
#: bias drift (#16.2): (model, facet, value, share of its events, live DPPL, reference
#: DPPL, alarming) of the facets (models[].bias)
BIAS = [("fraud", "sex", "f", 0.45, 0.18, 0.09, True), ("fraud", "sex", "m", 0.55, -0.09, -0.09,
                                                         False)]


class FakeStreamdrift:
    """Collector serving every metric of docs/metrics.md; counters grow with time."""

    def __init__(self, models: dict) -> None:
        self.models = models
        self.t0 = time.monotonic()

    def _elapsed(self) -> float:
        return time.monotonic() - self.t0

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        t = self._elapsed()
        now = time.time()
        col = ["model", "feature", "role"]
        det = [*col, "detector"]
        g = {name: GaugeMetricFamily(f"streamdrift_{name}", name, labels=det)
             for name in ("drift_statistic", "drift_threshold", "drift_p_value", "drift_score",
                          "drift_active", "drift_window_values")}
        alarms = CounterMetricFamily("streamdrift_drift_alarms", "alarms", labels=det)
        distance = GaugeMetricFamily("streamdrift_distance", "d", labels=[*col, "distance"])
        ratios = {r: GaugeMetricFamily(f"streamdrift_{r}_ratio", r, labels=col)
                  for r in ("missing", "invalid", "out_of_range", "unseen")}
        values = CounterMetricFamily("streamdrift_values", "v", labels=col)
        missing = CounterMetricFamily("streamdrift_missing_values", "m", labels=col)
        invalid = CounterMetricFamily("streamdrift_invalid_values", "i", labels=col)
        info = GaugeMetricFamily("streamdrift_model_info", "info",
                                 labels=["model", "version", "baseline_id"])
        processed = CounterMetricFamily("streamdrift_events_processed", "p", labels=["model"])
        last_event = GaugeMetricFamily("streamdrift_last_event_timestamp_seconds", "le",
                                       labels=["model"])
        event_lag = GaugeMetricFamily("streamdrift_event_lag_seconds", "el", labels=["model"])
        drifting = GaugeMetricFamily("streamdrift_model_drifting_columns", "dc",
                                     labels=["model", "role"])
        seg_events = CounterMetricFamily("streamdrift_segment_events", "se",
                                         labels=["model", "segment"])
        seg_score = GaugeMetricFamily("streamdrift_segment_drift_score", "ss",
                                      labels=[*col[:1], "segment", *col[1:]])
        seg_active = GaugeMetricFamily("streamdrift_segment_drift_active", "sa",
                                       labels=[*col[:1], "segment", *col[1:]])
        for model, segment, share in SEGMENTS:
            if model not in self.models:
                continue
            seg_events.add_metric([model, segment], 20 * share * t)
            for column, (role, _) in self.models[model].items():
                active = (model, segment, column) in SEGMENT_ALARMING
                seg_score.add_metric([model, segment, column, role], 1.4 if active else 0.3)
                seg_active.add_metric([model, segment, column, role], 1 if active else 0)
        yield from (seg_events, seg_score, seg_active)
        if "fraud" in self.models:
            yield from self._labels(t, now)
        # bias drift (#16.2): the real sink's families over figures like the pipeline's
        from stream.sinks.bias_metrics import bias_families

        bias: dict = {}
        for model, facet, value, share, dppl, ref, active in BIAS:
            n = int(20 * share * t)  # the facet value's scored events
            if model not in self.models:
                continue
            per = bias.setdefault(model, {"unscored": int(0.1 * t), "values": {}})
            per["values"][f"{facet}={value}"] = {
                "facet": facet, "value": value, "events": n, "alarms": int(active),
                "active": active, "score": 1.3 if active else 0.2, "positive_rate": 0.3,
                "dppl": dppl, "di": 0.8, "baseline_dppl": ref, "baseline_di": 0.9,
                "baseline_positive_rate": 0.3, "threshold": 4.5}
        yield from bias_families(bias)
        # with labels: the recall and accuracy differences (the recall of f alarming too)
        from stream.sinks.bias_metrics import label_bias_families

        label_bias: dict = {}
        for model, facet, value, share, dppl, ref, active in BIAS:
            if model not in self.models:
                continue
            for measure in ("recall", "accuracy"):
                on = active and measure == "recall"
                label_bias.setdefault(model, []).append({
                    "facet": facet, "value": value, "measure": measure,
                    "pairs": int(5 * share * t), "alarms": int(on), "active": on,
                    "score": 1.6 if on else 0.3, "rate": 0.7, "difference": dppl,
                    "baseline_difference": ref, "baseline_rate": 0.75})
        yield from label_bias_families(label_bias)
        for model, columns in self.models.items():
            info.add_metric([model, "1.4.2", f"{model}-2024-06"], 1)
            processed.add_metric([model], 20 * t)
            last_event.add_metric([model], now - 2)
            event_lag.add_metric([model], 2)
            n_drifting = defaultdict(int)
            for column, (role, kind) in columns.items():
                labels = [model, column, role]
                column_alarms = False
                for d in kind["detectors"]:
                    active = (model, column, d) in ALARMING
                    column_alarms |= active
                    threshold = 0.2
                    statistic = 0.3 if active else 0.05
                    g["drift_statistic"].add_metric([*labels, d], statistic)
                    g["drift_threshold"].add_metric([*labels, d], threshold)
                    if d != "adwin":
                        g["drift_p_value"].add_metric([*labels, d], 0.001 if active else 0.4)
                    g["drift_score"].add_metric([*labels, d], statistic / threshold)
                    g["drift_active"].add_metric([*labels, d], 1 if active else 0)
                    g["drift_window_values"].add_metric([*labels, d], 500)
                    alarms.add_metric([*labels, d], int(t) if active else 0)
                n_drifting[role] += column_alarms
                for dist in kind["distances"]:
                    distance.add_metric([*labels, dist], 0.05)
                for r in kind["ratios"]:
                    ratios[r].add_metric(labels, 0.01)
                values.add_metric(labels, 18 * t)
                missing.add_metric(labels, 1.5 * t)
                invalid.add_metric(labels, 0.5 * t)
            for role in ("feature", "prediction"):
                drifting.add_metric([model, role], n_drifting[role])
        yield from g.values()
        yield from (alarms, distance, *ratios.values(), values, missing, invalid, info,
                    processed, last_event, event_lag, drifting)
        # one multivariate group of model fraud (models[].multivariate), quiet
        group = ["model", "group"]
        for name, value in (("statistic", 40.0), ("threshold", 80.0), ("p_value", 0.2),
                            ("score", 0.5), ("active", 0.0), ("window_rows", 500.0),
                            ("dimensions", 14.0)):
            family = GaugeMetricFamily(f"streamdrift_multivariate_{name}", name, labels=group)
            family.add_metric(["fraud", "joint"], value)
            yield family
        for name, value in (("alarms", 0.0), ("rows", 19 * t)):
            counter = CounterMetricFamily(f"streamdrift_multivariate_{name}", name,
                                          labels=group)
            counter.add_metric(["fraud", "joint"], value)
            yield counter
        # two embedding columns of model fraud (type: vector): the real sink's families;
        # one drifting (an episode open), one quiet with malformed vectors growing
        from stream.engine.vectors import VectorFigures
        from stream.sinks.vector_metrics import vector_families

        if "fraud" in self.models:
            yield from vector_families({"fraud": {
                "query_emb": VectorFigures(
                    dim=384, components=8, explained=0.48, statistic=90.0, threshold=40.0,
                    score=2.25, active=True, alarms=1, rows=int(18 * t),
                    malformed={"wrong_dimension": int(0.5 * t)}),
                "doc_emb": VectorFigures(
                    dim=768, components=4, explained=0.31, statistic=12.0, threshold=40.0,
                    score=0.3, active=False, alarms=0, rows=int(19 * t),
                    malformed={"missing": int(0.2 * t), "not_numeric": int(0.1 * t)})}})
        # attribution drift of model fraud (models[].attributions), quiet, and the root cause
        # of its drifting prediction (#16 items 3-4)
        for name, value in (("ndcg", 0.991), ("level", 0.95), ("score", 0.18), ("active", 0.0)):
            family = GaugeMetricFamily(f"streamdrift_attribution_{name}", name, labels=["model"])
            family.add_metric(["fraud"], value)
            yield family
        for name, value in (("alarms", 0.0), ("windows", t / 50), ("events", 19 * t)):
            counter = CounterMetricFamily(f"streamdrift_attribution_{name}", name,
                                          labels=["model"])
            counter.add_metric(["fraud"], value)
            yield counter
        values = CounterMetricFamily("streamdrift_attribution_values", "av",
                                     labels=["model", "outcome"])
        for outcome, share in (("ok", 3.9), ("missing", 0.1), ("invalid", 0.0)):
            values.add_metric(["fraud", outcome], share * 19 * t)
        yield values
        cause = GaugeMetricFamily("streamdrift_root_cause", "rc",
                                  labels=["model", "rank", "feature"])
        for rank, feature, value in ROOT_CAUSE:
            cause.add_metric(["fraud", rank, feature], value)
        yield cause

        consumed = CounterMetricFamily("streamdrift_events_consumed", "c")
        consumed.add_metric([], 50 * t)
        rejected = CounterMetricFamily("streamdrift_events_invalid", "r", labels=["reason"])
        rejected.add_metric(["invalid_json"], 1 * t)
        rejected.add_metric(["unknown_model"], 0.5 * t)
        batches = 10 * t
        histogram = HistogramMetricFamily(
            "streamdrift_batch_processing_seconds", "h",
            buckets=[("0.01", 0.2 * batches), ("0.05", 0.9 * batches), ("0.1", batches),
                     ("+Inf", batches)],
            sum_value=0.03 * batches)
        last_batch = GaugeMetricFamily("streamdrift_last_batch_timestamp_seconds", "lb")
        last_batch.add_metric([], now)
        lag = GaugeMetricFamily("streamdrift_consumer_lag_messages", "lag",
                                labels=["topic", "partition"])
        lag.add_metric(["events", "0"], 100 + 5 * t)
        lag.add_metric(["events", "1"], 80)
        source = GaugeMetricFamily("streamdrift_source_up", "s")
        source.add_metric([], 1)
        dead = CounterMetricFamily("streamdrift_dead_letter", "dl", labels=["result"])
        dead.add_metric(["ok"], 1.5 * t)
        dead.add_metric(["failed"], 0.1 * t)
        build = GaugeMetricFamily("streamdrift_build_info", "b", labels=["version"])
        build.add_metric(["0.1.0"], 1)
        yield from (consumed, rejected, histogram, last_batch, lag, source, dead, build)


    def _labels(self, t: float, now: float):
        """Model fraud has labels: the join's outcomes, its quality (recent below the
        reference's), an open model-quality episode, and the estimated quality (CBPE)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = ["model"]
        outcomes = CounterMetricFamily("streamdrift_labels", "l", labels=["model", "outcome"])
        for outcome, rate in (("joined", 8), ("expired", 2), ("evicted", 0),
                              ("no_prediction", 0.1), ("duplicate", 0), ("late", 0),
                              ("unjoinable_prediction", 0)):
            outcomes.add_metric(["fraud", outcome], rate * t)
        invalid = CounterMetricFamily("streamdrift_labels_invalid", "li", labels=["reason"])
        invalid.add_metric(["invalid_json"], 0.2 * t)
        invalid.add_metric(["wrong_type"], 0.1 * t)
        gauges = {name: GaugeMetricFamily(f"streamdrift_{name}", name, labels=m)
                  for name in ("labels_pending", "labels_early",
                               "last_label_timestamp_seconds", "concept_drift_score",
                               "concept_drift_active",
                               "estimated_quality_window_predictions",
                               "estimated_quality_calibrated")}
        for name, value in (("labels_pending", 1200), ("labels_early", 3),
                            ("last_label_timestamp_seconds", now - 30),
                            ("concept_drift_score", 1.6), ("concept_drift_active", 1),
                            ("estimated_quality_window_predictions", 1000),
                            ("estimated_quality_calibrated", 0)):
            gauges[name].add_metric(["fraud"], value)
        c_alarms = CounterMetricFamily("streamdrift_concept_drift_alarms", "ca", labels=m)
        # one alarm a second: the annotation's increase over RATE_INTERVAL needs a rise inside
        # the window from the fixture's first seconds on (an alarm every 10 s left it empty
        # whenever this test ran within 10 s of the fixture's start)
        c_alarms.add_metric(["fraud"], 1 + int(t))
        quality = GaugeMetricFamily("streamdrift_model_quality", "q",
                                    labels=["model", "metric", "scope"])
        for metric, base in (("accuracy", 0.91), ("f1", 0.8), ("roc_auc", 0.95),
                             ("log_loss", 0.25)):
            for scope, value in (("baseline", base), ("since_start", base - 0.01),
                                 ("recent", base - 0.06)):
                quality.add_metric(["fraud", metric, scope], value)
        est = GaugeMetricFamily("streamdrift_estimated_quality", "e",
                                labels=["model", "metric", "scope"])
        bands = {name: GaugeMetricFamily(f"streamdrift_estimated_quality_{name}", name,
                                         labels=["model", "metric"])
                 for name in ("lower", "upper", "band", "drop_active")}
        for metric, base in (("accuracy", 0.9), ("f1", 0.79), ("roc_auc", 0.94)):
            est.add_metric(["fraud", metric, "baseline"], base)
            est.add_metric(["fraud", metric, "recent"], base - 0.05)
            for name, value in (("lower", base - 0.08), ("upper", base - 0.02),
                                ("band", 0.03), ("drop_active", 1)):
                bands[name].add_metric(["fraud", metric], value)
        yield from (outcomes, invalid, *gauges.values(), c_alarms, quality, est,
                    *bands.values())


class Exporter:
    def __init__(self, models: dict) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(FakeStreamdrift(models))
        self.server, self.thread = start_http_server(0, addr="127.0.0.1",
                                                     registry=self.registry)
        self.address = f"127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def webhooks():
    capture = Webhook()
    yield capture
    capture.stop()


def alertmanager_test_config(tmp_path: Path, webhook_url: str) -> Path:
    """Our alertmanager.yml with every receiver replaced by a webhook to the capture
    server and short group waits/intervals; routes, grouping and inhibition rules are kept
    as shipped."""
    cfg = yaml.safe_load(ALERTMANAGER_YML.read_text(encoding="utf-8"))
    cfg["receivers"] = [{"name": r["name"],
                         "webhook_configs": [{"url": f"{webhook_url}/{r['name']}",
                                              "send_resolved": False}]}
                        for r in cfg["receivers"]]

    def shorten(route: dict) -> None:
        # alerts joining an already notified group wait for group_interval
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
        for child in route.get("routes", []):
            shorten(child)

    shorten(cfg["route"])
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


# The server fixtures yield None when the binary is missing: each test first calls
# require_tool(), which skips it, or fails it (not errors) when CI is set.


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory, webhooks):
    if not find_binary(*ALERTMANAGER):
        yield None
        return
    config = alertmanager_test_config(tmp_path_factory.mktemp("am"), webhooks.url)
    with start_alertmanager(config, timeout=30) as am:
        yield am


@pytest.fixture(scope="module")
def exporters():
    started = [Exporter(models) for models in INSTANCE_MODELS]
    yield started
    for e in started:
        e.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, exporters, alertmanager):
    if not find_binary(*PROMETHEUS):
        yield None
        return
    config = {
        "global": {"scrape_interval": f"{SCRAPE}s", "evaluation_interval": f"{SCRAPE}s",
                   "scrape_timeout": f"{SCRAPE}s"},
        "rule_files": [str(RECORDING), str(ALERTS)],
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [alertmanager.url.removeprefix("http://")] if alertmanager else []}]}]},
        "scrape_configs": [{"job_name": "streamdrift", "static_configs": [
            {"targets": [e.address for e in exporters]}]}],
    }
    path = tmp_path_factory.mktemp("prometheus") / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    # Alerts that fire before the Alertmanager is discovered are dropped, then resent only
    # after the resend delay (1m by default).
    with start_prometheus(path, timeout=30, extra_args=["--rules.alert.resend-delay=1s"]) as prom:
        yield prom


def rule_groups(*paths: Path) -> dict[str, list[str]]:
    out = {}
    for path in paths:
        for g in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            out[g["name"]] = [r.get("alert") or r.get("record") for r in g["rules"]]
    return out


def all_rules_evaluated(prom):
    groups = prom.get_json("/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    if all(r["health"] == "ok" for r in rules) and all(
            r.get("lastEvaluation", "0001").startswith("20") for r in rules):
        return groups
    return None


# --------------------------------------------------------------------------- Prometheus


def test_prometheus_loads_our_rules_and_evaluates_them_cleanly(prometheus):
    require_tool(*PROMETHEUS)
    groups = wait_for(lambda: all_rules_evaluated(prometheus), timeout=30,
                      message="every rule evaluated with health ok")
    loaded = {g["name"]: [r["name"] for r in g["rules"]] for g in groups}
    assert loaded == rule_groups(RECORDING, ALERTS)
    bad = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]
           if r.get("lastError")]
    assert not bad, bad


def test_prometheus_scrapes_the_exporters(prometheus, exporters):
    require_tool(*PROMETHEUS)

    def both_up():
        result = query(prometheus, 'up{job="streamdrift"} == 1')
        return len(result) == len(exporters)

    wait_for(both_up, timeout=20, message="both fake exporters scraped")
    assert query(prometheus, 'streamdrift_source_up{job="streamdrift"}')


def test_recording_rules_produce_series(prometheus):
    require_tool(*PROMETHEUS)
    names = [n for names in rule_groups(RECORDING).values() for n in names]

    def all_present():
        return all(query(prometheus, name) for name in names)

    wait_for(all_present, timeout=30, message="a series of every recording rule")
    # (a 5m rate over the few seconds of data so far is small, but positive)
    (fraud,) = query(prometheus, 'model:streamdrift_events_processed:rate5m{model="fraud"}')
    assert float(fraud["value"][1]) > 0
    # all batches take between 0.05 s and 0.1 s
    (p99,) = query(prometheus, "job:streamdrift_batch_processing_seconds:p99_rate5m")
    assert 0.05 < float(p99["value"][1]) <= 0.1


def test_alerts_go_pending_and_the_watchdog_fires(prometheus):
    require_tool(*PROMETHEUS)
    def alerts():
        got = prometheus.get_json("/api/v1/alerts")["data"]["alerts"]
        by_name = defaultdict(list)
        for a in got:
            by_name[a["labels"]["alertname"]].append(a)
        if {"StreamdriftWatchdog", "StreamdriftPredictionDrift", "StreamdriftFeatureDrift",
                "StreamdriftModelQualityDegraded",
                "StreamdriftEstimatedPerformanceDrop",
                "StreamdriftEmbeddingDrift"} <= set(by_name):
            return by_name
        return None

    by_name = wait_for(alerts, timeout=30, message="watchdog and drift alerts")
    (watchdog,) = by_name["StreamdriftWatchdog"]
    assert watchdog["state"] == "firing"
    (prediction,) = by_name["StreamdriftPredictionDrift"]
    assert prediction["state"] == "pending"  # for: 10m
    assert {k: prediction["labels"][k] for k in ("model", "feature", "role", "severity")} == {
        "model": "fraud", "feature": "score", "role": "prediction", "severity": "critical"}
    assert prediction["annotations"]["description"].startswith(
        "1 distribution/mean detector(s) (ks, adwin, cusum, chi2, surprisal) on prediction score of model fraud")
    # the annotation's query names the root cause, from the exporters' series
    assert prediction["annotations"]["root_cause"] == "1. amount (7.5); 2. country (0.4); "
    (feature,) = by_name["StreamdriftFeatureDrift"]
    assert feature["labels"]["feature"] == "amount"
    # the model-quality episode of fraud (both instances serve it: one alert per model)
    (quality,) = by_name["StreamdriftModelQualityDegraded"]
    assert {k: quality["labels"][k] for k in ("model", "severity", "category")} == {
        "model": "fraud", "severity": "critical", "category": "drift"}
    assert sorted(a["labels"]["metric"] for a in by_name["StreamdriftEstimatedPerformanceDrop"]
                  ) == ["accuracy", "f1", "roc_auc"]
    # the drifting embedding column of fraud (both instances serve it: one alert), not the
    # quiet one
    (embedding,) = by_name["StreamdriftEmbeddingDrift"]
    assert {k: embedding["labels"][k] for k in ("model", "column", "severity")} == {
        "model": "fraud", "column": "query_emb", "severity": "warning"}
    assert float(embedding["value"]) == 2.25
    # healthy signals do not even go pending
    for quiet in ("StreamdriftTargetDown", "StreamdriftSourceDown", "StreamdriftNoEvents",
                  "StreamdriftConsumerStalled", "StreamdriftTargetAbsent"):
        assert quiet not in by_name, by_name[quiet]


def test_every_dashboard_query_runs(prometheus, grafana_generate):
    """All dashboard queries are valid PromQL, and every panel shows data."""
    require_tool(*PROMETHEUS)
    wait_for(lambda: query(prometheus, "streamdrift_batch_processing_seconds_count"
                                       f"[{RATE_INTERVAL}]"), timeout=20,
             message="data to compute rates")
    time.sleep(3)
    variables = {"model": "fraud", "feature": "amount"}
    empty_panels = defaultdict(list)
    for q in grafana_generate.iter_queries():
        expr = grafana_generate.expand_macros(q.expr, variables, rate_interval=RATE_INTERVAL)
        result = query(prometheus, expr)
        empty_panels[(q.dashboard, q.panel)].append(not result)
    empty = sorted(k for k, flags in empty_panels.items() if all(flags))
    assert not empty, f"panels without data: {empty}"


def test_start_prometheus_fails_fast_with_the_log_tail(tmp_path):
    require_tool(*PROMETHEUS)
    bad = tmp_path / "bad.yml"
    bad.write_text("scrape_configs: [{job_name: x, static_configs: 3}]\n")
    started = time.monotonic()
    with pytest.raises(ServerStartError, match="exited with status") as info:
        start_prometheus(bad, timeout=30)
    assert time.monotonic() - started < 15
    assert "static_configs" in str(info.value) or "config" in str(info.value)


# --------------------------------------------------------------------------- Alertmanager


def test_alertmanager_starts_with_the_shipped_config():
    require_tool(*ALERTMANAGER)
    with start_alertmanager(ALERTMANAGER_YML, timeout=30) as am:
        assert am.get("/-/ready") is not None
        status = am.get_json("/api/v2/status")
        assert status["cluster"]["status"] == "disabled"
        original = status["config"]["original"]
        for receiver in ("pager", "tickets", "deadmansswitch"):
            assert f"name: {receiver}" in original
        proc = am.proc
        # Alertmanager serves HTTP (ready) a moment before it installs its SIGTERM handler;
        # a SIGTERM in between kills it (-15). Seen once on a loaded machine.
        time.sleep(1.0)
    assert not am.running
    assert proc.returncode == 0, am.log_tail()


def _alert(**labels: str) -> dict:
    return {"labels": labels, "annotations": {"summary": "test"}}


@pytest.mark.parametrize(("receiver", "labels"), [
    ("pager", {"alertname": "StreamdriftPredictionDrift", "severity": "critical",
               "category": "drift", "job": "route-test", "model": "m1", "feature": "score"}),
    ("tickets", {"alertname": "StreamdriftFeatureDrift", "severity": "warning",
                 "category": "drift", "job": "route-test", "model": "m1", "feature": "f1"}),
    ("deadmansswitch", {"alertname": "StreamdriftWatchdog", "severity": "none",
                        "category": "meta", "job": "route-test"}),
], ids=["critical->pager", "warning->tickets", "watchdog->deadmansswitch"])
def test_alertmanager_delivers_to_the_receiver_of_the_route(alertmanager, webhooks, receiver,
                                                            labels):
    require_tool(*ALERTMANAGER)
    alertmanager.post_json("/api/v2/alerts", [_alert(**labels)])

    def delivered():
        return [a for a in webhooks.alerts(f"/{receiver}")
                if a["labels"].get("job") == "route-test"
                and a["labels"]["alertname"] == labels["alertname"]]

    (alert, *_) = wait_for(delivered, timeout=20, message=f"a delivery to {receiver}")
    assert alert["labels"] == labels
    others = [n.path for n in webhooks.notifications() if n.path != f"/{receiver}"
              for a in n.alerts
              if a["labels"].get("job") == "route-test"
              and a["labels"]["alertname"] == labels["alertname"]]
    assert not others, f"also delivered to {others}"


def _status(am, job: str) -> dict[tuple[str, str, str], dict]:
    alerts = am.get_json("/api/v2/alerts", filter=f'job="{job}"')
    return {(a["labels"]["alertname"], a["labels"].get("model", ""),
             a["labels"].get("severity", "")): a["status"] for a in alerts}


def test_alertmanager_inhibition(alertmanager):
    require_tool(*ALERTMANAGER)
    job = "inhibit-test"
    quality = {"category": "quality", "severity": "warning", "job": job}
    alertmanager.post_json("/api/v2/alerts", [
        # a model without events silences that model's drift, not another model's
        _alert(alertname="StreamdriftModelNoEvents", severity="critical", category="pipeline",
               job=job, model="silent"),
        _alert(alertname="StreamdriftFeatureDrift", severity="warning", category="drift",
               job=job, model="silent", feature="f"),
        _alert(alertname="StreamdriftFeatureDrift", severity="warning", category="drift",
               job=job, model="busy", feature="f"),
        # the critical tier silences the warning tier of the same alert
        _alert(alertname="StreamdriftInvalidEventsHigh", **{**quality, "severity": "critical"}),
        _alert(alertname="StreamdriftInvalidEventsHigh", **quality),
    ])

    def settled():
        s = _status(alertmanager, job)
        return s if len(s) == 5 and s[("StreamdriftInvalidEventsHigh", "", "warning")][
            "inhibitedBy"] else None

    status = wait_for(settled, timeout=20, message="inhibition applied")
    assert status[("StreamdriftFeatureDrift", "silent", "warning")]["state"] == "suppressed"
    assert status[("StreamdriftFeatureDrift", "busy", "warning")]["state"] == "active"
    assert status[("StreamdriftInvalidEventsHigh", "", "critical")]["state"] == "active"
    assert status[("StreamdriftModelNoEvents", "silent", "critical")]["state"] == "active"

    # the target-absent alert carries only its explicit labels, and still silences the
    # drift of its job (and only of its job)
    alertmanager.post_json("/api/v2/alerts", [
        _alert(alertname="StreamdriftTargetAbsent", severity="critical", category="pipeline",
               job=job),
    ])

    def busy_suppressed():
        s = _status(alertmanager, job)
        return s[("StreamdriftFeatureDrift", "busy", "warning")]["state"] == "suppressed"

    wait_for(busy_suppressed, timeout=20, message="TargetAbsent inhibiting drift")


def test_watchdog_travels_from_prometheus_to_the_deadmansswitch(prometheus, webhooks):
    require_tool(*PROMETHEUS)
    require_tool(*ALERTMANAGER)

    def delivered():
        return [a for a in webhooks.alerts("/deadmansswitch")
                if a["labels"]["alertname"] == "StreamdriftWatchdog"
                and a["labels"].get("job") != "route-test"]

    (alert, *_) = wait_for(delivered, timeout=30, message="watchdog at the dead man's switch")
    assert alert["labels"]["severity"] == "none"
    assert alert["annotations"]["runbook_url"].endswith("#streamdriftwatchdog")
