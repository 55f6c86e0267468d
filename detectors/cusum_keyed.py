"""The pooled CUSUM's merge with several first-stage writers (issue 14).

With ``source.repartition.writers: several`` the first stage has no one dense merge
position: each internal partition's :class:`~stream.runtime.writermerge.WriterMerge`
releases its messages by the total order **key** ``(Kafka timestamp, generation, writer
index, writer position)`` up to its frontier (event time first, across the first stage's
generations; it interleaves the writers within a millisecond, the pool does not).
:class:`KeyedPoolMerge` folds every monitor's standardised values into one
:class:`~detectors.cusum_pool.PooledCUSUM` per column in that key order over all the
internal partitions:

* **a dense sequence per partition**: each monitor numbers the messages it gives its
  pipeline per internal partition (*delivered*, checkpointed with the partition's state, so
  a restart releases the same sequence again from the same index); a pool record covers
  one partition's range ``[start, start + n)`` of that sequence with each message's key,
  and carries the partition's **promise**: every message the partition releases later,
  unless it is *late*, has a key above it (the merge's frontier, or the bound its writers'
  watermarks set: a frontier-only record carries a promise that moved with no message).
  An ``epoch`` (when the partition's sequence began) tells a sequence that started again
  from 0 (a state lost) from a republished one: a newer epoch replaces the partition's
  sequence, records of an older one are dropped.
* **dedup**: per partition, an index already taken is dropped with its values (a monitor
  republishes after a restart; the first copy is the one folded); a record past a gap
  waits until the gap fills.
* **fold**: ``G`` = the smallest promise of the partitions (each taken at the end of what
  arrived without a gap): every message not late with a key at or below ``G`` has
  arrived, so the held values with keys at or below it are folded in key order (ties:
  partition, index, then the values' own order).  Folded, the stream is the key-sorted
  stream of all partitions, whatever the interleaving of the records.
* **bounded wait**: a partition whose promise lags (no record, a monitor down) holds
  ``G`` back; when more than ``max_pending`` messages wait, the smallest keys are folded
  anyway down to ``max_pending`` (counted in :attr:`KeyedPoolMerge.forced`), and a gap
  in a partition's sequence (records lost past the pool topic's retention) is skipped
  (counted in :attr:`KeyedPoolMerge.skipped`).
* **late**: a message whose key is at or below ``G`` when it arrives (released late by
  its merge, or after a forced fold) is folded at the next :meth:`~KeyedPoolMerge.advance`
  and counted (:attr:`KeyedPoolMerge.late`); never dropped.
* **checkpoints** (:meth:`~KeyedPoolMerge.state`, :meth:`~KeyedPoolMerge.resume_offset`):
  ``G``, and per partition the epoch, the first index not folded, the end of what had
  arrived and the promise.  Read again from the resume offset, a message with an index
  below that end was folded before exactly when its key is at or below the saved ``G``
  (every held message at or below ``G`` is folded by each advance): no loss, no double
  fold, the same order (tests/detectors/test_cusum_keyed.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.cusum_pool import (
    MAX_PENDING,
    PoolAlarm,
    PooledCUSUM,
    _key,
    _same,
    _unkey,
)

__all__ = ["Key", "KeyedPoolMerge", "at_or_below"]

#: (timestamp, generation, writer index, writer position)
Key = tuple[int, int, int, int]
#: the columns of a held message: the key's four, partition, index, arrival sequence
_P, _I, _S = 4, 5, 6
_EMPTY = np.empty((0, 7), dtype=np.int64)
#: a held value's message: ``partition << _ID | index``
_ID = 40
_IDX = (1 << _ID) - 1
_EMPTY_F = np.empty(0, dtype=np.float64)


def at_or_below(keys: np.ndarray, key: Key | None) -> np.ndarray:
    """Whether each row's key (its first four columns) is at or below ``key``
    (lexicographically)."""
    if key is None:
        return np.zeros(len(keys), dtype=bool)
    t, g, w, p = (keys[:, i] for i in range(4))
    kt, kg, kw, kp = key
    return (t < kt) | ((t == kt) & ((g < kg) | ((g == kg) & (
        (w < kw) | ((w == kw) & (p <= kp))))))


def _order(rows: np.ndarray) -> np.ndarray:
    """Key order; ties by partition, index, arrival."""
    return np.lexsort((rows[:, _S], rows[:, _I], rows[:, _P], rows[:, 3], rows[:, 2],
                       rows[:, 1], rows[:, 0]))


#: the fields of a packed key: the key's four, then the partition
_FIELDS = (0, 1, 2, 3, _P)


@dataclass
class _Packed:
    """The rows' key and partition packed into one int64 (each field less its smallest
    value, in the bits its span needs): one stable sort of the packed values orders the
    rows as :func:`_order` does when no two rows share a key and partition."""

    low: list[int]
    span: list[int]
    bits: list[int]
    #: the packed values, sorted
    values: np.ndarray

    def bound(self, step: Key) -> int:
        """The largest packed value of a row at or below ``step`` (-1: none): every row at
        or below it is at most this, every other above."""
        v, rest = 0, sum(self.bits)
        for x, lo, span, b in zip(step, self.low[:4], self.span[:4], self.bits[:4],
                                  strict=True):  # (the key's fields: not the partition)
            rest -= b
            d = x - lo
            if d < 0:  # this prefix's rows are all above it
                return (v << (b + rest)) - 1
            if d > span:  # this prefix's rows are all at or below it
                return ((v + 1) << (b + rest)) - 1
            v = (v << b) | d
        return ((v + 1) << rest) - 1  # (any partition)


def _packed_order(rows: np.ndarray) -> tuple[np.ndarray, _Packed | None]:
    """Key order (ties: partition, index, arrival), and the rows' packed keys when they
    fit in 62 bits and no two rows share a key and partition (then ``_order``'s later
    ties never decide, and a stable sort of one int64 column replaces its seven-column
    lexsort: the rows come as sorted runs, one per record); else ``_order`` and None."""
    keys = rows[:, _FIELDS]
    low = [int(x) for x in keys.min(axis=0)]
    span = [int(h) - lo for h, lo in zip(keys.max(axis=0).tolist(), low, strict=True)]
    bits = [s.bit_length() for s in span]
    if sum(bits) > 62:
        return _order(rows), None
    packed = np.zeros(len(rows), dtype=np.int64)
    for j, (lo, b) in enumerate(zip(low, bits, strict=True)):
        if b:
            packed <<= b
            packed |= keys[:, j] - lo
    order = np.argsort(packed, kind="stable")
    values = packed[order]
    if len(values) > 1 and (values[1:] == values[:-1]).any():
        return _order(rows), None
    return order, _Packed(low, span, bits, values)


def _bounds(rows: np.ndarray, steps: list[Key]) -> np.ndarray:
    """For each of ``steps``, the number of ``rows`` (in key order) at or below it: one
    lexicographic sort of the rows' keys and the steps together, a step after the rows
    equal to it."""
    s = np.asarray(steps, dtype=np.int64).reshape(-1, 4)
    if not len(s):
        return np.empty(0, dtype=np.int64)
    keys = np.concatenate([rows[:, :4], s])
    after = np.concatenate([np.zeros(len(rows), np.int8), np.ones(len(s), np.int8)])
    order = np.lexsort((after, keys[:, 3], keys[:, 2], keys[:, 1], keys[:, 0]))
    at = np.flatnonzero(order >= len(rows))  # the steps' places in the joint order
    out = np.empty(len(s), dtype=np.int64)
    out[order[at] - len(rows)] = at - np.arange(len(at))
    return out


def _tuple(row: Any) -> Key:
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


@dataclass
class _Record:
    start: int
    keys: np.ndarray
    promise: Key | None
    values: dict[Any, tuple[np.ndarray, np.ndarray]]
    offset: int | None

    @property
    def end(self) -> int:
        return self.start + len(self.keys)


@dataclass
class _Chunk:
    """The held messages of one record (one partition, indices increasing) and their
    values, in arrival order; every key of ``rows`` lies within ``lo`` and ``hi``."""

    rows: np.ndarray
    #: column -> (``partition << 40 | index`` of each value's message, value)
    values: dict[Any, tuple[np.ndarray, np.ndarray]]
    lo: Key
    hi: Key


class _Sort:
    """The key order of the messages of one fold: ``arrived`` (``partition << 40 | index``
    of each, in arrival order), ``order`` (arrival -> key order) and ``cuts`` (the steps'
    bounds among them, in key order)."""

    def __init__(self, arrived: np.ndarray, order: np.ndarray, cuts: list[int]) -> None:
        self.arrived, self.order, self.cuts = arrived, order, cuts
        self._ids: np.ndarray | None = None
        self._rank: np.ndarray | None = None

    def rank(self, ids: np.ndarray) -> np.ndarray:
        """Each of ``ids``' place in key order."""
        if self._ids is None:
            place = np.empty(len(self.order), dtype=np.int64)
            place[self.order] = np.arange(len(self.order))
            by_id = np.argsort(self.arrived)
            self._ids, self._rank = self.arrived[by_id], place[by_id]
        assert self._rank is not None
        return self._rank[np.searchsorted(self._ids, ids)]


