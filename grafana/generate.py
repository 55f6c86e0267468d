#!/usr/bin/env python3
"""Generate streamdrift's Grafana dashboards as code (standard library only).

    python grafana/generate.py            # (re)write grafana/dashboards/*.json
    python grafana/generate.py --check    # exit 1 if the committed JSON is not up to date
    python grafana/generate.py --queries  # print every query: dashboard<TAB>panel<TAB>expr

The dashboards are built only on the metrics of docs/metrics.md (plus `up`); every panel has
a title, a description and a unit; rates use `$__rate_interval`; the datasource is the
`$datasource` variable, whose default is the provisioned datasource `streamdrift-prometheus`
(grafana/provisioning/datasources/streamdrift.yml).

`iter_queries()` yields every (dashboard, panel title, expr) — panel targets, the series
selectors behind the template variables and the annotation queries — and `expand_macros()`
turns a query into plain PromQL (Grafana's `$__rate_interval` and template variables
substituted) so that all of them can be run against a real Prometheus.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
DASHBOARD_DIR = HERE / "dashboards"

DATASOURCE_UID = "streamdrift-prometheus"
DS = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["streamdrift"]
SCHEMA_VERSION = 39

# Distribution/mean drift detectors (the data-quality detectors are shown separately).
DRIFT_DETECTORS = 'detector=~"ks|adwin|cusum|chi2|surprisal"'

Panel = dict[str, Any]


# --------------------------------------------------------------------------- building blocks


def target(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> dict:
    """One Prometheus query of a panel (refIds are assigned by `panel`)."""
    t: dict[str, Any] = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
    }
    if table:
        t["format"] = "table"
    return t


def _thresholds(*steps: tuple[float | None, str]) -> dict:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


DEFAULT_THRESHOLDS = _thresholds((None, "green"))
SCORE_THRESHOLDS = _thresholds((None, "green"), (1, "red"))

# 0/1 gauges (drift_active, source_up, up).
ALARM_MAPPING = [
    {
        "type": "value",
        "options": {
            "0": {"text": "OK", "color": "green", "index": 0},
            "1": {"text": "DRIFT", "color": "red", "index": 1},
        },
    }
]
UP_MAPPING = [
    {
        "type": "value",
        "options": {
            "0": {"text": "DOWN", "color": "red", "index": 0},
            "1": {"text": "UP", "color": "green", "index": 1},
        },
    }
]


def panel(
    kind: str,
    title: str,
    description: str,
    unit: str,
    targets: list[dict],
    *,
    w: int = 12,
    h: int = 8,
    thresholds: dict | None = None,
    mappings: list | None = None,
    custom: dict | None = None,
    options: dict | None = None,
    overrides: list | None = None,
    transformations: list | None = None,
    links: list | None = None,
    **fielddefaults: Any,
) -> Panel:
    for ref, t in zip("ABCDEFGHIJ", targets, strict=False):
        t["refId"] = ref
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "palette-classic" if kind == "timeseries" else "thresholds"},
        "mappings": mappings or [],
        "thresholds": thresholds or DEFAULT_THRESHOLDS,
    }
    if custom:
        defaults["custom"] = custom
    if links:
        defaults["links"] = links
    defaults.update(fielddefaults)
    p: Panel = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
        "targets": targets,
    }
    if transformations:
        p["transformations"] = transformations
    return p


def timeseries(title: str, description: str, unit: str, targets: list[dict], *,
               bars: bool = False, stack: bool = False, threshold_line: float | None = None,
               log: bool = False, **kw: Any) -> Panel:
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 80 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "axisSoftMin": 0,
    }
    if log:
        custom["scaleDistribution"] = {"type": "log", "log": 10}
        del custom["axisSoftMin"]
    thresholds = kw.pop("thresholds", None)
    if threshold_line is not None:
        custom["thresholdsStyle"] = {"mode": "line+area"}
        thresholds = _thresholds((None, "transparent"), (threshold_line, "red"))
    options = {
        "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                   "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, unit, targets, custom=custom,
                 options=options, thresholds=thresholds, **kw)


def stat(title: str, description: str, unit: str, expr: str, *, w: int = 4, h: int = 4,
         **kw: Any) -> Panel:
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "textMode": "auto",
        "orientation": "auto",
    }
    return panel("stat", title, description, unit, [target(expr, instant=True)], w=w, h=h,
                 options=options, **kw)


def table(title: str, description: str, unit: str, targets: list[dict], *,
          rename: Mapping[str, str] | None = None, hide: Iterable[str] = ("Time",),
          merge: bool = False, **kw: Any) -> Panel:
    transformations: list[dict] = []
    if merge:
        transformations.append({"id": "merge", "options": {}})
    transformations.append({
        "id": "organize",
        "options": {
            "excludeByName": {name: True for name in hide},
            "renameByName": dict(rename or {}),
        },
    })
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return panel("table", title, description, unit, targets, options=options,
                 transformations=transformations, **kw)


def state_timeline(title: str, description: str, targets: list[dict], *,
                   mappings: list, w: int = 24, h: int = 8, **kw: Any) -> Panel:
    options = {
        "showValue": "never",
        "mergeValues": True,
        "alignValue": "left",
        "rowHeight": 0.9,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    custom = {"fillOpacity": 80, "lineWidth": 0}
    return panel("state-timeline", title, description, "none", targets, w=w, h=h,
                 mappings=mappings, custom=custom, options=options, **kw)


def row(title: str, description: str) -> Panel:
    return {"type": "row", "title": title, "description": description, "collapsed": False,
            "gridPos": {"w": 24, "h": 1}, "panels": []}


def layout(panels: list[Panel]) -> list[Panel]:
    """Assign ids and x/y positions, left to right, wrapping at the 24-column width."""
    x = y = line_h = 0
    for pid, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if p["type"] == "row" or x + w > 24:
            x, y, line_h = 0, y + line_h, 0
        p["id"] = pid
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x += w
        line_h = max(line_h, h)
        if p["type"] == "row":
            x, y, line_h = 0, y + h, 0
    return panels


# --------------------------------------------------------------------------- variables


def datasource_variable() -> dict:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {"selected": False, "text": "Streamdrift Prometheus", "value": DATASOURCE_UID},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def query_variable(name: str, label: str, query: str, *, multi: bool = False,
                   include_all: bool = False, current: str | None = None) -> dict:
    var: dict[str, Any] = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,
        "sort": 1,
        "hide": 0,
        "regex": "",
        "multi": multi,
        "includeAll": include_all,
        "options": [],
    }
    if include_all:
        var["allValue"] = ".*"
        var["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    elif current is not None:
        var["current"] = {"selected": False, "text": current, "value": current}
    else:
        var["current"] = {}
    return var


JOB_VARIABLE = query_variable("job", "Job", "label_values(streamdrift_build_info, job)",
                              current="streamdrift")


def dashboard(uid: str, title: str, description: str, panels: list[Panel],
              variables: list[dict], annotations: list[dict] | None = None) -> dict:
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "refresh": "1m",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {
                "title": "streamdrift dashboards",
                "type": "dashboards",
                "tags": TAGS,
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "annotations": {"list": [builtin, *(annotations or [])]},
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": layout(panels),
    }


def model_link(with_feature: bool) -> dict:
    url = "/d/streamdrift-model/streamdrift-model?${datasource:queryparam}&var-job=${job}" \
          "&var-model=${__data.fields.model}"
    if with_feature:
        url += "&var-feature=${__data.fields.feature}"
    return {"title": "Open in the model dashboard", "url": url, "targetBlank": False}


# --------------------------------------------------------------------------- dashboards


def active(selector: str) -> str:
    """The columns' detector alarm states: ``streamdrift_drift_active``, and the CUSUM pooled
    over the monitors with ``source.repartition.pooled`` (its own series, exported by one
    process; the monitors' CUSUMs of those columns are muted), as detector ``cusum``."""
    return (f"streamdrift_drift_active{{{selector}}} or "
            f"streamdrift_pooled_drift_active{{{selector}}}")


def drifting_columns(selector: str, role: str) -> str:
    """Distinct columns of ``role`` with a detector episode open, over every process:
    ``streamdrift_model_drifting_columns`` is per process, so its sum counts a column twice
    when two processes (their partitions) see it drift."""
    return (f'count(max by (model, feature) ({active(f"{selector}, role={chr(34)}{role}{chr(34)}")})'
            f' == 1) or vector(0)')


def overview() -> dict:
    j = 'job="$job"'
    m = f'{j}, model=~"$model"'
    panels = [
        row("Now", "Current state of all monitored models."),
        stat("Models monitored", "Number of models streamdrift compares with a baseline.",
             "none", f"count(streamdrift_model_info{{{m}}})"),
        stat("Drifting features",
             "Input features with at least one active alarm, over all selected models.",
             "none", drifting_columns(m, "feature"),
             thresholds=_thresholds((None, "green"), (1, "orange"))),
        stat("Drifting predictions",
             "Prediction columns (model outputs) with at least one active alarm: these page.",
             "none", drifting_columns(m, "prediction"),
             thresholds=_thresholds((None, "green"), (1, "red"))),
        stat("Events processed", "Valid events routed to the selected models, per second.",
             "eps", f"sum(rate(streamdrift_events_processed_total{{{m}}}[$__rate_interval]))"),
        stat("Rejected messages",
             "Share of the messages read from the source that were rejected (all reasons).",
             "percentunit",
             f"sum(rate(streamdrift_events_invalid_total{{{j}}}[$__rate_interval]))"
             f" / sum(rate(streamdrift_events_consumed_total{{{j}}}[$__rate_interval]))",
             thresholds=_thresholds((None, "green"), (0.05, "orange"), (0.5, "red"))),
        stat("Source", "Whether every streamdrift process reaches its source (Kafka).",
             "none", f"min(streamdrift_source_up{{{j}}})", mappings=UP_MAPPING,
             thresholds=_thresholds((None, "red"), (1, "green"))),
        table("Columns drifting now",
              "Columns with an active alarm right now and the detector's score "
              "(statistic / threshold). Click a row to open the model dashboard.",
              "none",
              [target(f"max by (model, feature, role, detector) (streamdrift_drift_score{{{m}}})"
                      f" and on (model, feature, role, detector)"
                      f" (max by (model, feature, role, detector)"
                      f" ({active(m)}) == 1)",
                      instant=True, table=True)],
              rename={"Value": "score"}, w=14, h=9, links=[model_link(True)]),
        table("Models", "Monitored models with their version and the baseline they are "
              "compared with.", "none",
              [target(f"max by (model, version, baseline_id) (streamdrift_model_info{{{m}}})",
                      instant=True, table=True)],
              hide=("Time", "Value"), w=10, h=9, links=[model_link(False)]),
        row("History", "How drift evolved over the selected time range."),
        state_timeline("Drift state per column",
                       "1 (DRIFT) while any distribution/mean detector (ks, adwin, cusum, chi2, surprisal) of "
                       "the column alarms.",
                       [target(f"max by (model, feature) ({active(f'{m}, {DRIFT_DETECTORS}')})",
                               "{{model}} / {{feature}}")],
                       mappings=ALARM_MAPPING, h=10),
        timeseries("Drift alarms raised",
                   "Alarms raised per column and detector in each interval "
                   "(transitions into the alarm state).", "short",
                   [target(f"sum by (model, feature, detector) (increase("
                           f"streamdrift_drift_alarms_total{{{m}}}[$__rate_interval])) > 0",
                           "{{model}} / {{feature}} / {{detector}}")], bars=True, stack=True),
        timeseries("Drifting columns per model",
                   "Columns with at least one active alarm, per model and role.", "short",
                   [target(f"count by (model, role) (max by (model, feature, role) "
                           f"({active(m)}) == 1)",
                           "{{model}} {{role}}s")]),
        timeseries("Highest drift score per model",
                   "Highest score (statistic / threshold) of the distribution/mean detectors "
                   "of any column of the model; the red line at 1 is the alarm threshold.",
                   "none",
                   [target(f"max by (model, role) (streamdrift_drift_score{{{m}, "
                           f"{DRIFT_DETECTORS}}})", "{{model}} {{role}}s")], threshold_line=1),
        timeseries("Events processed per model",
                   "Valid events routed to each model per second.", "eps",
                   [target(f"sum by (model) (rate(streamdrift_events_processed_total{{{m}}}"
                           f"[$__rate_interval]))", "{{model}}")]),
    ]
    return dashboard(
        "streamdrift-overview", "Streamdrift overview",
        "Which features and predictions of which models drift now, and when alarms were raised.",
        panels,
        [JOB_VARIABLE,
         query_variable("model", "Model", 'label_values(streamdrift_model_info{job="$job"}, model)',
                        multi=True, include_all=True)],
    )


def model() -> dict:
    j = 'job="$job"'
    m = f'{j}, model="$model"'
    f = f'{m}, feature="$feature"'
    sg = f'{m}, segment=~"$segment"'
    quality_ratios = [
        ("streamdrift_missing_ratio", "missing"),
        ("streamdrift_invalid_ratio", "invalid"),
        ("streamdrift_out_of_range_ratio", "out of range"),
        ("streamdrift_unseen_ratio", "unseen"),
    ]
    panels = [
        row("Model $model", "State of all columns of the model."),
        stat("Drifting features", "Input features of the model with at least one active alarm.",
             "none", drifting_columns(m, "feature"),
             thresholds=_thresholds((None, "green"), (1, "orange"))),
        stat("Drifting predictions",
             "Prediction columns of the model with at least one active alarm.",
             "none", drifting_columns(m, "prediction"),
             thresholds=_thresholds((None, "green"), (1, "red"))),
        stat("Events processed", "Valid events processed for the model, per second.", "eps",
             f"sum(rate(streamdrift_events_processed_total{{{m}}}[$__rate_interval]))"),
        stat("Event-time lag",
             "Processing time minus event time of the newest processed event of the model.",
             "s", f"max(streamdrift_event_lag_seconds{{{m}}})",
             thresholds=_thresholds((None, "green"), (300, "orange"), (3600, "red"))),
        table("Baseline", "Model version and the baseline its data is compared with.", "none",
              [target(f"max by (version, baseline_id) (streamdrift_model_info{{{m}}})",
                      instant=True, table=True)], hide=("Time", "Value"), w=8, h=4),
        timeseries("Highest drift score per feature",
                   "Highest score (statistic / threshold) of the distribution/mean detectors "
                   "(ks, adwin, cusum, chi2, surprisal) of each input feature; alarming above the red line at 1.",
                   "none",
                   [target(f'max by (feature) (streamdrift_drift_score{{{m}, role="feature", '
                           f"{DRIFT_DETECTORS}}})", "{{feature}}")], threshold_line=1),
        timeseries("Prediction drift score",
                   "Score (statistic / threshold) of each distribution/mean detector of the "
                   "model's predictions; alarming above the red line at 1. Prediction drift "
                   "pages.", "none",
                   [target(f'max by (feature, detector) (streamdrift_drift_score{{{m}, '
                           f'role="prediction", {DRIFT_DETECTORS}}})',
                           "{{feature}} {{detector}}")], threshold_line=1),
        state_timeline("Drift state per column",
                       "1 (DRIFT) while any distribution/mean detector of the column alarms; "
                       "features and predictions.",
                       [target(f"max by (feature, role) ({active(f'{m}, {DRIFT_DETECTORS}')})",
                               "{{role}} {{feature}}")],
                       mappings=ALARM_MAPPING),
        timeseries("Multivariate group score",
                   "Score (statistic / threshold) of the joint test of each multivariate group "
                   "of the model (models[].multivariate): a change of the relationship between "
                   "its columns (a correlation that flips, a shift spread over many columns) "
                   "that no single column shows; alarming above the red line at 1. Empty for "
                   "a model without groups.", "none",
                   [target(f"max by (group) (streamdrift_multivariate_score{{{m}}})",
                           "{{group}}")], threshold_line=1),
        # -- attribution drift and root cause (#16 items 3-4; docs/attribution.md) --
        timeseries("Attribution ranking (NDCG)",
                   "NDCG of the last window's ranking of the model's features by mean absolute "
                   "attribution against the reference's ranking (1: same ranking), and the "
                   "calibrated level below which it alarms (models[].attributions). Empty for "
                   "a model without attributions.", "none",
                   [target(f"min(streamdrift_attribution_ndcg{{{m}}})", "NDCG"),
                    target(f"max(streamdrift_attribution_level{{{m}}})", "alarm level")]),
        table("Root cause of prediction drift",
              "While a prediction of the model drifts: the top three features by contribution "
              "(drift score x importance; importance = the reference's mean absolute "
              "attribution, or importances:, or 1). Empty otherwise.", "none",
              [target(f"max by (rank, feature) (streamdrift_root_cause{{{m}}})", instant=True,
                      table=True)], hide=("Time",), w=12, h=6,
              rename={"Value": "contribution"}),
        table("Data quality per column",
              "Current missing, invalid, out-of-range (numeric) and unseen-category "
              "(categorical) shares of the recent window of each column.", "percentunit",
              [target(f"max by (feature, role) ({metric}{{{m}}})", instant=True, table=True)
               for metric, _ in quality_ratios],
              merge=True, w=24, h=8,
              rename={f"Value #{ref}": name
                      for ref, (_, name) in zip("ABCD", quality_ratios, strict=True)}),
        # -- embedding columns (#19 item 2; docs/embeddings.md) --------------------------
        row("Embedding columns of $model", "The tests of the model's vector columns "
            "(type: vector, docs/embeddings.md); empty for a model without them."),
        timeseries("Embedding drift score per column",
                   "Score (statistic / threshold) of each vector column's test: its vectors "
                   "projected on the reference's principal directions and their "
                   "reconstruction residual; alarming above the red line at 1.", "none",
                   [target(f"max by (column) (streamdrift_vector_score{{{m}}})",
                           "{{column}}")], threshold_line=1, w=12),
        timeseries("Malformed vectors per second",
                   "Vectors not tested, by column and reason (missing, wrong_dimension, "
                   "not_numeric); they never reject their event. wrong_dimension: the "
                   "producer sends another length than the configured dim.", "cps",
                   [target(f"sum by (column, reason) (rate(streamdrift_vector_malformed_total"
                           f"{{{m}}}[$__rate_interval]))", "{{column}} {{reason}}")],
                   w=12),
        state_timeline("Embedding drift state per column",
                       "1 (DRIFT) while the vector column's test has a drift episode open; "
                       "the alert StreamdriftEmbeddingDrift fires after 30 s.",
                       [target(f"max by (column) (streamdrift_vector_drift_active{{{m}}})",
                               "{{column}}")], mappings=ALARM_MAPPING, w=12),
        timeseries("Variance the watched directions explain",
                   "Share of the reference's variance that the test's principal directions "
                   "explain, per vector column; when low, the reconstruction residual carries "
                   "most of the test's signal.", "percentunit",
                   [target(f"max by (column) "
                           f"(streamdrift_vector_explained_variance_ratio{{{m}}})",
                           "{{column}}")], w=12),
        row("Column $feature", "Detectors, distances and data quality of one column."),
        timeseries("Statistic vs threshold",
                   "Drift statistic of each detector of the column (solid) and its calibrated "
                   "alarm threshold (dashed); the detector alarms while the statistic is above "
                   "its threshold.", "none",
                   [target(f"max by (detector) (streamdrift_drift_statistic{{{f}}})",
                           "{{detector}} statistic"),
                    target(f"max by (detector) (streamdrift_drift_threshold{{{f}}})",
                           "{{detector}} threshold")],
                   overrides=[{
                       "matcher": {"id": "byRegexp", "options": ".*threshold$"},
                       "properties": [{"id": "custom.lineStyle",
                                       "value": {"fill": "dash", "dash": [10, 10]}}],
                   }]),
        timeseries("Drift score", "Statistic / threshold of each detector of the column; "
                   "alarming above the red line at 1.", "none",
                   [target(f"max by (detector) (streamdrift_drift_score{{{f}}})",
                           "{{detector}}")], threshold_line=1),
        state_timeline("Detector alarm state",
                       "1 (DRIFT) while the detector is in the alarm state.",
                       [target(f"max by (detector) ({active(f)})",
                               "{{detector}}")], mappings=ALARM_MAPPING, w=12),
        timeseries("p-values", "Nominal p-value of the current window test (ks, chi2, missing, "
                   "out_of_range, unseen), log scale.", "none",
                   [target(f"min by (detector) (streamdrift_drift_p_value{{{f}}})",
                           "{{detector}}")], log=True),
        timeseries("Distances to the baseline",
                   "Distance of the recent window to the baseline (PSI, Jensen-Shannon, "
                   "Wasserstein); informative, they do not alarm.", "none",
                   [target(f"max by (distance) (streamdrift_distance{{{f}}})",
                           "{{distance}}")]),
        timeseries("Data-quality ratios",
                   "Missing, invalid, out-of-range and unseen-category shares of the recent "
                   "window of the column.", "percentunit",
                   [target(f"max({metric}{{{f}}})", name) for metric, name in quality_ratios]),
        timeseries("Values per second", "Valid, missing and invalid values seen for the column.",
                   "cps",
                   [target(f"sum(rate(streamdrift_values_total{{{f}}}[$__rate_interval]))",
                           "valid"),
                    target(f"sum(rate(streamdrift_missing_values_total{{{f}}}"
                           f"[$__rate_interval]))", "missing"),
                    target(f"sum(rate(streamdrift_invalid_values_total{{{f}}}"
                           f"[$__rate_interval]))", "invalid")], stack=True),
        timeseries("Detector window size",
                   "Values in each detector's current window (ADWIN: its adaptive width; it "
                   "shrinks when a change is detected).", "short",
                   [target(f"max by (detector) (streamdrift_drift_window_values{{{f}}})",
                           "{{detector}}")]),
        timeseries("Alarms raised", "Alarms raised by each detector of the column per interval.",
                   "short",
                   [target(f"sum by (detector) (increase(streamdrift_drift_alarms_total{{{f}}}"
                           f"[$__rate_interval])) > 0", "{{detector}}")], bars=True, w=24),
        row("Segments of $model", "Drift within each monitored value of the model's segment "
            "fields (models[].segments); empty for a model without segments."),
        timeseries("Highest drift score per segment",
                   "Highest detector score of any column within each segment value "
                   "(name=value); alarming above the red line at 1.", "none",
                   [target(f"max by (segment) (streamdrift_segment_drift_score{{{sg}}})",
                           "{{segment}}")], threshold_line=1, w=12),
        timeseries("Events per segment", "Events of each segment value fed to its monitors, "
                   "per second; compare with the traffic mix of the reference.", "eps",
                   [target(f"sum by (segment) (rate(streamdrift_segment_events_total{{{sg}}}"
                           f"[$__rate_interval]))", "{{segment}}")], w=12),
        state_timeline("Drift state per segment and column",
                       "1 (DRIFT) while the column has a drift episode open within the "
                       "segment value.",
                       [target(f"max by (segment, feature) "
                               f"(streamdrift_segment_drift_active{{{sg}}})",
                               "{{segment}} {{feature}}")], mappings=ALARM_MAPPING, w=24),
        # -- bias drift (#16.2) ---------------------------------------------------------
        row("Bias of $model", "Bias drift across the facets (sensitive attributes) of the "
            "model (models[].bias, docs/bias.md); empty for a model without facets."),
        timeseries("Bias drift score per facet value",
                   "Change of each facet value's DPPL (rest - value, in positive prediction "
                   "rates) from its reference value, over its calibrated threshold; "
                   "alarming above the red line at 1.", "none",
                   [target(f"max by (facet, value) (streamdrift_bias_drift_score{{{m}}})",
                           "{{facet}}={{value}}")], threshold_line=1, w=12),
        timeseries("DPPL per facet value, live and reference",
                   "Difference in positive prediction rates between the rest of the traffic "
                   "and each facet value (Clarify's DPPL): the live window (solid) and the "
                   "reference (ref).", "percentunit",
                   [target(f"max by (facet, value) (streamdrift_bias_dppl{{{m}}})",
                           "{{facet}}={{value}}"),
                    target(f"max by (facet, value) (streamdrift_bias_baseline_dppl{{{m}}})",
                           "{{facet}}={{value}} ref")], w=12),
        timeseries("Label bias drift score per facet value",
                   "With labels: change of each facet value's recall and accuracy "
                   "differences (rest - value, on the joined pairs) from their labelled "
                   "reference values, over the calibrated threshold; alarming above the red "
                   "line at 1.", "none",
                   [target(f"max by (facet, value, measure) "
                           f"(streamdrift_bias_label_drift_score{{{m}}})",
                           "{{facet}}={{value}} {{measure}}")], threshold_line=1, w=12),
        timeseries("Recall and accuracy differences, live and reference",
                   "With labels: recall and accuracy of the rest of the traffic minus the "
                   "facet value's (Clarify's RD and AD) on the joined pairs: the live window "
                   "(solid) and the labelled reference (ref).", "percentunit",
                   [target(f"max by (facet, value, measure) "
                           f"(streamdrift_bias_label_difference{{{m}}})",
                           "{{facet}}={{value}} {{measure}}"),
                    target(f"max by (facet, value, measure) "
                           f"(streamdrift_bias_baseline_label_difference{{{m}}})",
                           "{{facet}}={{value}} {{measure}} ref")], w=12),
    ]
    annotations = [{
        "name": "Drift alarms",
        "datasource": DS,
        "enable": True,
        "hide": False,
        "iconColor": "red",
        "expr": f"sum by (feature, detector) (increase(streamdrift_drift_alarms_total{{{m}}}"
                f"[$__rate_interval])) > 0",
        "step": "1m",
        "titleFormat": "Drift alarm",
        "textFormat": "{{feature}}: {{detector}}",
        "tagKeys": "feature,detector",
        "useValueForTime": False,
    }]
    return dashboard(
        "streamdrift-model", "Streamdrift model",
        "Drill-down into one model and one of its columns: statistics vs thresholds per "
        "detector, scores, distances, data quality and prediction drift.",
        panels,
        [JOB_VARIABLE,
         query_variable("model", "Model",
                        'label_values(streamdrift_model_info{job="$job"}, model)'),
         query_variable("feature", "Column",
                        'label_values(streamdrift_values_total{job="$job", model="$model"}, '
                        'feature)'),
         query_variable("segment", "Segment",
                        'label_values(streamdrift_segment_events_total{job="$job", '
                        'model="$model"}, segment)', multi=True, include_all=True)],
        annotations,
    )


def pipeline() -> dict:
    j = 'job="$job"'
    i = f'{j}, instance=~"$instance"'
    bucket = f"streamdrift_batch_processing_seconds_bucket{{{i}}}"
    panels = [
        row("Now", "Current health of the consumer pipeline."),
        stat("Messages consumed", "Messages read from the source per second, valid or not.",
             "eps", f"sum(rate(streamdrift_events_consumed_total{{{i}}}[$__rate_interval]))"),
        stat("Rejected messages", "Share of the messages read that were rejected.",
             "percentunit",
             f"sum(rate(streamdrift_events_invalid_total{{{i}}}[$__rate_interval]))"
             f" / sum(rate(streamdrift_events_consumed_total{{{i}}}[$__rate_interval]))",
             thresholds=_thresholds((None, "green"), (0.05, "orange"), (0.5, "red"))),
        stat("Consumer lag", "Total messages behind the end of the assigned partitions.",
             "short", f"sum(streamdrift_consumer_lag_messages{{{i}}})",
             thresholds=_thresholds((None, "green"), (10000, "orange"))),
        stat("Batch time p99", "99th percentile of the time to decode and process one batch.",
             "s", f"histogram_quantile(0.99, sum by (le) (rate({bucket}[$__rate_interval])))"),
        stat("Since last batch", "Time since the slowest poll loop last finished a batch "
             "(advances on empty polls too).", "s",
             f"max(time() - streamdrift_last_batch_timestamp_seconds{{{i}}})",
             thresholds=_thresholds((None, "green"), (120, "red"))),
        stat("Source", "Whether every process reaches its source (Kafka).", "none",
             f"min(streamdrift_source_up{{{i}}})", mappings=UP_MAPPING,
             thresholds=_thresholds((None, "red"), (1, "green"))),
        row("Events", "Event rates and rejects."),
        timeseries("Messages consumed and events processed",
                   "Messages read per process, and valid events routed to each model, per "
                   "second.", "eps",
                   [target(f"sum by (instance) (rate(streamdrift_events_consumed_total{{{i}}}"
                           f"[$__rate_interval]))", "consumed {{instance}}"),
                    target(f"sum by (model) (rate(streamdrift_events_processed_total{{{i}}}"
                           f"[$__rate_interval]))", "processed {{model}}")]),
        timeseries("Rejected messages by reason",
                   "Messages rejected per second: invalid_json, not_an_object, oversized, "
                   "unknown_model, wrong_structure.", "eps",
                   [target(f"sum by (reason) (rate(streamdrift_events_invalid_total{{{i}}}"
                           f"[$__rate_interval]))", "{{reason}}")], stack=True),
        timeseries("Rejected share", "Share of the messages read that were rejected.",
                   "percentunit",
                   [target(f"sum(rate(streamdrift_events_invalid_total{{{i}}}"
                           f"[$__rate_interval])) / sum(rate(streamdrift_events_consumed_total"
                           f"{{{i}}}[$__rate_interval]))", "rejected")]),
        timeseries("Dead-letter writes", "Writes of rejected messages to the dead-letter output "
                   "per second, by result (ok, failed).", "wps",
                   [target(f"sum by (result) (rate(streamdrift_dead_letter_total{{{i}}}"
                           f"[$__rate_interval]))", "{{result}}")]),
        row("Lag", "How far behind the source and the events streamdrift is."),
        timeseries("Consumer lag per partition",
                   "End offset minus committed position of each assigned partition.", "short",
                   [target(f"sum by (topic, partition) (streamdrift_consumer_lag_messages"
                           f"{{{i}}})", "{{topic}}/{{partition}}")]),
        timeseries("Consumer lag growth",
                   "Change of the lag per topic, in messages per second: above 0, messages "
                   "arrive faster than they are consumed.", "short",
                   [target(f"sum by (topic) (deriv(streamdrift_consumer_lag_messages{{{i}}}"
                           f"[$__rate_interval]))", "{{topic}}")]),
        timeseries("Event-time lag per model",
                   "Processing time minus event time of the newest processed event of each "
                   "model.", "s",
                   [target(f"max by (model) (streamdrift_event_lag_seconds{{{i}}})",
                           "{{model}}")]),
        timeseries("Age of the newest event per model",
                   "Time since the event time of the newest processed event of each model "
                   "(grows while a model receives nothing).", "s",
                   [target(f"time() - max by (model) (streamdrift_last_event_timestamp_seconds"
                           f"{{{i}}})", "{{model}}")]),
        row("Processing", "Batch processing time and saturation."),
        timeseries("Batch processing time quantiles",
                   "Median, 90th and 99th percentile of the time to decode and process one "
                   "poll batch, from the histogram.", "s",
                   [target(f"histogram_quantile({q}, sum by (le) (rate({bucket}"
                           f"[$__rate_interval])))", f"p{round(q * 100)}")
                    for q in (0.5, 0.9, 0.99)]),
        timeseries("Busy ratio", "Share of wall-clock time each process spends processing "
                   "batches; near 100% it cannot absorb more traffic.", "percentunit",
                   [target(f"sum by (instance) (rate(streamdrift_batch_processing_seconds_sum"
                           f"{{{i}}}[$__rate_interval]))", "{{instance}}")]),
        timeseries("Batches per second", "Poll batches processed per second by each process.",
                   "ops",
                   [target(f"sum by (instance) (rate(streamdrift_batch_processing_seconds_count"
                           f"{{{i}}}[$__rate_interval]))", "{{instance}}")]),
        timeseries("Time since last batch",
                   "Wall-clock time since each poll loop last finished a batch; a steady climb "
                   "means the loop is stuck.", "s",
                   [target(f"time() - streamdrift_last_batch_timestamp_seconds{{{i}}}",
                           "{{instance}}")]),
        row("Health", "Source connectivity, scrape targets and versions."),
        state_timeline("Source up", "1 (UP) while the process reaches its source (Kafka).",
                       [target(f"min by (instance) (streamdrift_source_up{{{i}}})",
                               "{{instance}}")], mappings=UP_MAPPING, w=12),
        state_timeline("Scrape target up", "Whether Prometheus can scrape each process.",
                       [target(f"min by (instance) (up{{{i}}})", "{{instance}}")],
                       mappings=UP_MAPPING, w=12),
        table("Running versions", "streamdrift version of each process.", "none",
              [target(f"max by (instance, version) (streamdrift_build_info{{{i}}})",
                      instant=True, table=True)], hide=("Time", "Value"), w=24, h=6),
    ]
    return dashboard(
        "streamdrift-pipeline", "Streamdrift pipeline",
        "Health of the consumer pipeline: event rates, rejects, consumer and event-time lag, "
        "batch processing time, source connectivity.",
        panels,
        [JOB_VARIABLE,
         query_variable("instance", "Instance",
                        'label_values(streamdrift_build_info{job="$job"}, instance)',
                        multi=True, include_all=True)],
    )


# ---- model quality (labels joined to predictions, docs/labels.md) -----------------------
QUALITY_MAPPING = [
    {
        "type": "value",
        "options": {
            "0": {"text": "OK", "color": "green", "index": 0},
            "1": {"text": "DEGRADED", "color": "red", "index": 1},
        },
    }
]


def model_quality() -> dict:
    """Realised quality (labels joined), concept drift, estimated quality (CBPE) and the
    label feed of one labelled model."""
    j = 'job="$job"'
    m = f'{j}, model="$model"'
    q = f'{m}, metric=~"$metric"'
    joined = f'streamdrift_labels_total{{{m}, outcome="joined"}}'
    leaving = f'streamdrift_labels_total{{{m}, outcome=~"joined|expired|evicted"}}'
    panels = [
        row("Model $model", "Is the model still right? Quality on the labels joined so far."),
        stat("Model-quality episode",
             "DEGRADED while a model-quality episode is open: the concept-drift detector of "
             "the joined errors alarmed (the error rate left the labelled reference's).",
             "none", f"max(streamdrift_concept_drift_active{{{m}}})",
             mappings=QUALITY_MAPPING, thresholds=_thresholds((None, "green"), (1, "red"))),
        stat("Concept-drift score now",
             "Concept-drift statistic / threshold (the Shiryaev-Roberts mixture's log "
             "statistic / log A), highest over the processes; "
             ">= 1 alarms.", "none", f"max(streamdrift_concept_drift_score{{{m}}})",
             thresholds=SCORE_THRESHOLDS, decimals=2),
        stat("Accuracy, recent",
             "Accuracy of the last labels.window joined pairs of each partition held.",
             "percentunit",
             f'max(streamdrift_model_quality{{{m}, metric="accuracy", scope="recent"}})',
             decimals=1),
        stat("Accuracy, reference", "Accuracy of the model on its labelled reference.",
             "percentunit",
             f'max(streamdrift_model_quality{{{m}, metric="accuracy", scope="baseline"}})',
             decimals=1),
        stat("Labels joined", "Labels joined with their prediction, per second.", "eps",
             f"sum(rate({joined}[$__rate_interval]))"),
        stat("Label coverage",
             "Share of the predictions leaving the join that got their label (the others "
             "expired or were evicted).", "percentunit",
             f"sum(increase({joined}[$__rate_interval])) / "
             f"sum(increase({leaving}[$__rate_interval]))",
             thresholds=_thresholds((None, "red"), (0.5, "green"))),
        row("Realised quality", "Quality metrics of the joined pairs against the reference's."),
        timeseries("Quality, recent vs reference",
                   "Each selected metric over the recent window of joined pairs (solid) and "
                   "on the labelled reference (the level to compare with).", "none",
                   [target(f'max by (metric) (streamdrift_model_quality{{{q}, '
                           f'scope="recent"}})', "{{metric}} recent"),
                    target(f'max by (metric) (streamdrift_model_quality{{{q}, '
                           f'scope="baseline"}})', "{{metric}} reference")]),
        timeseries("Quality, since start",
                   "Each selected metric over every pair joined since the state began.",
                   "none",
                   [target(f'max by (metric) (streamdrift_model_quality{{{q}, '
                           f'scope="since_start"}})', "{{metric}}")]),
        timeseries("Concept-drift score",
                   "The concept-drift detector (a Shiryaev-Roberts mixture over error-rate "
                   "changes) of the joined errors against the reference's "
                   "error rate, divided by its threshold; the line at 1 is the alarm.",
                   "none",
                   [target(f"max(streamdrift_concept_drift_score{{{m}}})", "score")],
                   threshold_line=1),
        state_timeline("Model-quality episodes",
                       "DEGRADED while a model-quality episode of the model is open.",
                       [target(f"max(streamdrift_concept_drift_active{{{m}}})", "$model")],
                       mappings=QUALITY_MAPPING),
        row("Estimated quality", "Before labels arrive: the quality estimated from the scores "
            "(CBPE; binary models with labels.estimate)."),
        timeseries("Estimated vs realised",
                   "Estimate from the scores over the recent window, its 95 % band for the "
                   "realised value, and the realised value as labels arrive.", "none",
                   [target(f'max by (metric) (streamdrift_estimated_quality{{{q}, '
                           f'scope="recent"}})', "{{metric}} estimated"),
                    target(f"min by (metric) (streamdrift_estimated_quality_lower{{{q}}})",
                           "{{metric}} band low"),
                    target(f"max by (metric) (streamdrift_estimated_quality_upper{{{q}}})",
                           "{{metric}} band high"),
                    target(f'max by (metric) (streamdrift_model_quality{{{q}, '
                           f'scope="recent"}})', "{{metric}} realised")]),
        state_timeline("Estimated drop",
                       "DEGRADED while the recent estimate is below the reference's estimate "
                       "by more than its drop band.",
                       [target(f"max by (metric) (streamdrift_estimated_quality_drop_active"
                               f"{{{q}}})", "{{metric}}")], mappings=QUALITY_MAPPING),
        row("Label feed", "Whether labels arrive and join."),
        timeseries("Join outcomes",
                   "Predictions and labels per second by outcome: joined, expired, evicted, "
                   "no_prediction, duplicate, late, unjoinable_prediction.", "eps",
                   [target(f"sum by (outcome) (rate(streamdrift_labels_total{{{m}}}"
                           f"[$__rate_interval]))", "{{outcome}}")], stack=True),
        timeseries("Waiting in the join",
                   "Predictions waiting for their label and labels waiting for their "
                   "prediction.", "short",
                   [target(f"sum(streamdrift_labels_pending{{{m}}})", "predictions waiting"),
                    target(f"sum(streamdrift_labels_early{{{m}}})", "labels waiting")]),
        timeseries("Age of the newest label",
                   "Time since the event time of the newest label seen (grows while no "
                   "label comes).", "s",
                   [target(f"time() - max(streamdrift_last_label_timestamp_seconds{{{m}}})",
                           "$model")]),
        timeseries("Rejected label messages",
                   "Label messages rejected per second, by reason (all models).", "eps",
                   [target(f"sum by (reason) (rate(streamdrift_labels_invalid_total{{{j}}}"
                           f"[$__rate_interval]))", "{{reason}}")], stack=True),
    ]
    annotations = [{
        "name": "Model-quality episodes",
        "datasource": DS,
        "enable": True,
        "hide": False,
        "iconColor": "red",
        "expr": f"sum(increase(streamdrift_concept_drift_alarms_total{{{m}}}"
                f"[$__rate_interval])) > 0",
        "step": "1m",
        "titleFormat": "Model-quality episode",
        "textFormat": "concept drift of $model",
        "tagKeys": "model",
        "useValueForTime": False,
    }]
    return dashboard(
        "streamdrift-model-quality", "Streamdrift model quality",
        "Ground truth for one labelled model: realised quality against the labelled reference, "
        "concept-drift episodes, quality estimated before labels arrive, and the label feed.",
        panels,
        [JOB_VARIABLE,
         query_variable("model", "Model",
                        'label_values(streamdrift_labels_total{job="$job"}, model)'),
         query_variable("metric", "Metric",
                        'label_values(streamdrift_model_quality{job="$job", model="$model"}, '
                        'metric)', multi=True, include_all=True)],
        annotations,
    )
# ---- end of model quality ----------------------------------------------------------------


DASHBOARDS: dict[str, Callable[[], dict]] = {
    "streamdrift-overview.json": overview,
    "streamdrift-model.json": model,
    "streamdrift-pipeline.json": pipeline,
    "streamdrift-model-quality.json": model_quality,
}


def render(d: dict) -> str:
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def build() -> dict[str, dict]:
    """File name -> dashboard model, freshly generated."""
    return {name: fn() for name, fn in DASHBOARDS.items()}


# --------------------------------------------------------------------------- queries


class Query(NamedTuple):
    dashboard: str  # dashboard uid
    panel: str      # panel title, "variable <name>" or "annotation <name>"
    expr: str       # PromQL, with Grafana macros and template variables


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*(?P<label>\w+)\s*\)\s*$")


