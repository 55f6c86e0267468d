"""``streamdrift_writer_merge_*``: the monitors' merge of several first-stage writers'
frames (``source.repartition``, stream/runtime/mergerun.py and writermerge.py), summed over
the internal partitions this process holds (the counters keep what partitions it no
longer holds counted), so that a sum over instances counts each message once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

#: counter -> help
COUNTERS = {
    "late": "Messages the merge released at once, at or below what it had already released "
            "(a writer left out, clock skew, a broken watermark, a zombie writer).",
    "skips": "Times a first-stage writer silent for max_wait_s was left out of the merge.",
    "over_cap": "Messages released early because more than max_buffered waited.",
    "stale_frames": "Frames of an older first-stage generation after a newer one.",
    "duplicates": "Messages a first-stage writer forwarded again (after a crash or a "
                  "revocation before its commit) dropped while their first copy was held "
                  "back.",
}
#: the counters' metric names (without ``_total``)
NAMES = {"late": "late_messages", "skips": "writers_left_out",
         "over_cap": "over_cap_messages", "stale_frames": "stale_frames",
         "duplicates": "duplicate_messages"}


class WriterMergeCollector:
    """The series of :class:`~stream.runtime.mergerun.PartitionMerges` ``figures()``."""

    def __init__(self, merges: Any) -> None:
        self.merges = merges

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        fig = self.merges.figures()
        held = GaugeMetricFamily("streamdrift_writer_merge_buffered_messages",
                                 "Messages the merge holds back until the writers' "
                                 "watermarks pass them.")
        held.add_metric([], fig["buffered"])
        parts = GaugeMetricFamily("streamdrift_writer_merge_partitions",
                                  "Internal partitions this process merges version-3 "
                                  "frames of.")
        parts.add_metric([], fig["partitions"])
        yield from (held, parts)
        for key, help_ in COUNTERS.items():
            c = CounterMetricFamily(f"streamdrift_writer_merge_{NAMES[key]}", help_)
            c.add_metric([], fig[key])
            yield c
        align = getattr(self.merges, "alignment", None)
        if align is not None:  # this process runs a writer of several (writers.Alignment)
            waits = CounterMetricFamily(
                "streamdrift_writer_align_waits", "Times this process's first-stage writer "
                "held back, ahead of another writer or with too much in flight to its "
                "monitors (watermark alignment).")
            waits.add_metric([], align.waits)
            secs = CounterMetricFamily(
                "streamdrift_writer_align_wait_seconds", "Seconds this process's first-stage "
                "writer held back (watermark alignment).")
            secs.add_metric([], align.waited())
            yield from (waits, secs)
