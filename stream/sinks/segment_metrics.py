"""The metric families of segments (stream.engine.segments): per model, monitored segment
value (``segment="name=value"``) and column.  Bounded by the configuration: at most
``top_k + 1`` values per segment field, each ``1 + 2 x columns`` series."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

SEG = ["model", "segment"]
SEG_COL = ["model", "segment", "feature", "role"]


def segment_families(segments: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    """``segments``: :attr:`PipelineSnapshot.segments` (nothing without segments)."""
    if not segments:
        return
    events = CounterMetricFamily(
        "streamdrift_segment_events", "Events fed to the monitors of a segment value.",
        labels=SEG)
    score = GaugeMetricFamily(
        "streamdrift_segment_drift_score",
        "Highest detector score (statistic / threshold) of the column within the segment "
        "value; >= 1 means a detector is alarming.", labels=SEG_COL)
    active = GaugeMetricFamily(
        "streamdrift_segment_drift_active",
        "1 while the column has a drift episode open within the segment value, else 0.",
        labels=SEG_COL)
    for model, per in segments.items():
        for key, fig in per.items():
            events.add_metric([model, key], fig["events"])
            for col, (role, s, a) in fig["columns"].items():
                score.add_metric([model, key, col, role], s if math.isfinite(s) else 0.0)
                active.add_metric([model, key, col, role], float(a))
    yield from (events, score, active)
