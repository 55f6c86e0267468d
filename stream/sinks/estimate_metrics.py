"""Prometheus families of the estimated performance without labels (``labels.estimate``).

Collected by :class:`~stream.sinks.label_metrics.LabelCollector` from the snapshot it
takes anyway, when a model has ``labels.estimate`` (no metric calls on the hot path).
Series per model: 5 metrics x (recent and baseline estimate, band lower and upper, drop
band, drop active) + window size + calibrated = 32 (docs/metrics.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from detectors.cbpe import ESTIMATED
from stream.engine.labelbook import LabelSnapshot


def estimate_families(snap: LabelSnapshot) -> Iterator[Metric]:
    """``streamdrift_estimated_quality*`` from a label snapshot (the models with an
    estimate; nothing when none has one)."""
    if not any(lf.estimated is not None for lf in snap.models.values()):
        return
    est = GaugeMetricFamily(
        "streamdrift_estimated_quality",
        "Estimated model quality from the (calibrated) scores, without labels (CBPE): over "
        "the recent predictions, or on the reference's scores (absent while undefined).",
        labels=["model", "metric", "scope"])
    lower = GaugeMetricFamily(
        "streamdrift_estimated_quality_lower",
        "Lower end of the 95 % band of the realised value of the recent window.",
        labels=["model", "metric"])
    upper = GaugeMetricFamily(
        "streamdrift_estimated_quality_upper",
        "Upper end of the 95 % band of the realised value of the recent window.",
        labels=["model", "metric"])
    band = GaugeMetricFamily(
        "streamdrift_estimated_quality_band",
        "Drop band: k standard deviations of the recent estimate under the reference, k "
        "calibrated to the drop alarm's share of the false-alarm knob.",
        labels=["model", "metric"])
    drop = GaugeMetricFamily(
        "streamdrift_estimated_quality_drop_active",
        "1 while the recent estimate is below the baseline estimate minus the band.",
        labels=["model", "metric"])
    size = GaugeMetricFamily(
        "streamdrift_estimated_quality_window_predictions",
        "Predictions in the recent windows of the estimate.", labels=["model"])
    cal = GaugeMetricFamily(
        "streamdrift_estimated_quality_calibrated",
        "1 when the scores are recalibrated on the labelled reference before estimating.",
        labels=["model"])
    for model, lf in snap.models.items():
        fig = lf.estimated
        if fig is None:
            continue
        size.add_metric([model], fig.predictions)
        cal.add_metric([model], int(fig.recalibrated))
        for m in ESTIMATED:
            for fam, values, extra in ((est, fig.recent, ["recent"]),
                                       (est, fig.baseline, ["baseline"]),
                                       (lower, fig.lower, []), (upper, fig.upper, []),
                                       (band, fig.band, [])):
                v = values.get(m) if values is not None else None
                if v is not None and math.isfinite(v):
                    fam.add_metric([model, m, *extra], v)
            if m in fig.drop:
                drop.add_metric([model, m], int(fig.drop[m]))
    yield from (est, lower, upper, band, drop, size, cal)
