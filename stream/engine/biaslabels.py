"""Bias drift of the joined pairs (#16 item 2 with labels): per facet value against the
rest, the **recall difference** and the **accuracy difference**, watched by calibrated
detectors.

A model with ``bias:`` and binary ``labels:`` carries, with each prediction waiting in the
label join (:class:`stream.engine.labels.LabelJoin`, pending buffer and checkpoint), what
its facets' monitors need: whether the prediction is positive (``bias.positive``) and its
value of each facet (:meth:`LabelBias.carry`).  When its label comes, the pair feeds, per
facet, two monitors of :mod:`detectors.bias` (the DPPL detector's statistic and
calibration, on another binary outcome):

* ``recall``: the pairs whose label is positive, the outcome "predicted positive": the
  gap of the rest's recall to the value's (Clarify's RD, ``recall_a - recall_d``);
* ``accuracy``: every pair, the outcome "prediction right": the gap of the rest's
  accuracy to the value's (Clarify's AD, ``acc_a - acc_d``).

Each detector tests the gap's change from the labelled reference's (a JSONL reference
whose events carry their label at ``labels.label_path``), with the facet's values and
pooling of the DPPL detector.  A facet's measure whose reference has fewer than
``bias.min_reference_events`` fed pairs for a monitored value (or the rest) is not
watched (logged at start-up).

**Budget.** Per facet of such a model three detectors (DPPL, recall, accuracy) share the
bias detectors' part of the model's false-alarm rate
(:func:`stream.config.bias.bias_budget`).  A label detector's target is counted in the
pairs it is fed, which are never more than the model's events: its false episodes per
model event are at most its share.

An alarm opens the bias episode of ``facet=value`` (column ``bias``, detector
``recall_diff`` or ``accuracy_diff``), merged with the DPPL detector's when both are open.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

import numpy as np

from detectors.bias import BiasBaseline, BiasMonitor, build_baseline
from detectors.errors import DetectorError
from stream.config import Config, ModelConfig
from stream.config.bias import LABEL_MEASURES
from stream.engine.bias import (
    ModelBias,
    decode_model,
    positive_flags,
    strongest,
    target_events,
    value_column,
)
from stream.engine.labels import _walk, label_value, reference_events
from stream.formats.columns import extract_columns

log = logging.getLogger("streamdrift.bias")

#: the detector name of each measure (in episodes, drift events and logs)
DETECTORS = {"recall": "recall_diff", "accuracy": "accuracy_diff"}
#: reference events read per chunk
_CHUNK = 10_000


def outcomes(measure: str, y: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the pairs a measure's monitor is fed, their outcome flags): ``recall``: the pairs
    labelled positive, predicted positive; ``accuracy``: every pair, prediction right."""
    if measure == "recall":
        return y, positive[y]
    return np.ones(y.size, dtype=bool), positive == y


class LabelBias:
    """The label-based bias baselines of one model (each join runs its own monitors)."""

    def __init__(self, model: ModelBias, bases: dict[str, BiasBaseline]) -> None:
        self.model = model
        #: "facet:measure" -> its calibrated baseline (the measures watched)
        self.bases = bases
        body = json.dumps({k: b.to_dict() for k, b in sorted(bases.items())}, sort_keys=True,
                          default=str)
        self.baseline_id = hashlib.sha256(body.encode()).hexdigest()[:16]
        #: what this process counted: "facet:measure" -> pairs fed; (facet=value, measure)
        #: -> alarms
        self.pairs: Counter[str] = Counter()
        self.alarms: Counter[tuple[str, str]] = Counter()

    def carry(self, columns: Mapping[str, np.ndarray]) -> list[list[Any]]:
        """Per event of a batch (its decoded columns, facet columns included): [positive
        (None: not scored), value of each facet]: JSON values, for the checkpoint."""
        scored, positive = positive_flags(self.model.model, columns)
        flags = [bool(p) if s else None for s, p in zip(scored.tolist(), positive.tolist(),
                                                        strict=True)]
        cols = [np.asarray(columns[p.column], dtype=object).tolist() for p in self.model.plans]
        return [list(row) for row in zip(flags, *cols, strict=True)]

    def fresh(self) -> FacetPairs:
        return FacetPairs(self, {k: b.monitor() for k, b in self.bases.items()})

    def restored(self, saved: Any) -> FacetPairs:
        """The monitors of a saved :meth:`FacetPairs.to_dict` (fresh when saved with other
        baselines or malformed)."""
        out = self.fresh()
        if not isinstance(saved, Mapping) or saved.get("baseline_id") != self.baseline_id:
            return out
        mons = saved.get("monitors")
        try:
            for k, b in self.bases.items():
                out.monitors[k] = BiasMonitor.from_dict(mons[k], b)  # type: ignore[index]
        except (DetectorError, KeyError, TypeError) as exc:
            log.warning("the label bias monitors of model %s do not restore (%s); fresh "
                        "state", self.model.model.name, exc)
            return self.fresh()
        return out


