"""Bias drift in the pipeline: per facet value, DPPL and DI against the rest, watched by a
calibrated detector (:mod:`detectors.bias`).

At start-up the reference is read with the facet fields (a facet that is not one of the
model's columns is decoded as a hidden categorical column, as segments do), each facet
keeps its ``top_k`` most frequent values with at least ``min_reference_events``
reference events; every other value (and a missing one) is pooled as ``other``, which is
monitored when it holds ``min_reference_events`` too (else its events only count in the
other values' rest).  The positive prediction is ``bias.positive``; an event whose
prediction is missing or invalid is not scored (counted as ``unscored``), never fatal.

**Budget.** The bias detectors take :data:`stream.config.bias.BIAS_SHARE` of the model's
false-alarm rate, split equally over its facets (the model's other monitors are
calibrated to the rest), so the model's overall rate still holds.

**Hot path.** Per batch and facet: one C-level ``map(dict.get, ...)`` for the value codes,
one comparison for the positive flags, then :meth:`detectors.bias.BiasMonitor.update`
(one ``bincount``, a loop per 500-event chunk).  Models without ``bias`` do nothing more.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from detectors.bias import DETECTOR, BiasBaseline, BiasMonitor, build_baseline
from detectors.column import Alarm
from detectors.errors import DetectorError
from stream.config import Config, ConfigError, ModelConfig
from stream.config.bias import FacetConfig, bias_budget, facet_detectors
from stream.config.estimate import estimate_budget
from stream.config.labels import concept_budget
from stream.engine.baselines import read_reference
from stream.engine.episodes import EpisodeBook
from stream.engine.hidden import column_at, with_hidden
from stream.formats.batch import ModelBatch, without_columns

log = logging.getLogger("streamdrift.bias")

#: the label of the pooled values
OTHER = "other"
#: the ``feature`` of bias detections and episodes
FEATURE = "bias"


def hidden_name(facet: FacetConfig) -> str:
    return f"__facet__{facet.name}"


def value_column(model: ModelConfig, facet: FacetConfig) -> str:
    """The decoded column of ``facet``'s values: the model's column at its path, or hidden."""
    return column_at(model, facet.path, hidden_name(facet))


def decode_model(model: ModelConfig) -> ModelConfig:
    """``model`` with a hidden categorical column per facet that is not one of its columns."""
    if model.bias is None:
        return model
    return with_hidden(model, ((hidden_name(f), f.path) for f in model.bias.facets))


def with_facets(config: Config) -> Config:
    """``config`` with the facets' hidden columns (itself when no model has facets)."""
    if not any(m.bias for m in config.models):
        return config
    return dataclasses.replace(config, models=tuple(decode_model(m) for m in config.models))


def target_events(config: Config, model: ModelConfig) -> float:
    """The false-alarm target of each facet's detector, in model events."""
    return float(config.detection.false_alarm_events) * bias_budget(model)[1] \
        * concept_budget(model)[0] * estimate_budget(model)[0]  # of what those two leave


@dataclass
class FacetPlan:
    facet: FacetConfig
    column: str
    #: monitored labels (values, then ``other`` when monitored)
    labels: list[str]
    #: value -> bucket code; other values -> ``other_code``
    lookup: dict[Any, int]
    other_code: int
    base: BiasBaseline
    skipped: dict[str, str]

    def codes(self, values: np.ndarray) -> np.ndarray:
        n = len(values)
        return np.fromiter(map(self.lookup.get, values, repeat(self.other_code, n)),
                           dtype=np.intp, count=n)

    def key(self, label: str) -> str:
        return f"{self.facet.name}={label}"


