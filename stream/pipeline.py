"""The processing path shared by ``run`` (Kafka) and ``replay`` (files).

A :class:`Pipeline` takes one batch of raw messages at a time: decode once,
route to models, update every model's detectors on whole columns, and keep
the counters the metrics collector reads.  Because every detector gives the
same output however a stream is split into batches, ``run`` and ``replay`` give
the same detections on the same events.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.model import ModelBaseline, ModelMonitor
from stream.baselines import column_specs, detection_settings
from stream.config import Config
from stream.decode import BatchDecoder, DecodedBatch

#: upper bounds of the batch processing time histogram, seconds
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0)


@dataclass(frozen=True)
class Detection:
    """One alarm, located in the input (``index`` = position in the whole input)."""

    model: str
    feature: str
    detector: str
    index: int
    statistic: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "feature": self.feature, "detector": self.detector,
                "index": self.index, "statistic": self.statistic, "threshold": self.threshold}


class Pipeline:
    """Decode → route → detect, with the counters exported as metrics.

    Thread safety: :meth:`process` and :meth:`snapshot` take the same lock, so a
    scrape sees the state between batches, never in the middle of one.
    """

    def __init__(self, config: Config, baselines: dict[str, ModelBaseline],
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.decoder = BatchDecoder(config)
        self.settings = detection_settings(config.detection)
        self.baselines = baselines
        self.monitors: dict[str, ModelMonitor] = {
            m.name: baselines[m.name].monitor(column_specs(m), self.settings)
            for m in config.models}
        self.roles = {m.name: {c.name: c.role for c in (*m.features, *m.predictions)}
                      for m in config.models}
        self.lock = threading.RLock()
        self.consumed = 0
        self.invalid: Counter[str] = Counter()
        self.processed: Counter[str] = Counter({m.name: 0 for m in config.models})
        self.last_event_ts: dict[str, float] = {}
        self.event_lag: dict[str, float] = {}
        self.batch_counts = [0] * (len(BATCH_BUCKETS) + 1)
        self.batch_sum = 0.0
        self.batch_n = 0
        self.last_batch_ts = clock()
        self.started = clock()
        self.recent_alarms: deque[Detection] = deque(maxlen=200)
        # set by the Kafka runner
        self.source_up = 1
        self.consumer_lag: dict[tuple[str, int], int] = {}
        self.dead_letter: Counter[str] = Counter()

    def process(self, messages: Sequence[bytes], base_index: int = 0,
                ) -> tuple[list[Detection], DecodedBatch]:
        """Process one batch; ``base_index`` is the input index of ``messages[0]``."""
        t0 = time.perf_counter()
        batch = self.decoder.decode(messages)
        found: list[Detection] = []
        with self.lock:
            self.consumed += batch.n_messages
            self.invalid.update(batch.invalid)
            now = self.clock()
            for name, mb in batch.models.items():
                if not mb.n_events:
                    continue
                alarms = self.monitors[name].update(mb.columns, mb.invalid_mask)
                for a in alarms:
                    found.append(Detection(name, a.column, a.detector,
                                           base_index + int(mb.positions[a.position]),
                                           a.statistic, a.threshold))
                self.processed[name] += mb.n_events
                ts = mb.timestamps
                newest = float(np.nanmax(ts)) if ts is not None and np.isfinite(ts).any() \
                    else now
                self.last_event_ts[name] = max(self.last_event_ts.get(name, 0.0), newest)
                self.event_lag[name] = max(0.0, now - newest)
            found.sort(key=lambda d: d.index)
            self.recent_alarms.extend(found)
            took = time.perf_counter() - t0
            self.batch_counts[int(np.searchsorted(BATCH_BUCKETS, took))] += 1
            self.batch_sum += took
            self.batch_n += 1
            self.last_batch_ts = self.clock()
        return found, batch

    def heartbeat(self) -> None:
        """Record that the loop is alive although a poll returned nothing."""
        with self.lock:
            self.last_batch_ts = self.clock()

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of every figure the metrics collector exports."""
        with self.lock:
            models = {}
            for name, mon in self.monitors.items():
                models[name] = {
                    "version": next((m.version for m in self.config.models if m.name == name),
                                    None) or "",
                    "baseline_id": self.baselines[name].id,
                    "processed": self.processed[name],
                    "last_event_ts": self.last_event_ts.get(name),
                    "event_lag": self.event_lag.get(name),
                    "columns": {c: mc.summary() for c, mc in mon.columns.items()},
                }
            return {
                "consumed": self.consumed,
                "invalid": dict(self.invalid),
                "models": models,
                "batch_counts": list(self.batch_counts),
                "batch_sum": self.batch_sum,
                "last_batch_ts": self.last_batch_ts,
                "source_up": self.source_up,
                "consumer_lag": dict(self.consumer_lag),
                "dead_letter": dict(self.dead_letter),
            }

    def report_models(self) -> dict[str, Any]:
        """Per-model, per-column final summaries for the replay report."""
        with self.lock:
            return {name: {"events": self.processed[name],
                           "baseline_id": self.baselines[name].id,
                           "features": {c: mc.summary() for c, mc in mon.columns.items()}}
                    for name, mon in self.monitors.items()}
