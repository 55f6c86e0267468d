"""Feature-attribution drift and the root cause of a prediction's drift, seen from the
engine (see docs/attribution.md).

**Decoding.**  A model's attributions (``models[].attributions``) are extracted by the
batch decoder with its columns, as hidden numeric columns (``__attr__<feature>``), so
decoding stays vectorised over the batch; :meth:`ModelAttribution.strip` removes them
before the model's monitors see the batch.

**Budget.**  The attribution test takes :data:`ATTRIBUTION_SHARE` of the false-alarm rate
of the model-wide monitor: that monitor is calibrated to ``1 / (1 - share)`` times its
``false_alarm_events`` and the test to ``1 / share`` times, so the model's rate holds.

**Root cause.**  When a prediction column's episode opens on the model-wide monitor, the
model's features are ranked by contribution = drift score (their highest detector score
on that partition, at the end of the batch) x importance: the reference's mean
|attribution| with attributions, else ``importances:``, else 1 for every feature (the
ranking by drift score alone).  The top three go into the episode.

**Checkpoints.**  A partition's attribution monitor (its current window's sums and
counts, the last window's figures, whether its episode is open) is part of the model's
checkpointed state (``attribution``: :meth:`ModelAttribution.export`), with the key of
its calibration (the baseline's features and means, the level and the window); it is
restored only under the same key, and its open episode goes back into the partition's
episode book.  A state of another calibration, or one that does not restore, starts
afresh (logged), never stopping the stream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.attribution import (
    DETECTOR,
    AttributionMonitor,
    AttributionProfile,
    LevelCalibration,
    WindowEvent,
    calibrate_level,
    root_cause,
)
from detectors.errors import DetectorError
from stream.config import ColumnConfig, Config, ConfigError, ModelConfig
from stream.config.attribution import ATTRIBUTION_COLUMN, ATTRIBUTION_SHARE, budget_factor
from stream.engine.baselines import detection_settings, read_reference
from stream.formats.batch import ModelBatch, without_columns

log = logging.getLogger("streamdrift.attribution")

#: the series each model with attributions exports (stream.sinks.attribution_metrics;
#: root cause not counted), and the most root-cause series of a model
SERIES_PER_MODEL = 10
ROOT_CAUSE_SERIES = 3
#: features in a root cause
TOP = 3
#: outcomes of a decoded attribution value
OUTCOMES = ("ok", "missing", "invalid")
PREFIX = "__attr__"


def hidden(feature: str) -> str:
    return PREFIX + feature


def attribution_model(model: ModelConfig) -> ModelConfig:
    """``model`` reduced to its hidden attribution columns (to read them from the
    reference)."""
    assert model.attributions is not None
    cols = tuple(ColumnConfig(hidden(f), p, "numeric", "feature", ())
                 for f, p in model.attributions.paths)
    return dataclasses.replace(model, features=cols, predictions=(), segments=(),
                               multivariate=())


def decode_attributions(config: Config) -> Config:
    """``config`` with each model's attribution columns added as hidden features, so that
    the batch decoder extracts them (``config`` itself when no model has attributions)."""
    if not any(m.attributions for m in config.models):
        return config
    models = tuple(dataclasses.replace(m, features=m.features
                                       + attribution_model(m).features)
                   if m.attributions else m for m in config.models)
    return dataclasses.replace(config, models=models)


@dataclass(frozen=True)
class AttributionFigures:
    """What the metrics export of one model's attribution test (over its partitions:
    the lowest NDCG, active on any)."""

    ndcg: float
    level: float
    score: float
    active: bool
    alarms: int
    windows: int
    rows: int
    #: attribution values by outcome (ok, missing, invalid) this process decoded
    values: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"ndcg": round(self.ndcg, 6), "level": round(self.level, 6),
                "score": round(self.score, 6), "active": self.active, "alarms": self.alarms,
                "windows": self.windows, "rows": self.rows, "values": dict(self.values)}


class ModelAttribution:
    """The attribution test of one model: baseline, calibrated level, and one monitor per
    partition."""

    def __init__(self, model: ModelConfig, profile: AttributionProfile,
                 calibration: LevelCalibration) -> None:
        assert model.attributions is not None
        self.model = model.name
        self.window = model.attributions.window
        self.profile = profile
        self.calibration = calibration
        self.columns = [hidden(f) for f in profile.features]
        self.monitors: dict[Any, AttributionMonitor] = {}
        #: partition -> its restored monitor's counters [alarms, windows, rows] (counted
        #: by the process that checkpointed them, not by this one)
        self.bases: dict[Any, list[int]] = {}
        #: counters of monitors of partitions since dropped: [alarms, windows, rows]
        self.retired = [0, 0, 0]
        #: attribution values by outcome: bad ones are counted, never raised
        self.values: Counter[str] = Counter({k: 0 for k in OUTCOMES})

    def monitor(self, partition: Any) -> AttributionMonitor:
        mon = self.monitors.get(partition)
        if mon is None:
            mon = self.monitors[partition] = AttributionMonitor(
                self.profile, self.calibration.level, self.window, ATTRIBUTION_COLUMN)
        return mon

    def drop(self, partition: Any) -> None:
        mon = self.monitors.pop(partition, None)
        base = self.bases.pop(partition, [0, 0, 0])
        if mon is not None:
            self.retired = [r + n - b for r, n, b in zip(
                self.retired, _counters(mon), base, strict=True)]

    @property
    def key(self) -> str:
        """The key of the calibration a checkpointed monitor must match to be restored."""
        raw = repr((self.profile.features, self.profile.mean.round(12).tolist(),
                    self.profile.n, round(self.calibration.level, 12), self.window))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def export(self, partition: Any) -> dict[str, Any]:
        """``partition``'s monitor for its checkpoint (empty: none yet)."""
        mon = self.monitors.get(partition)
        return {} if mon is None else {"key": self.key, "state": mon.to_dict()}

    def restore(self, partition: Any, state: Any, book: Any, episodes: Any,
                now: float) -> None:
        """``partition``'s monitor from the model's exported ``state`` (its
        ``attribution`` entry, :meth:`export`'s output), when it has one of this
        calibration; its open episode goes back into ``book`` (``episodes``: column ->
        the saved Episode state).  Anything else: a fresh monitor, logged."""
        self.drop(partition)
        saved = state.get("attribution") if isinstance(state, Mapping) else None
        if not isinstance(saved, Mapping) or not saved:
            return
        if saved.get("key") != self.key:
            log.warning("attribution test of model %s: the checkpoint is of another "
                        "calibration; its window starts afresh", self.model)
            return
        try:
            mon = AttributionMonitor.from_dict(saved.get("state") or {}, self.profile,
                                               self.calibration.level, self.window,
                                               ATTRIBUTION_COLUMN)
        except DetectorError as exc:
            log.warning("attribution test of model %s: the checkpoint does not restore "
                        "(%s); its window starts afresh", self.model, exc)
            return
        self.monitors[partition] = mon
        self.bases[partition] = _counters(mon)
        if mon.active:
            book.restore(self.model, ATTRIBUTION_COLUMN, [DETECTOR], now,
                         episodes.get(ATTRIBUTION_COLUMN) if isinstance(episodes, Mapping)
                         else None)

    def update(self, partition: Any, mb: ModelBatch,
               ) -> tuple[list[WindowEvent], list[WindowEvent]]:
        """Feed the batch's attributions to the partition's monitor: (opened, closed)."""
        n = mb.n_events
        values = np.full((n, len(self.columns)), np.nan)
        for j, c in enumerate(self.columns):
            col = mb.columns.get(c)
            if col is not None:
                values[:, j] = np.asarray(col, dtype=np.float64)
        missing = sum(mb.missing_values.get(c, 0) for c in self.columns)
        invalid = sum(mb.invalid_values.get(c, 0) for c in self.columns)
        self.values.update(ok=n * len(self.columns) - missing - invalid, missing=missing,
                           invalid=invalid)
        events = self.monitor(partition).update(values)
        return [e for e in events if e.opened], [e for e in events if not e.opened]

    def strip(self, mb: ModelBatch) -> ModelBatch:
        """``mb`` without the hidden attribution columns."""
        return without_columns(mb, set(self.columns))

    def importance(self) -> dict[str, float]:
        return {f: float(v) for f, v in zip(self.profile.features, self.profile.mean,
                                            strict=True)}

    def figures(self) -> AttributionFigures:
        mons = [self.monitors[k] for k in sorted(self.monitors)]
        if not mons:
            return AttributionFigures(1.0, self.calibration.level, 0.0, False,
                                      self.retired[0], self.retired[1], self.retired[2],
                                      dict(self.values))
        low = min(mons, key=lambda m: m.ndcg)
        counted = [self.retired[i] + sum(_counters(m)[i] - self.bases.get(k, [0, 0, 0])[i]
                                         for k, m in self.monitors.items()) for i in range(3)]
        return AttributionFigures(
            low.ndcg, self.calibration.level, max(m.score for m in mons),
            any(m.active for m in mons), counted[0], counted[1], counted[2],
            dict(self.values))


