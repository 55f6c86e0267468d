"""The figures streamdrift exports, as typed snapshots.

:func:`aggregate_column` folds one column's summaries over partitions;
:class:`PipelineSnapshot` (the pipeline's figures) and :class:`HealthFigures` (the
Kafka runner's, from its :class:`RunnerHealth`) are what the metrics collector and the
replay report read.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream.engine.skew import SkewFigures

#: detector figures that aggregate as the maximum over partitions
_DETECTOR_MAX = ("statistic", "score")


def _score(d: Mapping[str, Any]) -> float:
    s = d.get("score")
    return float(s) if isinstance(s, int | float) and math.isfinite(s) else -math.inf


def aggregate_column(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One column's :meth:`ColumnMonitor.summary` over several partitions.

    * statistic, score: the maximum over partitions; threshold and p-value come
      from the partition with the highest score;
    * drift (column and detector): active on any partition;
    * alarms, window values, values / missing / invalid totals: the sum;
    * ratios (missing, invalid, out of range, unseen) and distances: those of
      the partition with the most values (the first one on a tie).

    One summary is returned unchanged (a copy), so a single partition (and
    ``replay``) shows exactly what its monitor shows.

    >>> a = {"role": "feature", "type": "numeric", "values": 10, "missing": 1, "invalid": 0,
    ...      "missing_ratio": 0.1, "distances": {"psi": 0.5}, "drift": False,
    ...      "detectors": {"ks": {"statistic": 0.2, "threshold": 1.0, "p_value": 0.3,
    ...                           "score": 0.2, "drift": False, "alarms": 1,
    ...                           "window_values": 10}}}
    >>> b = {**a, "values": 30, "missing_ratio": 0.0, "distances": {"psi": 0.1}, "drift": True,
    ...      "detectors": {"ks": {**a["detectors"]["ks"], "statistic": 1.5, "score": 1.5,
    ...                           "p_value": 0.01, "drift": True, "alarms": 2}}}
    >>> agg = aggregate_column([a, b])
    >>> agg["values"], agg["missing"], agg["missing_ratio"], agg["distances"], agg["drift"]
    (40, 2, 0.0, {'psi': 0.1}, True)
    >>> ks = agg["detectors"]["ks"]
    >>> ks["statistic"], ks["p_value"], ks["alarms"], ks["window_values"], ks["drift"]
    (1.5, 0.01, 3, 20, True)
    """
    if not summaries:
        raise ValueError("aggregate_column needs at least one summary")
    if len(summaries) == 1:
        one = summaries[0]
        return {**one, "distances": dict(one["distances"]),
                "detectors": {k: dict(d) for k, d in one["detectors"].items()}}
    first = summaries[0]
    most = max(summaries, key=lambda s: s["values"])  # max() keeps the first on a tie
    out: dict[str, Any] = {}
    for key, value in first.items():
        if key in ("values", "missing", "invalid"):
            out[key] = sum(int(s[key]) for s in summaries)
        elif key == "drift":
            out[key] = any(bool(s["drift"]) for s in summaries)
        elif key == "distances":
            out[key] = dict(most["distances"])
        elif key.endswith("_ratio"):
            out[key] = most[key]
        elif key == "detectors":
            continue
        else:
            out[key] = value
    dets: dict[str, Any] = {}
    for kind in first["detectors"]:
        per = [s["detectors"][kind] for s in summaries if kind in s["detectors"]]
        best = max(per, key=_score)
        d = dict(best)
        for key in _DETECTOR_MAX:
            finite = [float(p[key]) for p in per
                      if isinstance(p.get(key), int | float) and math.isfinite(p[key])]
            if finite:
                d[key] = max(finite)
        d["drift"] = any(bool(p["drift"]) for p in per)
        d["alarms"] = sum(int(p["alarms"]) for p in per)
        d["window_values"] = sum(int(p.get("window_values", 0)) for p in per)
        dets[kind] = d
    out["detectors"] = dets
    return out