class FacetPairs:
    """The label-based bias monitors of one join (model and partition)."""

    def __init__(self, owner: LabelBias, monitors: dict[str, BiasMonitor]) -> None:
        self.owner = owner
        self.monitors = monitors

    def update(self, ys: Sequence[Any], xs: Sequence[Any],
               ) -> list[tuple[str, str, str, float, float]]:
        """Feed joined pairs (binary labels ``ys``, :meth:`LabelBias.carry` rows ``xs``;
        pairs without one, or with an unscored prediction, are left out); the episode steps
        in input order: ("open" | "close", facet=value, detector, statistic, threshold)."""
        plans = self.owner.model.plans
        width = 1 + len(plans)
        rows = [i for i, x in enumerate(xs)
                if isinstance(x, list) and len(x) == width and x[0] is not None]
        if not rows:
            return []
        y = np.asarray([ys[i] for i in rows], dtype=np.float64) > 0.5
        pos = np.asarray([bool(xs[i][0]) for i in rows], dtype=bool)
        where = np.arange(len(rows))
        steps: list[tuple[int, int, str, str, str, float, float]] = []
        for f, plan in enumerate(plans, start=1):
            codes = plan.codes(np.asarray([xs[i][f] for i in rows], dtype=object))
            for measure in LABEL_MEASURES:
                key = f"{plan.facet.name}:{measure}"
                mon = self.monitors.get(key)
                if mon is None:
                    continue
                fed, flags = outcomes(measure, y, pos)
                self.owner.pairs[key] += int(fed.sum())
                det = DETECTORS[measure]
                for a in mon.update(codes[fed], flags, where[fed]):
                    self.owner.alarms[(plan.key(a.value), measure)] += 1
                    steps.append((a.position, 1, "open", plan.key(a.value), det, a.statistic,
                                  a.threshold))
                steps += [(a.position, 0, "close", plan.key(a.value), det, a.statistic,
                           a.threshold) for a in mon.closes]
        return [s[2:] for s in sorted(steps)]

    def active(self) -> Iterator[tuple[str, str]]:
        """(facet=value, detector) of the episodes open."""
        for plan in self.owner.model.plans:
            for measure in LABEL_MEASURES:
                mon = self.monitors.get(f"{plan.facet.name}:{measure}")
                if mon is not None:
                    for i in np.flatnonzero(mon.active).tolist():
                        yield plan.key(plan.labels[i]), DETECTORS[measure]

    def to_dict(self) -> dict[str, Any]:
        return {"baseline_id": self.owner.baseline_id,
                "monitors": {k: m.to_dict() for k, m in self.monitors.items()}}


def label_bias_figures(owner: LabelBias, joins: Sequence[FacetPairs]) -> list[dict[str, Any]]:
    """Per monitored facet value and measure: the window's rate of the value and gap to the
    rest of the partition with the highest score, the reference's gap, the score, active on
    any partition, pairs and alarms counted by this process."""
    out: list[dict[str, Any]] = []
    for plan in owner.model.plans:
        for measure in LABEL_MEASURES:
            key = f"{plan.facet.name}:{measure}"
            base = owner.bases.get(key)
            if base is None:
                continue
            mons = [j.monitors[key] for j in joins if key in j.monitors]
            figs = [m.figures() for m in mons]
            scores = [m.score() for m in mons]
            for i, label in enumerate(plan.labels):
                fig: dict[str, Any] = {
                    "facet": plan.facet.name, "value": label, "measure": measure,
                    "baseline_rate": float(base.ref_rate[i]),
                    "baseline_difference": float(base.ref_dppl[i]),
                    "pairs": owner.pairs[key], "alarms": owner.alarms[(plan.key(label), measure)],
                    "active": False, "score": 0.0, "rate": float("nan"),
                    "difference": float("nan")}
                fig["active"], score, picked = strongest(mons, figs, scores, i)
                if picked is not None:
                    rate, _, gap, _ = picked
                    fig.update(score=score, rate=float(rate[i]), difference=float(gap[i]))
                out.append(fig)
    return out


