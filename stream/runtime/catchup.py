"""Whether the first stage's merge must wait for a source partition with nothing buffered.

The merge (repartition.py, :func:`merge_plan` here) forwards the
buffered records of the source partitions in timestamp order.  A partition with nothing
buffered either has nothing more to give (it is *caught up*) or its records are still on
their way: then forwarding the others would put their keys in a block before its own on
the internal topic, and the monitors see an unrepresentative stream (a false ``c1``
episode on clean data, issue 14).  The merge used to wait at most 1 s for such a
partition; under load, or when one partition's fetch is parsed after another's thousands
of records, that expired (tests/integration/test_keyed_merge.py).

A partition with nothing buffered is caught up only when its fetch position has reached
its end offset, queried from the broker *after* the records the merge would forward were
polled (one ListOffsets request for every partition that needs it; the answer stays good
until newer records are polled).  The high watermark of the partition's newest fetch
response is not enough: kafka-python reads it when it parses that partition's fetch,
which can come *after* it hands out another partition's records of a later fetch (a
watermark that reads as the position may be stale), and it may have none at all of an
idle partition for a long time.  A position below the watermark, though, is known to be
behind without a query.

Otherwise it is waited for, for as long as it makes progress: its position, watermark or
end offset change.  Only a partition that shows no progress for :data:`MAX_WAIT_S` (its
leader unreachable, an open transaction under ``read_committed``) is left behind, with a
warning: the merge then forwards the others without it, so that one partition cannot
stop the stage for good.  An idle partition (nothing produced) is caught up at once: its
position equals its end offset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stream.sources.kafka import partition_names

log = logging.getLogger("streamdrift.repartition")

#: a partition that may be behind is waited for while it makes progress; after this long
#: without any, the merge forwards the other partitions without it (with a warning)
MAX_WAIT_S = 30.0
#: bound of the end-offset query that confirms a partition is caught up
END_OFFSETS_TIMEOUT_MS = 2000

_Mark = tuple[int | None, int | None, int | None]


class CatchUp:
    """Per source partition: its confirmed end offset and since when it made no progress."""

    def __init__(self) -> None:
        #: monotonic time of the newest poll that returned records
        self.polled_at = 0.0
        #: partition -> (end offset, monotonic time it was queried)
        self.ends: dict[Any, tuple[int, float]] = {}
        #: partition -> (position, watermark, end offset) and since when it is unchanged
        self.quiet: dict[Any, tuple[_Mark, float]] = {}
        #: partitions the merge goes on without (warned once each)
        self.left_behind: set[Any] = set()

    def forget(self, tp: Any) -> None:
        """``tp`` was assigned, sought or revoked: nothing known about it holds."""
        self.ends.pop(tp, None)
        self.quiet.pop(tp, None)
        self.left_behind.discard(tp)

    def polled(self) -> None:
        """Records were just polled: end offsets queried before do not cover them."""
        self.polled_at = time.monotonic()

    def waiting(self, consumer: Any, empty: list[Any], now: float,
                unsought: list[Any] | None = None) -> bool:
        """Whether the merge waits: a partition of ``empty`` (assigned, nothing buffered,
        while others have records) may be behind, or one of ``unsought`` (assigned, its
        seek to the committed offset not done yet: nothing of it is read) is there, and
        has made progress within :data:`MAX_WAIT_S`."""
        pos = {tp: _position(consumer, tp) for tp in empty}
        pos.update(dict.fromkeys(unsought or ()))  # no position of ours yet
        empty = list(pos)
        self.left_behind.intersection_update(empty)  # one that had records: warned anew
        high = {tp: _highwater(consumer, tp) for tp in empty}
        # behind its watermark: waited for without a query; else (a watermark that reads
        # as the position, or none yet: kafka-python may have none of an idle partition
        # for a long time) the end offset decides
        ask = [tp for tp in empty if _not_behind(pos[tp], high[tp])
               and self.ends.get(tp, (0, -1.0))[1] < self.polled_at]
        if ask:
            self._query_ends(consumer, ask)
        wait = False
        for tp in empty:
            end = self.ends.get(tp)
            p = pos[tp]
            if p is not None and end is not None and end[1] >= self.polled_at and p >= end[0]:
                self.quiet.pop(tp, None)  # caught up
                self.left_behind.discard(tp)
                continue
            mark = (p, high[tp], None if end is None else end[0])
            seen, since = self.quiet.get(tp, (None, now))
            if seen != mark:
                since = now
            self.quiet[tp] = (mark, since)
            if now - since < MAX_WAIT_S:
                wait = True
            elif tp not in self.left_behind:
                self.left_behind.add(tp)
                log.warning("a source partition has made no progress for %.0f s though it "
                            "may be behind: the merge goes on without it, and its records, "
                            "when they come, reach the monitors after the others' (its keys "
                            "in a block)", now - since, extra={
                                "partitions": partition_names([tp]), "position": p,
                                "high_watermark": high[tp],
                                "end_offset": None if end is None else end[0]})
        return wait

    def _query_ends(self, consumer: Any, tps: list[Any]) -> None:
        at = time.monotonic()
        try:
            ends = consumer.end_offsets(tps, timeout_ms=END_OFFSETS_TIMEOUT_MS)
        except Exception as exc:  # noqa: BLE001 - not confirmed: waited for, retried
            log.warning("cannot read the end offsets of source partitions; they are waited "
                        "for: %s: %s", type(exc).__name__, exc,
                        extra={"partitions": partition_names(tps)})
            return
        for tp in tps:
            if ends.get(tp) is not None:
                self.ends[tp] = (int(ends[tp]), at)


def _not_behind(pos: int | None, high: int | None) -> bool:
    """A known position not below the watermark (or with none): the end offset decides."""
    return pos is not None and (high is None or pos >= high)


def _highwater(consumer: Any, tp: Any) -> int | None:
    try:
        high = consumer.highwater(tp)
    except Exception:  # noqa: BLE001 - not assigned any more: not known
        return None
    return None if high is None else int(high)


def _position(consumer: Any, tp: Any) -> int | None:
    """The consumer's fetch position of ``tp`` (the next offset it hands out; past control
    records too), None while it is not known yet."""
    try:
        pos = consumer.position(tp, timeout_ms=0)
    except Exception:  # noqa: BLE001 - not known (yet)
        return None
    return None if pos is None else int(pos)


def wall_ms() -> int:
    """The wall clock in ms (Kafka timestamps' scale); a function so tests can set it."""
    return int(time.time() * 1000)


class Lateness:
    """How far the merge may go in time: a producer sends each partition's records in
    batches of its own (kafka-python: 16 KiB, or after ``linger_ms``), so records of the
    same milliseconds reach the broker a batch apart on different partitions.  A partition
    found caught up between two of its batches is not waited for, and the merge would put
    the other partitions' records of those milliseconds ahead of its late batch: a block
    of one partition's keys (a batch: ~200 events of 70 bytes).  So records newer than
    the wall clock minus ``lateness_ms`` are held back, and a late batch within that
    bound merges in order.  A backlog (old timestamps) is not held at all.  Producers
    whose clocks run ahead would hold records for as long as they are ahead: a record
    buffered for more than twice ``lateness_ms`` goes whatever its timestamp.
    ``lateness_ms`` 0: no hold."""

    def __init__(self, lateness_ms: int) -> None:
        self.ms = lateness_ms
        #: partition -> monotonic arrival time of each buffered record (nondecreasing)
        self.arrivals: dict[Any, np.ndarray] = {}

    def arrived(self, tp: Any, n: int, now: float) -> None:
        self.arrivals[tp] = np.concatenate([self.arrivals.get(tp, np.empty(0)),
                                            np.full(n, now)])

    def taken(self, tp: Any, n: int) -> None:
        self.arrivals[tp] = self.arrivals.get(tp, np.empty(0))[n:]

    def forget(self, tp: Any) -> None:
        self.arrivals.pop(tp, None)

    def cap(self, stamps: dict[Any, np.ndarray], now: float) -> int | None:
        """The newest timestamp the merge may forward now (None: no bound): the wall
        clock minus ``lateness_ms``, or the newest timestamp of the records buffered
        longer than twice that, if larger."""
        if self.ms <= 0:
            return None
        cap = wall_ms() - self.ms
        old = now - 2 * self.ms / 1000
        for tp, arr in self.arrivals.items():
            n = int(np.searchsorted(arr, old, side="right"))
            if n and tp in stamps and len(stamps[tp]) >= n:
                cap = max(cap, int(stamps[tp][:n].max()))
        return cap


def spread(first: np.ndarray) -> np.ndarray:
    """Where each row of a run of equal timestamps (or keys) falls within its millisecond:
    (its rank in the run + 1/2) / the run's length.  ``first``: a bool per row, True where
    a run begins.  Added to the timestamps, runs of different partitions (or writers)
    interleave evenly instead of following each other in blocks (:func:`merge_plan`,
    writermerge.py).

    >>> spread(np.array([True, False, False, True])).tolist()
    [0.16666666666666666, 0.5, 0.8333333333333334, 0.5]
    """
    n = len(first)
    starts = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    size = np.diff(starts, append=n)
    return (np.arange(n) - starts[group] + 0.5) / size[group]


def merge_plan(timestamps: Sequence[np.ndarray], waiting: bool = False,
               cap: int | None = None,
               complete: Callable[[list[int]], bool] | None = None,
               ) -> tuple[list[int], np.ndarray]:
    """Which buffered records of each partition to forward now, and in which order.

    ``timestamps[i]``: int64 Kafka timestamps (ms) of partition ``i``'s buffered records,
    in offset order.  Every partition with records has reached at least the smallest of
    their newest timestamps (the *limit*); each forwards the prefix of its buffer up to it
    (a prefix: its running maximum decides), so nothing of a slower partition can belong
    before a record already forwarded.  ``waiting``: a partition with nothing buffered is
    behind, so nothing is forwarded.  Returns the count to take from each buffer and the
    merged order as indices into the concatenation of those prefixes; equal timestamps (a
    producer sends many records per millisecond) are spread evenly within their
    millisecond, so partitions interleave instead of following each other in blocks.

    A millisecond is merged whole, never split between two batches: the partitions whose
    newest buffered record sets the limit may have more records of that millisecond still
    to come (a fast producer puts tens in one millisecond), and the part forwarded later
    would follow as a block of their keys (false ``c1`` episodes).  ``complete(setting)``
    says whether the partitions ``setting`` (indices) have every record of the limit's
    millisecond buffered (repartition.py asks catchup.py: read to their end offsets);
    when not, the records of that millisecond wait for the next batch.  None: assumed
    whole (as when the limit is the ``cap``: every partition has newer records).

    >>> counts, order = merge_plan([np.array([1, 1, 3, 9]), np.array([1, 2, 4])])
    >>> counts, order.tolist()
    ([3, 3], [0, 3, 1, 4, 2, 5])
    >>> merge_plan([np.array([1, 1, 3, 9]), np.array([1, 2, 4])], complete=lambda s: False)[0]
    [3, 2]
    """
    if waiting or not any(len(t) for t in timestamps):
        return [0] * len(timestamps), np.empty(0, dtype=np.int64)
    running = [np.maximum.accumulate(t) if len(t) else t for t in timestamps]
    limit = min(int(r[-1]) for r in running if len(r))
    if cap is not None and cap < limit:  # catchup.Lateness
        limit = cap
    elif complete is not None and not complete(
            [i for i, r in enumerate(running) if len(r) and int(r[-1]) == limit]):
        limit -= 1  # its millisecond with the next batch, whole
    counts = [int(np.searchsorted(r, limit, side="right")) if len(r) else 0 for r in running]
    keys = []
    # relative to the oldest: a fraction added to ~1.8e12 ms in float64 keeps only ~2^-11
    base = min(int(r[0]) for r in running if len(r))
    for r, n in zip(running, counts, strict=True):
        r = r[:n]
        key = (r - base).astype(np.float64)
        if n:  # (r is nondecreasing: a run of one millisecond is contiguous)
            key += spread(np.concatenate([[True], r[1:] != r[:-1]]))
        keys.append(key)
    return counts, np.argsort(np.concatenate(keys), kind="stable")
