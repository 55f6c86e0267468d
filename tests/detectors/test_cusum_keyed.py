"""The pooled CUSUM's merge with several writers (detectors/cusum_keyed.py): whatever the
interleaving of the internal partitions' records, however often a record comes again, and
with a restart from a checkpoint anywhere, the pooled CUSUM is one CUSUM over every
partition's messages sorted by the writers' key, bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.cusum import CUSUM
from detectors.cusum_keyed import Key, KeyedPoolMerge
from detectors.cusum_merge import standardise
from detectors.cusum_pool import PooledCUSUM, pooled_cusum

COLS = ("a", "b")
TOP: Key = (2**62, 0, 0, 0)


def _column_cusum(h: float = 4.0) -> CUSUM:
    det = CUSUM(mean=1.5, scale=2.0, threshold=h, clip=(-4.0, 7.0), name="x", min_effect=0.05)
    det.configure_episodes(0.5, 20)
    return det


def _columns(h: float = 4.0) -> dict[str, PooledCUSUM]:
    return {c: pooled_cusum(_column_cusum(h)) for c in COLS}


class Stream:
    """Messages of several writers spread over internal partitions: per partition its
    sequence in key order (what its WriterMerge releases), per message 0-3 values a
    column; the drift starts at the ``shift``-th message in key order over all."""

    def __init__(self, rng: np.random.Generator, parts: int, writers: int, n: int,
                 shift: float) -> None:
        # (timestamp, generation, writer, position): generations interleaved in time
        gen = rng.integers(1, 3, n)
        t = np.sort(rng.integers(0, max(1, n // 3), n))  # ties of timestamps
        w = rng.integers(0, writers, n)
        pos = np.zeros(n, dtype=np.int64)
        for i in range(writers):
            pos[w == i] = np.arange(int((w == i).sum()))
        self.keys = np.stack([t, gen, w, pos], axis=1)
        self.part = rng.integers(0, parts, n)
        rank = np.empty(n, dtype=np.int64)
        rank[np.lexsort((pos, w, gen, t))] = np.arange(n)
        base = _column_cusum()
        self.z: list[dict[str, np.ndarray]] = []
        for i in range(n):
            msg = {}
            for c in COLS:
                k = int(rng.integers(0, 4))
                x = rng.normal(1.5 + (1.6 if rank[i] >= shift * n else 0.0), 2.0, k)
                x[rng.random(k) < 0.1] = np.nan
                msg[c] = standardise(x, base.mean, base.scale, base.clip)
            self.z.append(msg)
        #: per partition: the global message numbers in its sequence order
        self.seq = []
        for p in range(parts):
            mine = np.flatnonzero(self.part == p)
            k = self.keys[mine]
            self.seq.append(mine[np.lexsort((k[:, 3], k[:, 2], k[:, 1], k[:, 0]))])

    def record(self, p: int, a: int, b: int, promise: Key | None) -> tuple[Any, ...]:
        msgs = self.seq[p][a:b]
        values = {}
        for c in COLS:
            idx = [a + j for j, m in enumerate(msgs) for _ in range(self.z[m][c].size)]
            z = [v for m in msgs for v in self.z[m][c].tolist()]
            values[c] = (np.asarray(idx, dtype=np.int64), np.asarray(z, dtype=np.float64))
        return (p, 1, a, self.keys[msgs].reshape(-1, 4), promise, values)

    def promise(self, p: int, b: int, rng: np.random.Generator) -> Key | None:
        """A promise after ``b`` messages of ``p``: its frontier, or the bound of a
        watermark just below the next message's timestamp."""
        k = self.keys[self.seq[p]]
        if b == len(k):
            return TOP
        last = None if b == 0 else tuple(int(x) for x in k[b - 1])
        t = int(k[b, 0])
        below: Key = (t - 1, 2**62, 2**62, 2**62)
        if last is None or (rng.random() < 0.5 and below > last):
            return below
        return last  # type: ignore[return-value]

    def records(self, rng: np.random.Generator) -> list[tuple[Any, ...]]:
        out = []
        for p, s in enumerate(self.seq):
            cuts = sorted(set(rng.integers(0, len(s) + 1, int(rng.integers(0, 6))).tolist()))
            for a, b in zip([0, *cuts], [*cuts, len(s)], strict=True):
                if b > a:
                    out.append(self.record(p, a, b, self.promise(p, b, rng)))
                if rng.random() < 0.3:  # a frontier-only record (a heartbeat)
                    out.append(self.record(p, b, b, self.promise(p, b, rng)))
            out.append(self.record(p, len(s), len(s), TOP))
        return out

    def reference(self) -> dict[str, tuple[PooledCUSUM, list[tuple[int, int]]]]:
        """One CUSUM a column over all messages in key order (ties: partition, index)."""
        index = np.zeros(len(self.keys), dtype=np.int64)
        for s in self.seq:
            index[s] = np.arange(len(s))
        k = self.keys
        order = np.lexsort((index, self.part, k[:, 3], k[:, 2], k[:, 1], k[:, 0]))
        out = {}
        for c in COLS:
            z = np.concatenate([self.z[m][c] for m in order] + [np.empty(0)])
            at = [(int(self.part[m]), int(index[m])) for m in order
                  for _ in range(self.z[m][c].size)]
            det = pooled_cusum(_column_cusum())
            hits = det.update(z)
            out[c] = (det, [at[i] for i in hits.tolist()])
        return out


