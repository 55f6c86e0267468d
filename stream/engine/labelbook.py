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
import math
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.concept import ConceptDetector, model_concept_detector
from detectors.quality_metrics import METRICS, merged_metrics
from stream.config import Config, LabelsConfig
from stream.config.labels import concept_budget
from stream.engine.bias import FEATURE as BIAS_FEATURE
from stream.engine.bias import ModelBias
from stream.engine.biaslabels import LabelBias, label_bias_figures, resolve_label_bias
from stream.engine.episodes import Detection, Episode, EpisodeBook
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

#: what the counters hold per join: the outcomes and the concept-drift alarms
COUNTED = (*OUTCOMES, "concept_alarms")
#: the column and detector names of a model-quality episode (a concept-drift alarm) in the
#: pipeline's episodes, the log and the replay report: not a column name (those are
#: identifiers or paths), so it never merges with an input column's episode
QUALITY_FEATURE = "(labels)"
CONCEPT_DETECTOR = "concept"


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
    #: the concept-drift detector: alarms (episodes opened) by this process, the highest
    #: statistic / threshold over the partitions (None: no labelled reference), any alarming
    concept_alarms: int = 0
    concept_score: float | None = None
    concept_active: bool = False
    #: estimated performance without labels (None: no labels.estimate)
    estimated: EstimateFigures | None = None
    #: the label-based bias figures per facet value and measure (None: not watched; see
    #: stream.engine.biaslabels.label_bias_figures)
    bias: list[dict[str, Any]] | None = None


@dataclass
class LabelSnapshot:
    models: dict[str, LabelFigures] = field(default_factory=dict)
    #: reason -> label messages rejected
    invalid: dict[str, int] = field(default_factory=dict)


