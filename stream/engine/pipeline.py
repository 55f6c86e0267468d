"""The processing path shared by ``run`` (Kafka) and ``replay`` (files).

A :class:`Pipeline` takes one batch of raw messages at a time: decode once,
route to models, update every model's detectors on whole columns, and keep
the counters the metrics collector reads.  Because every detector gives the
same output however a stream is split into batches, ``run`` and ``replay`` give
the same detections on the same events.

Detector state is kept per partition: one :class:`ModelMonitor` per (model,
partition key).  The Kafka runner passes each poll's records partition by
partition (key ``(topic, partition)``), so state follows partitions across
restarts and rebalances; ``replay`` and any caller that names no partition use
the single pseudo-partition :data:`LOCAL_PARTITION`, so replay output and the
output of a single-partition run are identical.  :meth:`Pipeline.snapshot`
aggregates the partitions per model and column (see
:func:`stream.engine.figures.aggregate_column`), so metric names and labels do not
depend on the partitions.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from detectors.model import ModelBaseline, ModelMonitor
from stream.config import Config
from stream.engine import bias as facets
from stream.engine import pipeline_figures
from stream.engine.attribution import RootCauses, decode_attributions, resolve_attributions
from stream.engine.baselines import column_specs, detection_settings
from stream.engine.episodes import Detection, Episode, EpisodeBook
from stream.engine.figures import (
    PartitionKey,
    PipelineSnapshot,
)
from stream.engine.labelbook import LabelBook, LabelSnapshot, remap_positions
from stream.engine.labels import split_inline
from stream.engine.multivariate import DETECTOR as JOINT
from stream.engine.multivariate import group_specs
from stream.engine.pipeline_figures import counters
from stream.engine.segments import (
    ModelSegments,
    SegmentMonitors,
    decode_config,
    resolve_segments,
)
from stream.engine.skew import PartitionSkew
from stream.engine.vectors import resolve_vectors
from stream.formats.batch import DecodedBatch, ModelBatch, batch_tail
from stream.formats.decoders import decoder_for, flush

#: the one pseudo-partition of ``replay`` (and of callers that name no partition)
LOCAL_PARTITION: PartitionKey = ("", 0)

#: upper bounds of the batch processing time histogram, seconds
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0)


class PartitionState:
    """The monitors of one partition and what this process counted on it."""

    __slots__ = ("base", "book", "consumed", "monitors", "processed", "segments")

    def __init__(self, monitors: dict[str, ModelMonitor], key: PartitionKey = LOCAL_PARTITION,
                 now: float = 0.0, episodes: Mapping[str, Any] | None = None,
                 segments: dict[str, SegmentMonitors] | None = None,
                 segment_episodes: Mapping[str, Any] | None = None) -> None:
        self.monitors = monitors
        #: model -> its segment monitors (stream.engine.segments)
        self.segments = segments or {}
        #: the open column episodes (those of restored monitors included; ``episodes``:
        #: model -> column -> :meth:`Episode.state` saved with them)
        self.book = EpisodeBook(key)
        for name, mon in monitors.items():
            saved = (episodes or {}).get(name)
            for col, cm in mon.columns.items():
                self.book.restore(name, col, [k for k, d in cm.detectors.items()
                                              if d.drift_detected], now,
                                  saved.get(col) if isinstance(saved, Mapping) else None)
            for group, test in (mon.groups.tests.items() if mon.groups else ()):
                self.book.restore(name, group, [JOINT] if test.drift_detected else [], now,
                                  saved.get(group) if isinstance(saved, Mapping) else None)
        for name, mons in self.segments.items():
            saved_seg = (segment_episodes or {}).get(name)
            for (seg, label), mon in mons.items():
                where = f"{seg}={label}"
                per = saved_seg.get(where) if isinstance(saved_seg, Mapping) else None
                for col, cm in mon.columns.items():
                    self.book.restore(name, col, [k for k, d in cm.detectors.items()
                                                  if d.drift_detected], now,
                                      per.get(col) if isinstance(per, Mapping) else None,
                                      segment=where)
        #: messages of the partition consumed by this process (valid or not)
        self.consumed = 0
        #: events per model processed by this process
        self.processed: Counter[str] = Counter()
        #: the monitors' counters when this process got them (non-zero after a restore):
        #: the exported counters are what this process added on top
        self.base = {name: counters(mon) for name, mon in monitors.items()}


def _detection(model: str, a: Any, mb: ModelBatch, base_index: int,
               offset_of: Callable[[int], int] | None, segment: str = "") -> Detection:
    """An alarm or close of ``mb``'s monitor as a :class:`Detection` located in the input."""
    pos = int(mb.positions[a.position])
    ts = None
    if mb.timestamps is not None:
        t = float(mb.timestamps[a.position])
        ts = t if np.isfinite(t) else None
    return Detection(model, a.column, a.detector, base_index + pos, a.statistic, a.threshold,
                     None if offset_of is None else int(offset_of(pos)), ts, segment)