#: the smallest and largest values of a key's field
_LOW, _TOP = -(2**63), 2**63 - 1


def _chunk(rows: np.ndarray, values: dict[Any, tuple[np.ndarray, np.ndarray]]) -> _Chunk:
    """The chunk of ``rows``, bounded by their timestamps alone (cheap: a fold splits a
    chunk only when its target's timestamp lies within them)."""
    t = rows[:, 0]
    return _Chunk(rows, values, (int(t.min()), _LOW, _LOW, _LOW),
                  (int(t.max()), _TOP, _TOP, _TOP))


@dataclass
class _Partition:
    epoch: int
    #: the end of what arrived without a gap
    next: int = 0
    #: the promise at ``next`` (None: none yet)
    promise: Key | None = None
    #: records past a gap, by (start, end)
    ahead: dict[tuple[int, int], _Record] = field(default_factory=dict)
    #: after a restore: an index below this with a key at or below ``replay_key`` was
    #: folded before the restart
    replay_below: int = 0
    replay_key: Key | None = None


class KeyedPoolMerge:
    """Merge keyed records of several internal partitions into one :class:`PooledCUSUM`
    per column (see the module).  ``partitions``: the internal partitions expected (each
    holds the fold back until it has a promise), besides those heard from."""

    def __init__(self, columns: dict[Any, PooledCUSUM], partitions: Iterable[int] | None = None,
                 max_pending: int = MAX_PENDING) -> None:
        self.columns = columns
        self.expected = None if partitions is None else {int(p) for p in partitions}
        self.max_pending = int(max_pending)
        self.parts: dict[int, _Partition] = {}
        #: every folded message's key is at or below it, except the late ones'
        self.frontier: Key | None = None
        self.duplicates = 0
        self.late = 0
        self.forced = 0
        #: indices skipped over a gap of a partition's sequence
        self.skipped = 0
        #: messages of a partition's older epoch: dropped (held ones when a newer came)
        self.stale = 0
        self.folded = 0
        self._seq = 0
        #: the held messages, a chunk per record in arrival order: a fold takes the chunks
        #: at or below its target whole and splits only those that straddle it, so its
        #: cost follows what it folds, not what waits (a lagging partition holds many)
        self._chunks: list[_Chunk] = []
        #: their number of rows (kept: :attr:`pending` is asked once per record)
        self._n_held = 0
        #: the targets of the advances :meth:`take` deferred (see there)
        self._steps: list[Key] = []
        #: (pool offset, partition, epoch, end) of records with messages not folded
        self._records: list[tuple[int, int, int, int]] = []
        self.alarms: list[PoolAlarm] = []
        self.closes: list[PoolAlarm] = []
        #: both, in the order of one advance per record: each advance's alarms, then its
        #: closes (("open" | "close", alarm))
        self.raised: list[tuple[str, PoolAlarm]] = []

    def _held_low(self) -> dict[int, int]:
        """partition -> the smallest index it holds (of those holding any)."""
        low: dict[int, int] = {}
        for ch in self._chunks:
            p, i = int(ch.rows[0, _P]), int(ch.rows[0, _I])
            if i < low.get(p, i + 1):
                low[p] = i
        return low

    @property
    def pending(self) -> int:
        return self._n_held + sum(
            len(r.keys) for p in self.parts.values() for r in p.ahead.values())

    # -- taking records --------------------------------------------------------------------
    def add(self, partition: int, epoch: int, start: int, keys: np.ndarray,
            promise: Key | None, values: dict[Any, tuple[np.ndarray, np.ndarray]],
            offset: int | None = None) -> int:
        """Take one record of ``partition``: the messages ``start .. start + len(keys) - 1``
        of its sequence (``keys``, int64 (n, 4)), the promise after them, and per column
        (index of each value's message, standardised value).  Returns the messages
        accepted (0: duplicates, stale, or held past a gap)."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1, 4)
        n = len(keys)
        if not (0 <= start and start + n <= _IDX and 0 <= partition < 1 << 22):
            raise ValueError(f"partition {partition}, messages {start}..{start + n}: "
                             f"beyond the held values' ids (partition < 2**22, index < 2**40)")
        checked: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
        for col, (idx, z) in values.items():
            idx, z = np.asarray(idx, dtype=np.int64), np.asarray(z, dtype=np.float64)
            if idx.shape != z.shape:
                raise ValueError(f"{col}: {idx.size} positions for {z.size} values")
            if idx.size and (idx.min() < start or idx.max() >= start + n):
                raise ValueError(f"{col}: a value outside the messages of the record")
            if col in self.columns:
                checked[col] = (idx, z)
        p = int(partition)
        part = self.parts.get(p)
        if part is None or epoch > part.epoch:
            if part is not None:
                self._drop(p)
            part = self.parts[p] = _Partition(int(epoch))  # (a sequence begins at 0)
        elif epoch < part.epoch:
            self.stale += n
            return 0
        rec = _Record(int(start), keys, promise, checked, offset)
        if rec.start > part.next:
            part.ahead.setdefault((rec.start, rec.end), rec)
            if offset is not None:
                self._records.append((int(offset), p, part.epoch, rec.end))
            return 0
        taken = self._take(p, part, rec)
        while part.ahead:
            ready = [k for k in part.ahead if k[0] <= part.next]
            if not ready:
                break
            for k in sorted(ready):
                taken += self._take(p, part, part.ahead.pop(k))
        return taken

    def _take(self, p: int, part: _Partition, rec: _Record) -> int:
        """A record that starts at or before ``part.next``: its messages from there on."""
        if rec.end < part.next or (rec.end == part.next and len(rec.keys)):
            self.duplicates += len(rec.keys)
            return 0
        skip = part.next - rec.start
        self.duplicates += skip
        keys = rec.keys[skip:]
        idx = np.arange(part.next, rec.end, dtype=np.int64)
        fresh = None  # (None: every message from ``skip`` on)
        if part.replay_key is not None and idx.size and idx[0] < part.replay_below:
            fresh = ~((idx < part.replay_below) & at_or_below(keys, part.replay_key))
            self.duplicates += int((~fresh).sum())
            keys, idx = keys[fresh], idx[fresh]
        part.next = rec.end
        if rec.promise is not None and (part.promise is None or rec.promise > part.promise):
            part.promise = rec.promise
        n = len(keys)
        if n:
            rows = np.empty((n, 7), dtype=np.int64)
            rows[:, :4], rows[:, _P], rows[:, _I] = keys, p, idx
            rows[:, _S] = np.arange(self._seq, self._seq + n)
            self._seq += n
            self.late += int(at_or_below(rows, self.frontier).sum())
            held: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
            if rec.offset is not None:
                self._records.append((int(rec.offset), p, part.epoch, rec.end))
            keep = None
            if skip or fresh is not None:
                keep = np.zeros(len(rec.keys), dtype=bool)
                keep[skip:] = True if fresh is None else fresh
            for col, (vi, z) in rec.values.items():
                if keep is not None:
                    ok = keep[vi - rec.start]
                    if not ok.all():
                        vi, z = vi[ok], z[ok]
                m = len(vi)
                if not m:
                    continue
                self._seq += m
                held[col] = ((p << _ID) + vi, z)
            self._chunks.append(_chunk(rows, held))
            self._n_held += n
        return n

    def _drop(self, p: int) -> None:
        """A newer epoch of ``p``: what its older one holds is dropped."""
        mine = [ch for ch in self._chunks if int(ch.rows[0, _P]) == p]
        gone = sum(len(ch.rows) for ch in mine)
        self.stale += gone + sum(len(r.keys) for r in self.parts[p].ahead.values())
        self._chunks = [ch for ch in self._chunks if int(ch.rows[0, _P]) != p]
        self._n_held -= gone
        self._records = [r for r in self._records if r[1] != p]

    # -- folding ---------------------------------------------------------------------------
    def target(self) -> Key | None:
        """The smallest promise of the partitions (None: one has none yet)."""
        names = (self.expected or set()) | set(self.parts)
        if not names:
            return None
        promises = [self.parts[p].promise if p in self.parts else None for p in names]
        if any(x is None for x in promises):
            return None
        return min(promises)  # type: ignore[type-var]

    def advance(self) -> int:
        """Fold the held values at or below the smallest promise (and, past
        ``max_pending`` messages held, the smallest keys): returns the messages folded;
        the alarms and closes raised are in :attr:`alarms` and :attr:`closes`."""
        self.alarms, self.closes, self.raised = [], [], []
        return self.flush() + self._advance()

    def take(self, partition: int, epoch: int, start: int, keys: np.ndarray,
             promise: Key | None, values: dict[Any, tuple[np.ndarray, np.ndarray]],
             offset: int | None = None) -> int:
        """:meth:`add` then :meth:`advance`, with the same folds, alarms and counters, but
        the advance deferred when that changes nothing (call :meth:`flush` after the last
        record of a poll): the alarms and closes are **appended** to :attr:`raised` (and
        :attr:`alarms`, :attr:`closes`; the caller clears them).  A deferred advance only notes its target;
        :meth:`flush` folds the values of all of them with one sort, each step's values in
        their own CUSUM update (the same calls as one advance per record).  It is deferred
        while no forced fold or skipped gap can happen (at most ``max_pending`` held) and
        is done first when the next record could change what it folds: a message at or
        below its target (late for it), a new epoch, a gap, or too many held.  Returns the
        messages accepted."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1, 4)
        if self._steps:
            part = self.parts.get(int(partition))
            if part is None or int(epoch) != part.epoch or part.ahead or start > part.next \
                    or self.pending + len(keys) > self.max_pending \
                    or (len(keys) and at_or_below(keys, self._steps[-1]).any()):
                self.flush()
        n = self.add(partition, epoch, start, keys, promise, values, offset)
        if self.pending > self.max_pending:
            self.flush()
            self._advance()
            return n
        upto = self.target()
        f = self._steps[-1] if self._steps else self.frontier
        if f is not None and (upto is None or upto < f):
            upto = f
        if upto is not None and (not self._steps or upto != self._steps[-1]):
            self._steps.append(upto)
        return n

    def flush(self) -> int:
        """Fold what the advances :meth:`take` deferred; returns the messages folded."""
        if not self._steps:
            return 0
        steps, self._steps = self._steps, []
        return self._apply(steps)

    def _advance(self) -> int:
        if self.pending > self.max_pending:
            self._skip_gaps()
        upto = self.target()
        if self.frontier is not None and (upto is None or upto < self.frontier):
            upto = self.frontier
        if self._n_held > self.max_pending:
            rows = self._smallest(self._n_held - self.max_pending)
            last = _tuple(rows[-1])
            if upto is None or last > upto:
                self.forced += int((~at_or_below(rows, upto)).sum())
                upto = last
        if upto is None:
            return 0
        return self._apply([upto])

    def _smallest(self, cut: int) -> np.ndarray:
        """The ``cut`` first held rows in key order (ties: partition, index, arrival): from
        the chunks in the order of their smallest key, as far as one can hold any."""
        rows = _EMPTY
        taken: list[np.ndarray] = []
        count = 0
        for ch in sorted(self._chunks, key=lambda c: c.lo):
            if count >= cut and ch.lo > _tuple(rows[cut - 1]):
                break
            taken.append(ch.rows)
            count += len(ch.rows)
            if count >= cut:
                rows = np.concatenate(taken)
                rows = rows[_order(rows)]
        return rows[:cut]

    def _apply(self, steps: list[Key]) -> int:
        """The folds of advances to each of ``steps`` in turn (increasing; no message
        arrived between them at or below an earlier one)."""
        upto = steps[-1]
        has_values = any(ch.values for ch in self._chunks)
        rows: list[np.ndarray] = []
        vals: dict[Any, list[tuple[np.ndarray, np.ndarray]]] = {}
        kept: list[_Chunk] = []
        for ch in self._chunks:
            if ch.lo > upto:
                kept.append(ch)
                continue
            if ch.hi <= upto:
                rows.append(ch.rows)
                for col, pair in ch.values.items():
                    vals.setdefault(col, []).append(pair)
                continue
            go = at_or_below(ch.rows, upto)
            rows.append(ch.rows[go])
            rest: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
            for col, (i, z) in ch.values.items():
                now = go[np.searchsorted(ch.rows[:, _I], i & _IDX)]
                if now.any():
                    vals.setdefault(col, []).append((i[now], z[now]))
                if not now.all():
                    rest[col] = (i[~now], z[~now])
            if not go.all():  # (the bounds are the timestamps': all may go)
                kept.append(_chunk(ch.rows[~go], rest))
        n = sum(len(r) for r in rows)
        self._chunks = kept
        self._n_held -= n
        self.frontier = upto
        self.folded += n
        if not n or not has_values:
            return n
        # the messages folded in key order (ties: partition, index; each message once),
        # then each column's values by the rank of their message, in arrival order within
        # one: the order of (key, partition, index, arrival) of every value
        f = np.concatenate(rows)
        arrived = (f[:, _P] << _ID) + f[:, _I]  # the messages, in arrival order
        order, packed = _packed_order(f)
        if packed is not None:
            inner = np.searchsorted(packed.values, [packed.bound(s) for s in steps[:-1]],
                                    side="right")
        else:
            inner = _bounds(f[order], steps[:-1])
        cuts = [0, *inner.tolist(), len(f)]
        sort = _Sort(arrived, order, cuts)
        folds = []
        last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        for col in self.columns:
            if col in vals:
                fold, last = self._sorted(vals[col], sort, last)
                folds.append((col, fold))
        for j in range(len(steps)):
            a, c = len(self.alarms), len(self.closes)
            for col, (v, z, bounds) in folds:
                if bounds[j] < bounds[j + 1]:
                    self._fold(col, v[bounds[j]:bounds[j + 1]], z[bounds[j]:bounds[j + 1]])
            self.raised += [("open", x) for x in self.alarms[a:]] + \
                [("close", x) for x in self.closes[c:]]
        if self._records:
            low = {p: part.next for p, part in self.parts.items()}
            low.update(self._held_low())
            self._records = [r for r in self._records
                             if r[3] > low.get(r[1], 0) or self._ahead(r)]
        return n

    def _skip_gaps(self) -> None:
        """Too much waits: a partition's gap (its records lost past the pool topic's
        retention, a pool started on a topic already truncated) is skipped, counted."""
        for p, part in self.parts.items():
            while part.ahead:
                first = min(part.ahead)
                self.skipped += first[0] - part.next
                part.next = first[0]
                self._take(p, part, part.ahead.pop(first))
                for k in sorted(k for k in part.ahead if k[0] <= part.next):
                    self._take(p, part, part.ahead.pop(k))

    def _ahead(self, rec: tuple[int, int, int, int]) -> bool:
        part = self.parts.get(rec[1])
        return part is not None and any(k[1] == rec[3] for k in part.ahead)

    @staticmethod
    def _sorted(chunks: list[tuple[np.ndarray, np.ndarray]], sort: _Sort,
                last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray],
                           tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """A column's values of the messages folded (``chunks``, in arrival order), in key
        order, and the bounds of each step's values; and what ``last`` is for the next
        column: (its messages, their order, the bounds).  A column whose messages are the
        previous column's, in the same arrival order (every column of events that carry
        them all), takes that column's order instead of sorting again; one with a value of
        every message folded, in arrival order, takes the messages' order."""
        i = np.concatenate([c[0] for c in chunks]) if len(chunks) > 1 else chunks[0][0]
        z = np.concatenate([c[1] for c in chunks]) if len(chunks) > 1 else chunks[0][1]
        if last is not None and (last[0] is i or np.array_equal(last[0], i)):
            _, order, bounds = last
        elif np.array_equal(i, sort.arrived):
            order, bounds = sort.order, np.asarray(sort.cuts)
        else:
            r = sort.rank(i)
            order = np.argsort(r, kind="stable")  # (chunks keep the arrival order)
            bounds = np.searchsorted(r[order], sort.cuts)
        return (i[order], z[order], bounds), (i, order, bounds)

    def _fold(self, col: Any, ids: np.ndarray, z: np.ndarray) -> None:
        """Values of ``col`` in key order (``ids``: partition << 40 | index)."""
        det = self.columns[col]
        hits = det.update(z)
        stats, direction = det.alarm_statistics, det.direction
        self.alarms += [PoolAlarm(col, int(ids[i]) & _IDX, float(s), float(det.threshold),
                                  direction, int(ids[i]) >> _ID)
                        for i, s in zip(hits.tolist(), stats.tolist(), strict=True)]
        closes = det.close_positions
        if closes.size:
            self.closes += [PoolAlarm(col, int(ids[i]) & _IDX, float(det.episode_peak),
                                      float(det.threshold), direction, int(ids[i]) >> _ID)
                            for i in closes.tolist()]

    # -- checkpoints -----------------------------------------------------------------------
    def resume_offset(self) -> int | None:
        """The pool-topic offset to read again from after a restart from :meth:`state`:
        the first record with a message not folded (None: none)."""
        self.flush()
        return min(r[0] for r in self._records) if self._records else None

    def state(self) -> dict[str, Any]:
        self.flush()
        parts = []
        held = self._held_low()
        for p, part in sorted(self.parts.items()):
            low = held.get(p, part.next)
            promise = part.promise if low == part.next else None
            parts.append([p, part.epoch, low, part.next,
                          None if promise is None else list(promise)])
        return {"version": 2, "frontier": None if self.frontier is None else list(self.frontier),
                "forced": self.forced, "late": self.late, "skipped": self.skipped, "partitions": parts,
                "columns": [[_key(c), d._state()] for c, d in self.columns.items()]}

    @classmethod
    def from_state(cls, state: dict[str, Any], columns: dict[Any, PooledCUSUM],
                   partitions: Iterable[int] | None = None,
                   max_pending: int = MAX_PENDING) -> KeyedPoolMerge:
        """Restore (a column configured since starts fresh, one removed is dropped); then
        :meth:`add` the records from :meth:`resume_offset` on."""
        saved = {_unkey(k): s for k, s in state.get("columns", [])}
        restored = {c: PooledCUSUM.restore(saved[c]) if c in saved and _same(d, saved[c])
                    else d for c, d in columns.items()}
        out = cls(restored, partitions, max_pending)
        f = state.get("frontier")
        out.frontier = None if f is None else _tuple(f)
        out.forced, out.late = int(state.get("forced", 0)), int(state.get("late", 0))
        out.skipped = int(state.get("skipped", 0))
        for p, epoch, low, nxt, promise in state.get("partitions", []):
            out.parts[int(p)] = _Partition(
                int(epoch), int(low), None if promise is None else _tuple(promise),
                replay_below=int(nxt), replay_key=out.frontier)
        return out
