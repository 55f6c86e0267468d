"""The label joins of a pipeline: one :class:`~stream.engine.labels.LabelJoin` per model
with ``labels:`` and inference partition, with the counters the metrics export.

The :class:`~stream.engine.pipeline.Pipeline` calls :meth:`LabelBook.add_predictions` for
each batch of a labelled model, and the runner (or ``replay --labels``)
:meth:`LabelBook.add_labels` with label messages and the inference partition they pair
with.  The joins follow their partition: exported with its checkpoint, restored with it,
dropped with it (their counts stay in the counters).  A lookup falls back to the model's
other partitions held by this process, so a single consumer joins labels whatever the
partitioning; scaled out, labels must be co-partitioned with their predictions.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.concept import error_cusum
from detectors.cusum import CUSUM
from detectors.quality_metrics import METRICS, merged_metrics
from stream.config import Config, LabelsConfig
from stream.engine.estimate import EstimateBook, EstimateFigures
from stream.engine.figures import PartitionKey
from stream.engine.labels import (
    OUTCOMES,
    LabelDecoder,
    LabelJoin,
    concept_state,
    reference_quality,
)
from stream.formats.batch import DecodedBatch, ModelBatch

log = logging.getLogger("streamdrift.labels")

#: the change of the error rate the concept-drift CUSUM is tuned for (2 points of accuracy;
#: regression: 10 % of the reference's mean absolute error)
CONCEPT_SHIFT = 0.02
#: what the counters hold per join: the outcomes and the concept-drift alarms
COUNTED = (*OUTCOMES, "concept_alarms")


@dataclass(frozen=True)
class LabelFigures:
    """What the metrics export about one model's labels."""

    task: str
    #: outcome -> count, by this process (see stream.engine.labels.OUTCOMES)
    outcomes: Mapping[str, int]
    #: predictions waiting for labels and labels waiting for predictions, now
    pending: int
    early: int
    #: metric -> value since start, over the recent window, of the labelled reference
    since_start: Mapping[str, float]
    recent: Mapping[str, float]
    baseline: Mapping[str, float] | None
    #: newest event time of a label seen (None before the first)
    last_label_ts: float | None = None
    #: the concept-drift CUSUM: alarms (episodes opened) by this process, the highest
    #: statistic / threshold over the partitions (None: no labelled reference), any alarming
    concept_alarms: int = 0
    concept_score: float | None = None
    concept_active: bool = False
    #: estimated performance without labels (None: no labels.estimate)
    estimated: EstimateFigures | None = None


@dataclass
class LabelSnapshot:
    models: dict[str, LabelFigures] = field(default_factory=dict)
    #: reason -> label messages rejected
    invalid: dict[str, int] = field(default_factory=dict)