def iter_queries(dashboards: Iterable[dict] | None = None) -> Iterator[Query]:
    """Every PromQL query of the dashboards: panel targets, the series selectors of the
    `label_values(...)` template variables, and annotation queries."""
    for d in dashboards if dashboards is not None else build().values():
        uid = d["uid"]
        for var in d.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = _LABEL_VALUES.match(q)
            yield Query(uid, f"variable {var['name']}", match["selector"] if match else q)
        for ann in d.get("annotations", {}).get("list", []):
            if ann.get("expr"):
                yield Query(uid, f"annotation {ann['name']}", ann["expr"])
        for p in d.get("panels", []):
            for t in p.get("targets", []):
                yield Query(uid, p["title"], t["expr"])


def expand_macros(expr: str, variables: Mapping[str, str] | None = None, *,
                  rate_interval: str = "1m", interval: str = "1m", range_: str = "1h") -> str:
    """Turn a dashboard query into plain PromQL.

    `variables` maps template variable names to values (defaults: job=streamdrift,
    model/feature/instance/segment/metric=".*"; use a real model and feature name for the model
    dashboard, whose selectors use `=`).
    """
    values = {"job": "streamdrift", "model": ".*", "feature": ".*", "instance": ".*",
              "segment": ".*", "metric": ".*"}
    values.update(variables or {})
    builtins = {"__rate_interval": rate_interval, "__interval": interval, "__range": range_}

    def sub(match: re.Match) -> str:
        name = match["braced"] or match["bare"]
        if name in builtins:
            return builtins[name]
        if name in values:
            return values[name]
        raise KeyError(f"no value for template variable ${name} in {expr!r}")

    return re.sub(r"\$\{(?P<braced>\w+)(?::\w+)?\}|\$(?P<bare>\w+)", sub, expr)


