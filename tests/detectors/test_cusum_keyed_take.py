"""The pool member's deferred folds (KeyedPoolMerge.take / flush, detectors/cusum_keyed.py)
against one add and advance per record (the reference): on random streams with
interleavings, republished records, gaps, newer epochs, promises broken (late messages),
forced folds past a small bound and polls of any length, the same CUSUMs bit for bit, the
same alarms and closes in the same order, the same counters, state and resume offset."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.cusum_keyed import KeyedPoolMerge
from tests.detectors.test_cusum_keyed import COLS, Stream, _columns, _same_state


def _records(rng: np.random.Generator, parts: int, writers: int, n: int) -> list[Any]:
    stream = Stream(rng, parts, writers, n, shift=1 / 3)
    records = stream.records(rng)
    out = []
    for p, epoch, start, keys, promise, values in records:
        if promise is not None and rng.random() < 0.3:  # a promise broken: late messages
            promise = (int(promise[0]) + int(rng.integers(1, 4)), 0, 0, 0)
        if rng.random() < 0.05:  # the partition's sequence started again (a state lost)
            epoch = 2
        out.append((p, epoch, start, keys, promise, values))
    out += [out[i] for i in rng.integers(0, len(out), int(rng.integers(0, 4))).tolist()]
    return [out[i] for i in rng.permutation(len(out))]


def _counters(pool: KeyedPoolMerge) -> tuple[Any, ...]:
    return (pool.folded, pool.pending, pool.late, pool.forced, pool.skipped, pool.duplicates,
            pool.stale, pool.frontier)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 3), st.integers(5, 150),
       st.integers(4, 120), st.integers(1, 12))
def test_deferred_folds_are_one_advance_per_record(seed: int, parts: int, writers: int,
                                                    n: int, bound: int, poll: int) -> None:
    rng = np.random.default_rng(seed)
    arrivals = _records(rng, parts, writers, n)
    ref = KeyedPoolMerge(_columns(), range(parts), max_pending=bound)
    fast = KeyedPoolMerge(_columns(), range(parts), max_pending=bound)
    ref_alarms: list[Any] = []
    fast_alarms: list[Any] = []
    for off, rec in enumerate(arrivals):
        ref.add(*rec, offset=off)
        ref.advance()
        ref_alarms += [("open", a) for a in ref.alarms] + [("close", a) for a in ref.closes]
        fast.take(*rec, offset=off)
        if off % poll == poll - 1 or off == len(arrivals) - 1:  # the end of a poll
            fast.flush()
            fast_alarms += fast.raised
            fast.alarms, fast.closes, fast.raised = [], [], []
            assert fast_alarms == ref_alarms
            assert _counters(fast) == _counters(ref)
            assert fast.resume_offset() == ref.resume_offset()
            assert fast.state() == ref.state()
    for c in COLS:
        assert _same_state(fast.columns[c], ref.columns[c]), c


def test_the_streams_make_late_and_forced_folds() -> None:
    """The property's streams exercise the deferral's flush rules: over 100 fixed draws of
    its parameters, broken promises and the small bounds make late messages or forced
    folds in many of them (deterministic, unlike counting the property's own examples,
    which a run split over workers need not see together)."""
    rng = np.random.default_rng(2026)
    hit = 0
    for _ in range(100):
        seed, parts, writers = int(rng.integers(0, 2**32)), int(rng.integers(1, 5)), \
            int(rng.integers(1, 4))
        n, bound = int(rng.integers(5, 151)), int(rng.integers(4, 121))
        ref = KeyedPoolMerge(_columns(), range(parts), max_pending=bound)
        for off, rec in enumerate(_records(np.random.default_rng(seed), parts, writers, n)):
            ref.add(*rec, offset=off)
            ref.advance()
        hit += ref.late + ref.forced > 0
    assert hit >= 12, hit  # 19 of these 100