class LabelBook:
    """Every label join of a pipeline (the caller holds the pipeline's lock)."""

    def __init__(self, config: Config, *, reference: bool = True) -> None:
        self.cfgs: dict[str, LabelsConfig] = {m.name: m.labels for m in config.models
                                              if m.labels is not None}
        self.decoder = LabelDecoder(config)
        #: inference partition -> model -> its join
        self.joins: dict[PartitionKey, dict[str, LabelJoin]] = {}
        #: (partition, model) -> the join's counts when this process got it
        self.base: dict[tuple[PartitionKey, str], Counter[str]] = {}
        #: model -> counts added by this process on partitions since dropped
        self.retired: dict[str, Counter[str]] = {m: Counter() for m in self.cfgs}
        self.invalid: Counter[str] = Counter()
        self.baselines: dict[str, dict[str, float] | None] = {}
        #: model -> the calibrated concept-drift CUSUM of its joined errors (a template:
        #: each join runs a copy), for models whose reference carries labels
        self.concept: dict[str, CUSUM] = {}
        #: the ``labels.select`` of the models whose label events come in the inference stream
        self.inline = [m.labels.select for m in config.models
                       if m.labels is not None and m.labels.select is not None]
        #: estimated performance without labels (models with labels.estimate)
        self.estimates = EstimateBook(config, reference=reference)
        if reference:
            for m in config.models:
                if m.labels is not None:
                    try:
                        ref = reference_quality(m)
                    except OSError as exc:  # the baseline build reports a missing reference
                        log.warning("cannot read labels of the reference: %s", exc,
                                    extra={"model": m.name})
                        ref = None
                    self.baselines[m.name] = None if ref is None else ref[0]
                    if ref is not None and ref[1].size >= 100:
                        shift = CONCEPT_SHIFT if m.labels.task != "regression" \
                            else CONCEPT_SHIFT * 5 * max(float(np.mean(ref[1])), 1e-9)
                        self.concept[m.name] = error_cusum(
                            ref[1], config.detection.false_alarm_events, shift)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.cfgs)

    def _join(self, key: PartitionKey, model: str) -> LabelJoin:
        joins = self.joins.setdefault(key, {})
        j = joins.get(model)
        if j is None:
            j = joins[model] = LabelJoin(self.cfgs[model])
            j.concept = concept_state(self.concept.get(model), None)
            self.base[(key, model)] = Counter()
        return j

    def _others(self, key: PartitionKey, model: str) -> list[LabelJoin]:
        return [js[model] for k, js in self.joins.items() if k != key and model in js]

    # -- input ------------------------------------------------------------------------------
    def add_predictions(self, model: str, key: PartitionKey, mb: ModelBatch) -> None:
        """The predictions of a model's batch on inference partition ``key``."""
        cfg = self.cfgs[model]
        ids = mb.ids if mb.ids is not None else [None] * mb.n_events
        times = mb.timestamps if mb.timestamps is not None else np.full(mb.n_events, np.nan)
        preds = mb.columns[cfg.prediction]
        if cfg.task == "multiclass":
            preds = np.asarray(preds, dtype=object)
        self._join(key, model).add_predictions(ids, times, preds, self._others(key, model))
        if self.estimates:
            self.estimates.add(model, key, mb.columns[cfg.prediction])

    def add_labels(self, messages: Sequence[bytes], key: PartitionKey,
                   topic: str | None = None, label_partition: int | None = None,
                   offsets: Sequence[int] | None = None, inline: bool = False) -> Counter[str]:
        """Label messages paired with inference partition ``key``; returns the rejected
        ones by reason.  ``offsets`` (one per message) and ``label_partition`` under
        ``run``: labels a restored join already covers are skipped, and the join records
        the next label offset it covers."""
        decoded, bad = self.decoder.decode(messages, topic, inline)
        self.invalid.update(bad)
        for model, (ids, times, values, positions) in decoded.items():
            j = self._join(key, model)
            if offsets is not None and label_partition is not None:
                start = j.label_next.get(label_partition)
                if start is not None:
                    keep = [i for i, pos in enumerate(positions) if offsets[pos] >= start]
                    if len(keep) < len(ids):
                        ids = [ids[i] for i in keep]
                        times = [times[i] for i in keep]
                        values = [values[i] for i in keep]
                if offsets:
                    j.label_next[label_partition] = max(start or 0, int(offsets[-1]) + 1)
                    j.dirty = True
            j.add_labels(ids, times, values, self._others(key, model))
        return bad

    # -- partitions -----------------------------------------------------------------------
    def export(self, key: PartitionKey) -> dict[str, dict[str, Any]]:
        """model -> the state of its join on ``key`` (none without one)."""
        out = {m: j.to_dict() for m, j in self.joins.get(key, {}).items()}
        if self.estimates:
            for m, state in out.items():
                state["estimate"] = self.estimates.export(key, m)
        return out

    def dirty(self, key: PartitionKey) -> bool:
        """Whether a join of ``key`` changed since it was last exported."""
        return any(j.dirty for j in self.joins.get(key, {}).values())

    def restore(self, key: PartitionKey, states: Mapping[str, Any]) -> None:
        """Replace the joins of ``key`` by ``states`` (model -> saved state or None)."""
        self.drop(key)
        for model, cfg in self.cfgs.items():
            saved = states.get(model)
            if not isinstance(saved, Mapping):
                continue
            try:
                j = LabelJoin.from_dict(cfg, saved, self.concept.get(model))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("ignoring the saved label join: %s", exc,
                            extra={"model": model, "partition": list(key)})
                continue
            self.joins.setdefault(key, {})[model] = j
            self.base[(key, model)] = Counter(j.counts)
            self.estimates.restore(key, model, saved.get("estimate"))

    def drop(self, key: PartitionKey) -> None:
        """Forget the joins of ``key``; their counts stay in the counters."""
        self.estimates.drop(key)
        for model, j in self.joins.pop(key, {}).items():
            base = self.base.pop((key, model), Counter())
            for k in COUNTED:
                self.retired[model][k] += j.counts[k] - base[k]

    # -- figures ---------------------------------------------------------------------------
    def snapshot(self) -> LabelSnapshot:
        out = LabelSnapshot(invalid=dict(self.invalid))
        for model, cfg in self.cfgs.items():
            joins = [(k, js[model]) for k, js in sorted(self.joins.items()) if model in js]
            counts = Counter(self.retired[model])
            for k, j in joins:
                base = self.base.get((k, model), Counter())
                for o in COUNTED:
                    counts[o] += j.counts[o] - base[o]
            qs = [j.quality for _, j in joins]
            nan = {m: float("nan") for m in METRICS[cfg.task]}
            times = [j.label_time for _, j in joins if np.isfinite(j.label_time)]
            out.models[model] = LabelFigures(
                task=cfg.task, outcomes={o: counts[o] for o in OUTCOMES},
                pending=sum(len(j.pending) for _, j in joins),
                early=sum(len(j.early) for _, j in joins),
                since_start=merged_metrics(qs) if qs else nan,
                recent=merged_metrics(qs, recent=True) if qs else nan,
                baseline=self.baselines.get(model),
                last_label_ts=max(times) if times else None,
                concept_alarms=counts["concept_alarms"],
                concept_score=max((j.concept.statistic / j.concept.threshold for _, j in joins
                                   if j.concept is not None), default=None),
                concept_active=any(j.concept.drift_detected for _, j in joins
                                   if j.concept is not None),
                estimated=self.estimates.figures(model))
        return out


