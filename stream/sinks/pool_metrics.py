"""``streamdrift_pooled_*``: the series of the pooled CUSUM (``source.repartition.pooled``,
stream/runtime/pool.py), exported by the process whose pool member holds the pool topic's
partition only: the other processes export none, so an aggregation over instances counts
each pooled column once.  ``streamdrift_pool_outbox_*`` (the monitors' pool records not yet
published) come from every process."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric


class PoolCollector:
    """``streamdrift_pooled_*``: the pooled CUSUMs of the member that holds the pool
    topic's partition (the others export nothing), and the pool's counters; and, from
    every process, ``streamdrift_pool_outbox_*`` of its monitors' outbox."""

    def __init__(self, member: Any, outbox: Any = None) -> None:
        self.member = member
        #: the monitors' outbox of this process: its series are every process's
        self.outbox = outbox

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if self.outbox is not None:
            size = GaugeMetricFamily("streamdrift_pool_outbox_bytes",
                                     "Bytes of pooled values waiting to be published.")
            size.add_metric([], self.outbox.bytes)
            full = GaugeMetricFamily("streamdrift_pool_outbox_full",
                                     "1 while the pool outbox is over its bound: the "
                                     "monitors take no new batch.")
            full.add_metric([], float(self.outbox.full()))
            yield from (size, full)
        fig = self.member.figures()
        if fig is None:
            return
        labels = ["model", "feature", "role", "detector", "scope"]
        stat = GaugeMetricFamily("streamdrift_pooled_drift_statistic",
                                 "Statistic of the CUSUM pooled over the monitors.", labels=labels)
        thr = GaugeMetricFamily("streamdrift_pooled_drift_threshold",
                                "Threshold of the pooled CUSUM.", labels=labels)
        active = GaugeMetricFamily("streamdrift_pooled_drift_active",
                                   "1 while the pooled CUSUM is in the alarm state.",
                                   labels=labels)
        alarms = CounterMetricFamily("streamdrift_pooled_drift_alarms",
                                     "Alarms raised by the pooled CUSUM.", labels=labels)
        for (model, col), (s, t, on, n, role) in fig["columns"].items():
            lab = [model, col, role, "cusum", "pooled"]
            stat.add_metric(lab, s if math.isfinite(s) else 0.0)
            thr.add_metric(lab, t if math.isfinite(t) else 0.0)
            active.add_metric(lab, float(on))
            alarms.add_metric(lab, n)
        yield from (stat, thr, active, alarms)
        for key, help_ in (("frontier", "Merge position up to which the pool has folded "
                                        "(several writers: messages folded)."),
                           ("pending", "Positions held behind the pool's frontier.")):
            g = GaugeMetricFamily(f"streamdrift_pool_{key}", help_)
            g.add_metric([], fig[key])
            yield g
        for key, help_ in (("skipped", "Positions skipped over a gap by the pool."),
                           ("duplicates", "Positions the pool dropped as already seen."),
                           ("bad_records", "Records of the pool topic that did not read."),
                           ("late", "Messages the pool folded late, below its frontier "
                                    "(several writers).")):
            c = CounterMetricFamily(f"streamdrift_pool_{key}", help_)
            c.add_metric([], fig.get(key, 0))
            yield c