def positive_flags(model: ModelConfig, mb_columns: Mapping[str, np.ndarray],
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(scored mask, positive flags) of a batch's (or the reference's) events."""
    assert model.bias is not None
    pos = model.bias.positive
    col = mb_columns[pos.column]
    if pos.threshold is not None:
        x = np.asarray(col, dtype=np.float64)
        scored = np.isfinite(x)
        return scored, scored & (x >= pos.threshold)
    vals = np.asarray(col, dtype=object)
    scored = vals != None  # noqa: E711 - elementwise on an object array
    eq = pos.equals
    flags = np.fromiter(map(eq.__eq__, map(str, vals.tolist())), dtype=bool, count=len(vals))
    return scored, scored & flags


def facet_plan(model: ModelConfig, facet: FacetConfig, data: Mapping[str, np.ndarray],
               target: float, seed: int = 0) -> FacetPlan:
    assert model.bias is not None
    cfg = model.bias
    scored, positive = positive_flags(model, data)
    column = value_column(model, facet)
    vals = np.asarray(data[column], dtype=object)[scored]
    positive = positive[scored]
    counts = Counter(v for v in vals.tolist() if v is not None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[: facet.top_k]
    skipped: dict[str, str] = {}
    kept: list[Any] = []
    for v, k in ranked:
        if k >= cfg.min_reference_events:
            kept.append(v)
        else:
            skipped[str(v)] = (f"{k} scored reference events < min_reference_events "
                               f"{cfg.min_reference_events}: pooled into {OTHER}")
    labels = [str(v) for v in kept]
    pool = OTHER if OTHER not in labels else f"__{OTHER}__"
    lookup: dict[Any, int] = {v: i for i, v in enumerate(kept)}
    codes_all = np.fromiter(map(lookup.get, vals.tolist(), repeat(len(kept), len(vals))),
                            dtype=np.intp, count=len(vals))
    rest = int((codes_all == len(kept)).sum())
    untested = rest < cfg.min_reference_events
    if untested:
        skipped[pool] = (f"{rest} scored reference events < min_reference_events "
                         f"{cfg.min_reference_events}: counted in the rest, not tested")
    else:
        labels.append(pool)
    if not kept or (len(labels) < 2 and rest == 0):
        raise ConfigError(f"models[{model.name}].bias.facets ({facet.name}): the reference has "
                          f"fewer than two groups of >= {cfg.min_reference_events} scored events "
                          f"({dict(counts.most_common(3))}); lower bias.min_reference_events "
                          f"or use a larger reference")
    base = build_baseline(facet.name, labels, codes_all, positive, cfg.window, cfg.cadence,
                          untested).calibrate(target, seed=seed)
    return FacetPlan(facet, column, labels, lookup, len(kept), base, skipped)


class ModelBias:
    """The facet plans of one model and what runs them on a batch."""

    def __init__(self, model: ModelConfig, plans: list[FacetPlan]) -> None:
        self.model = model
        self.plans = plans
        self.hidden = [hidden_name(p.facet) for p in plans if p.column == hidden_name(p.facet)]
        #: what this process counted (the exported counters never go down while it lives,
        #: whatever partitions come and go): facet -> scored events; facet=value -> alarms
        self.events: Counter[str] = Counter()
        self.alarms: Counter[str] = Counter()

    def new_monitors(self) -> dict[str, BiasMonitor]:
        return {p.facet.name: p.base.monitor() for p in self.plans}

    def update(self, monitors: dict[str, BiasMonitor], mb: ModelBatch, unscored: Counter[str],
               ) -> tuple[list[tuple[str, Alarm]], list[tuple[str, Alarm]]]:
        """Feed ``mb`` to the facets' monitors; (alarms, closes) as (``facet=value``, Alarm
        with its position in ``mb``)."""
        scored, positive = positive_flags(self.model, mb.columns)
        rows = np.flatnonzero(scored)
        unscored[self.model.name] += int(mb.n_events - rows.size)
        if rows.size == 0:
            return [], []
        positive = positive[rows]
        found: list[tuple[str, Alarm]] = []
        closes: list[tuple[str, Alarm]] = []
        for plan in self.plans:
            values = mb.columns[plan.column][rows]
            mon = monitors[plan.facet.name]
            self.events[plan.facet.name] += int(rows.size)
            for a in mon.update(plan.codes(values), positive, rows):
                self.alarms[plan.key(a.value)] += 1
                found.append((plan.key(a.value),
                              Alarm(FEATURE, DETECTOR, a.position, a.statistic, a.threshold)))
            for a in mon.closes:
                closes.append((plan.key(a.value),
                               Alarm(FEATURE, DETECTOR, a.position, a.statistic, a.threshold)))
        return found, closes

    def process(self, states: dict[Any, dict[str, dict[str, BiasMonitor]]], partition: Any,
                mb: ModelBatch, unscored: Counter[str],
                ) -> tuple[ModelBatch, list[tuple[str, Alarm]], list[tuple[str, Alarm]]]:
        """The pipeline's step: feed ``mb`` to the monitors of ``partition`` in ``states``
        (partition -> model -> facet -> monitor; created when missing); returns ``mb``
        without the hidden facet columns, the alarms and the closes."""
        per = states.setdefault(partition, {})
        if self.model.name not in per:
            per[self.model.name] = self.new_monitors()
        found, closes = self.update(per[self.model.name], mb, unscored)
        return self.strip(mb), found, closes

    # -- checkpoint (the partition's state, beside the model's) ----------------------------
    def baseline_id(self, plan: FacetPlan) -> str:
        body = json.dumps(plan.base.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def export(self, monitors: Mapping[str, BiasMonitor] | None) -> dict[str, Any]:
        """facet -> {baseline_id, state} of the partition's monitors."""
        return {p.facet.name: {"baseline_id": self.baseline_id(p),
                               "state": monitors[p.facet.name].to_dict()}
                for p in self.plans if monitors and p.facet.name in monitors}

    def restore(self, state: Any, book: EpisodeBook, now: float) -> dict[str, BiasMonitor]:
        """Monitors from the model's exported state (its ``bias``: :meth:`export`'s output;
        fresh where it has none, or one of another baseline, or one that does not restore);
        their open episodes go back into ``book`` (with their ``segment_episodes`` entry)."""
        mons = self.new_monitors()
        state = state if isinstance(state, Mapping) else {}
        saved, eps = state.get("bias"), state.get("segment_episodes")
        eps = eps if isinstance(eps, Mapping) else {}
        for plan in self.plans:
            item = saved.get(plan.facet.name) if isinstance(saved, Mapping) else None
            if not isinstance(item, Mapping) or item.get("baseline_id") != self.baseline_id(plan):
                continue
            try:
                mons[plan.facet.name] = BiasMonitor.from_dict(item["state"], plan.base)
            except DetectorError as exc:
                log.warning("facet %s of model %s: the checkpoint does not restore (%s); "
                            "fresh state", plan.facet.name, self.model.name, exc)
                continue
            for i in np.flatnonzero(mons[plan.facet.name].active).tolist():
                where = plan.key(plan.labels[i])
                ep = eps.get(where)
                book.restore(self.model.name, FEATURE, [DETECTOR], now,
                             ep.get(FEATURE) if isinstance(ep, Mapping) else None,
                             segment=where)
        return mons

    def strip(self, mb: ModelBatch) -> ModelBatch:
        """``mb`` without the hidden facet columns."""
        return without_columns(mb, self.hidden)

    def series(self) -> int:
        """Series the bias metrics export for this model."""
        return sum(len(p.labels) * len(SERIES_PER_VALUE) for p in self.plans)