def _same_state(a: CUSUM, b: CUSUM) -> bool:
    return (a._f.tobytes() == b._f.tobytes() and a._i.tobytes() == b._i.tobytes()
            and a._hf.tobytes() == b._hf.tobytes() and a._hi.tobytes() == b._hi.tobytes())


def _feed(pool: KeyedPoolMerge, records: list[tuple[Any, ...]], first: int = 0,
          alarms: dict[str, list[tuple[int, int]]] | None = None) -> None:
    for off in range(first, len(records)):
        p, epoch, start, keys, promise, values = records[off]
        pool.add(p, epoch, start, keys, promise, values, off)
        pool.advance()
        if alarms is not None:
            for a in pool.alarms:
                alarms[a.column].append((a.partition, a.position))


ALARMED: list[bool] = []


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 3), st.integers(5, 150),
       st.data())
def test_any_interleaving_duplicates_and_restart_give_one_cusum_in_key_order(
        seed: int, parts: int, writers: int, n: int, data: Any) -> None:
    rng = np.random.default_rng(seed)
    stream = Stream(rng, parts, writers, n, shift=1 / 3)
    records = stream.records(rng)
    dups = data.draw(st.lists(st.integers(0, len(records) - 1), max_size=5))
    records += [records[i] for i in dups]  # republished (a monitor restarted)
    order = data.draw(st.permutations(range(len(records))))
    arrivals = [records[i] for i in order]
    pool = KeyedPoolMerge(_columns(), range(parts))
    alarms: dict[str, list[tuple[int, int]]] = {c: [] for c in COLS}
    _feed(pool, arrivals, alarms=alarms)
    assert pool.pending == 0 and pool.late == pool.forced == pool.skipped == 0
    assert pool.folded == n and pool.frontier == TOP
    ref = stream.reference()
    for c in COLS:
        det, hits = ref[c]
        assert _same_state(pool.columns[c], det), c
        assert alarms[c] == hits
    ALARMED.append(bool(ref["a"][1] or ref["b"][1]))
    # a restart from a checkpoint taken after any record: read again from its resume
    # offset, the same result
    cut = data.draw(st.integers(0, len(arrivals)))
    first = KeyedPoolMerge(_columns(), range(parts))
    _feed(first, arrivals[:cut])
    resume = first.resume_offset()
    again = KeyedPoolMerge.from_state(first.state(), _columns(), range(parts))
    _feed(again, arrivals, cut if resume is None else resume)
    assert again.pending == 0 and again.late == again.forced == 0
    for c in COLS:
        assert _same_state(again.columns[c], pool.columns[c]), c


def test_the_interleaving_property_saw_alarms() -> None:
    """(after the property above) its drift raised alarms in many examples"""
    if not ALARMED:
        pytest.skip("run with the property test")
    assert sum(ALARMED) >= len(ALARMED) // 4, (sum(ALARMED), len(ALARMED))


def _rec(p: int, start: int, ts: list[int], promise: Key | None, z: float = 0.0,
         epoch: int = 1) -> tuple[Any, ...]:
    keys = np.array([(t, 0, p, start + i) for i, t in enumerate(ts)], dtype=np.int64)
    idx = np.arange(start, start + len(ts))
    return (p, epoch, start, keys, promise, {c: (idx, np.full(len(ts), z)) for c in COLS})


def _add(pool: KeyedPoolMerge, rec: tuple[Any, ...], offset: int | None = None) -> int:
    pool.add(*rec, offset=offset)
    return pool.advance()


