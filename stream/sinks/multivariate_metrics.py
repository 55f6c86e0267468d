"""Metric families of the models' multivariate groups (``models[].multivariate``).

Labels ``model`` and ``group``: a model with ``g`` groups exports ``9 g`` series; a
model without groups exports none of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

GROUP = ["model", "group"]
#: the series each group exports
SERIES_PER_GROUP = 9


def _num(x: Any) -> float:
    x = float(x or 0.0)
    return x if math.isfinite(x) else 0.0


def group_families(models: Mapping[str, Any]) -> Iterator[Metric]:
    """The families of every model's groups (``models``: model -> ModelFigures); none at
    all without a group, so a configuration without groups exports what it did before."""
    if not any(getattr(m, "groups", None) for m in models.values()):
        return
    gauges = {
        "statistic": GaugeMetricFamily(
            "streamdrift_multivariate_statistic",
            "Hotelling statistic of the group's joint test (largest over its window scales).",
            labels=GROUP),
        "threshold": GaugeMetricFamily(
            "streamdrift_multivariate_threshold",
            "Calibrated alarm threshold of the group's statistic.", labels=GROUP),
        "p_value": GaugeMetricFamily(
            "streamdrift_multivariate_p_value",
            "Nominal chi-square p-value of the group's statistic.", labels=GROUP),
        "score": GaugeMetricFamily(
            "streamdrift_multivariate_score",
            "Statistic divided by threshold; >= 1 means alarming.", labels=GROUP),
        "active": GaugeMetricFamily(
            "streamdrift_multivariate_active",
            "1 while the group's joint test has a drift episode open.", labels=GROUP),
        "window_rows": GaugeMetricFamily(
            "streamdrift_multivariate_window_rows",
            "Complete rows (events with every column of the group) in the current window.",
            labels=GROUP),
        "dim": GaugeMetricFamily(
            "streamdrift_multivariate_dimensions",
            "Degrees of freedom of the group's test (whitened features).", labels=GROUP),
    }
    alarms = CounterMetricFamily("streamdrift_multivariate_alarms",
                                 "Drift episodes opened by the group's joint test.",
                                 labels=GROUP)
    rows = CounterMetricFamily("streamdrift_multivariate_rows",
                               "Complete rows the group's joint test has seen.", labels=GROUP)
    for model, m in models.items():
        for group, g in getattr(m, "groups", {}).items():
            labels = [model, group]
            gauges["statistic"].add_metric(labels, _num(g.statistic))
            gauges["threshold"].add_metric(labels, _num(g.threshold))
            gauges["p_value"].add_metric(labels, _num(g.p_value))
            gauges["score"].add_metric(labels, _num(g.score))
            gauges["active"].add_metric(labels, float(g.active))
            gauges["window_rows"].add_metric(labels, float(g.window_rows))
            gauges["dim"].add_metric(labels, float(g.dim))
            alarms.add_metric(labels, g.alarms)
            rows.add_metric(labels, g.rows)
    yield from gauges.values()
    yield alarms
    yield rows