# --------------------------------------------------------------------------
# the typed snapshot
# --------------------------------------------------------------------------
#: a partition: (topic, partition number)
PartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class DetectorFigures:
    """One detector of one column, aggregated over partitions."""

    statistic: float
    threshold: float
    p_value: float | None
    score: float
    drift: bool
    alarms: int
    window_values: int
    #: CUSUMs: +1 / -1 for the side of the larger sum (None for other detectors)
    direction: int | None = None

    @classmethod
    def from_summary(cls, d: Mapping[str, Any]) -> DetectorFigures:
        return cls(statistic=d["statistic"], threshold=d["threshold"], p_value=d["p_value"],
                   score=d["score"], drift=bool(d["drift"]), alarms=int(d["alarms"]),
                   window_values=int(d.get("window_values", 0)), direction=d.get("direction"))

    def to_dict(self) -> dict[str, Any]:
        """The detector's summary as the replay report writes it."""
        out: dict[str, Any] = {"statistic": self.statistic, "threshold": self.threshold,
                               "p_value": self.p_value, "score": self.score,
                               "drift": self.drift, "alarms": self.alarms}
        if self.direction is not None:
            out["direction"] = self.direction
        out["window_values"] = self.window_values
        return out


@dataclass(frozen=True, slots=True)
class ColumnFigures:
    """One column (feature or prediction), aggregated over partitions."""

    role: str
    type: str
    values: int
    missing: int
    invalid: int
    #: missing_ratio, invalid_ratio and out_of_range_ratio (numeric) or unseen_ratio
    ratios: Mapping[str, float]
    distances: Mapping[str, float]
    drift: bool
    detectors: Mapping[str, DetectorFigures]

    @classmethod
    def from_summary(cls, s: Mapping[str, Any]) -> ColumnFigures:
        """From a :meth:`ColumnMonitor.summary` (or :func:`aggregate_column`) dict."""
        return cls(role=s["role"], type=s["type"], values=int(s["values"]),
                   missing=int(s["missing"]), invalid=int(s["invalid"]),
                   ratios={k: v for k, v in s.items() if k.endswith("_ratio")},
                   distances=dict(s["distances"]), drift=bool(s["drift"]),
                   detectors={k: DetectorFigures.from_summary(d)
                              for k, d in s["detectors"].items()})

    def to_dict(self) -> dict[str, Any]:
        """The column's summary as the replay report writes it."""
        return {"role": self.role, "type": self.type, "values": self.values,
                "missing": self.missing, "invalid": self.invalid, **self.ratios,
                "distances": dict(self.distances), "drift": self.drift,
                "detectors": {k: d.to_dict() for k, d in self.detectors.items()}}


@dataclass(frozen=True, slots=True)
class QualityFigures:
    """A model's data quality: events lacking most of its columns (see detectors.quality)."""

    #: incomplete events processed by this process
    incomplete: int = 0
    #: share of incomplete events in the recent window (the highest over partitions)
    incomplete_ratio: float = 0.0
    #: the model-level test's threshold of that share
    threshold: float = 0.0
    #: the model-level test is in the alarm state (on any partition)
    active: bool = False

    def to_dict(self) -> dict[str, Any]:
        """As the replay report writes it."""
        return {"incomplete_events": self.incomplete, "incomplete_ratio": self.incomplete_ratio,
                "threshold": self.threshold, "active": self.active}