def test_a_lagging_partition_holds_the_fold_until_its_promise_moves() -> None:
    pool = KeyedPoolMerge(_columns(), [0, 1])
    assert _add(pool, _rec(0, 0, [1, 2, 3, 4], (4, 0, 0, 3))) == 0  # partition 1 unheard
    assert pool.pending == 4
    assert _add(pool, _rec(1, 0, [], (2, 0, 9, 9))) == 2  # a heartbeat: up to t=2
    assert _add(pool, _rec(1, 0, [3, 5], (5, 0, 1, 1))) == 3  # (1,t=3) and (0,t=3),(0,t=4)
    assert pool.frontier == (4, 0, 0, 3) and pool.pending == 1
    assert pool.late == pool.forced == 0


def test_past_the_bound_the_smallest_keys_fold_and_what_comes_below_is_late() -> None:
    pool = KeyedPoolMerge(_columns(), [0, 1], max_pending=50)
    assert _add(pool, _rec(0, 0, list(range(10, 70)), (69, 0, 0, 59), z=1.0)) == 10
    assert pool.forced == 10 and pool.pending == 50 and pool.frontier == (19, 0, 0, 9)
    _add(pool, _rec(1, 0, [5, 6], (6, 0, 1, 1), z=-1.0))  # came too late: folded, counted
    assert pool.late == 2 and pool.pending == 50
    assert pool.folded == 12


