"""Metric families of the attribution test and of the root cause (#16 items 3-4).

``streamdrift_attribution_*`` (label ``model``; ``outcome`` for the values): 10 series
per model with
``attributions:``, none for a model without.  ``streamdrift_root_cause`` (labels
``model``, ``rank``, ``feature``): the top three features of the model's latest
prediction episode, exported only while a prediction episode of the model is open, so at
most 3 series per model at any time (a new episode replaces them).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from stream.engine.attribution import ROOT_CAUSE_SERIES, SERIES_PER_MODEL

__all__ = ["ROOT_CAUSE_SERIES", "SERIES_PER_MODEL", "attribution_families"]


def _num(x: Any) -> float:
    x = float(x or 0.0)
    return x if math.isfinite(x) else 0.0


def attribution_families(attribution: Mapping[str, Any],
                         root_causes: Mapping[str, Any]) -> Iterator[Metric]:
    """The families (``attribution``: model -> AttributionFigures; ``root_causes``:
    model -> its open root cause); nothing when neither has an entry."""
    if attribution:
        label = ["model"]
        ndcg = GaugeMetricFamily(
            "streamdrift_attribution_ndcg",
            "NDCG of the last complete window's ranking of mean |attribution| against the "
            "baseline's (lowest over partitions; 1: same ranking).", labels=label)
        level = GaugeMetricFamily(
            "streamdrift_attribution_level",
            "Calibrated NDCG level: a window below it alarms.", labels=label)
        score = GaugeMetricFamily(
            "streamdrift_attribution_score",
            "(1 - NDCG) / (1 - level); > 1 means alarming.", labels=label)
        active = GaugeMetricFamily(
            "streamdrift_attribution_active",
            "1 while the attribution test has a drift episode open.", labels=label)
        alarms = CounterMetricFamily("streamdrift_attribution_alarms",
                                     "Drift episodes opened by the attribution test.",
                                     labels=label)
        windows = CounterMetricFamily("streamdrift_attribution_windows",
                                      "Windows the attribution test has ranked.", labels=label)
        rows = CounterMetricFamily("streamdrift_attribution_events",
                                   "Events with attributions the test has seen.", labels=label)
        values = CounterMetricFamily(
            "streamdrift_attribution_values",
            "Attribution values decoded, by outcome (ok, missing, invalid: left out of the "
            "windows, never fatal).", labels=["model", "outcome"])
        for model, f in attribution.items():
            for outcome, n in sorted(f.values.items()):
                values.add_metric([model, outcome], n)
            ndcg.add_metric([model], _num(f.ndcg))
            level.add_metric([model], _num(f.level))
            score.add_metric([model], _num(f.score))
            active.add_metric([model], float(f.active))
            alarms.add_metric([model], f.alarms)
            windows.add_metric([model], f.windows)
            rows.add_metric([model], f.rows)
        yield from (ndcg, level, score, active, alarms, windows, rows, values)
    if root_causes:
        rc = GaugeMetricFamily(
            "streamdrift_root_cause",
            "Contribution (drift score x importance) of the features ranked first to third "
            "in the root cause of the model's open prediction drift.",
            labels=["model", "rank", "feature"])
        for model, causes in root_causes.items():
            for c in list(causes)[:ROOT_CAUSE_SERIES]:
                rc.add_metric([model, str(c["rank"]), str(c["feature"])],
                              _num(c["contribution"]))
        yield rc
