"""Source partitions spread over several first-stage writers by load (issue 14).

With ``writers: several`` the processes go only as fast as the most loaded one: the
watermark alignment (writers.Alignment) holds the others back to its pace.  A range over
the members splits the source partitions by number, which on a keyed topic is not by
volume (a tenant-keyed topic of the benchmark: 8.1 % to 17.5 % of the events per
partition), and the process that holds the pooled CUSUM (pool.py) also folds every pooled
value: ~0.35 µs per event of the stream against ~4.8 for the whole first stage and ~2.1
for the monitors (2-core AMD EPYC, docs/benchmarks.md, 2026-12-06): its process was the
slower one by 1.0–1.5 CPU-s per ~9 in the pooled two-process runs, and the other one's
writer held back.

:func:`balance` gives each source partition to a member so that the largest **load** is as
small as it finds: a member's load is its share of the source partitions' weights plus what
its process does besides, in units of the whole stream's first stage: ``MONITOR_COST``
times the share of the internal partitions its monitors hold, plus ``POOL_COST`` if it
holds the pool.  Each member says those two in its subscription's ``user_data``
(:func:`pack_load`); the two-stage runner says 0 internal partitions for now
(twostage.TwoStageRunner.load: while processes start the monitors' partitions move within
seconds, and an assignment made on them was worse than none).  A partition's weight (:class:`Weights`) is its backlog (end offset
minus the group's committed offset) plus its rate over the last refresh times
``RATE_HORIZON_S``: a backlog is work to do now, a rate the work to come.  Longest first,
then moves and swaps between the most loaded member and another while they lower it.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("streamdrift.repartition")

#: the monitors' cost per event against the first stage's: m / f, 2.1 / 4.8 µs
MONITOR_COST = 0.44
#: the pool member's (its thread and its consumer's fetch) against the first stage's:
#: ~0.35 / 4.8 µs (3 pooled columns)
POOL_COST = 0.07
#: a partition's rate counts as this many seconds of backlog
RATE_HORIZON_S = 60.0
#: how often a writer refreshes the weights (one offsets query of the source partitions)
WEIGHT_INTERVAL_S = 10.0

#: the subscription's ``user_data``: a tag, the internal partitions this member's monitors
#: hold and whether its process holds the pool
_LOAD = struct.Struct(">4sHB")
_LOAD_TAG = b"SDL1"

#: (internal partitions its monitors hold, it holds the pool)
Load = tuple[int, bool]


def pack_load(load: Load) -> bytes:
    return _LOAD.pack(_LOAD_TAG, min(load[0], 0xFFFF), int(load[1]))


def unpack_load(data: bytes | None) -> Load:
    """What a member's subscription says of its process: none of either when it says
    nothing (a release before this, or another protocol's)."""
    data = bytes(data or b"")
    if len(data) == _LOAD.size and data[:4] == _LOAD_TAG:
        _, held, pool = _LOAD.unpack(data)
        return int(held), bool(pool)
    return 0, False


def extra(load: Load, internal: int) -> float:
    """A member's work besides its source partitions, in units of the whole stream's first
    stage."""
    held, pool = load
    return MONITOR_COST * min(held, internal) / max(1, internal) + POOL_COST * pool


def balance(weights: Sequence[float], extras: Sequence[float]) -> list[int]:
    """The member (an index of ``extras``) of each partition (of ``weights``): each
    partition's share of the weights plus the member's extra is its load, and the largest
    load is made as small as longest-first and then single moves and swaps from the most
    loaded member find.  Weights that sum to 0 count alike."""
    n, members = len(weights), len(extras)
    total = float(sum(weights))
    w = [x / total for x in weights] if total > 0 else [1.0 / max(1, n)] * n
    load, count, got = list(map(float, extras)), [0] * members, [0] * n
    for i in sorted(range(n), key=lambda i: (-w[i], i)):
        m = min(range(members), key=lambda j: (load[j] + w[i], count[j], j))
        got[i] = m
        load[m] += w[i]
        count[m] += 1
    for _ in range(4 * n + 4):  # (each step lowers the top member's load: it ends)
        top = max(range(members), key=lambda j: (load[j], -j))
        mine = [i for i in range(n) if got[i] == top]
        best = load[top] - 1e-12
        step: tuple[int, int, int | None] | None = None
        for j in range(members):
            if j == top:
                continue
            theirs = [k for k in range(n) if got[k] == j]
            for i in mine:
                if max(load[top] - w[i], load[j] + w[i]) < best:
                    best, step = max(load[top] - w[i], load[j] + w[i]), (i, j, None)
                for k in theirs:
                    d = w[i] - w[k]
                    if d > 0 and max(load[top] - d, load[j] + d) < best:
                        best, step = max(load[top] - d, load[j] + d), (i, j, k)
        if step is None:
            break
        mv, to, back = step
        d = w[mv] - (w[back] if back is not None else 0.0)
        got[mv], load[top], load[to] = to, load[top] - d, load[to] + d
        if back is not None:
            got[back] = top
    return got


class Weights:
    """The source partitions' weights (see the module), refreshed by the first stage on its
    own thread every ``WEIGHT_INTERVAL_S`` and read by the group's assignor at a join."""

    def __init__(self, earliest: bool = True) -> None:
        #: (topic, partition) -> backlog + rate * RATE_HORIZON_S
        self.current: dict[tuple[str, int], float] = {}
        self.earliest = earliest
        #: when the weights were last asked for, and when the end offsets last came
        self.at: float | None = None
        self.ends_at: float | None = None
        self._ends: dict[tuple[str, int], int] = {}

    def due(self, now: float) -> bool:
        return self.at is None or now - self.at >= WEIGHT_INTERVAL_S

    def refresh(self, consumer: Any, topics: Sequence[str], now: float,
                committed: Callable[[list[Any]], dict[Any, int | None]]) -> None:
        """Ask the brokers (``consumer``, kafka-python's, on its own thread) for every
        source partition's end offset and the group's committed offsets (``committed``);
        a failure keeps the weights as they were."""
        from kafka import TopicPartition

        self.at = now
        try:
            tps = [TopicPartition(t, p) for t in topics
                   for p in sorted(consumer.partitions_for_topic(t) or ())]
            if not tps:
                return
            ends = consumer.end_offsets(tps, timeout_ms=2000)
            starts = committed(tps)
            missing = [tp for tp in tps if starts.get(tp) is None]
            if missing:
                firsts = consumer.beginning_offsets(missing, timeout_ms=2000) \
                    if self.earliest else {tp: ends[tp] for tp in missing}
                starts.update(firsts)
        except Exception as exc:  # noqa: BLE001 - the weights only steer the assignment
            log.debug("the source partitions' weights were not refreshed: %s: %s",
                      type(exc).__name__, exc)
            return
        previous, at = self._ends, self.ends_at
        weights, self._ends, self.ends_at = {}, {}, now
        for tp in tps:
            first = starts.get(tp)
            if tp not in ends or first is None:
                continue
            key, end = (tp.topic, tp.partition), int(ends[tp])
            self._ends[key] = end
            rate = (end - previous[key]) / (now - at) \
                if at is not None and key in previous and now > at else 0.0
            weights[key] = max(0, end - int(first)) + max(0.0, rate) * RATE_HORIZON_S
        self.current = weights