def test_past_the_bound_the_smallest_keys_fold_across_many_held_records() -> None:
    """The held messages are kept a record at a time; a forced fold takes the smallest
    keys over all of them (records of overlapping times, ties within a millisecond), and
    a fold splits a record at its target: checked against sorting every key."""
    rng = np.random.default_rng(7)
    pool = KeyedPoolMerge(_columns(), [0, 1, 2], max_pending=40)
    held: list[Key] = []
    frontier: Key | None = None
    folded = forced = late = 0
    starts = [0, 0]
    for r in range(60):
        p = r % 2  # partition 2 is never heard: only forced folds move the frontier
        ts = sorted(rng.integers(r // 2, r // 2 + 12, int(rng.integers(1, 9))).tolist())
        rec = _rec(p, starts[p], ts, (r + 12, 0, 0, 0))
        starts[p] += len(ts)
        new = [(int(k[0]), int(k[1]), int(k[2]), int(k[3])) for k in rec[3]]
        late += sum(frontier is not None and k <= frontier for k in new)
        held = sorted(held + new)
        upto = frontier
        if len(held) > 40:
            cut = len(held) - 40
            if upto is None or held[cut - 1] > upto:
                forced += sum(upto is None or k > upto for k in held[:cut])
                upto = held[cut - 1]
        gone = [k for k in held if upto is not None and k <= upto]
        held, frontier = held[len(gone):], upto
        assert _add(pool, rec) == len(gone)
        folded += len(gone)
        assert (pool.frontier, pool.pending, pool.folded) == (frontier, len(held), folded)
        assert (pool.forced, pool.late) == (forced, late)
    assert forced > 0 and late > 0


def test_a_gap_in_a_partition_waits_then_is_skipped_past_the_bound() -> None:
    pool = KeyedPoolMerge(_columns(), [0], max_pending=30)
    assert _add(pool, _rec(0, 5, list(range(5, 25)), (24, 0, 0, 24))) == 0
    assert pool.pending == 20 and pool.skipped == 0
    assert _add(pool, _rec(0, 25, list(range(25, 40)), (39, 0, 0, 39))) == 35
    assert pool.skipped == 5 and pool.pending == 0
    assert _add(pool, _rec(0, 0, [1, 2], (2, 0, 0, 1))) == 0  # lost before: a duplicate now
    assert pool.duplicates == 2


def test_a_newer_epoch_replaces_a_partition_and_an_older_one_is_stale() -> None:
    pool = KeyedPoolMerge(_columns(), [0, 1])
    _add(pool, _rec(0, 0, [1, 2, 3], (3, 0, 0, 2), epoch=5))
    assert pool.pending == 3  # partition 1 unheard
    _add(pool, _rec(0, 0, [7], (7, 0, 0, 0), epoch=6))  # its state began again: from 0
    assert pool.stale == 3 and pool.pending == 1
    _add(pool, _rec(0, 1, [8], (8, 0, 0, 1), epoch=5))
    assert pool.stale == 4 and pool.pending == 1
    assert _add(pool, _rec(1, 0, [], TOP)) == 1 and pool.frontier == (7, 0, 0, 0)


def test_values_must_pair_and_lie_in_the_record() -> None:
    pool = KeyedPoolMerge(_columns(), [0])
    keys = np.zeros((3, 4), dtype=np.int64)
    with pytest.raises(ValueError):
        pool.add(0, 1, 0, keys, None, {"a": (np.arange(3), np.zeros(2))})
    with pytest.raises(ValueError):
        pool.add(0, 1, 0, keys, None, {"a": (np.array([3]), np.zeros(1))})


def test_settings_changed_since_the_state_start_fresh() -> None:
    pool = KeyedPoolMerge(_columns(), [0])
    _add(pool, _rec(0, 0, list(range(10)), TOP, z=3.0))
    assert pool.columns["a"].statistic > 0
    again = KeyedPoolMerge.from_state(pool.state(), _columns(h=9.0), [0])
    assert again.frontier == TOP and again.columns["a"].statistic == 0.0
    same = KeyedPoolMerge.from_state(pool.state(), _columns(), [0])
    assert same.columns["a"].statistic == pool.columns["a"].statistic


def test_a_restart_does_not_fold_again_a_late_message_folded_before_it() -> None:
    """A late message (released by its merge below its frontier) folds before messages of
    its partition that precede it: read again after a restart, it is dropped by key."""
    records = [_rec(0, 0, [10], (10, 0, 0, 0), z=2.0), _rec(1, 0, [4, 5], (5, 0, 1, 1), z=1.0),
               _rec(0, 1, [3], (10, 0, 0, 0), z=3.0), _rec(1, 2, [], TOP), _rec(0, 2, [], TOP)]
    whole = KeyedPoolMerge(_columns(), [0, 1])
    for off, rec in enumerate(records):
        _add(whole, rec, off)
    assert whole.late == 1 and whole.folded == 4 and whole.pending == 0
    first = KeyedPoolMerge(_columns(), [0, 1])
    for off, rec in enumerate(records[:3]):
        _add(first, rec, off)
    assert first.pending == 1 and first.resume_offset() == 0
    again = KeyedPoolMerge.from_state(first.state(), _columns(), [0, 1])
    for off, rec in enumerate(records):
        _add(again, rec, off)
    assert again.duplicates == 3 and again.folded == 1
    for c in COLS:
        assert _same_state(again.columns[c], whole.columns[c])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.sampled_from([2, 5, 1000, 2**40]))
def test_the_packed_key_order_and_step_bounds_are_the_lexsort_ones(seed: int, n: int,
                                                                  span: int) -> None:
    """The fold's one-column sort (rows as sorted runs, packed key and partition) gives
    ``_order``'s order, and each step's bound ``_bounds``' count, whatever the steps
    (fields below, within or above the rows'); ties of key and partition, or keys too wide
    for 62 bits, fall back to the lexsort."""
    from detectors.cusum_keyed import _bounds, _order, _packed_order

    rng = np.random.default_rng(seed)
    rows = np.zeros((n, 7), dtype=np.int64)
    base = int(rng.integers(0, 2**41))
    rows[:, 0] = base + rng.integers(0, span, n)
    rows[:, 1] = rng.integers(1, 3, n)
    rows[:, 2] = rng.integers(0, 3, n)
    rows[:, 3] = rng.integers(0, span, n)
    rows[:, 4] = rng.integers(0, 4, n)
    rows[:, 5] = rng.permutation(n)
    rows[:, 6] = np.arange(n)
    # as records come: runs, each in key order
    cuts = np.sort(rng.integers(0, n + 1, 3))
    runs = np.split(rows, cuts)
    rows = np.concatenate([r[_order(r)] for r in runs])
    order, packed = _packed_order(rows)
    assert np.array_equal(order, _order(rows))
    ties = len({tuple(r) for r in rows[:, :5].tolist()}) < n
    wide = sum((int(rows[:, j].max()) - int(rows[:, j].min())).bit_length()
               for j in range(5)) > 62
    assert (packed is None) == (ties or wide)
    if packed is None:
        return
    steps = []
    for _ in range(8):
        row = rows[int(rng.integers(0, n))]
        step = [int(x) for x in row[:4]]
        j = int(rng.integers(0, 4))
        step[j] += int(rng.choice([-2**45, -1, 0, 1, 2**45]))
        steps.append(tuple(step))
    steps.sort()
    got = np.searchsorted(packed.values, [packed.bound(s) for s in steps], side="right")
    assert got.tolist() == _bounds(rows[order], steps).tolist()