def _finite(metrics: Mapping[str, float] | None) -> dict[str, float | None] | None:
    if metrics is None:
        return None
    return {k: (round(float(v), 6) if np.isfinite(v) else None) for k, v in metrics.items()}


def label_report(book: LabelBook | None, model: str) -> dict[str, Any]:
    """The ``labels`` entry of a model in the replay report (empty without labels)."""
    if book is None or model not in book.cfgs:
        return {}
    fig = book.snapshot().models[model]
    return {"labels": {"task": fig.task, "outcomes": dict(fig.outcomes),
                       "pending": fig.pending, "early": fig.early,
                       "quality": _finite(fig.since_start),
                       "quality_recent": _finite(fig.recent),
                       "quality_baseline": _finite(fig.baseline),
                       "invalid": dict(book.invalid),
                       "concept_drift": {"alarms": fig.concept_alarms,
                                         "active": fig.concept_active},
                       **({} if fig.estimated is None
                          else {"estimated": fig.estimated.report()})}}


def remap_positions(batch: DecodedBatch, kept: np.ndarray, n_messages: int) -> None:
    """A batch decoded from ``messages[kept]``, its positions made those in ``messages``
    (of ``n_messages``: the label events taken out count as consumed, valid messages)."""
    batch.n_messages = n_messages
    batch.invalid_positions = kept[batch.invalid_positions]
    for mb in batch.models.values():
        mb.positions = kept[mb.positions]