def _reference_pairs(model: ModelConfig, max_lines: int,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]] | None:
    """(label, scored, positive, facet values per plan column order) of the reference
    events that carry a valid label; None without any."""
    lab = model.labels
    assert lab is not None and model.bias is not None
    decoded = decode_model(model)
    cols = [value_column(model, f) for f in model.bias.facets]
    ys: list[float] = []
    scored: list[np.ndarray] = []
    positive: list[np.ndarray] = []
    values: list[list[Any]] = [[] for _ in cols]
    events = reference_events(model, max_lines)
    while chunk := list(islice(events, _CHUNK)):
        labels = [label_value(lab, _walk(ev, lab.label_path)) for ev in chunk]
        keep = [i for i, v in enumerate(labels) if v is not None]
        if not keep:
            continue
        mb = extract_columns([chunk[i] for i in keep], decoded)
        s, p = positive_flags(model, mb.columns)
        ys.extend(float(labels[i]) for i in keep)  # type: ignore[arg-type]
        scored.append(s)
        positive.append(p)
        for out, c in zip(values, cols, strict=True):
            out.extend(np.asarray(mb.columns[c], dtype=object).tolist())
    if not ys:
        return None
    return (np.asarray(ys) > 0.5, np.concatenate(scored), np.concatenate(positive),
            [np.asarray(v, dtype=object) for v in values])


def build_label_bias(config: Config, model: ModelConfig, mbias: ModelBias,
                     max_lines: int = 1_000_000) -> LabelBias | None:
    """The label-based bias baselines of ``model`` (None: no binary labels, no JSONL
    reference, or no labelled reference event)."""
    lab, cfg = model.labels, model.bias
    if lab is None or cfg is None or lab.task != "binary" or \
            model.baseline.reference_format != "jsonl" or model.baseline.reference is None:
        return None
    try:
        got = _reference_pairs(model, max_lines)
    except OSError as exc:  # the baseline build reports a missing reference
        log.warning("cannot read the labelled reference of model %s: %s", model.name, exc)
        return None
    if got is None:
        log.info("model %s: the reference carries no labels at %s: the recall and accuracy "
                 "differences are not watched", model.name, ".".join(lab.label_path))
        return None
    y, scored, positive, values = got
    y, positive = y[scored], positive[scored]
    target = target_events(config, model)
    bases: dict[str, BiasBaseline] = {}
    for plan, vals in zip(mbias.plans, values, strict=True):
        codes = plan.codes(vals[scored])
        untested = plan.base.n_buckets > len(plan.labels)
        for measure in LABEL_MEASURES:
            fed, flags = outcomes(measure, y, positive)
            base = build_baseline(plan.facet.name, plan.labels, codes[fed], flags,
                                  cfg.window, cfg.cadence, untested)
            tested = base.n[: len(plan.labels)]
            rest = int(base.n.sum()) - tested
            thin = [plan.labels[i] for i in range(len(plan.labels))
                    if min(tested[i], rest[i]) < cfg.min_reference_events]
            if thin:
                log.info("facet %s of model %s: %s not watched: value(s) %s (or their rest) "
                         "have fewer than min_reference_events %d labelled reference pairs",
                         plan.facet.name, model.name, measure, ", ".join(thin),
                         cfg.min_reference_events)
                continue
            bases[f"{plan.facet.name}:{measure}"] = base.calibrate(target)
    if not bases:
        return None
    log.info("label bias baselines of model %s: %s", model.name, "; ".join(
        f"{k} (threshold {b.threshold:.2f}, {b.method})" for k, b in bases.items()))
    return LabelBias(mbias, bases)


def resolve_label_bias(config: Config, bias: Mapping[str, ModelBias]) -> dict[str, LabelBias]:
    """model name -> its label-based bias baselines (models with facets and binary labels
    whose reference carries labels)."""
    out: dict[str, LabelBias] = {}
    for m in config.models:
        if m.name in bias:
            lb = build_label_bias(config, m, bias[m.name])
            if lb is not None:
                out[m.name] = lb
    return out