@dataclass(frozen=True, slots=True)
class ModelFigures:
    version: str
    baseline_id: str
    processed: int
    last_event_ts: float | None
    event_lag: float | None
    columns: Mapping[str, ColumnFigures]
    #: processed events whose timestamp is present but not a time (``source.timestamp``)
    invalid_timestamps: int = 0
    quality: QualityFigures = field(default_factory=QualityFigures)
    #: multivariate group -> its figures (stream.engine.multivariate.GroupFigures)
    groups: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartitionFigures:
    """What this process did with one partition, over all the times it had it."""

    consumed: int
    #: model -> events processed by this process
    processed: Mapping[str, int]
    #: whether this process holds the partition's state now
    live: bool
    #: model -> events in the live state (restored counts included); empty when not live
    events: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class HealthFigures:
    """A consistent copy of :class:`RunnerHealth`."""

    source_up: int = 1
    consumer_lag: Mapping[PartitionKey, int] = field(default_factory=dict)
    dead_letter: Mapping[str, int] = field(default_factory=dict)
    checkpoints: Mapping[str, int] = field(default_factory=dict)
    last_checkpoint_ts: float | None = None
    restores: Mapping[str, int] = field(default_factory=dict)
    #: partitions the consumer stopped reading, by reason (``unsupported_codec``)
    source_errors: Mapping[str, int] = field(default_factory=dict)
    #: assigned partitions that cannot be read -> why (their lag grows)
    blocked: Mapping[PartitionKey, str] = field(default_factory=dict)
    #: drift-events records by result (``ok``, ``failed``, ``duplicate``)
    drift_events: Mapping[str, int] = field(default_factory=dict)
    #: records written to the repartition topic by result (``ok``, ``failed``)
    repartition: Mapping[str, int] = field(default_factory=dict)
    #: consumers closed and built again, by reason (``group_join_stalled``)
    consumer_restarts: Mapping[str, int] = field(default_factory=dict)
    #: ``writers: several``: 1 while this process's first-stage writer has no view of the
    #: monitors' merges (stream/runtime/writers.py Writer.check_view); None: no such writer
    writer_unaligned: int | None = None


def merge_health(first: HealthFigures, second: HealthFigures) -> HealthFigures:
    """The figures of the two stages of a repartitioned run as one process's figures:
    counters added, partitions (lag, blocked) side by side (their topics differ), the source
    up only while both stages reach it, the checkpoint time of whichever has one."""
    def add(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
        return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}

    return HealthFigures(
        source_up=min(first.source_up, second.source_up),
        consumer_lag={**first.consumer_lag, **second.consumer_lag},
        dead_letter=add(first.dead_letter, second.dead_letter),
        checkpoints=add(first.checkpoints, second.checkpoints),
        last_checkpoint_ts=second.last_checkpoint_ts if second.last_checkpoint_ts is not None
        else first.last_checkpoint_ts,
        restores=add(first.restores, second.restores),
        source_errors=add(first.source_errors, second.source_errors),
        blocked={**first.blocked, **second.blocked},
        drift_events=add(first.drift_events, second.drift_events),
        repartition=add(first.repartition, second.repartition),
        consumer_restarts=add(first.consumer_restarts, second.consumer_restarts),
        writer_unaligned=first.writer_unaligned if first.writer_unaligned is not None
        else second.writer_unaligned,
    )


@dataclass(frozen=True, slots=True)
class PipelineSnapshot:
    """A consistent copy of every figure the metrics collector exports."""

    consumed: int
    invalid: Mapping[str, int]
    models: Mapping[str, ModelFigures]
    batch_counts: Sequence[int]
    batch_sum: float
    last_batch_ts: float
    partitions: Mapping[PartitionKey, PartitionFigures]
    #: model -> its partition check (stream.engine.skew), once it ran
    skew: Mapping[str, SkewFigures] = field(default_factory=dict)
    #: model -> segment key (``name=value``) -> {"events": n, "columns": column -> (role,
    #: highest detector score, any detector episode open)} (stream.engine.segments)
    segments: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: model -> vector column -> stream.engine.vectors.VectorFigures (embedding columns)
    vectors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: model -> {"unscored": n, "values": facet=value -> figures} (stream.engine.bias)
    bias: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: model -> its attribution test's figures (stream.engine.attribution.AttributionFigures)
    attribution: Mapping[str, Any] = field(default_factory=dict)
    #: model -> root cause of its latest prediction episode, while one is open (top three:
    #: rank, feature, contribution, score, importance)
    root_causes: Mapping[str, Any] = field(default_factory=dict)


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


