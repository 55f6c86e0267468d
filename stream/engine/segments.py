"""Segments: the monitors of a model's columns run per slice of its traffic.

A model's ``segments`` (see :mod:`stream.config.segments`) each name a categorical
event field.  At start-up the reference data is split by that field: its ``top_k`` most
frequent values with at least ``min_reference_events`` reference events each get a
baseline of their own, built and calibrated from their slice of the reference; every
other value (and a missing one) is pooled as ``other``, which gets a baseline from the
rest of the reference when that rest holds ``min_reference_events`` events too.
**Fallback rule:** a value with fewer reference events is pooled into ``other``; when
``other`` itself has fewer, it has no segment monitor, and its events are watched by the
model-wide monitor only.  The baselines are cached in ``.streamdrift-cache`` beside the
configuration, like the model's.

**Budget.** The model's false-alarm knob (``false_alarm_events``, expected events
between false alarms) is split in two: the model-wide monitor gets half of the rate
(it is calibrated to ``2 x false_alarm_events``) and the segments the other half, in
equal shares per segment field; each value's monitor of a field with ``F`` fields is
calibrated to ``2 F x false_alarm_events`` of *its own* events.  A value carrying a
share ``p`` of the traffic then raises ``p / (2 F T)`` false alarms per model event, and
the values of a field together ``1 / (2 F T)`` whatever the traffic mix, so the model's
rate stays ``1 / T``.

**Hot path.** Per batch and segment field, the values are mapped to codes with one
C-level ``map(dict.get, ...)`` and grouped with one stable ``argsort`` and a
``bincount``; each value's monitors then get their rows as numpy slices of the batch's
columns.  No per-event Python loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from detectors.column import Alarm
from detectors.errors import DetectorError
from detectors.model import ColumnSpec, DetectionSettings, ModelBaseline, ModelMonitor
from detectors.quality import count_incomplete
from stream.config import Config, ConfigError, ModelConfig
from stream.config.bias import bias_budget
from stream.config.estimate import estimate_budget
from stream.config.labels import concept_budget
from stream.config.segments import SegmentConfig, segment_budget
from stream.config.vectors import vector_budget
from stream.engine.baselines import column_specs, detection_settings, read_reference
from stream.engine.hidden import column_at, with_hidden
from stream.formats.batch import ModelBatch, without_columns

log = logging.getLogger("streamdrift.segments")

#: the label of the pooled values
OTHER = "other"
#: cache file format
CACHE_VERSION = 1


def hidden_name(seg: SegmentConfig) -> str:
    """The decoded column holding ``seg``'s values when its field is not a model column."""
    return f"__segment__{seg.name}"


def value_column(model: ModelConfig, seg: SegmentConfig) -> str:
    """The decoded column of ``seg``'s values: the model's column at its path, or hidden."""
    return column_at(model, seg.path, hidden_name(seg))


def decode_model(model: ModelConfig) -> ModelConfig:
    """``model`` with one hidden categorical column per segment field that is not one of
    its columns, so that the batch decoder extracts the field with the columns."""
    return with_hidden(model, ((hidden_name(seg), seg.path) for seg in model.segments))


def decode_config(config: Config) -> Config:
    """The configuration the batch decoder reads (``config`` itself without segments)."""
    if not any(m.segments for m in config.models):
        return config
    return dataclasses.replace(config, models=tuple(decode_model(m) for m in config.models))


def segment_settings(config: Config, model: ModelConfig) -> DetectionSettings:
    """The settings of ``model``'s segment monitors: the budget of one value's monitor."""
    base = detection_settings(config.detection)
    _, factor = segment_budget(len(model.segments))
    factor *= vector_budget(len(model.vectors))  # vector columns' unit shares (#19)
    factor *= bias_budget(model)[0]  # bias drift's share (stream.config.bias)
    factor *= concept_budget(model)[0]  # the concept detector's share (stream.config.labels)
    factor *= estimate_budget(model)[0]  # the drop alarm's (stream.config.estimate)
    return dataclasses.replace(base, false_alarm_events=base.false_alarm_events * factor)