#: the per-value gauges / counters of the bias metrics (stream.sinks.bias_metrics)
SERIES_PER_VALUE = ("events", "positive_rate", "dppl", "di", "baseline_dppl", "baseline_di",
                    "score", "active", "alarms")
#: the per-value and measure series of the label-based bias metrics (5 gauges, alarms)
LABEL_SERIES_PER_VALUE = 6


def build_model_bias(config: Config, model: ModelConfig) -> ModelBias:
    assert model.bias is not None
    index = config.models.index(model)
    ref = model.baseline.reference
    if ref is None:
        raise ConfigError(f"models[{index}].bias: bias drift needs baseline.reference",
                          source=config.path)
    ref = Path(ref)
    if model.baseline.reference_format != "jsonl":
        for j, f in enumerate(model.bias.facets):
            if value_column(model, f) == hidden_name(f):
                raise ConfigError(
                    f"models[{index}].bias.facets[{j}].path: {'.'.join(f.path)} is not a column "
                    f"of the model, and a {ref.suffix} reference holds only the model's "
                    f"columns; use a JSONL reference of events, or a categorical column",
                    source=config.path)
    started = time.perf_counter()
    data = read_reference(ref, decode_model(model))
    target = target_events(config, model)
    plans = [facet_plan(model, f, data, target) for f in model.bias.facets]
    log.info("bias baselines of model %s built in %.1f s: %s", model.name,
             time.perf_counter() - started,
             "; ".join(f"{p.facet.name}: {', '.join(p.labels)} (threshold "
                       f"{p.base.threshold:.2f}, {p.base.method})" for p in plans))
    for p in plans:
        for what, why in p.skipped.items():
            log.info("facet %s=%s of model %s: %s", p.facet.name, what, model.name, why)
    return ModelBias(model, plans)


def resolve_bias(config: Config) -> dict[str, ModelBias]:
    """model name -> its facets, for the models with ``bias``."""
    return {m.name: build_model_bias(config, m) for m in config.models if m.bias is not None}