# --------------------------------------------------------------------------- command line


def check(out_dir: Path) -> list[str]:
    """Differences between the committed dashboards and freshly generated ones."""
    problems: list[str] = []
    expected = {name: render(d) for name, d in build().items()}
    for name, text in expected.items():
        path = out_dir / name
        if not path.exists():
            problems.append(f"{path}: missing")
            continue
        actual = path.read_text(encoding="utf-8")
        if actual != text:
            diff = difflib.unified_diff(actual.splitlines(), text.splitlines(),
                                        f"{path} (committed)", f"{path} (generated)",
                                        lineterm="", n=2)
            problems.append("\n".join(list(diff)[:60]))
    for path in sorted(out_dir.glob("*.json")):
        if path.name not in expected:
            problems.append(f"{path}: not generated by {Path(__file__).name} (stale?)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the JSON files differ from what would be generated")
    parser.add_argument("--queries", action="store_true",
                        help="print every query as dashboard<TAB>panel<TAB>expr")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR,
                        help=f"output directory (default: {DASHBOARD_DIR})")
    args = parser.parse_args(argv)

    if args.queries:
        for q in iter_queries():
            print(f"{q.dashboard}\t{q.panel}\t{q.expr}")
        return 0
    if args.check:
        problems = check(args.out)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            print(f"dashboards are out of date: run python {Path(__file__).name}",
                  file=sys.stderr)
            return 1
        print(f"{len(DASHBOARDS)} dashboards up to date")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, d in build().items():
        (args.out / name).write_text(render(d), encoding="utf-8")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
