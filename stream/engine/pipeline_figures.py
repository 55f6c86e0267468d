"""The pipeline's figures: the snapshot the metrics collector exports and the replay
report's per-model summaries (functions of a :class:`~stream.engine.pipeline.Pipeline`,
kept apart so that the pipeline module holds the processing)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from stream.engine import bias as facets
from stream.engine.figures import (
    ColumnFigures,
    ModelFigures,
    PartitionFigures,
    PartitionKey,
    PipelineSnapshot,
    QualityFigures,
    aggregate_column,
)
from stream.engine.labelbook import label_report
from stream.engine.multivariate import group_counters, group_figures
from stream.engine.segments import segment_figures
from stream.engine.vectors import vectors_summary

if TYPE_CHECKING:
    from detectors.model import ModelMonitor
    from stream.engine.pipeline import Pipeline


def counters(mon: ModelMonitor) -> dict[str, list[int]]:
    """column -> [values, missing, invalid, alarms of each detector (in order)]; and
    multivariate group -> [complete rows, episodes]."""
    return {**{c: [mc.n_values, mc.n_missing, mc.n_invalid,
                   *(int(d.n_alarms) for d in mc.detectors.values())]
               for c, mc in mon.columns.items()}, **group_counters(mon)}


def columns(p: Pipeline, name: str) -> dict[str, ColumnFigures]:
    """Per column: the summary over partitions, with this process's counters."""
    states = [p.partitions[k] for k in sorted(p.partitions)]
    monitors = [st.monitors[name] for st in states] or [p.fresh[name]]
    counted: dict[str, list[int]] = {c: list(v) for c, v in
                                     p.retired.get(name, {}).items()}
    for st in states:
        base = st.base.get(name, {})
        for col, now in counters(st.monitors[name]).items():
            was = base.get(col, [0] * len(now))
            acc = counted.setdefault(col, [0] * len(now))
            for i, (a, b) in enumerate(zip(now, was, strict=True)):
                acc[i] += a - b
    out = {}
    for col in monitors[0].columns:
        s = aggregate_column([m.columns[col].summary() for m in monitors])
        c = counted.get(col)
        if c is not None:
            s["values"], s["missing"], s["invalid"] = c[0], c[1], c[2]
            for kind, n in zip(s["detectors"], c[3:], strict=True):
                s["detectors"][kind]["alarms"] = n
        else:
            s["values"] = s["missing"] = s["invalid"] = 0
            for d in s["detectors"].values():
                d["alarms"] = 0
        out[col] = ColumnFigures.from_summary(s)
    return out

def partition_figures(p: Pipeline) -> dict[PartitionKey, PartitionFigures]:
    """Per partition this process has had: messages consumed and events processed by
    this process (over all the times it had the partition), whether it has the
    partition's state now (``live``) and then each model's event count in that state
    (restored counts included)."""
    out = {}
    for key in sorted({*p.partitions, *p.retired_partitions}):
        consumed, processed = p.retired_partitions.get(key, (0, Counter()))
        st = p.partitions.get(key)
        if st is not None:
            consumed, processed = consumed + st.consumed, processed + st.processed
        out[key] = PartitionFigures(
            consumed=consumed, processed={name: processed[name] for name in p.fresh},
            live=st is not None,
            events={} if st is None else
            {name: mon.n_events for name, mon in st.monitors.items()})
    return out

def quality(p: Pipeline, name: str) -> QualityFigures:
    """The model-level data-quality figures over the partitions (the fresh monitor's
    when none has state): active on any, the highest window rate."""
    monitors = [st.monitors[name] for st in p.partitions.values()] or [p.fresh[name]]
    summaries = [m.quality.summary() for m in monitors if m.quality is not None]
    if not summaries:
        return QualityFigures(incomplete=p.incomplete[name])
    top = max(summaries, key=lambda q: q["incomplete_ratio"])
    return QualityFigures(incomplete=p.incomplete[name],
                          incomplete_ratio=float(top["incomplete_ratio"]),
                          threshold=float(top["threshold"] or 0.0),
                          active=any(q["active"] for q in summaries))

def groups(p: Pipeline, name: str) -> dict[str, Any]:
    """The model's multivariate groups' figures over the partitions."""
    if not p.groups[name]:
        return {}
    monitors = [p.partitions[k].monitors[name] for k in sorted(p.partitions)] \
        or [p.fresh[name]]
    counted = {g: list(v) for g, v in p.retired.get(name, {}).items()}
    for st in p.partitions.values():
        base = st.base.get(name, {})
        for g, now in group_counters(st.monitors[name]).items():
            was = base.get(g, [0] * len(now))
            acc = counted.setdefault(g, [0] * len(now))
            for i, (a, b) in enumerate(zip(now, was, strict=True)):
                acc[i] += a - b
    return group_figures(monitors, counted)

def snapshot(p: Pipeline) -> PipelineSnapshot:
    """A consistent copy of every figure the metrics collector exports."""
    with p.lock:
        models = {
            name: ModelFigures(
                version=p.versions[name],
                baseline_id=p.baseline_ids[name],
                processed=p.processed[name],
                invalid_timestamps=p.invalid_timestamps[name],
                last_event_ts=p.last_event_ts.get(name),
                event_lag=p.event_lag.get(name),
                columns=columns(p, name),
                quality=quality(p, name),
                groups=groups(p, name),
            )
            for name in p.fresh
        }
        return PipelineSnapshot(
            consumed=p.consumed,
            invalid=dict(p.invalid),
            models=models,
            batch_counts=list(p.batch_counts),
            batch_sum=p.batch_sum,
            last_batch_ts=p.last_batch_ts,
            partitions=partition_figures(p),
            skew={} if p.skew is None else p.skew.figures(),
            segments=segment_figures_of(p),
            vectors={name: mv.figures() for name, mv in p.vectors.items()},
            bias=facets.bias_figures(p.bias, p.bias_states, p.bias_unscored),
            attribution={m: at.figures() for m, at in p.attribution.items()},
            root_causes=p.root_causes.open(st.book for st in p.partitions.values()),
        )

def segment_figures_of(p: Pipeline) -> dict[str, Any]:
    states = [p.partitions[k].segments for k in sorted(p.partitions)]
    return segment_figures(p.segments, states, {
        (name, key): n for name, c in p.segment_events.items() for key, n in c.items()})

def report_models(p: Pipeline) -> dict[str, Any]:
    """Per-model, per-column final summaries for the replay report."""
    with p.lock:
        return {name: {"events": p.processed[name],
                       "invalid_timestamps": p.invalid_timestamps[name],
                       "baseline_id": p.baseline_ids[name],
                       "data_quality": quality(p, name).to_dict(),
                **({"segments": {k: {"events": v["events"], "columns": {
                    c: {"score": round(s, 6), "active": a}
                    for c, (_, s, a) in v["columns"].items()}}
                    for k, v in segment_figures_of(p)[name].items()}}
                   if name in p.segments else {}),
                       "features": {col: figures.to_dict() for col, figures
                                    in columns(p, name).items()},
                       **label_report(p.labels, name),
                       **({"bias": facets.bias_figures(p.bias, p.bias_states,
                                                       p.bias_unscored)[name]}
                          if name in p.bias else {}),
                       **({"multivariate": {g: f.to_dict() for g, f in
                                            groups(p, name).items()}}
                          if p.groups[name] else {}),
                       **({"vectors": vectors_summary({name: p.vectors[name]})[name]}
                          if name in p.vectors else {}),
                       **({"attribution": p.attribution[name].figures().to_dict()}
                          if name in p.attribution else {})}
                for name in p.fresh}
