"""One CUSUM over several monitors' values, merged by a global position (issue 14).

With ``source.repartition`` over M internal partitions each monitor's CUSUM sees 1/M of
the events, and a drift of the whole stream takes about M times as many events to cross
its threshold (``bench/results/scaleout.md``).  ``bench/results/pooled_cusum.md`` showed
that one CUSUM over the monitors' standardised values recovers the delay only if they are
merged **in event order** at a fine grain.  The first stage numbers the messages it
forwards densely (frames version 2, ``stream/runtime/frames.py``); each monitor publishes,
per poll, the positions of the messages it processed and, per pooled column, the values
the column's CUSUM stepped with, standardised (:func:`detectors.cusum_merge.standardise`)
with the message position of each; :class:`PoolMerge` (the pool member's state) merges
them:

* **dedup**: a position already folded, or already held, is dropped with its values (a
  monitor republishes after a restart, the first stage forwards again after one; the first
  copy of a position to arrive is the one folded);
* **frontier**: positions are dense, so everything before position ``F`` has arrived once
  every position below ``F`` is held; the values up to the frontier are folded in position
  order (the values of one message in their order) into one :class:`PooledCUSUM` per
  column;
* **bounded wait**: a position that never comes (a frame lost past the repartition topic's
  retention, a first stage that died mid-write and whose successor numbers on from its
  last commit) would stall the frontier for ever: when more than ``max_pending`` positions
  wait behind a gap, the gap is skipped and counted (:attr:`PoolMerge.skipped`).

:class:`PooledCUSUM` is :class:`~detectors.cusum.CUSUM` fed standardised values (mean 0,
scale 1, no clip: the kernel's ``(z - 0) * 1`` is ``z`` bit for bit) with every other
setting of the column's CUSUM (threshold, allowance, episodes, the mean hold's clip
term), so the pooled statistic, alarms and episodes are those of the column's CUSUM run
over the merged stream (tests/detectors/test_cusum_pool.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from detectors.cusum import CUSUM

__all__ = ["PoolAlarm", "PoolMerge", "PooledCUSUM", "pooled_cusum"]

#: positions waiting behind a gap before the gap is skipped
MAX_PENDING = 200_000


class PooledCUSUM(CUSUM):
    """:class:`CUSUM` over values already standardised by the monitors, with the settings
    of the column's CUSUM it pools (:func:`pooled_cusum`).  Not a detector kind of its own
    (``kind`` empty: not registered, never built from a model's configuration); its state
    is saved by the pool (:meth:`PoolMerge.state`)."""

    kind: ClassVar[str] = ""

    def __init__(self, *args: Any, c4inv: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool_c4inv = float(c4inv)

    @property
    def _c4inv(self) -> float:
        # the column's 1 / c⁴ (its clip in standardised units): the mean hold's second term
        return self.pool_c4inv

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "c4inv": self.pool_c4inv,
                "release_above_allowance": self.release_above_allowance,
                "mean_hold_on": self.mean_hold}

    @classmethod
    def restore(cls, state: dict[str, Any]) -> PooledCUSUM:
        det = cls(**cls._kwargs_from_state(state), c4inv=float(state.get("c4inv", 0.0)))
        det._restore_sums(state)
        det.release_above_allowance = bool(state.get("release_above_allowance", False))
        det.mean_hold = bool(state.get("mean_hold_on", True))
        return det


def pooled_cusum(det: CUSUM) -> PooledCUSUM:
    """A fresh :class:`PooledCUSUM` with ``det``'s settings (not its running state)."""
    out = PooledCUSUM(0.0, 1.0, det.h, det.k, det.min_effect, None, 0, det.name,
                      det.h_down, c4inv=det._c4inv)
    out.release, out.hold = det.release, det.hold
    out.release_above_allowance = det.release_above_allowance
    out.mean_hold = det.mean_hold
    return out


@dataclass(frozen=True)
class PoolAlarm:
    """An alarm (or a close) of a pooled column, at the message position it was raised
    (several writers, detectors/cusum_keyed.py: the message's index in its internal
    ``partition``'s sequence)."""

    column: Any
    position: int
    statistic: float
    threshold: float
    direction: int
    partition: int = -1


_EMPTY_I = np.empty(0, dtype=np.int64)
_EMPTY_F = np.empty(0, dtype=np.float64)


class PoolMerge:
    """Merge positioned values into one :class:`PooledCUSUM` per column (see the module).

    ``columns``: column key -> its pooled CUSUM (any hashable key; the runtime uses
    ``(model, column)``).  ``frontier``: the first position not folded yet; None: the
    smallest position of the first record taken (a pool started on a stream already
    numbered, whose first positions are past the pool topic's retention)."""

    def __init__(self, columns: dict[Any, PooledCUSUM], frontier: int | None = 0,
                 max_pending: int = MAX_PENDING) -> None:
        self.columns = columns
        #: whether the frontier is set (see above)
        self.started = frontier is not None
        self.frontier = int(frontier or 0)
        self.max_pending = int(max_pending)
        #: positions skipped over a gap, and positions dropped as already seen
        self.skipped = 0
        self.duplicates = 0
        self.folded = 0
        #: held positions (sorted, unique, all >= frontier)
        self._held = _EMPTY_I
        #: column -> chunks of (positions, values) held
        self._values: dict[Any, list[tuple[np.ndarray, np.ndarray]]] = {c: [] for c in columns}
        #: (record offset, its largest accepted position) of records with held positions
        self._records: list[tuple[int, int]] = []
        #: the alarms and closes of the last :meth:`advance`
        self.alarms: list[PoolAlarm] = []
        self.closes: list[PoolAlarm] = []

    @property
    def pending(self) -> int:
        return int(self._held.size)

    def add(self, covered: np.ndarray, values: dict[Any, tuple[np.ndarray, np.ndarray]],
            offset: int | None = None) -> int:
        """Take one published record: ``covered``, the message positions it accounts for
        (with a value or not); ``values``, column -> (position of each value, standardised
        value), each position among ``covered``.  Positions already folded or held are
        dropped with their values.  ``offset``: the record's offset on the pool topic (see
        :meth:`resume_offset`).  Returns the number of positions accepted."""
        cov = np.unique(np.asarray(covered, dtype=np.int64))
        if not self.started and cov.size:
            self.frontier, self.started = int(cov[0]), True
        fresh = cov[cov >= self.frontier]
        if self._held.size and fresh.size:
            fresh = fresh[~np.isin(fresh, self._held, assume_unique=True)]
        self.duplicates += int(cov.size - fresh.size)
        if not fresh.size:
            return 0
        self._held = np.union1d(self._held, fresh) if self._held.size else fresh
        whole = fresh.size == cov.size
        for col, (pos, z) in values.items():
            if col not in self._values:
                continue
            pos = np.asarray(pos, dtype=np.int64)
            z = np.asarray(z, dtype=np.float64)
            if pos.shape != z.shape:
                raise ValueError(f"{col}: {pos.size} positions for {z.size} values")
            if not whole:
                keep = np.isin(pos, fresh)
                pos, z = pos[keep], z[keep]
            if pos.size:
                self._values[col].append((pos, z))
        if offset is not None:
            self._records.append((int(offset), int(fresh[-1])))
        return int(fresh.size)

    def _ready(self) -> int:
        """How many held positions continue the frontier without a gap."""
        h = self._held
        if not h.size or h[0] != self.frontier:
            return 0
        gaps = np.flatnonzero(h != self.frontier + np.arange(h.size))
        return int(gaps[0]) if gaps.size else int(h.size)

    def advance(self) -> int:
        """Fold every value before the frontier the held positions reach (skipping a gap
        when more than ``max_pending`` positions wait behind it); the alarms and closes
        raised are in :attr:`alarms` and :attr:`closes`.  Returns the positions folded."""
        self.alarms, self.closes = [], []
        total = 0
        while True:
            n = self._ready()
            if n == 0:
                if self._held.size > self.max_pending:
                    self.skipped += int(self._held[0]) - self.frontier
                    self.frontier = int(self._held[0])
                    continue
                break
            self._fold(self.frontier + n)
            self._held = self._held[n:]
            total += n
        self.folded += total
        if self._records:
            self._records = [r for r in self._records if r[1] >= self.frontier]
        return total

    def _fold(self, end: int) -> None:
        for col, chunks in self._values.items():
            if not chunks:
                continue
            pos = np.concatenate([c[0] for c in chunks]) if len(chunks) > 1 else chunks[0][0]
            z = np.concatenate([c[1] for c in chunks]) if len(chunks) > 1 else chunks[0][1]
            now = pos < end
            if now.all():
                chunks.clear()
            else:
                chunks[:] = [(pos[~now], z[~now])]
            if not now.any():
                continue
            p, v = pos[now], z[now]
            order = np.argsort(p, kind="stable")
            p, v = p[order], v[order]
            det = self.columns[col]
            hits = det.update(v)
            stats = det.alarm_statistics
            direction = det.direction
            self.alarms += [PoolAlarm(col, int(p[i]), float(s), float(det.threshold), direction)
                            for i, s in zip(hits.tolist(), stats.tolist(), strict=True)]
            closes = det.close_positions
            if closes.size:
                self.closes += [PoolAlarm(col, int(p[i]), float(det.episode_peak),
                                          float(det.threshold), direction)
                                for i in closes.tolist()]
        self.frontier = end

    def resume_offset(self) -> int | None:
        """The pool-topic offset to read again from after a restart from :meth:`state`:
        the first record with a position not folded yet (None: none held)."""
        return min(r[0] for r in self._records) if self._records else None

    def state(self) -> dict[str, Any]:
        """What a restart needs with the records from :meth:`resume_offset` on: the
        frontier and the pooled CUSUMs (held values are read again)."""
        return {"frontier": self.frontier if self.started else None, "skipped": self.skipped,
                "columns": [[_key(c), d._state()] for c, d in self.columns.items()]}

    @classmethod
    def from_state(cls, state: dict[str, Any], columns: dict[Any, PooledCUSUM],
                   max_pending: int = MAX_PENDING) -> PoolMerge:
        """Restore: the saved CUSUMs of the ``columns`` configured now (a column added since
        starts fresh; one removed is dropped)."""
        saved = {_unkey(k): s for k, s in state.get("columns", [])}
        restored = {c: PooledCUSUM.restore(saved[c]) if c in saved and _same(d, saved[c])
                    else d for c, d in columns.items()}
        frontier = state.get("frontier")
        out = cls(restored, None if frontier is None else int(frontier), max_pending)
        out.skipped = int(state.get("skipped", 0))
        return out


def _key(col: Any) -> Any:
    return list(col) if isinstance(col, tuple) else col


def _unkey(col: Any) -> Any:
    return tuple(col) if isinstance(col, list) else col


def _same(det: PooledCUSUM, state: dict[str, Any]) -> bool:
    """Whether a saved pooled CUSUM has the settings of the one configured now (another
    threshold or allowance, a new baseline: start fresh)."""
    thr = state.get("threshold")
    h = math.inf if thr is None else float(thr)
    return (h == det.h and float(state.get("k", -1)) == det.k
            and float(state.get("min_effect", 0.0)) == det.min_effect
            and int(state.get("hold", 0)) == det.hold
            and float(state.get("c4inv", 0.0)) == det.pool_c4inv)