def restore_bias(models: Mapping[str, ModelBias], states: Mapping[str, Any] | None,
                 book: EpisodeBook, now: float) -> dict[str, dict[str, BiasMonitor]]:
    """model -> its facets' monitors of a restored partition (``states``: model -> its
    exported state, see :meth:`ModelBias.restore`)."""
    return {n: mb.restore((states or {}).get(n), book, now) for n, mb in models.items()}


def export_bias(models: Mapping[str, ModelBias], monitors: Mapping[str, Any] | None,
                out: dict[str, dict[str, Any]]) -> None:
    """Add each model's ``bias`` entry to a partition's exported state ``out``."""
    for name, mb in models.items():
        out.setdefault(name, {})["bias"] = mb.export((monitors or {}).get(name))


def bias_figures(models: Mapping[str, ModelBias],
                 by_partition: Mapping[Any, Mapping[str, Mapping[str, BiasMonitor]]],
                 unscored: Mapping[str, int]) -> dict[str, Any]:
    """model -> {"unscored": n, "values": {facet=value: figures}} over the partitions'
    monitors (the window figures of the partition with the highest score; active on any;
    events and alarms: what this process counted)."""
    states = [by_partition[k] for k in sorted(by_partition)]
    out: dict[str, Any] = {}
    for name, mbias in models.items():
        per: dict[str, Any] = {}
        for plan in mbias.plans:
            mons = [st[name][plan.facet.name] for st in states if name in st]
            figs = [m.figures() for m in mons]
            scores = [m.score() for m in mons]
            base = plan.base
            for i, label in enumerate(plan.labels):
                fig: dict[str, Any] = {
                    "facet": plan.facet.name, "value": label,
                    "baseline_positive_rate": float(base.ref_rate[i]),
                    "baseline_dppl": float(base.ref_dppl[i]),
                    "baseline_di": float(base.ref_di[i]),
                    "threshold": float(base.threshold),
                    "events": mbias.events[plan.facet.name],
                    "alarms": mbias.alarms[plan.key(label)], "active": False, "score": 0.0,
                    "positive_rate": float("nan"), "dppl": float("nan"), "di": float("nan")}
                fig["active"], score, picked = strongest(mons, figs, scores, i)
                if picked is not None:
                    rate, _, dppl, di = picked
                    fig.update(score=score, positive_rate=float(rate[i]),
                               dppl=float(dppl[i]), di=float(di[i]))
                per[plan.key(label)] = fig
        out[name] = {"unscored": int(unscored.get(name, 0)), "values": per}
    return out


def strongest(mons: Sequence[BiasMonitor], figs: Sequence[tuple[np.ndarray, ...]],
              scores: Sequence[np.ndarray], i: int,
              ) -> tuple[bool, float, tuple[np.ndarray, ...] | None]:
    """For value ``i`` over the partitions' monitors (their ``figures()`` and ``score()``):
    active on any, and the score and figures of the one with the highest score among those
    whose difference (``figs[.][2]``) is defined; (active, 0.0, None) when none is."""
    active = any(bool(m.active[i]) for m in mons)
    best, picked = -1.0, None
    for f, sc in zip(figs, scores, strict=True):
        s = float(sc[i])
        if s > best and np.isfinite(f[2][i]):
            best, picked = s, f
    return active, (best if picked is not None else 0.0), picked


def series_bound(model: ModelConfig) -> int:
    """The most series the bias metrics of ``model`` can export."""
    if model.bias is None:
        return 0
    labelled = facet_detectors(model) - 1  # with binary labels: recall and accuracy
    return 1 + sum((f.top_k + 1) * (len(SERIES_PER_VALUE) + labelled * LABEL_SERIES_PER_VALUE)
                   + labelled for f in model.bias.facets)


def describe(model: ModelConfig) -> list[str]:
    """Lines for ``check-config``."""
    if model.bias is None:
        return []
    p = model.bias.positive
    rule = f"{p.column} >= {p.threshold:g}" if p.threshold is not None else \
        f"{p.column} == {p.equals!r}"
    return [f"  facet      {f.name:24s} path {'.'.join(f.path)}: top {f.top_k} values, the "
            f"rest as {OTHER}; positive: {rule}; window {model.bias.window}"
            for f in model.bias.facets]


__all__ = ["FEATURE", "ModelBias", "bias_figures", "describe", "with_facets",
           "resolve_bias", "series_bound"]
