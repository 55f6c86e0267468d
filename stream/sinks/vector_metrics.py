"""Metric families of the models' embedding columns (``type: vector`` features).

Labels ``model`` and ``column`` (and ``reason`` for malformed vectors): a model with
``v`` vector columns exports ``v x SERIES_PER_VECTOR`` series; a configuration without
vector columns exports none of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from stream.formats.vectors import VECTOR_REASONS

LABELS = ["model", "column"]
#: the series each vector column exports (7 gauges, 2 counters, one per malformed reason)
SERIES_PER_VECTOR = 9 + len(VECTOR_REASONS)


def _num(x: Any) -> float:
    x = float(x or 0.0)
    return x if math.isfinite(x) else 0.0


def vector_families(vectors: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    """``vectors``: model -> vector column -> VectorFigures."""
    if not any(vectors.values()):
        return
    g = {
        "score": GaugeMetricFamily(
            "streamdrift_vector_score",
            "Statistic of the vector column's test divided by its threshold; >= 1 alarms.",
            labels=LABELS),
        "statistic": GaugeMetricFamily(
            "streamdrift_vector_statistic",
            "Hotelling statistic of the joint test of the column's projection.",
            labels=LABELS),
        "threshold": GaugeMetricFamily(
            "streamdrift_vector_threshold",
            "Calibrated alarm threshold of the vector column's statistic.", labels=LABELS),
        "active": GaugeMetricFamily(
            "streamdrift_vector_drift_active",
            "1 while the vector column's test has a drift episode open.", labels=LABELS),
        "dim": GaugeMetricFamily(
            "streamdrift_vector_dimension", "Configured dimension of the vector column.",
            labels=LABELS),
        "components": GaugeMetricFamily(
            "streamdrift_vector_components",
            "Principal directions of the reference the test watches.", labels=LABELS),
        "explained": GaugeMetricFamily(
            "streamdrift_vector_explained_variance_ratio",
            "Share of the reference's variance the watched directions explain.",
            labels=LABELS),
    }
    episodes = CounterMetricFamily("streamdrift_vector_episodes",
                                   "Drift episodes opened by the vector column's test.",
                                   labels=LABELS)
    rows = CounterMetricFamily("streamdrift_vector_rows",
                               "Valid vectors the column's test has seen.", labels=LABELS)
    malformed = CounterMetricFamily(
        "streamdrift_vector_malformed",
        "Vectors not tested, by reason (missing, wrong_dimension, not_numeric).",
        labels=[*LABELS, "reason"])
    for model, cols in vectors.items():
        for col, f in cols.items():
            labels = [model, col]
            g["score"].add_metric(labels, _num(f.score))
            g["statistic"].add_metric(labels, _num(f.statistic))
            g["threshold"].add_metric(labels, _num(f.threshold))
            g["active"].add_metric(labels, float(f.active))
            g["dim"].add_metric(labels, float(f.dim))
            g["components"].add_metric(labels, float(f.components))
            g["explained"].add_metric(labels, _num(f.explained))
            episodes.add_metric(labels, f.alarms)
            rows.add_metric(labels, f.rows)
            for r in VECTOR_REASONS:
                malformed.add_metric([*labels, r], (f.malformed or {}).get(r, 0))
    yield from g.values()
    yield episodes
    yield rows
    yield malformed