def _counters(mon: AttributionMonitor) -> list[int]:
    return [mon.n_alarms, mon.n_windows, mon.n_rows]


def build_attribution(config: Config, model: ModelConfig,
                      false_alarm_events: float) -> ModelAttribution:
    """Read the reference's attributions of ``model`` and calibrate its test;
    ``false_alarm_events``: the model-wide monitor's budget before the attribution share
    is taken out of it."""
    assert model.attributions is not None and model.baseline.reference is not None
    where = f"models[{model.name}].attributions"
    data = read_reference(model.baseline.reference, attribution_model(model))
    feats = model.attributions.features
    rows = np.column_stack([np.asarray(data[hidden(f)], dtype=np.float64) for f in feats])
    try:
        profile = AttributionProfile.from_rows(feats, rows)
    except DetectorError as exc:
        raise ConfigError(f"{where}: {exc}; check the path(s) against the reference "
                          f"{model.baseline.reference.name}") from None
    target = false_alarm_events / ATTRIBUTION_SHARE
    seed = int.from_bytes(hashlib.sha256(f"attribution/{model.name}".encode()).digest()[:8],
                          "little") >> 1
    cal = calibrate_level(profile, model.attributions.window, target, seed=seed)
    log.info("attribution baseline", extra={
        "model": model.name, "reference_events": profile.n, "level": round(cal.level, 6),
        "method": cal.method, "window": model.attributions.window})
    return ModelAttribution(model, profile, cal)