class RunnerHealth:
    """The Kafka runner's counters and source health, owned by the runner.

    Every change goes through a method that takes the object's lock, and
    :meth:`snapshot` copies everything under it, so a scrape never sees half an
    update.  ``replay`` has none (its metrics show the defaults of
    :class:`HealthFigures`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._source_up = 1
        self._consumer_lag: dict[PartitionKey, int] = {}
        self._dead_letter: Counter[str] = Counter()
        self._checkpoints: Counter[str] = Counter()
        self._last_checkpoint_ts: float | None = None
        self._restores: Counter[str] = Counter()
        self._source_errors: Counter[str] = Counter()
        self._blocked: dict[PartitionKey, str] = {}
        self._drift_events: Counter[str] = Counter()
        self._repartition: Counter[str] = Counter()
        self._consumer_restarts: Counter[str] = Counter()
        #: the first stage's health (``source.repartition``): merged into :meth:`snapshot`
        self.upstream: RunnerHealth | None = None
        #: the pooled CUSUM's member candidate of this process (stream/runtime/pool.py),
        #: whose series the metrics endpoint adds while it holds the pool
        self.pool: Any = None
        #: the monitors' pool outbox of this process (stream/runtime/pooloutbox.py PoolOutbox)
        self.pool_outbox: Any = None
        #: the monitors' several-writer merges (stream/runtime/mergerun.py PartitionMerges:
        #: ``figures()``), whose counters the metrics endpoint adds
        self.writer_merge: Any = None
        #: the first stage's writer of several (stream/runtime/writers.py Writer), whose
        #: ``unaligned`` the metrics endpoint exports
        self.writer: Any = None

    @property
    def source_up(self) -> int:
        """1 while the brokers answer and every assigned partition can be read."""
        return 0 if self._blocked else self._source_up

    def block(self, partitions: Mapping[PartitionKey, str], reason: str) -> None:
        """``partitions`` (-> detail, e.g. the codec) cannot be read for ``reason``: counted
        once each, and ``source_up`` is 0 until they are :meth:`unblock`-ed."""
        with self._lock:
            new = [key for key in partitions if key not in self._blocked]
            self._source_errors[reason] += len(new)
            self._blocked.update(partitions)

    def unblock(self, partitions: Iterable[PartitionKey]) -> None:
        """``partitions`` are no longer ours (revoked, lost)."""
        with self._lock:
            for key in partitions:
                self._blocked.pop(key, None)

    @property
    def blocked(self) -> dict[PartitionKey, str]:
        with self._lock:
            return dict(self._blocked)

    def set_source_up(self, up: bool) -> None:
        with self._lock:
            self._source_up = int(up)

    def set_consumer_lag(self, lag: Mapping[PartitionKey, int]) -> None:
        """The lag of every assigned partition (also says that the source answered)."""
        with self._lock:
            self._consumer_lag = dict(lag)
            self._source_up = 1

    def count_dead_letters(self, result: str, n: int = 1) -> None:
        with self._lock:
            self._dead_letter[result] += n

    def count_repartitioned(self, result: str, n: int = 1) -> None:
        with self._lock:
            self._repartition[result] += n

    def count_drift_events(self, result: str, n: int = 1) -> None:
        with self._lock:
            self._drift_events[result] += n

    def count_checkpoints(self, result: str, n: int = 1, at: float | None = None) -> None:
        """``n`` checkpoint records written with ``result``; ``at``: time of an ack."""
        with self._lock:
            self._checkpoints[result] += n
            if at is not None:
                self._last_checkpoint_ts = at

    def count_restores(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self._restores[outcome] += n

    def count_consumer_restarts(self, reason: str) -> None:
        """The consumer was closed and built again for ``reason`` (``group_join_stalled``)."""
        with self._lock:
            self._consumer_restarts[reason] += 1

    @property
    def dead_letter(self) -> dict[str, int]:
        with self._lock:
            return dict(self._dead_letter)

    @property
    def restores(self) -> dict[str, int]:
        with self._lock:
            return dict(self._restores)

    def snapshot(self) -> HealthFigures:
        with self._lock:
            own = HealthFigures(0 if self._blocked else self._source_up,
                                dict(self._consumer_lag), dict(self._dead_letter),
                                dict(self._checkpoints), self._last_checkpoint_ts,
                                dict(self._restores), dict(self._source_errors),
                                dict(self._blocked), dict(self._drift_events),
                                dict(self._repartition), dict(self._consumer_restarts),
                                _flag(getattr(self.writer, "unaligned", None)))
        return own if self.upstream is None else merge_health(self.upstream.snapshot(), own)