class Pipeline:
    """Decode → route → detect, with the counters exported as metrics.

    Thread safety: :meth:`process`, :meth:`snapshot` and the partition methods
    take the same lock, so a scrape sees the state between batches, never in the
    middle of one.

    Counters (values, missing, invalid, alarms, processed) are what this
    process counted: a monitor restored from a checkpoint does not re-export
    the counts it came with, and a dropped partition keeps its counts, so the
    exported counters never go down while the process lives.
    """

    def __init__(self, config: Config, baselines: dict[str, ModelBaseline],
                 clock: Callable[[], float] = time.time,
                 segments: Mapping[str, ModelSegments] | None = None,
                 bias: Mapping[str, facets.ModelBias] | None = None) -> None:
        self.config = config
        self.clock = clock
        self.decoder = decoder_for(decode_attributions(decode_config(
            facets.with_facets(config))))
        #: model -> its attribution test, and the root causes (stream.engine.attribution)
        self.attribution = resolve_attributions(config)
        self.root_causes = RootCauses(config, self.attribution)
        self.settings = detection_settings(config.detection)
        #: model -> the settings of its model-wide monitor (segments take part of the budget)
        self.model_settings = {m.name: detection_settings(config.detection, m)
                               for m in config.models}
        #: model -> its segments (built from the reference, or cached, when not given)
        self.segments: Mapping[str, ModelSegments] = \
            resolve_segments(config) if segments is None else segments
        #: model -> segment key -> events this process fed to the segment's monitors
        self.segment_events: dict[str, Counter[str]] = {m: Counter() for m in self.segments}
        #: model -> its embedding columns (stream.engine.vectors), profiled at start-up
        self.vectors = resolve_vectors(config, self.settings)
        # bias drift (#16.2): model -> its facets; partition -> model -> facet -> monitor
        self.bias = facets.resolve_bias(config) if bias is None else bias
        self.bias_states: dict[PartitionKey, Any] = {}
        self.bias_unscored: Counter[str] = Counter()
        self.baselines = baselines
        self.specs = {m.name: column_specs(m) for m in config.models}
        #: model -> its multivariate groups (detectors.multivariate)
        self.groups = {m.name: group_specs(m) for m in config.models}
        #: never-updated monitors: what the metrics show before any partition has state
        self.fresh: dict[str, ModelMonitor] = {
            m.name: self.new_monitor(m.name) for m in config.models}
        #: model -> ModelBaseline.id, computed once after new_monitor's calibration check:
        #: the id hashes every profile (~80 ms for 20 columns) and snapshot() runs under
        #: the lock on every scrape
        self.baseline_ids: dict[str, str] = {name: baselines[name].id for name in self.fresh}
        self.partitions: dict[PartitionKey, PartitionState] = {}
        #: model -> column -> counters added by this process on partitions since dropped
        self.retired: dict[str, dict[str, list[int]]] = {}
        #: partition -> (messages consumed, events processed per model) by this process
        #: while the partition had state, for partitions since dropped
        self.retired_partitions: dict[PartitionKey, tuple[int, Counter[str]]] = {}
        self.versions = {m.name: m.version or "" for m in config.models}
        self.roles = {m.name: {c.name: c.role for c in (*m.features, *m.predictions)}
                      for m in config.models}
        self.lock = threading.RLock()
        #: called with (model, partition, batch, monitor) before each monitor update (the
        #: pooled CUSUM's values: stream/runtime/pool.py)
        self.pool_tap: Callable[[str, PartitionKey, ModelBatch, ModelMonitor], None] | None \
            = None
        self.consumed = 0
        #: events decoded (rows: one message may carry several, see source.format)
        self.events = 0
        self.invalid: Counter[str] = Counter()
        self.processed: Counter[str] = Counter({m.name: 0 for m in config.models})
        #: model -> processed events whose timestamp (``source.timestamp``) is not a time
        self.invalid_timestamps: Counter[str] = Counter({m.name: 0 for m in config.models})
        #: model -> processed events that lack most of the model's columns (incomplete, see
        #: detectors.quality): not fed to the columns, tested at the model level
        self.incomplete: Counter[str] = Counter({m.name: 0 for m in config.models})
        self.last_event_ts: dict[str, float] = {}
        self.event_lag: dict[str, float] = {}
        self.batch_counts = [0] * (len(BATCH_BUCKETS) + 1)
        self.batch_sum = 0.0
        self.batch_n = 0
        self.last_batch_ts = clock()
        self.started = clock()
        self.recent_alarms: deque[Detection] = deque(maxlen=200)
        #: detector episodes closed by the last :meth:`process` (peak as ``statistic``)
        self.last_closes: list[Detection] = []
        #: ("open" | "close", column episode) of the last :meth:`process`, in input order
        #: (an episode that opened and closed in it is listed twice)
        self.last_episodes: list[tuple[str, Episode]] = []
        self.recent_episodes: deque[Episode] = deque(maxlen=200)
        #: the comparison of the partitions with each other (None: disabled)
        check = config.detection.partition_check
        self.skew = PartitionSkew(check, baselines, {
            m.name: [(c.name, c.role) for c in m.columns] for m in config.models}
        ) if check.enabled else None
        #: the label joins of the models with ``labels:`` (None: no model has labels)
        self.labels = LabelBook(config, bias=self.bias) \
            if any(m.labels for m in config.models) else None
        self._next_index = 0  #: input index after the last processed message (labels join)

    # -- partitions ------------------------------------------------------------
    def new_monitor(self, model: str) -> ModelMonitor:
        """A fresh monitor of ``model``."""
        return self.baselines[model].monitor(self.specs[model], self.model_settings[model],
                                             self.groups[model])

    def _partition(self, key: PartitionKey) -> PartitionState:
        st = self.partitions.get(key)
        if st is None:
            st = PartitionState({name: self.new_monitor(name) for name in self.fresh}, key,
                                self.clock(), segments={
                                    name: ms.new_monitors() for name, ms in self.segments.items()})
            self.partitions[key] = st
        return st

    def has_partition(self, key: PartitionKey) -> bool:
        with self.lock:
            return key in self.partitions

    def monitor(self, model: str, partition: PartitionKey = LOCAL_PARTITION,
                ) -> ModelMonitor | None:
        """The live monitor of ``model`` on ``partition`` (None if it has no state)."""
        with self.lock:
            st = self.partitions.get(partition)
            return None if st is None else st.monitors.get(model)

    def restore_partition(self, key: PartitionKey, monitors: dict[str, ModelMonitor],
                          episodes: Mapping[str, Any] | None = None,
                          labels: Mapping[str, Any] | None = None,
                          states: Mapping[str, Any] | None = None) -> None:
        """Replace the state of ``key``: the given monitors, fresh ones for other models.

        ``episodes``: model -> the ``episodes`` entry of its exported state (the open
        episodes' offsets and scores), when the checkpoint has one; ``labels``: model -> the
        ``labels`` entry (its pending joins); ``states``: model ->
        its whole exported state (its ``segments`` and their episodes are restored, fresh
        segment monitors where it has none)."""
        with self.lock:
            self.drop_partition(key)
            mons = {name: monitors.get(name) or self.new_monitor(name) for name in self.fresh}
            for name, mon in mons.items():
                if mon.quality is None:  # restored from a checkpoint older than it
                    mon.quality = self.new_monitor(name).quality
                if mon.groups is None and self.groups[name]:
                    mon.groups = self.new_monitor(name).groups
            segs: dict[str, SegmentMonitors] = {}
            seg_episodes: dict[str, Any] = {}
            for name, ms in self.segments.items():
                state = (states or {}).get(name)
                state = state if isinstance(state, Mapping) else {}
                segs[name], _ = ms.restore(state.get("segments"))
                seg_episodes[name] = state.get("segment_episodes")
            self.partitions[key] = PartitionState(mons, key, self.clock(), episodes, segs,
                                                  seg_episodes)
            book = self.partitions[key].book
            self.bias_states[key] = facets.restore_bias(self.bias, states, book, self.clock())
            if self.labels is not None:
                self.labels.restore(key, labels or {}, self.partitions[key].book, episodes,
                                    self.clock())
            for name, mv in self.vectors.items():  # embedding columns' tests and episodes
                mv.restore(key, (states or {}).get(name), self.partitions[key].book,
                           (episodes or {}).get(name), self.clock())
            for name, at in self.attribution.items():  # attribution tests and their episodes
                at.restore(key, (states or {}).get(name), book, (episodes or {}).get(name),
                           self.clock())

    def drop_partition(self, key: PartitionKey) -> bool:
        """Forget the state of ``key`` (its counts stay in the counters); True if it had one."""
        with self.lock:
            st = self.partitions.pop(key, None)
            for mv in self.vectors.values():
                mv.drop(key)
            self.bias_states.pop(key, None)
            if self.skew is not None:
                self.skew.drop(key)
            if self.labels is not None:
                self.labels.drop(key)
            for at in self.attribution.values():
                at.drop(key)
            if st is None:
                return False
            consumed, processed = self.retired_partitions.get(key, (0, Counter()))
            self.retired_partitions[key] = (consumed + st.consumed, processed + st.processed)
            for name, mon in st.monitors.items():
                base = st.base.get(name, {})
                retired = self.retired.setdefault(name, {})
                for col, now in counters(mon).items():
                    was = base.get(col, [0] * len(now))
                    acc = retired.setdefault(col, [0] * len(now))
                    for i, (a, b) in enumerate(zip(now, was, strict=True)):
                        acc[i] += a - b
            return True

    def export_partition(self, key: PartitionKey) -> dict[str, dict[str, Any]]:
        """model -> :meth:`ModelMonitor.to_dict` of partition ``key`` (empty if no state),
        with ``episodes``: column -> :meth:`Episode.state` of its open episodes."""
        with self.lock:
            st = self.partitions.get(key)
            if st is None:
                return {}
            out = {name: mon.to_dict() for name, mon in st.monitors.items()}
            for name, ms in self.segments.items():
                out[name]["segments"] = ms.export(st.segments[name])
            for name, mv in self.vectors.items():
                out[name]["vectors"] = mv.export(key)
            for name, at in self.attribution.items():
                out.setdefault(name, {})["attribution"] = at.export(key)
            facets.export_bias(self.bias, self.bias_states.get(key), out)  # bias drift (#16.2)
            for (name, col, seg), ep in st.book.open.items():
                if seg:
                    out[name].setdefault("segment_episodes", {}).setdefault(seg, {})[col] = \
                        ep.state()
                else:
                    out[name].setdefault("episodes", {})[col] = ep.state()
            if self.labels is not None:
                for name, state in self.labels.export(key).items():
                    out[name]["labels"] = state
            return out

    # -- processing ----------------------------------------------------------------
    def process(self, messages: Sequence[bytes], base_index: int = 0,
                partition: PartitionKey = LOCAL_PARTITION,
                skip: dict[str, int] | None = None,
                offset_of: Callable[[int], int] | None = None,
                ) -> tuple[list[Detection], DecodedBatch]:
        """Process one batch of one partition.

        ``base_index`` is the input index of ``messages[0]``.  ``skip`` maps a
        model to a number of leading messages it must not see (their events are
        already in its restored state).  ``offset_of(i)`` is the source offset of
        ``messages[i]`` (the detections and episodes carry it).
        """
        t0 = time.perf_counter()
        inline = None
        if self.labels is not None and self.labels.inline:
            inline = split_inline(messages, self.labels.inline)
        if inline is None:
            batch = self.decoder.decode(messages)
        else:  # label events in the stream: decode the others, positions in ``messages``
            kept = inline[0]
            batch = self.decoder.decode([messages[i] for i in kept.tolist()])
            remap_positions(batch, kept, len(messages))
        found: list[Detection] = []
        closes: list[Detection] = []
        with self.lock:
            st = self._partition(partition)
            self.consumed += batch.n_messages
            self.events += batch.n_events
            st.consumed += batch.n_messages
            self.invalid.update(batch.invalid)
            now = self.clock()
            for name, mb in batch.models.items():
                if skip and skip.get(name):
                    mb = batch_tail(mb, skip[name])
                if not mb.n_events:
                    continue
                mon = st.monitors[name]
                # what the label join carries for the facets' label-based monitors (#16.2)
                carried = self.labels.carry(name, mb) if self.labels is not None else None
                if name in self.bias:  # bias drift (#16.2): its episodes; mb without its columns
                    mb, bo, bc = self.bias[name].process(self.bias_states, partition, mb,
                                                         self.bias_unscored)
                    found += [_detection(name, a, mb, base_index, offset_of, k) for k, a in bo]
                    closes += [_detection(name, a, mb, base_index, offset_of, k) for k, a in bc]
                at = self.attribution.get(name)
                if at is not None:  # attribution drift (stream.engine.attribution)
                    opened, shut = at.update(partition, mb)
                    found.extend(_detection(name, e, mb, base_index, offset_of) for e in opened)
                    closes.extend(_detection(name, e, mb, base_index, offset_of) for e in shut)
                    mb = at.strip(mb)
                ms = self.segments.get(name)
                if ms is not None:
                    seg_found, seg_closes = ms.update(st.segments[name], mb,
                                                      self.segment_events[name])
                    found.extend(_detection(name, sa.alarm, mb, base_index, offset_of,
                                            sa.segment) for sa in seg_found)
                    closes.extend(_detection(name, sa.alarm, mb, base_index, offset_of,
                                             sa.segment) for sa in seg_closes)
                    mb = ms.strip(mb)
                if self.pool_tap is not None:
                    self.pool_tap(name, partition, mb, mon)
                alarms = mon.update(mb.columns, mb.invalid_mask, mb.missing_mask, mb.coded)
                if mb.ids is not None and self.labels is not None:
                    self.labels.add_predictions(name, partition, mb, carried)
                if self.skew is not None and partition != LOCAL_PARTITION:
                    self.skew.update(name, partition, mon, mb.n_events)
                if mon.quality is not None:
                    self.incomplete[name] += mon.quality.last_incomplete
                for a in alarms:
                    found.append(_detection(name, a, mb, base_index, offset_of))
                for a in mon.closes:
                    closes.append(_detection(name, a, mb, base_index, offset_of))
                if mb.vectors and name in self.vectors:  # embedding columns (#19)
                    v_open, v_close = self.vectors[name].update(partition, mb)
                    found.extend(_detection(name, a, mb, base_index, offset_of) for a in v_open)
                    closes.extend(_detection(name, a, mb, base_index, offset_of)
                                  for a in v_close)
                self.processed[name] += mb.n_events
                st.processed[name] += mb.n_events
                self.invalid_timestamps[name] += mb.invalid_timestamps
                ts = mb.timestamps
                newest = float(np.nanmax(ts)) if ts is not None and np.isfinite(ts).any() \
                    else now
                self.last_event_ts[name] = max(self.last_event_ts.get(name, 0.0), newest)
                self.event_lag[name] = max(0.0, now - newest)
            if inline is not None and self.labels is not None:
                self.labels.add_labels(inline[1], partition, inline=True)
            self._next_index = max(self._next_index, base_index + batch.n_messages)
            if self.labels is not None:
                self._concept_episodes(self.labels, now)
            if self.skew is not None:
                self.skew.maybe_check(now)
            found.sort(key=lambda d: d.index)
            closes.sort(key=lambda d: d.index)
            self.recent_alarms.extend(found)
            self.last_closes = closes
            self.last_episodes = []
            if found or closes:
                self._track_episodes(st.book, found, closes, now)
                self.root_causes.on_episodes(self.last_episodes, st.monitors)
            took = time.perf_counter() - t0
            self.batch_counts[int(np.searchsorted(BATCH_BUCKETS, took))] += 1
            self.batch_sum += took
            self.batch_n += 1
            self.last_batch_ts = self.clock()
        return found, batch

    def flush_decoder(self) -> dict[str, int]:
        """End of the input: count what the decoder still holds (open-inference: halves
        waiting for their other half) as rejected, by reason; returns those counts."""
        with self.lock:
            counts = flush(self.decoder)
            self.invalid.update(counts)
            return counts

    def process_labels(self, messages: Sequence[bytes], partition: PartitionKey = LOCAL_PARTITION,
                       topic: str | None = None, label_partition: int | None = None,
                       offsets: Sequence[int] | None = None) -> Counter[str]:
        """Join label messages with the predictions of inference ``partition`` (see
        :meth:`LabelBook.add_labels`); returns the rejected ones by reason."""
        with self.lock:
            if self.labels is None:
                return Counter()
            self._partition(partition)
            bad = self.labels.add_labels(messages, partition, topic, label_partition, offsets)
            self._concept_episodes(self.labels, self.clock())
            return bad

    def _concept_episodes(self, labels: LabelBook, now: float) -> None:
        """Model-quality episodes from the joins' concept alarms (LabelBook.episodes)."""
        steps = labels.episodes(lambda k: self._partition(k).book,
                                max(self._next_index - 1, 0), now)
        self.recent_alarms.extend(d for kind, _, d in steps if kind == "open")
        self.recent_episodes.extend(ep for kind, ep, _ in steps if kind == "close")

    def take_quality_steps(self) -> list[tuple[str, Episode, Detection]]:
        """The model-quality episode steps since the last call (see LabelBook.steps)."""
        with self.lock:
            return [] if self.labels is None else self.labels.take_steps()

    def label_snapshot(self) -> LabelSnapshot | None:
        """The figures of the label joins (None: no model has labels)."""
        with self.lock:
            return None if self.labels is None else self.labels.snapshot()

    def count_rejected(self, invalid: Mapping[str, int]) -> None:
        """Count messages rejected before :meth:`process` (by reason): the monitors of a
        repartitioned run (``source.repartition``) count a record of the internal topic that
        is not a readable frame (``bad_frame``) as one consumed, rejected message."""
        with self.lock:
            self.consumed += sum(invalid.values())
            self.invalid.update(invalid)

    def _track_episodes(self, book: EpisodeBook, found: list[Detection],
                        closes: list[Detection], now: float) -> None:
        """Column episodes from the batch's detector episodes, in input order (a close
        before an open at the same event)."""
        steps = sorted([(d.index, 0, d) for d in closes] + [(d.index, 1, d) for d in found],
                       key=lambda t: (t[0], t[1]))
        for _, opening, d in steps:
            ep = book.opened(d, now) if opening else book.closed(d)
            if ep is not None:
                self.last_episodes.append(("open" if opening else "close", ep))
                if not opening:
                    self.recent_episodes.append(ep)

    def open_episodes(self) -> list[Episode]:
        """The column episodes open now, over all partitions."""
        with self.lock:
            return [ep for k in sorted(self.partitions)
                    for ep in self.partitions[k].book.open.values()]

    def heartbeat(self) -> None:
        """Record that the loop is alive although a poll returned nothing (a partition
        check that is due runs: the windows hold the last events of each partition)."""
        with self.lock:
            self.last_batch_ts = self.clock()
            if self.skew is not None:
                self.skew.maybe_check(self.last_batch_ts)

    # -- figures (stream.engine.pipeline_figures) ------------------------------------
    def snapshot(self) -> PipelineSnapshot:
        """A consistent copy of every figure the metrics collector exports."""
        return pipeline_figures.snapshot(self)

    def report_models(self) -> dict[str, Any]:
        """Per-model, per-column final summaries for the replay report."""
        return pipeline_figures.report_models(self)
