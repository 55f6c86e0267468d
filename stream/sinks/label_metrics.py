"""Prometheus families of the label joins (models with ``labels:``; see docs/labels.md).

Registered beside :class:`~stream.sinks.metrics.StreamdriftCollector` when a model has
labels, reading the same pipeline snapshot (no metric calls on the hot path).  Series: one
per model and outcome, per rejection reason, per model and quality metric and scope.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from detectors.quality_metrics import METRICS
from stream.engine.labels import INVALID_LABEL_REASONS, OUTCOMES
from stream.engine.pipeline import Pipeline
from stream.sinks.bias_metrics import label_bias_families
from stream.sinks.estimate_metrics import estimate_families

#: the ``scope`` label of streamdrift_model_quality
SCOPES = ("recent", "since_start", "baseline")


class LabelCollector(Collector):
    """``streamdrift_labels_*`` and ``streamdrift_model_quality`` from the pipeline's joins."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self.pipeline.label_snapshot()
        if snap is None:
            return
        outcomes = CounterMetricFamily(
            "streamdrift_labels", "Predictions and labels of the label join, by outcome.",
            labels=["model", "outcome"])
        invalid = CounterMetricFamily(
            "streamdrift_labels_invalid", "Label messages rejected, by reason.",
            labels=["reason"])
        pending = GaugeMetricFamily(
            "streamdrift_labels_pending", "Predictions waiting for their label.",
            labels=["model"])
        early = GaugeMetricFamily(
            "streamdrift_labels_early", "Labels waiting for their prediction.", labels=["model"])
        last = GaugeMetricFamily(
            "streamdrift_last_label_timestamp_seconds",
            "Event time of the newest label seen (Unix seconds).", labels=["model"])
        quality = GaugeMetricFamily(
            "streamdrift_model_quality",
            "Model-quality metric of the joined pairs: over the recent window, since start, "
            "or of the labelled reference (absent while undefined).",
            labels=["model", "metric", "scope"])
        c_alarms = CounterMetricFamily(
            "streamdrift_concept_drift_alarms",
            "Concept-drift episodes opened: the joined error rate left the labelled "
            "reference's.", labels=["model"])
        c_score = GaugeMetricFamily(
            "streamdrift_concept_drift_score",
            "Concept-drift detector's statistic / threshold (the Shiryaev-Roberts "
            "mixture's log statistic / log A, or the CUSUMs' highest; highest partition); "
            ">= 1 means alarming.", labels=["model"])
        c_active = GaugeMetricFamily(
            "streamdrift_concept_drift_active", "1 while the concept-drift detector alarms.",
            labels=["model"])
        for model, fig in snap.models.items():
            if fig.concept_score is not None:
                c_alarms.add_metric([model], fig.concept_alarms)
                c_score.add_metric([model], fig.concept_score)
                c_active.add_metric([model], int(fig.concept_active))
            for o in OUTCOMES:
                outcomes.add_metric([model, o], fig.outcomes.get(o, 0))
            pending.add_metric([model], fig.pending)
            early.add_metric([model], fig.early)
            if fig.last_label_ts is not None:
                last.add_metric([model], fig.last_label_ts)
            for scope, values in (("recent", fig.recent), ("since_start", fig.since_start),
                                  ("baseline", fig.baseline)):
                if values is None:
                    continue
                for metric in METRICS[fig.task]:
                    v = values.get(metric)
                    if v is not None and math.isfinite(v):
                        quality.add_metric([model, metric, scope], v)
        for reason in INVALID_LABEL_REASONS:
            invalid.add_metric([reason], snap.invalid.get(reason, 0))
        yield from (outcomes, invalid, pending, early, last, quality, c_alarms, c_score,
                    c_active)
        # estimated performance without labels (models with labels.estimate)
        yield from estimate_families(snap)
        # bias drift of the joined pairs: recall and accuracy differences (#16.2)
        yield from label_bias_families({m: f.bias for m, f in snap.models.items()})
