"""The metric families of bias drift (stream.engine.bias): per model and monitored facet
value (``facet="name"``, ``value="v"``; the pooled rest ``other``).  Bounded by the
configuration: at most ``top_k + 1`` values per facet."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

LABELS = ["model", "facet", "value"]

_GAUGES = (
    ("positive_rate", "streamdrift_bias_positive_rate",
     "Share of the facet value's events in the live window predicted positive."),
    ("dppl", "streamdrift_bias_dppl",
     "Difference in positive proportions in predicted labels (rest - value) in the live "
     "window (Clarify's DPPL); NaN until the window fills."),
    ("di", "streamdrift_bias_disparate_impact",
     "Disparate impact (value's positive rate / rest's) in the live window."),
    ("baseline_dppl", "streamdrift_bias_baseline_dppl",
     "DPPL of the facet value in the reference."),
    ("baseline_di", "streamdrift_bias_baseline_disparate_impact",
     "Disparate impact of the facet value in the reference."),
    ("score", "streamdrift_bias_drift_score",
     "Bias drift statistic / its calibrated threshold; >= 1 means the value's DPPL moved "
     "from its baseline beyond the false-alarm budget."),
    ("active", "streamdrift_bias_drift_active",
     "1 while the facet value has a bias drift episode open, else 0."),
)


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else math.nan


def bias_families(bias: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
    """``bias``: :attr:`PipelineSnapshot.bias` (nothing without facets)."""
    if not bias:
        return
    gauges = {k: GaugeMetricFamily(n, h, labels=LABELS) for k, n, h in _GAUGES}
    events = CounterMetricFamily("streamdrift_bias_events",
                                 "Scored events fed to the facet's bias monitor.",
                                 labels=["model", "facet"])
    alarms = CounterMetricFamily("streamdrift_bias_alarms",
                                 "Bias drift episodes opened for the facet value.",
                                 labels=LABELS)
    unscored = CounterMetricFamily(
        "streamdrift_bias_unscored_events",
        "Events of a model with facets whose prediction was missing or invalid (not "
        "counted in the bias figures).", labels=["model"])
    for model, per in bias.items():
        unscored.add_metric([model], per["unscored"])
        facets: dict[str, int] = {}
        for fig in per["values"].values():
            lab = [model, fig["facet"], fig["value"]]
            facets[fig["facet"]] = fig["events"]
            for k, fam in gauges.items():
                fam.add_metric(lab, float(fig[k]) if k == "active" else _num(fig[k]))
            alarms.add_metric(lab, fig["alarms"])
        for facet, n in facets.items():
            events.add_metric([model, facet], n)
    yield from gauges.values()
    yield from (events, alarms, unscored)


#: the label-based bias figures (stream.engine.biaslabels): per value and measure
LABEL_LABELS = ["model", "facet", "value", "measure"]
_LABEL_GAUGES = (
    ("rate", "streamdrift_bias_label_rate",
     "The facet value's recall (measure=recall) or accuracy (measure=accuracy) over the live "
     "window of joined pairs."),
    ("difference", "streamdrift_bias_label_difference",
     "Recall or accuracy difference, rest - value (Clarify's RD / AD), over the live window "
     "of joined pairs; NaN until the window fills."),
    ("baseline_difference", "streamdrift_bias_baseline_label_difference",
     "Recall or accuracy difference (rest - value) of the facet value in the labelled "
     "reference."),
    ("score", "streamdrift_bias_label_drift_score",
     "Label-based bias drift statistic / its calibrated threshold; >= 1 means the value's "
     "recall or accuracy difference moved from its baseline beyond the false-alarm budget."),
    ("active", "streamdrift_bias_label_drift_active",
     "1 while the facet value has a label-based bias drift episode open for the measure."),
)


def label_bias_families(figures: Mapping[str, Sequence[Mapping[str, Any]] | None],
                        ) -> Iterator[Metric]:
    """``figures``: model -> :func:`stream.engine.biaslabels.label_bias_figures` (None: not
    watched); nothing when no model has them."""
    if not any(figures.values()):
        return
    gauges = {k: GaugeMetricFamily(n, h, labels=LABEL_LABELS) for k, n, h in _LABEL_GAUGES}
    alarms = CounterMetricFamily("streamdrift_bias_label_alarms",
                                 "Label-based bias drift episodes opened for the facet value "
                                 "and measure.", labels=LABEL_LABELS)
    pairs = CounterMetricFamily("streamdrift_bias_labelled_pairs",
                                "Joined pairs fed to the facet's monitor of the measure.",
                                labels=["model", "facet", "measure"])
    for model, figs in figures.items():
        fed: dict[tuple[str, str], int] = {}
        for fig in figs or ():
            lab = [model, fig["facet"], fig["value"], fig["measure"]]
            fed[(fig["facet"], fig["measure"])] = fig["pairs"]
            for k, fam in gauges.items():
                fam.add_metric(lab, float(fig[k]) if k == "active" else _num(fig[k]))
            alarms.add_metric(lab, fig["alarms"])
        for (facet, measure), n in fed.items():
            pairs.add_metric([model, facet, measure], n)
    yield from gauges.values()
    yield from (alarms, pairs)