def resolve_attributions(config: Config) -> dict[str, ModelAttribution]:
    """model -> its attribution test, for the models with attributions."""
    return {m.name: build_attribution(
        config, m, detection_settings(config.detection, m).false_alarm_events
        / budget_factor(m)) for m in config.models if m.attributions}


def rank_root_cause(model: ModelConfig, monitor: Any,
                    attribution: ModelAttribution | None) -> list[dict[str, Any]]:
    """The top features by contribution to a prediction's drift (see the module's
    docstring) from the model-wide ``monitor`` (a detectors.model.ModelMonitor)."""
    feats = [c.name for c in model.features if c.name in monitor.columns]
    scores = {f: max((float(d.score) for d in monitor.columns[f].detectors.values()),
                     default=0.0) for f in feats}
    importance: Mapping[str, float] | None = None
    if attribution is not None:
        importance = attribution.importance()
    elif model.importances:
        importance = model.importances
    return root_cause(scores, importance, TOP)


class RootCauses:
    """The root causes of the prediction episodes a pipeline opens (model-wide only)."""

    def __init__(self, config: Config, attribution: Mapping[str, ModelAttribution]) -> None:
        self.models = {m.name: m for m in config.models}
        self.predictions = {(m.name, c.name) for m in config.models for c in m.predictions}
        self.attribution = attribution
        #: model -> the root cause of its latest prediction episode opened
        self.latest: dict[str, list[dict[str, Any]]] = {}

    def _is_prediction(self, ep: Any) -> bool:
        return not ep.segment and (ep.model, ep.feature) in self.predictions

    def on_episodes(self, episodes: Sequence[tuple[str, Any]],
                    monitors: Mapping[str, Any]) -> None:
        """Give each prediction episode opened in ``episodes`` (("open" | "close",
        Episode)) its root cause, from the partition's ``monitors`` (model -> monitor)."""
        for kind, ep in episodes:
            if kind == "open" and self._is_prediction(ep):
                ep.root_cause = rank_root_cause(self.models[ep.model], monitors[ep.model],
                                                self.attribution.get(ep.model))
                self.latest[ep.model] = ep.root_cause

    def open(self, books: Iterable[Any]) -> dict[str, list[dict[str, Any]]]:
        """model -> the root cause of its latest prediction episode, while one is open in
        any of ``books`` (EpisodeBook of each partition)."""
        models = {ep.model for book in books for ep in book.open.values()
                  if self._is_prediction(ep)}
        return {m: rc for m, rc in self.latest.items() if m in models and rc}


def importance_source(model: ModelConfig) -> str:
    """Where the root cause's importances of ``model`` come from."""
    return "attributions" if model.attributions else \
        "importances" if model.importances else "none"


def describe_attribution(model: ModelConfig) -> tuple[str, int]:
    """``check-config``'s line about ``model``'s attributions and root cause, and the most
    series they export (7 with attributions, plus 3 root-cause series while a prediction
    drifts)."""
    rc = ROOT_CAUSE_SERIES if model.predictions else 0
    if model.attributions is not None:
        a = model.attributions
        return (f"  attributions of {len(a.paths)} features, window {a.window}: NDCG test with "
                f"{ATTRIBUTION_SHARE:.0%} of the model's false-alarm budget; root cause "
                f"importance: attributions", SERIES_PER_MODEL + rc)
    return (f"  root cause importance: {importance_source(model)} (see docs/attribution.md)",
            rc)


def root_cause_text(causes: Sequence[Mapping[str, Any]]) -> str:
    """``income (4.2), age (1.1)``: a root cause for a log line or an annotation."""
    return ", ".join(f"{c['feature']} ({c['contribution']:.3g})" for c in causes)