@dataclass
class SegmentPlan:
    """One segment field of a model: its monitored values and their baselines."""

    seg: SegmentConfig
    #: the decoded column holding the field's values
    column: str
    #: the values with a baseline of their own, most frequent first
    values: list[str]
    #: the label of the pooled rest (None: not monitored, too little reference data)
    pool: str | None
    #: label -> share of the reference's events
    shares: dict[str, float]
    #: label -> baseline of its slice
    baselines: dict[str, ModelBaseline]
    specs: list[ColumnSpec]
    settings: DetectionSettings
    #: value or label -> why it has no monitor of its own
    skipped: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = [v for v in self.values if v in self.baselines]
        if self.pool is not None and self.pool in self.baselines:
            self.labels.append(self.pool)
        else:
            self.pool = None
        #: value -> code; code len(labels) is "not monitored"
        self.lookup: dict[Any, int] = {v: i for i, v in enumerate(self.labels)
                                       if v != self.pool}
        self.other_code = self.labels.index(self.pool) if self.pool is not None \
            else len(self.labels)
        self.ids = {label: self.baselines[label].id for label in self.labels}

    def key(self, label: str) -> str:
        """The ``segment`` label value: ``name=value``."""
        return f"{self.seg.name}={label}"

    def group(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row order grouping the rows by code, the start of each code's rows in it; the
        rows of code ``c`` are ``order[starts[c]:starts[c + 1]]``, ascending)."""
        n = len(values)
        codes = np.fromiter(map(self.lookup.get, values, repeat(self.other_code, n)),
                            dtype=np.intp, count=n)
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=len(self.labels) + 1)
        starts = np.zeros(len(counts) + 1, dtype=np.intp)
        np.cumsum(counts, out=starts[1:])
        return order, starts

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values, "pool": self.pool, "shares": self.shares,
                "skipped": self.skipped,
                "baselines": {k: b.to_dict() for k, b in self.baselines.items()}}


def slice_plan(model: ModelConfig, seg: SegmentConfig, data: Mapping[str, np.ndarray],
                settings: DetectionSettings, progress: Callable[[str, int, int], None] | None,
                ) -> SegmentPlan:
    column = value_column(model, seg)
    vals = data[column]
    n = int(len(vals))
    counts = Counter(v for v in vals.tolist() if v is not None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[: seg.top_k]
    skipped: dict[str, str] = {}
    kept = []
    for v, k in ranked:
        if k >= seg.min_reference_events:
            kept.append(str(v))
        else:
            skipped[str(v)] = (f"{k} reference events < min_reference_events "
                               f"{seg.min_reference_events}: pooled into {OTHER}")
    pool = OTHER if OTHER not in kept else f"__{OTHER}__"
    keep_set = set(kept)
    specs = [s for s in column_specs(model) if not seg.columns or s.name in seg.columns]
    names = [s.name for s in specs]
    is_kept = np.fromiter((v in keep_set for v in vals.tolist()), dtype=bool, count=n)
    slices = {v: np.flatnonzero(vals == v) for v in kept}
    rest = np.flatnonzero(~is_kept)
    if rest.size >= seg.min_reference_events:
        slices[pool] = rest
    else:
        skipped[pool] = (f"{rest.size} reference events < min_reference_events "
                         f"{seg.min_reference_events}: watched by the model-wide monitor only")
    baselines: dict[str, ModelBaseline] = {}
    for label, rows in slices.items():
        sub = {c: np.asarray(data[c])[rows] for c in names}
        if progress:
            progress(f"segment {seg.name}={label}", len(baselines), len(slices))
        try:
            base = ModelBaseline.build(model.name, sub, specs, settings)
        except DetectorError as exc:
            skipped[label] = f"no baseline: {exc}"
            continue
        _, incomplete = count_incomplete(sub, names)
        base.meta.update({"reference_events": int(rows.size), "incomplete_events": incomplete,
                          "segment": f"{seg.name}={label}"})
        baselines[label] = base
    shares = {label: float(rows.size) / max(n, 1) for label, rows in slices.items()}
    return SegmentPlan(seg, column, kept, pool, shares, baselines, specs, settings, skipped)


def _cache_file(config: Config, model: ModelConfig, ref: Path,
                settings: DetectionSettings) -> Path:
    st = ref.stat()
    specs = column_specs(model)
    body = json.dumps([str(ref.resolve()), st.st_size, st.st_mtime_ns,
                       [dataclasses.asdict(s) for s in model.segments],
                       [[s.name, s.type, list(s.detectors)] for s in specs],
                       dataclasses.asdict(settings), CACHE_VERSION], default=str)
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    folder = (config.path.parent if config.path else Path.cwd()) / ".streamdrift-cache"
    return folder / f"{model.name}-segments-{digest}.json"


def _from_cache(path: Path, model: ModelConfig, settings: DetectionSettings,
                ) -> list[SegmentPlan] | None:
    try:
        body = json.loads(path.read_text())
        plans = []
        for seg in model.segments:
            d = body["segments"][seg.name]
            specs = [s for s in column_specs(model) if not seg.columns or s.name in seg.columns]
            bases = {k: ModelBaseline.from_dict(v) for k, v in d["baselines"].items()}
            if any(b.needs_calibration(specs, settings) for b in bases.values()):
                return None
            plans.append(SegmentPlan(seg, value_column(model, seg), list(d["values"]),
                                     d["pool"], dict(d["shares"]), bases, specs, settings,
                                     dict(d["skipped"])))
        return plans
    except (OSError, ValueError, KeyError, TypeError, DetectorError) as exc:
        log.warning("ignoring the cached segment baselines %s: %s", path, exc)
        return None


def build_plans(config: Config, model: ModelConfig,
                progress: Callable[[str, int, int], None] | None = None) -> list[SegmentPlan]:
    """The segment plans of ``model``: from the cache, or built from its reference."""
    if not model.segments:
        return []
    index = config.models.index(model)
    ref = model.baseline.reference
    if ref is None:  # the configuration's check makes this unreachable from a file
        raise ConfigError(f"models[{index}].segments: segments need baseline.reference",
                          source=config.path)
    ref = Path(ref)
    if model.baseline.reference_format != "jsonl":
        for j, seg in enumerate(model.segments):
            if value_column(model, seg) == hidden_name(seg):
                raise ConfigError(
                    f"models[{index}].segments[{j}].path: {'.'.join(seg.path)} is not a column "
                    f"of the model, and a {ref.suffix} reference holds only the model's "
                    f"columns; use a JSONL reference of events, or a categorical column",
                    source=config.path)
    settings = segment_settings(config, model)
    cache = _cache_file(config, model, ref, settings)
    if cache.is_file():
        plans = _from_cache(cache, model, settings)
        if plans is not None:
            log.info("segment baselines of %s loaded from cache %s", model.name, cache)
            return plans
    log.info("building the segment baselines of model %s from %s (one calibration per "
             "segment value; cached for the next start)", model.name, ref)
    started = time.perf_counter()
    data = read_reference(ref, decode_model(model))
    plans = [slice_plan(model, seg, data, settings, progress) for seg in model.segments]
    log.info("segment baselines of model %s built in %.1f s: %s", model.name,
             time.perf_counter() - started,
             "; ".join(f"{p.seg.name}: {', '.join(p.labels) or 'no value'}" for p in plans))
    for plan in plans:
        for what, why in plan.skipped.items():
            log.info("segment %s=%s of model %s: %s", plan.seg.name, what, model.name, why)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": CACHE_VERSION,
                                   "segments": {p.seg.name: p.to_dict() for p in plans}}))
        os.replace(tmp, cache)
    except OSError as exc:
        log.warning("cannot cache the segment baselines: %s", exc)
    return plans


# --------------------------------------------------------------------------
# live state
# --------------------------------------------------------------------------
#: (segment name, label) -> the monitor of that slice
SegmentMonitors = dict[tuple[str, str], ModelMonitor]


@dataclass(frozen=True)
class SegmentAlarm:
    """An alarm (or close) of a segment monitor; ``alarm.position`` is in the model batch."""

    segment: str  # "name=label"
    alarm: Alarm


class ModelSegments:
    """The segment plans of one model and what runs them on a batch."""

    def __init__(self, model: ModelConfig, plans: list[SegmentPlan]) -> None:
        self.model = model
        self.plans = plans
        self.hidden = [hidden_name(s) for s in model.segments
                       if value_column(model, s) == hidden_name(s)]
        self.roles = {c.name: c.role for c in model.columns}

    def new_monitors(self) -> SegmentMonitors:
        return {(p.seg.name, label): p.baselines[label].monitor(p.specs, p.settings)
                for p in self.plans for label in p.labels}

    def strip(self, mb: ModelBatch) -> ModelBatch:
        """``mb`` without the hidden segment columns (what the model-wide monitor sees)."""
        return without_columns(mb, self.hidden)

    def update(self, monitors: SegmentMonitors, mb: ModelBatch, events: Counter[str],
               ) -> tuple[list[SegmentAlarm], list[SegmentAlarm]]:
        """Feed each segment value's rows of ``mb`` to its monitors; (alarms, closes) with
        positions in ``mb``.  ``events`` counts the rows per segment label."""
        found: list[SegmentAlarm] = []
        closes: list[SegmentAlarm] = []
        for plan in self.plans:
            order, starts = plan.group(mb.columns[plan.column])
            names = [s.name for s in plan.specs]
            for code, label in enumerate(plan.labels):
                lo, hi = int(starts[code]), int(starts[code + 1])
                if lo == hi:
                    continue
                rows = order[lo:hi]
                mon = monitors[(plan.seg.name, label)]
                key = plan.key(label)
                events[key] += hi - lo
                alarms = mon.update({c: mb.columns[c][rows] for c in names},
                                    {c: mb.invalid_mask[c][rows] for c in names
                                     if c in mb.invalid_mask},
                                    {c: mb.missing_mask[c][rows] for c in names
                                     if c in mb.missing_mask} if mb.missing_mask else None)
                found.extend(SegmentAlarm(key, a._replace(position=int(rows[a.position])))
                             for a in alarms)
                closes.extend(SegmentAlarm(key, a._replace(position=int(rows[a.position])))
                              for a in mon.closes)
        return found, closes

    # -- state --------------------------------------------------------------
    def export(self, monitors: SegmentMonitors) -> dict[str, Any]:
        """segment name -> label -> {baseline_id, state}."""
        out: dict[str, Any] = {}
        for plan in self.plans:
            for label in plan.labels:
                out.setdefault(plan.seg.name, {})[label] = {
                    "baseline_id": plan.ids[label],
                    "state": monitors[(plan.seg.name, label)].to_dict()}
        return out

    def restore(self, saved: Any) -> tuple[SegmentMonitors, int]:
        """Monitors from :meth:`export`'s output (fresh ones where it has none, or one of
        another baseline, or one that does not restore); and how many were restored."""
        mons = self.new_monitors()
        restored = 0
        if not isinstance(saved, Mapping):
            return mons, 0
        for plan in self.plans:
            per = saved.get(plan.seg.name)
            if not isinstance(per, Mapping):
                continue
            for label in plan.labels:
                item = per.get(label)
                if not isinstance(item, Mapping) or item.get("baseline_id") != plan.ids[label]:
                    continue
                try:
                    mons[(plan.seg.name, label)] = ModelMonitor.from_dict(
                        item["state"], plan.baselines[label])
                    restored += 1
                except Exception as exc:  # noqa: BLE001 - a bad checkpoint must not stop it
                    log.warning("segment %s=%s of model %s: the checkpoint does not restore "
                                "(%s); fresh state", plan.seg.name, label, self.model.name,
                                exc)
        return mons, restored

    def series(self) -> int:
        """Series the segment metrics export for this model."""
        return sum(len(p.labels) * (1 + 2 * len(p.specs)) for p in self.plans)


def resolve_segments(config: Config, progress: Callable[[str, int, int], None] | None = None,
                     ) -> dict[str, ModelSegments]:
    """model name -> its segments, for the models that have some."""
    return {m.name: ModelSegments(m, build_plans(config, m, progress))
            for m in config.models if m.segments}


def segment_figures(segments: Mapping[str, ModelSegments],
                    monitors: Sequence[Mapping[str, SegmentMonitors]],
                    events: Mapping[tuple[str, str], int]) -> dict[str, Any]:
    """model -> segment key -> {"events", "columns": col -> (role, score, active)} over the
    partitions' monitors (the highest score, active on any)."""
    out: dict[str, Any] = {}
    for name, ms in segments.items():
        per: dict[str, Any] = {}
        for plan in ms.plans:
            for label in plan.labels:
                key = plan.key(label)
                cols: dict[str, tuple[str, float, bool]] = {}
                for st in monitors:
                    mon = st.get(name, {}).get((plan.seg.name, label))
                    if mon is None:
                        continue
                    for col, cm in mon.columns.items():
                        score = max((float(d.score) for d in cm.detectors.values()),
                                    default=0.0)
                        active = any(d.drift_detected for d in cm.detectors.values())
                        role, s0, a0 = cols.get(col, (ms.roles.get(col, "feature"), 0.0, False))
                        cols[col] = (role, max(s0, score if np.isfinite(score) else 0.0),
                                     a0 or active)
                for s in plan.specs:
                    cols.setdefault(s.name, (ms.roles.get(s.name, "feature"), 0.0, False))
                per[key] = {"events": int(events.get((name, key), 0)), "columns": cols}
        out[name] = per
    return out


def series_bound(model: ModelConfig) -> int:
    """The most series the segment metrics of ``model`` can export: per segment field,
    ``top_k`` values and ``other``, each ``1 + 2 x`` its columns."""
    n = len(model.columns)
    return sum((s.top_k + 1) * (1 + 2 * (len(s.columns) or n)) for s in model.segments)


def describe(model: ModelConfig) -> list[str]:
    """Lines for ``check-config``: each segment field of ``model``."""
    out = []
    for s in model.segments:
        cols = ", ".join(s.columns) if s.columns else "all columns"
        out.append(f"  segment    {s.name:24s} path {'.'.join(s.path)}: top {s.top_k} values "
                   f"with >= {s.min_reference_events} reference events, the rest as {OTHER}; "
                   f"{cols}")
    return out
