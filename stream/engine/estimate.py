"""Estimated performance without labels (``labels.estimate``) of a pipeline's binary models.

One :class:`~detectors.cbpe.ScoreWindow` per model with ``labels.estimate`` and inference
partition keeps the raw scores of the last ``window`` predictions (whether or not their
labels came); the hot path only writes the batch's score column into it.  At start-up
:class:`EstimateBook` reads the model's JSONL reference (its scores and, where present,
its labels at ``labels.label_path``), tests and perhaps recalibrates the scores and
computes the baseline estimates and the drop band (:class:`~detectors.cbpe.CBPEReference`),
calibrated to the drop alarm's share of the model's false-alarm knob
(:func:`stream.config.estimate.estimate_budget`, :mod:`detectors.cbpe_drop`).
The figures are computed at scrape time from the windows of the partitions held, merged by
adding their statistics.  The windows ride in the partition's checkpoint beside the join.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.cbpe import ESTIMATED, CBPEReference, ScoreWindow, cbpe_estimates, cbpe_stats
from stream.config import Config, ModelConfig
from stream.config.estimate import estimate_budget
from stream.config.labels import concept_budget
from stream.engine.figures import PartitionKey
from stream.engine.labels import _MISSING, _walk, label_value, reference_events

log = logging.getLogger("streamdrift.labels")

#: z of the 95 % band of the realised value around the estimate
BAND_Z = 1.96


@dataclass(frozen=True)
class EstimateFigures:
    """What the metrics export about one model's estimated performance."""

    #: predictions in the recent windows of the partitions held
    predictions: int
    #: whether a full window's worth of predictions is held (``predictions >= window``)
    full: bool
    recalibrated: bool
    #: metric -> estimate over the recent windows (NaN where undefined)
    recent: Mapping[str, float]
    lower: Mapping[str, float]
    upper: Mapping[str, float]
    #: metric -> estimate on the reference's scores (None: no reference scores)
    baseline: Mapping[str, float] | None = None
    #: metric -> drop band for ``predictions`` predictions
    band: Mapping[str, float] = field(default_factory=dict)
    #: metric -> whether the recent estimate is below baseline - band with a full window
    drop: Mapping[str, bool] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """The ``estimated`` entry of the replay report."""
        def fin(d: Mapping[str, float] | None) -> dict[str, float | None] | None:
            if d is None:
                return None
            return {k: (round(float(v), 6) if math.isfinite(v) else None) for k, v in d.items()}
        return {"predictions": self.predictions, "recalibrated": self.recalibrated,
                "recent": fin(self.recent), "lower": fin(self.lower), "upper": fin(self.upper),
                "baseline": fin(self.baseline), "band": fin(self.band),
                "drop": dict(self.drop)}


def reference_scores(model: ModelConfig, max_lines: int = 1_000_000,
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """The raw scores of a JSONL reference and its labels (NaN where an event carries
    none); None when the reference is not JSONL or holds no score."""
    lab = model.labels
    ref = model.baseline.reference
    if lab is None or ref is None or model.baseline.reference_format != "jsonl":
        return None
    col = next(c for c in model.predictions if c.name == lab.prediction)
    ss: list[float] = []
    ys: list[float] = []
    for event in reference_events(model, max_lines):
        p = _walk(event, col.path)
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p) \
                or not 0.0 <= p <= 1.0:
            continue
        raw = _walk(event, lab.label_path)
        y = None if raw is _MISSING else label_value(lab, raw)
        ss.append(float(p))
        ys.append(math.nan if not isinstance(y, float) else y)
    if not ss:
        return None
    return np.asarray(ss), np.asarray(ys)


def drop_target_events(config: Config, model: ModelConfig) -> float:
    """The drop alarm's false-alarm target, in model events: its share of what the
    concept detector leaves of the model's knob (stream.config.estimate)."""
    return float(config.detection.false_alarm_events) * concept_budget(model)[0] \
        * estimate_budget(model)[1]


def _clip(v: float) -> float:
    return min(1.0, max(0.0, v)) if math.isfinite(v) else math.nan


class EstimateBook:
    """The score windows and references of every model with ``labels.estimate``."""

    def __init__(self, config: Config, *, reference: bool = True) -> None:
        self.refs: dict[str, CBPEReference] = {}
        for m in config.models:
            lab = m.labels
            if lab is None or lab.estimate is None:
                continue
            data = None
            if reference:
                try:
                    data = reference_scores(m)
                except OSError as exc:  # the baseline build reports a missing reference
                    log.warning("cannot read the reference's scores: %s", exc,
                                extra={"model": m.name})
            s, y = data if data is not None else (None, None)
            ref = self.refs[m.name] = CBPEReference.build(
                s, y, window=lab.estimate.window, threshold=lab.threshold,
                mode=lab.estimate.calibration, target_events=drop_target_events(config, m))
            cal = ref.calibration
            log.info("estimated performance: scores %s (Hosmer-Lemeshow p = %.3g over %d "
                     "labelled reference pairs); drop band %.2f standard deviations (%s)",
                     "recalibrated on the reference" if cal.recalibrated else "used as they are",
                     cal.p_value, cal.pairs, ref.sigmas,
                     "no reference scores" if ref.drop is None else
                     f"{ref.drop.method}, one false episode per "
                     f"{ref.drop.target_events:.3g} predictions", extra={"model": m.name})
        #: inference partition -> model -> its window
        self.windows: dict[PartitionKey, dict[str, ScoreWindow]] = {}

    def __bool__(self) -> bool:
        return bool(self.refs)

    def add(self, model: str, key: PartitionKey, scores: np.ndarray) -> None:
        """The score column of a model's batch on inference partition ``key``."""
        ref = self.refs.get(model)
        if ref is None:
            return
        ws = self.windows.setdefault(key, {})
        w = ws.get(model)
        if w is None:
            w = ws[model] = ScoreWindow(ref.window)
        w.update(scores)

    # -- partitions -----------------------------------------------------------------------
    def export(self, key: PartitionKey, model: str) -> dict[str, Any] | None:
        w = self.windows.get(key, {}).get(model)
        return None if w is None else w.to_dict()

    def restore(self, key: PartitionKey, model: str, saved: Any) -> None:
        ref = self.refs.get(model)
        if ref is None or not isinstance(saved, Mapping):
            return
        try:
            w = ScoreWindow.from_dict(dict(saved))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring the saved score window: %s", exc, extra={"model": model})
            return
        if w.window == ref.window:
            self.windows.setdefault(key, {})[model] = w

    def drop(self, key: PartitionKey) -> None:
        self.windows.pop(key, None)

    # -- figures ---------------------------------------------------------------------------
    def figures(self, model: str) -> EstimateFigures | None:
        ref = self.refs.get(model)
        if ref is None:
            return None
        scores = [ws[model].scores() for _, ws in sorted(self.windows.items()) if model in ws]
        s = np.concatenate(scores) if scores else np.empty(0)
        est, sd = cbpe_estimates(cbpe_stats(s, ref.calibration.apply(s), ref.threshold))
        n = int(s.shape[0])
        full = n >= ref.window
        lower = {m: _clip(est[m] - BAND_Z * sd[m]) for m in ESTIMATED}
        upper = {m: _clip(est[m] + BAND_Z * sd[m]) for m in ESTIMATED}
        band = ref.band(n) if ref.baseline else {}
        drop = ref.drops(est, n)
        return EstimateFigures(predictions=n, full=full,
                               recalibrated=ref.calibration.recalibrated,
                               recent=est, lower=lower, upper=upper,
                               baseline=dict(ref.baseline) if ref.baseline else None,
                               band=band, drop=drop)