class LabelBook:
    """Every label join of a pipeline (the caller holds the pipeline's lock)."""

    def __init__(self, config: Config, *, reference: bool = True,
                 bias: Mapping[str, ModelBias] | None = None) -> None:
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
        #: model -> the calibrated concept-drift detector of its joined errors (a template:
        #: each join runs a copy), for models whose reference carries labels
        self.concept: dict[str, ConceptDetector] = {}
        #: the ``labels.select`` of the models whose label events come in the inference stream
        #: model -> the label-based bias baselines of its facets (stream.engine.biaslabels;
        #: models with facets and binary labels whose reference carries labels)
        self.bias: dict[str, LabelBias] = resolve_label_bias(config, bias) \
            if reference and bias else {}
        #: model-quality episode steps since :meth:`take_steps` last took them (bounded:
        #: ``run`` never takes them, it logs and exports them)
        self.steps: deque[tuple[str, Episode, Detection]] = deque(maxlen=10_000)
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
                        unit = 1.0 if m.labels.task != "regression" \
                            else 5 * max(float(np.mean(ref[1])), 1e-9)
                        # its share of the model's one knob (stream.config.labels)
                        det = self.concept[m.name] = model_concept_detector(
                            ref[1], config.detection.false_alarm_events
                            * concept_budget(m)[1], unit)
                        # episodes as the input detectors have them: open while the
                        # evidence persists, closed after a window of pairs without it
                        det.configure_episodes(config.detection.release, concept_release_values(
                            m.labels.window, config.detection.false_alarm_events))

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.cfgs)

    def _join(self, key: PartitionKey, model: str) -> LabelJoin:
        joins = self.joins.setdefault(key, {})
        j = joins.get(model)
        if j is None:
            j = joins[model] = LabelJoin(self.cfgs[model])
            j.concept = concept_state(self.concept.get(model), None)
            lb = self.bias.get(model)
            j.bias = None if lb is None else lb.fresh()
            self.base[(key, model)] = Counter()
        return j

    def _others(self, key: PartitionKey, model: str) -> list[LabelJoin]:
        return [js[model] for k, js in self.joins.items() if k != key and model in js]

    # -- input ------------------------------------------------------------------------------
    def carry(self, model: str, mb: ModelBatch) -> list[list[Any]] | None:
        """What the predictions of ``mb`` (with its facet columns) carry in the join for
        the facets' label-based monitors (None: the model has none)."""
        lb = self.bias.get(model)
        return None if lb is None or mb.ids is None else lb.carry(mb.columns)

    def add_predictions(self, model: str, key: PartitionKey, mb: ModelBatch,
                        extras: Sequence[Any] | None = None) -> None:
        """The predictions of a model's batch on inference partition ``key`` (``extras``:
        :meth:`carry`'s, taken before the facet columns were stripped)."""
        cfg = self.cfgs[model]
        ids = mb.ids if mb.ids is not None else [None] * mb.n_events
        times = mb.timestamps if mb.timestamps is not None else np.full(mb.n_events, np.nan)
        preds = mb.columns[cfg.prediction]
        if cfg.task == "multiclass":
            preds = np.asarray(preds, dtype=object)
        self._join(key, model).add_predictions(ids, times, preds, self._others(key, model),
                                               extras)
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

    def take_bias_steps(self) -> list[tuple[PartitionKey, str, str, str, str, float, float,
                                             float]]:
        """The label-based bias episode steps since the last call: (partition, model,
        "open" | "close", facet=value, detector, statistic, threshold, label event time)."""
        out: list[tuple[PartitionKey, str, str, str, str, float, float, float]] = []
        for key, joins in sorted(self.joins.items()):
            for model, j in joins.items():
                if j.bias_steps:
                    t = float(j.label_time)
                    out.extend((key, model, *s, t) for s in j.bias_steps)
                    j.bias_steps = []
        return out

    def _bias_episodes(self, books: Callable[[PartitionKey], EpisodeBook], at: int,
                       now: float) -> list[tuple[str, Episode, Detection]]:
        out: list[tuple[str, Episode, Detection]] = []
        for key, model, kind, where, det, stat, thr, t in self.take_bias_steps():
            d = Detection(model, BIAS_FEATURE, det, at, stat, thr,
                          event_time=t if math.isfinite(t) else None, segment=where)
            book = books(key)
            ep = book.opened(d, now) if kind == "open" else book.closed(d)
            extra = {"model": model, "partition": list(key), "segment": where,
                     "detector": det, "index": at, "label_event_time": d.event_time,
                     "statistic": round(stat, 4), "threshold": round(thr, 4)}
            if kind == "open":
                log.warning("bias drift alarm on the joined pairs", extra={
                    **extra, "cause": f"the {det.split('_')[0]} difference of {where} to the "
                                      f"rest left the labelled reference's"})
            if ep is not None:
                out.append((kind, ep, d))
        return out

    def take_concept_steps(self) -> list[tuple[PartitionKey, str, str, float, float, float,
                                               int]]:
        """The concept episodes opened and closed since the last call, in order per join:
        (partition, model, "open" | "close", statistic, threshold, label event time, ordinal
        of the joined pair)."""
        out: list[tuple[PartitionKey, str, str, float, float, float, int]] = []
        for key, joins in sorted(self.joins.items()):
            for model, j in joins.items():
                if j.concept_steps:
                    t = float(j.label_time)
                    out.extend((key, model, kind, st, thr, t, n)
                               for kind, st, thr, n in j.concept_steps)
                    j.concept_steps = []
        return out

    def episodes(self, books: Callable[[PartitionKey], EpisodeBook], at: int, now: float,
                 ) -> list[tuple[str, Episode, Detection]]:
        """Model-quality episodes from the joins' concept-drift alarms since the last call.

        A concept alarm opens an episode of column :data:`QUALITY_FEATURE` (detector
        ``concept``) of its model in ``books(partition)``, the partition's episode book,
        located at input index ``at`` (the last input event processed: labels join there);
        its close closes it.  One log line at each opening and closing.  Returns the steps
        ("open" | "close", the episode, its detection), also kept in :attr:`steps`."""
        out: list[tuple[str, Episode, Detection]] = []
        for key, model, kind, stat, thr, t, pair in self.take_concept_steps():
            d = Detection(model, QUALITY_FEATURE, CONCEPT_DETECTOR, at, stat, thr,
                          event_time=t if math.isfinite(t) else None)
            book = books(key)
            ep = book.opened(d, now) if kind == "open" else book.closed(d)
            if ep is None:
                continue
            if kind == "open":
                ep.open_pair = pair
            else:
                ep.close_pair = pair
            extra = {"model": model, "partition": list(key), "index": at,
                     "label_event_time": d.event_time,
                     "statistic": round(stat, 4), "threshold": round(thr, 4)}
            if kind == "open":
                log.warning("model quality episode opened", extra={
                    **extra, "cause": "concept drift: the error rate of the joined pairs "
                                      "left the labelled reference's"})
            else:
                log.info("model quality episode closed",
                         extra={**extra, "peak_score": round(d.score, 4)})
            out.append((kind, ep, d))
        out += self._bias_episodes(books, at, now)
        self.steps.extend(out)
        return out

    def take_steps(self) -> list[tuple[str, Episode, Detection]]:
        """The model-quality episode steps since the last call (see :attr:`steps`)."""
        out = list(self.steps)
        self.steps.clear()
        return out

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

    def restore(self, key: PartitionKey, states: Mapping[str, Any],
                book: EpisodeBook | None = None, episodes: Mapping[str, Any] | None = None,
                now: float = 0.0) -> None:
        """Replace the joins of ``key`` by ``states`` (model -> saved state or None); a
        restored concept episode that is open is restored in ``book`` (``episodes``: model
        -> the saved episodes of its columns, see :meth:`EpisodeBook.restore`)."""
        self._restore(key, states)
        for model, j in self.joins.get(key, {}).items():
            if book is not None and j.bias is not None:
                for where, det in j.bias.active():
                    restore_detector(book, model, det, where, now)
            if book is not None and j.concept is not None and j.concept.drift_detected:
                saved = (episodes or {}).get(model)
                book.restore(model, QUALITY_FEATURE, [CONCEPT_DETECTOR], now,
                             saved.get(QUALITY_FEATURE) if isinstance(saved, Mapping) else None)

    def _restore(self, key: PartitionKey, states: Mapping[str, Any]) -> None:
        self.drop(key)
        for model, cfg in self.cfgs.items():
            saved = states.get(model)
            if not isinstance(saved, Mapping):
                continue
            try:
                j = LabelJoin.from_dict(cfg, saved, self.concept.get(model),
                                        self.bias.get(model))
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
                estimated=self.estimates.figures(model),
                bias=None if model not in self.bias else label_bias_figures(
                    self.bias[model], [j.bias for _, j in joins if j.bias is not None]))
        return out


def restore_detector(book: EpisodeBook, model: str, detector: str, where: str,
                     now: float) -> None:
    """A restored open label-based bias episode of ``where`` into ``book``: added to the
    facet value's episode when one is open (the DPPL detector's, restored first), else
    restored (without its saved offsets)."""
    ep = book.open.get((model, BIAS_FEATURE, where))
    if ep is None:
        book.restore(model, BIAS_FEATURE, [detector], now, None, segment=where)
        return
    if detector not in ep.detectors:
        ep.detectors.append(detector)
    ep.open_detectors.add(detector)


def concept_release_values(window: int, false_alarm_events: float) -> int:
    """Joined pairs without evidence after which a concept episode closes: the label
    window, but at most 1/20 of the false-alarm budget (as the input detectors')."""
    return int(max(min(window, false_alarm_events // 20), 50))


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
